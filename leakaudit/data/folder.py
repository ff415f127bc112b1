"""A folder of images: class sub-folders, or flat with ``labels.csv`` / ``labels.json``.

Labels of class sub-folders: when every folder name is a non-negative integer ("0", "3", "7") the name is
the label, so a folder holding only some classes keeps the model's class numbering; otherwise the index
of the folder in sorted order, as torchvision's ImageFolder numbers classes. Labels are ASCII digits: ``int()``
would also take "²" or "٣", which no one types as a class number on purpose.

``labels.csv`` rows are ``file,label``; its first row may be exactly the header ``file,label``, nothing else.
``labels.json`` is one object ``{"file": label}`` with each file once.

An image is refused above ``MAX_IMAGE_PIXELS`` (4096x4096) before it is decoded: its header gives the size,
and a 420 KB PNG of one colour can decode to gigabytes. Samples are resized to the model's input anyway, so
a larger photo only needs downscaling first.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, argument_ref
from ..userfiles import file_kind, read_user_text

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABEL_FILES = ("labels.csv", "labels.json")
_EXT_LIST = "/".join(IMAGE_EXTENSIONS)
MAX_IMAGE_PIXELS = 4096 * 4096  # width x height of one image file; 16.8 megapixels, 268 MB as RGBA float32
LABELS_LIMIT = 64 << 20  # bytes of labels.csv / labels.json: about a million rows
CSV_HEADER = ("file", "label")
_LABEL = re.compile(r"-?[0-9]{1,18}")  # ASCII only; 18 digits keep int() far from its 4300-digit limit
_CLASS_DIR = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class FolderItem:
    path: Path
    name: str  # relative to the folder, "/"-separated; always encodable (see _display_name)
    label: int


def check_regular(path: Path, fix: str) -> None:
    """Refuse anything but a regular file (after links): reading a FIFO blocks, a device may never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        what = "a broken link" if os.path.islink(path) else f"cannot be read ({e.strerror or e})"
        raise DataError(f"{path}: {what}; {fix}") from e
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: {file_kind(mode)}, not a regular file; {fix}")


