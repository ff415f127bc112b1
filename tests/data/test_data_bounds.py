"""Issue 11: a small or odd sample file is refused with one DataError line, never a hang, a crash or gigabytes.

The big inputs are built so the test itself stays small: PNG headers written by hand (a 30000x30000 image
whose pixel data is never written), .npy headers that declare more than the file holds, and a deflate
stream of zeros that is inflated only as far as leakaudit reads it.
"""

from __future__ import annotations

import os
import re
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import leakaudit.data.arrays as arrays
from leakaudit.data import MAX_IMAGE_PIXELS, load_samples, normalization
from leakaudit.errors import ConfigError, DataError

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")


def load(path: Path, shape=(3, 8, 8), classes=10, **kw):
    return load_samples(path, input_shape=shape, num_classes=classes,
                        normalization=normalization("none", channels=shape[0] if len(shape) == 3 else 1), **kw)


def fails(path: Path, pattern: str, *, starts: Path | None = None, **kw) -> str:
    with pytest.raises(DataError, match=pattern) as info:
        load(path, **kw)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(starts or path)), message
    return message


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height RGB but holds one compressed row: PIL reads the size from IHDR."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\0" * (1 + 3 * min(width, 64)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", row) + _chunk(b"IEND", b""))
    return path


def labelled(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.csv").write_text("file,label\n" + "".join(f"{n},1\n" for n in names))
    return folder


def npy_header(path: Path, shape: tuple[int, ...], descr: str = "|u1") -> Path:
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return path


@pytest.mark.parametrize("side", [30000, 12000, 4097])
def test_images_above_the_pixel_bound_are_refused_before_decoding(tmp_path: Path, side: int) -> None:
    # 30000^2: PIL's own DecompressionBombError at open; 12000^2 (the 420 KB PNG that took 4.6 GB): PIL only
    # warns; 4097^2: just above leakaudit's bound, where PIL says nothing
    img = png_header_only(tmp_path / "a.png", side, side)
    message = fails(labelled(tmp_path, "a.png"), "downscale it to at most 4096x4096", starts=img)
    if side == 4097:
        assert "image is 4097x4097 pixels, above the 16.8 megapixels leakaudit decodes per sample" in message
    else:
        assert "image too large to decode safely (Image size" in message


def test_a_long_thin_image_within_the_pixel_bound_loads(tmp_path: Path) -> None:
    Image.new("RGB", (MAX_IMAGE_PIXELS // 8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    assert load(labelled(tmp_path, "a.png")).original_shapes == ((3, 8, MAX_IMAGE_PIXELS // 8),)


@pytest.mark.parametrize("value, pattern", [(np.nan, "holds NaN/inf pixel values"),
                                            (300.0, r"pixel values range 300\.\.300 after scaling")])
def test_float_tiff_with_nan_or_out_of_range_pixels(tmp_path: Path, value: float, pattern: str) -> None:
    # mode "F" images were clipped to [0, 1] silently, and NaN passed the clip
    Image.fromarray(np.full((8, 8), value, np.float32), mode="F").save(tmp_path / "a.tif")
    fails(labelled(tmp_path, "a.tif"), pattern, starts=tmp_path / "a.tif", shape=(1, 8, 8))


def test_npy_declaring_a_huge_shape_is_refused_without_allocating(tmp_path: Path) -> None:
    path = npy_header(tmp_path / "x.npy", (10**6, 3, 1024, 1024), "<f4")  # 12 TB declared, 128 bytes on disk
    fails(path, re.escape("'x' declares shape (1000000, 3, 1024, 1024) (11718.8 GiB) but the file holds 0 bytes "
                          "of data; the file is truncated or corrupt"), shape=(3, 1024, 1024))


def test_one_sample_above_the_read_bound_is_refused(tmp_path: Path) -> None:
    path = npy_header(tmp_path / "x.npy", (1, 3, 20000, 20000))
    with path.open("r+b") as f:  # sparse: the file is 1.2 GB long but takes no disk space
        f.truncate(path.stat().st_size + 3 * 20000 * 20000)
    fails(path, r"the 1 sample\(s\) of 'x' to read take 1\.1 GiB, more than the 1\.0 GiB", shape=(3, 20000, 20000))


def test_npz_header_inside_the_zip_is_checked_before_reading(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "s.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (10**9, 3, 8, 8)})
    fails(tmp_path / "s.npz", r"'x' declares shape \(1000000000, 3, 8, 8\) \(178\.8 GiB\) but the file holds 0 bytes")


def _zip_bomb(path: Path, n: int) -> Path:
    """x = zeros (n, 3, 32, 32) uint8 streamed through deflate: 3 KB per sample inflated, ~3 bytes on disk."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, 3, 32, 32)})
            block = bytes(3072 * 1024)
            for _ in range(n // 1024):
                f.write(block)
        with z.open("y.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (n,)})
            f.write(bytes(8 * n))
    return path


def test_zip_bomb_inflates_only_the_samples_used(tmp_path: Path) -> None:
    path = _zip_bomb(tmp_path / "bomb.npz", 32 * 1024)  # 96 MiB of x inflated, 100 KB on disk
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        batch = load(path, shape=(3, 32, 32), limit=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(batch) == 2 and batch.y.tolist() == [0, 0]
    assert peak < 8 << 20, f"peak {peak / 2**20:.0f} MiB: the whole array was inflated"


def test_reading_every_sample_of_a_bomb_hits_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays, "MAX_READ_BYTES", 1 << 20)  # the real bound is 1 GiB; the rule is the same
    path = _zip_bomb(tmp_path / "bomb.npz", 2048)
    fails(path, r"the 2048 sample\(s\) of 'x' to read take 6\.0 MiB, more than the 1\.0 MiB leakaudit reads from "
                r"one array; use fewer samples \(batch_size\)", shape=(3, 32, 32))
    assert len(load(path, shape=(3, 32, 32), limit=100)) == 100


def test_labels_of_a_zip_bomb_must_match_the_sample_count(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((2, 3, 8, 8), np.uint8), y=np.zeros(10**5, np.int64))
    fails(tmp_path / "s.npz", r"labels 'y' have shape \(100000,\) for 2 samples", limit=1)


def test_object_and_structured_arrays_are_refused_on_their_header(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", x=np.array([None, 1], dtype=object), y=[0, 1])  # savez pickles object arrays
    fails(tmp_path / "o.npz", r"'x' is not a plain numeric array \(dtype object\)")
    np.save(tmp_path / "s.npy", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))
    fails(tmp_path / "s.npy", "'x' is not a plain numeric array")


def test_fortran_order_and_big_endian_arrays_still_load(tmp_path: Path) -> None:
    x = np.asfortranarray(np.arange(2 * 3 * 8 * 8, dtype=">u2").reshape(2, 3, 8, 8) % 256)
    np.savez(tmp_path / "s.npz", x=x, y=np.array([1, 2], dtype=">i8"))
    batch = load(tmp_path / "s.npz", limit=1)
    assert np.allclose(batch.pixels.numpy(), x[:1].astype(np.float32) / 255) and batch.y.tolist() == [1]


def test_safetensors_shapes_are_checked_and_only_used_rows_read(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(4, 3, 64, 64), "y": torch.tensor([1, 2, 3, 4])}, str(tmp_path / "s.safetensors"))
    fails(tmp_path / "s.safetensors", re.escape("samples 'x' have shape (3, 64, 64) but the model takes (1, 28, 28)"),
          shape=(1, 28, 28))
    batch = load(tmp_path / "s.safetensors", shape=(3, 64, 64), limit=2)
    assert batch.y.tolist() == [1, 2] and batch.pixels.shape == (2, 3, 64, 64)
    save_file({"x": torch.zeros(2, 3, 8, 8, dtype=torch.complex64), "y": torch.tensor([0, 1])},
              str(tmp_path / "c.safetensors"))
    fails(tmp_path / "c.safetensors", "'x' has dtype C64")


@needs_fifo
def test_a_fifo_as_the_data_path_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.npy")
    fails(tmp_path / "x.npy", r"a named pipe \(FIFO\), not a regular file; point data at")


def test_a_device_as_the_data_path_is_refused(tmp_path: Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero on this system")
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    fails(tmp_path / "zero.npz", "a device, not a regular file")


@needs_fifo
def test_a_fifo_inside_a_folder_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    fails(labelled(tmp_path, "a.png", "b.png"), r"FIFO\), not a regular file; remove it from the sample folder",
          starts=tmp_path / "b.png")
    (tmp_path / "b.png").unlink()
    (tmp_path / "labels.csv").unlink()
    os.mkfifo(tmp_path / "labels.csv")  # was skipped as "no labels" since is_file() is False for a FIFO
    fails(tmp_path, "FIFO\\), not a regular file; make it a text file of labels", starts=tmp_path / "labels.csv")


def test_a_broken_link_in_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.png").symlink_to(tmp_path / "gone.png")
    fails(labelled(tmp_path, "a.png"), "a broken link; remove it from the sample folder", starts=tmp_path / "a.png")


@pytest.mark.parametrize("label", ["\u00b2", "--1", "\u0663", "+1", "1_0", "9" * 5000])
def test_labels_are_ascii_class_numbers(tmp_path: Path, label: str) -> None:
    # int() takes '²'? no, it raised ValueError (exit 3); it takes '٣' (Arabic-Indic 3) and '1_0' silently
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text(f"file,label\na.png,{label}\n", encoding="utf-8")
    fails(tmp_path, re.escape(f"row 2 has label {label!r}, not a class number; write labels as plain digits 0-9"),
          starts=tmp_path / "labels.csv")


def test_a_first_row_is_a_header_only_when_it_is_file_label(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("a.png,x\nb.png,2\n")  # was dropped as a header: "no label for a.png"
    fails(tmp_path, re.escape("row 1 has label 'x', not a class number (the only header accepted is 'file,label')"),
          starts=tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text(" File , Label \na.png,1\nb.png,2\n")
    assert load(tmp_path).y.tolist() == [1, 2]


def test_class_folders_named_with_other_digits_are_names_not_numbers(tmp_path: Path) -> None:
    for d in ("\u00b2", "7"):  # '²'.isdigit() is True, int('²') raised
        (tmp_path / d).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / d / "a.png")
    assert load(tmp_path).y.tolist() == [0, 1]  # sorted index: "7" < "²"


def test_duplicate_keys_in_labels_json_are_refused(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "labels.json").write_text('{"a.png": 1, "a.png": 3}')
    fails(tmp_path, re.escape("entry 'a.png' appears twice; keep one label per file"),
          starts=tmp_path / "labels.json")


def test_deeply_nested_labels_json_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "labels.json").write_text("[" * 100000 + "]" * 100000)
    fails(tmp_path, "labels.json: nested too deeply", starts=tmp_path / "labels.json")


def test_names_with_control_characters_and_non_utf8_bytes_stay_text(tmp_path: Path) -> None:
    odd = ["a\x1b[31m.png", "b\x07\x1e.png", "c\nd.png"]
    (tmp_path / "flat").mkdir()
    for name in odd:
        Image.new("RGB", (8, 8)).save(tmp_path / "flat" / name)
    (tmp_path / "flat" / "labels.csv").write_text("file,label\n" + "".join(f'"{n}",1\n' for n in odd))
    assert load(tmp_path / "flat").names == tuple(sorted(odd))  # quoted line breaks and \x1e kept in the name
    (tmp_path / "classes" / "0").mkdir(parents=True)
    raw = os.fsencode(tmp_path / "classes" / "0") + b"/\xff.png"
    Image.new("RGB", (8, 8)).save(os.fsdecode(raw))
    names = load(tmp_path / "classes").names
    assert names == ("0/\\xff.png",)
    names[0].encode("utf-8")  # a lone surrogate here made report writing raise UnicodeEncodeError (exit 3)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(mean=[0.5], std=[float("inf")]), r"std inf: values must be finite"),
    (dict(mean=[0.5], std=[float("nan")]), r"std nan: values must be finite"),
    (dict(mean=[float("nan")], std=[0.5]), r"mean nan: values must be finite"),
    (dict(mean=[0.5, float("inf"), 0.5], std=[0.5]), r"mean 0\.5,inf,0\.5: values must be finite"),
    (dict(mean=[0.5], std=[-1.0]), r"std -1,-1,-1: standard deviations must be positive; give values > 0"),
])
def test_non_finite_or_non_positive_mean_std(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        normalization(channels=3, **kwargs)


def test_safetensors_header_declaring_more_than_the_file_holds(tmp_path: Path) -> None:
    import json

    header = json.dumps({"x": {"dtype": "U8", "shape": [10**9, 3, 32, 32], "data_offsets": [0, 8]},
                         "y": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]}}).encode()
    path = tmp_path / "lie.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    fails(path, r"cannot read the \.safetensors file \(.*invalid shape, data type, or offset", shape=(3, 32, 32))
