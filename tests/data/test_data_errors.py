"""Every bad sample input gives one DataError line that starts with the input and says what to do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leakaudit.data import load_samples, normalization
from leakaudit.errors import ConfigError, DataError

RNG = np.random.default_rng(1)


def png(path: Path, channels: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8, channels) if channels > 1 else (8, 8)
    Image.fromarray(RNG.integers(0, 256, size=shape, dtype=np.uint8)).save(path)
    return path


def load(path: Path, shape=(3, 8, 8), classes=10, **kw):
    return load_samples(path, input_shape=shape, num_classes=classes,
                        normalization=normalization("none", channels=shape[0]), **kw)


def fails(path: Path, pattern: str, *, starts: Path | None = None, error=DataError, **kw) -> str:
    with pytest.raises(error, match=pattern) as info:
        load(path, **kw)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(starts or path)), message
    return message


def test_missing_path(tmp_path: Path) -> None:
    fails(tmp_path / "nope", "no such file or folder; point data at")


def test_empty_folder(tmp_path: Path) -> None:
    fails(tmp_path, "folder holds no images")


def test_mixed_folder(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "cat" / "b.png")
    fails(tmp_path, "mixes image files .* and class folders")


def test_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    bad = tmp_path / "cat" / "broken.png"
    bad.write_bytes(b"not a png at all")
    fails(tmp_path, re.escape("cannot read the image") + ".*re-save it as PNG", starts=bad)


def test_unsupported_extension_as_data_and_inside_a_folder(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    fails(tmp_path / "x.txt", r"unsupported sample file '\.txt'")
    png(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "notes.md").write_text("x")
    (tmp_path / "imgs" / "labels.csv").write_text("a.png,1\n")
    fails(tmp_path / "imgs", "unsupported file in a sample folder", starts=tmp_path / "imgs" / "notes.md")


def test_single_image_needs_a_folder_with_labels(tmp_path: Path) -> None:
    fails(png(tmp_path / "a.png"), "single image needs a label")


def test_channels_that_cannot_be_converted(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("a.png,0\n")
    fails(tmp_path, r"has 3 channel\(s\) but the model takes 2", shape=(2, 8, 8), starts=tmp_path / "a.png")


def test_array_of_another_shape_is_refused_not_resized(tmp_path: Path) -> None:
    # issue 11: 3x64x64 arrays fed to a 1x28x28 model were resized and converted to grey without a word
    np.savez(tmp_path / "s.npz", x=np.zeros((2, 3, 64, 64), np.uint8), y=[0, 1])
    fails(tmp_path / "s.npz", re.escape("samples 'x' have shape (3, 64, 64) but the model takes (1, 28, 28); "
                                        "arrays are used as they are (never resized or converted): save x as "
                                        "(N, 1, 28, 28) or (N, 28, 28, 1) or (N, 28, 28), or use an image folder"),
          shape=(1, 28, 28))
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 1, 8, 8), np.uint8), y=[0, 1])  # right size, grey for RGB
    fails(tmp_path / "c.npz", re.escape("have shape (1, 8, 8) but the model takes (3, 8, 8)"))
    np.savez(tmp_path / "r.npz", x=np.zeros((2, 7, 8, 9), np.uint8), y=[0, 1])
    fails(tmp_path / "r.npz", re.escape("have shape (7, 8, 9)"))


def test_images_for_a_flat_model_input(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("a.png,0\n")
    fails(tmp_path, r"images need a model input of shape \(C, H, W\)", shape=(10,))


def test_flat_features_of_the_wrong_size(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 5), np.float32), y=[0, 1])
    fails(tmp_path / "f.npz", r"model takes \(6,\) features", shape=(6,))


def test_labels_out_of_range_in_folders_and_arrays(tmp_path: Path) -> None:
    png(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "labels.csv").write_text("a.png,12\n")
    fails(tmp_path / "d", "label 12 is out of range .* labels must be 0..9", starts=tmp_path / "d" / "a.png")
    np.savez(tmp_path / "s.npz", x=np.zeros((2, 3, 8, 8), np.uint8), y=[1, -1])
    fails(tmp_path / "s.npz", "label -1 of sample 1 is out of range")
    png(tmp_path / "classes" / "12" / "a.png")
    fails(tmp_path / "classes", "label 12 is out of range", starts=tmp_path / "classes" / "12" / "a.png")


def test_labels_missing(tmp_path: Path) -> None:
    png(tmp_path / "flat" / "a.png")
    fails(tmp_path / "flat", "images have no labels; add labels.csv")
    png(tmp_path / "some" / "a.png")
    png(tmp_path / "some" / "b.png")
    (tmp_path / "some" / "labels.csv").write_text("a.png,1\n")
    fails(tmp_path / "some", "no label for 'b.png'", starts=tmp_path / "some" / "labels.csv")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.uint8))
    fails(tmp_path / "x.npy", "has no labels 'y'")


def test_labels_csv_naming_a_missing_file(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("file,label\na.png,1\nghost.png,2\n")
    fails(tmp_path, "row 3 names 'ghost.png', which is not an image", starts=tmp_path / "labels.csv")


def test_labels_file_with_a_bad_label_or_bad_json(tmp_path: Path) -> None:
    png(tmp_path / "c" / "a.png")
    (tmp_path / "c" / "labels.csv").write_text("a.png,1\na.png,cat\n")
    fails(tmp_path / "c", "row 2 has label 'cat'", starts=tmp_path / "c" / "labels.csv")
    png(tmp_path / "j" / "a.png")
    (tmp_path / "j" / "labels.json").write_text("{broken")
    fails(tmp_path / "j", "invalid JSON", starts=tmp_path / "j" / "labels.json")


def test_two_label_files_or_labels_with_class_folders(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("a.png,1\n")
    (tmp_path / "labels.json").write_text('{"a.png": 1}')
    fails(tmp_path, "both labels.csv and labels.json")


def test_nested_folder_inside_a_class_folder(tmp_path: Path) -> None:
    png(tmp_path / "cat" / "deeper" / "a.png")
    fails(tmp_path, "nested folder inside a class folder", starts=tmp_path / "cat" / "deeper")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_values(tmp_path: Path, bad: float) -> None:
    x = np.full((2, 3, 8, 8), 0.5, np.float32)
    x[1, 0, 0, 0] = bad
    np.savez(tmp_path / "s.npz", x=x, y=[0, 1])
    fails(tmp_path / "s.npz", r"1 NaN/inf value\(s\) in 'x'")


def test_normalized_floats_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.full((1, 3, 8, 8), -1.5, np.float32), y=[0])
    fails(tmp_path / "s.npz", r"float pixels range -1\.5\.\.-1\.5; give unnormalized pixels in \[0, 1\]")


def test_npz_without_x_and_corrupt_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", images=np.zeros((1, 3, 8, 8)), y=[0])
    fails(tmp_path / "s.npz", r"no array named 'x' \(found images, y\)")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    fails(tmp_path / "bad.npz", "cannot read the .npz file")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    fails(tmp_path / "bad.safetensors", "cannot read the .safetensors file")


def test_empty_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((0, 3, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    fails(tmp_path / "s.npz", "holds no samples")


def test_label_count_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((2, 3, 8, 8), np.uint8), y=[0, 1, 2])
    fails(tmp_path / "s.npz", r"labels 'y' have shape \(3,\) for 2 samples")


def test_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="limit=0: must be a positive number of samples; give 1 or more"):
        load(tmp_path, limit=0)


def test_corrupt_npy_and_pickled_arrays(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    fails(tmp_path / "bad.npy", "cannot read the .npy file")
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    fails(tmp_path / "obj.npy", "not a plain numeric array")


def test_normalization_for_another_channel_count(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((1, 1, 8, 8), np.uint8), y=[0])
    with pytest.raises(ConfigError, match=r"normalize cifar10: 3 channel values .* 1 channel"):
        load_samples(tmp_path / "s.npz", input_shape=(1, 8, 8), num_classes=2, normalization=normalization("cifar10"))