def _display_name(name: str) -> str:
    """A file name as text that can be written anywhere: bytes that are not UTF-8 (kept by Python as lone
    surrogates, which no report or terminal can encode) become ``\\xNN``; control characters stay, escaped on
    output."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _check_image_name(p: Path) -> None:
    if p.is_dir():
        raise DataError(f"{p}: nested folder inside a class folder; class folders hold images only")
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{p}: unsupported file in a sample folder (images are {_EXT_LIST}); "
                        "move it out of the folder or convert it")
    check_regular(p, "remove it from the sample folder")


def list_folder(folder: Path) -> list[FolderItem]:
    entries = [p for p in _visible(folder) if p.name not in LABEL_FILES]
    label_files = [folder / n for n in LABEL_FILES if os.path.lexists(folder / n)]
    dirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if not p.is_dir()]
    _check_layout(folder, dirs, files, label_files)
    if dirs:
        return _class_folders(folder, dirs)
    return _labelled_files(folder, files, label_files)


def _check_layout(folder: Path, dirs: list[Path], files: list[Path], label_files: list[Path]) -> None:
    """One way of labelling: class sub-folders, or image files with one labels file."""
    if dirs and files:
        raise DataError(f"{folder}: mixes image files ({files[0].name}, ...) and class folders "
                        f"({dirs[0].name}/, ...); use class sub-folders only, or images with labels.csv")
    if len(label_files) > 1:
        raise DataError(f"{folder}: has both labels.csv and labels.json; keep one")
    if dirs and label_files:
        raise DataError(f"{folder}: has class sub-folders and {label_files[0].name}; give labels one way only")
    for p in label_files:
        check_regular(p, "make it a text file of labels")


def _labelled_files(folder: Path, files: list[Path], label_files: list[Path]) -> list[FolderItem]:
    for p in files:
        _check_image_name(p)
    if not files:
        raise DataError(f"{folder}: folder holds no images ({_EXT_LIST}); point {argument_ref('data')} at a folder "
                        "of images")
    if not label_files:
        raise DataError(f"{folder}: images have no labels; add labels.csv (rows 'file,label') or labels.json "
                        "({\"file\": label}), or sort the images into class sub-folders")
    labels = _read_labels(label_files[0], {p.name for p in files}, folder)
    return [FolderItem(p, _display_name(p.name), labels[p.name]) for p in files]


def _class_folders(folder: Path, dirs: list[Path]) -> list[FolderItem]:
    names = [d.name for d in dirs]
    numeric = all(_CLASS_DIR.fullmatch(n) for n in names)
    items: list[FolderItem] = []
    for i, d in enumerate(dirs):
        label = int(d.name) if numeric else i
        for p in _visible(d):
            _check_image_name(p)
            items.append(FolderItem(p, _display_name(f"{d.name}/{p.name}"), label))
    if not items:
        raise DataError(f"{folder}: the class folders hold no images ({_EXT_LIST}); add images to them")
    return items


def _read_labels(path: Path, present: set[str], folder: Path) -> dict[str, int]:
    text = read_user_text(path, DataError, missing=f"{path}: no such file; add the labels file",
                          unreadable=f"{path}: cannot read the labels file ({{e}}); save it as UTF-8 text",
                          limit=LABELS_LIMIT).removeprefix("\ufeff")  # Excel writes a BOM
    pairs = _parse_json(path, text) if path.suffix == ".json" else _parse_csv(path, text)
    labels: dict[str, int] = {}
    for where, name, label in pairs:
        if name in labels:
            raise DataError(f"{path}: {where} labels {name!r} a second time; keep one label per file")
        if name not in present:
            raise DataError(f"{path}: {where} names {name!r}, which is not an image in {folder}; "
                            "fix the name or add the file")
        labels[name] = label
    missing = sorted(present - set(labels))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{path}: no label for {missing[0]!r}{more}; add a label for every image in {folder}")
    return labels


def _parse_csv(path: Path, text: str) -> list[tuple[str, str, int]]:
    # newline="": quoted names may hold line breaks, and str.splitlines would also split at \x1c-\x1e, \x85
    try:
        rows = [(i, r) for i, r in enumerate(csv.reader(io.StringIO(text, newline="")), 1)
                if r and any(c.strip() for c in r)]
    except csv.Error as e:
        raise DataError(f"{path}: invalid CSV ({e}); write one 'file,label' row per image") from e
    out = []
    for k, (i, row) in enumerate(rows):
        if len(row) != 2:
            raise DataError(f"{path}: row {i} has {len(row)} fields; each row is 'file,label'")
        name, label = row[0].strip(), row[1].strip()
        if k == 0 and tuple(c.strip().lower() for c in row) == CSV_HEADER:
            continue
        if not _is_int(label):
            header = " (the only header accepted is 'file,label')" if k == 0 else ""
            raise DataError(f"{path}: row {i} has label {label!r}, not a class number{header}; write labels as "
                            "plain digits 0-9, class numbers 0..N-1")
        out.append((f"row {i}", name, int(label)))
    return out


def _parse_json(path: Path, text: str) -> list[tuple[str, str, int]]:
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(path, pairs))
    except ValueError as e:  # JSONDecodeError, or an integer beyond Python's 4300-digit limit
        raise DataError(f"{path}: invalid JSON ({e}); write an object {{\"file.png\": label, ...}}") from e
    except RecursionError as e:
        raise DataError(f"{path}: nested too deeply to be labels; write an object {{\"file.png\": label, ...}}") \
            from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{\"file.png\": label, ...}}, got {type(data).__name__}")
    out = []
    for name, label in data.items():
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{path}: {name!r} has label {label!r}; labels are class numbers 0..N-1")
        out.append((f"entry {name!r}", name, label))
    return out


def _unique_keys(path: Path, pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:  # json.loads would keep the last one silently
            raise DataError(f"{path}: entry {key!r} appears twice; keep one label per file")
        seen[key] = value
    return seen


def _is_int(s: str) -> bool:
    return _LABEL.fullmatch(s) is not None


def read_image(path: Path) -> np.ndarray:
    """Pixels as float32 (H, W, C) in [0, 1] with the file's own channels (1, 2, 3 or 4)."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between 89 and 179 megapixels; its error and warning both mean "too large"
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # lazy: reads the header, not the pixels
                _check_size(path, *img.size)
                img.load()
                arr = _to_array(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: image too large to decode safely ({str(e).rstrip('.')}); {_DOWNSCALE}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e}); re-save it as PNG or "
                        "remove it") from e
    _check_values(path, arr)
    return arr


_DOWNSCALE = ("downscale it to at most 4096x4096 (samples are resized to the model's input anyway) or remove it")


def _check_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: image is {width}x{height} pixels, above the {MAX_IMAGE_PIXELS / 1e6:.1f} "
                        f"megapixels leakaudit decodes per sample; {_DOWNSCALE}")


def _check_values(path: Path, arr: np.ndarray) -> None:
    """Float (mode "F") and 32-bit images may hold NaN or values outside the range the mode implies."""
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: holds NaN/inf pixel values; fix the image or remove it")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise DataError(f"{path}: pixel values range {lo:.4g}..{hi:.4g} after scaling, outside [0, 1]; save float "
                        "images with values in [0, 1], or as 8/16-bit images")


def _to_array(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img, dtype=np.float32) / 65535.0
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
    else:
        if img.mode == "1":
            img = img.convert("L")
        elif img.mode not in ("L", "LA", "RGB", "RGBA"):
            has_alpha = "A" in img.mode or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[:, :, None] if arr.ndim == 2 else arr
