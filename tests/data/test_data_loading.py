"""Loading samples from image folders, .npz/.npy and .safetensors, brought to the model's input shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leakaudit.data import load_samples, normalization

RNG = np.random.default_rng(0)
EXAMPLE_SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "samples"


def rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(path)
    return path


def load(path: Path, shape=(3, 8, 8), classes=10, norm=None, **kw):
    norm = norm or normalization("none", channels=shape[0] if len(shape) == 3 else 1)
    return load_samples(path, input_shape=shape, num_classes=classes, normalization=norm, **kw)


def test_class_folders_give_labels_by_sorted_folder_name(tmp_path: Path) -> None:
    for cls, files in {"dog": ["b.png", "a.png"], "cat": ["z.png"]}.items():
        for f in files:
            save(tmp_path / cls / f, rgb(8, 8))
    batch = load(tmp_path)
    assert batch.names == ("cat/z.png", "dog/a.png", "dog/b.png")
    assert batch.y.tolist() == [0, 1, 1]
    assert batch.y.dtype == torch.int64
    assert batch.source == str(tmp_path)


def test_numeric_class_folders_keep_their_class_numbers(tmp_path: Path) -> None:
    save(tmp_path / "7" / "a.png", rgb(8, 8))
    save(tmp_path / "3" / "b.png", rgb(8, 8))
    assert load(tmp_path).y.tolist() == [3, 7]


def test_labels_csv_and_json(tmp_path: Path) -> None:
    a, b = rgb(8, 8), rgb(8, 8)
    save(tmp_path / "csv" / "b.png", b)
    save(tmp_path / "csv" / "a.png", a)
    (tmp_path / "csv" / "labels.csv").write_text("file,label\nb.png,4\na.png,2\n")
    batch = load(tmp_path / "csv")
    assert batch.names == ("a.png", "b.png") and batch.y.tolist() == [2, 4]
    # pixels are the files' own values in [0, 1], channels first
    assert torch.allclose(batch.pixels[0], torch.from_numpy(a).permute(2, 0, 1).float() / 255, atol=1e-6)

    save(tmp_path / "json" / "a.png", a)
    (tmp_path / "json" / "labels.json").write_text(json.dumps({"a.png": 9}))
    assert load(tmp_path / "json").y.tolist() == [9]


def test_resize_is_pil_bilinear_and_channels_convert(tmp_path: Path) -> None:
    img = rgb(40, 50)
    save(tmp_path / "x" / "a.png", img)
    (tmp_path / "x" / "labels.csv").write_text("a.png,1\n")
    batch = load(tmp_path / "x", shape=(3, 16, 16))
    ref = np.asarray(Image.fromarray(img).resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    assert batch.pixels.shape == (1, 3, 16, 16)
    # PIL's 8-bit resize rounds to 1/255; ours resizes in float
    assert np.abs(batch.pixels[0].permute(1, 2, 0).numpy() - ref).max() <= 1 / 255 + 1e-6

    grey = load(tmp_path / "x", shape=(1, 40, 50))
    ref_l = np.asarray(Image.fromarray(img).convert("L"), dtype=np.float32) / 255
    assert np.abs(grey.pixels[0, 0].numpy() - ref_l).max() <= 1 / 255 + 1e-6


def test_grey_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    save(tmp_path / "g" / "a.png", rgb(8, 8), mode="L")
    save(tmp_path / "g" / "b.png", RNG.integers(0, 256, size=(8, 8, 4), dtype=np.uint8))
    (tmp_path / "g" / "labels.csv").write_text("a.png,0\nb.png,1\n")
    batch = load(tmp_path / "g")
    grey = batch.pixels[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    rgba = np.asarray(Image.open(tmp_path / "g" / "b.png"), dtype=np.float32)[:, :, :3] / 255
    assert np.allclose(batch.pixels[1].permute(1, 2, 0).numpy(), rgba, atol=1e-6)


def test_normalization_is_applied_and_pixels_stay_in_unit_range(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", x=x, y=np.array([0, 1, 2]))
    norm = normalization("cifar10")
    batch = load(tmp_path / "s.npz", norm=norm)
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    assert torch.allclose(batch.x, (batch.pixels - mean) / std, atol=1e-6)
    assert 0 <= batch.pixels.min() and batch.pixels.max() <= 1
    assert torch.allclose(norm.to_pixels(batch.x), batch.pixels, atol=1e-6)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NCHW-float"])
def test_npz_layouts_and_dtypes_give_the_same_pixels(tmp_path: Path, layout: str) -> None:
    x = RNG.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    expected = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    arr = {"NHWC": x, "NCHW": x.transpose(0, 3, 1, 2), "NCHW-float": x.transpose(0, 3, 1, 2) / 255.0}[layout]
    np.savez(tmp_path / "s.npz", x=arr, y=np.array([3, 4]))
    batch = load(tmp_path / "s.npz")
    assert torch.allclose(batch.pixels, expected, atol=1e-6)
    assert batch.names == ("s.npz[0]", "s.npz[1]")


def test_npz_one_hot_labels_and_grey_arrays(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(2, 8, 8), dtype=np.uint8)  # (N, H, W): grey
    np.savez(tmp_path / "s.npz", x=x, y=np.eye(4)[[2, 0]])
    batch = load(tmp_path / "s.npz", shape=(1, 8, 8), classes=4)
    assert batch.y.tolist() == [2, 0]
    assert torch.allclose(batch.pixels[:, 0], torch.from_numpy(x).float() / 255)


def test_safetensors_with_x_and_y(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    x = torch.rand(3, 3, 8, 8)
    save_file({"x": x, "y": torch.tensor([1, 2, 3])}, str(tmp_path / "s.safetensors"))
    batch = load(tmp_path / "s.safetensors")
    assert torch.allclose(batch.pixels, x) and batch.y.tolist() == [1, 2, 3]


def test_original_shapes_record_what_was_resized(tmp_path: Path) -> None:
    save(tmp_path / "f" / "a.png", rgb(40, 50))
    save(tmp_path / "f" / "b.png", rgb(8, 8), mode="L")
    (tmp_path / "f" / "labels.csv").write_text("a.png,1\nb.png,2\n")
    batch = load(tmp_path / "f")
    assert batch.original_shapes == ((3, 40, 50), (1, 8, 8))  # resized; grey converted to RGB
    assert batch.subset(1).original_shapes == ((3, 40, 50),)
    np.savez(tmp_path / "s.npz", x=RNG.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8), y=[0, 1])
    assert load(tmp_path / "s.npz").original_shapes == ((3, 8, 8),) * 2  # arrays: the model's shape, as given


def test_flat_features(tmp_path: Path) -> None:
    x = RNG.random((4, 6)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=[0, 1, 0, 1])
    batch = load_samples(tmp_path / "f.npz", input_shape=(6,), num_classes=2,
                         normalization=normalization("none", channels=1))
    assert batch.x.shape == (4, 6) and torch.allclose(batch.pixels, torch.from_numpy(x))


def test_limit_takes_the_first_samples_in_sorted_order(tmp_path: Path) -> None:
    for name in ("c.png", "a.png", "b.png"):
        save(tmp_path / name, rgb(8, 8))
    (tmp_path / "labels.csv").write_text("c.png,2\na.png,0\nb.png,1\n")
    batch = load(tmp_path, limit=2)
    assert batch.names == ("a.png", "b.png") and len(batch) == 2


def test_bundled_example_samples_load_at_the_example_models_shape() -> None:
    batch = load(EXAMPLE_SAMPLES, shape=(3, 32, 32))
    assert len(batch) == 6 and batch.pixels.shape == (6, 3, 32, 32)
    assert len(set(batch.y.tolist())) == 6


def test_sixteen_bit_png_keeps_its_range(tmp_path: Path) -> None:
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbffile,label\r\na.png,1\r\n")  # BOM + CRLF, as Excel writes
    batch = load(tmp_path, shape=(1, 2, 2))
    assert torch.allclose(batch.pixels[0, 0], torch.from_numpy(arr.astype(np.float32) / 65535), atol=1e-6)
    assert batch.y.tolist() == [1]
