"""A folder of images: class sub-folders, or flat with ``labels.csv`` / ``labels.json``.

Labels of class sub-folders: when every folder name is a non-negative integer ("0", "3", "7") the name is
the label, so a folder holding only some classes keeps the model's class numbering; otherwise the index
of the folder in sorted order, as torchvision's ImageFolder numbers classes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABEL_FILES = ("labels.csv", "labels.json")
_EXT_LIST = "/".join(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class FolderItem:
    path: Path
    name: str  # relative to the folder, "/"-separated
    label: int


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _check_image_name(p: Path) -> None:
    if p.is_dir():
        raise DataError(f"{p}: nested folder inside a class folder; class folders hold images only")
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{p}: unsupported file in a sample folder (images are {_EXT_LIST}); "
                        "move it out of the folder or convert it")


def list_folder(folder: Path) -> list[FolderItem]:
    entries = [p for p in _visible(folder) if p.name not in LABEL_FILES]
    label_files = [folder / n for n in LABEL_FILES if (folder / n).is_file()]
    dirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if not p.is_dir()]
    if dirs and files:
        raise DataError(f"{folder}: mixes image files ({files[0].name}, ...) and class folders "
                        f"({dirs[0].name}/, ...); use class sub-folders only, or images with labels.csv")
    if len(label_files) > 1:
        raise DataError(f"{folder}: has both labels.csv and labels.json; keep one")
    if dirs and label_files:
        raise DataError(f"{folder}: has class sub-folders and {label_files[0].name}; give labels one way only")
    if dirs:
        return _class_folders(folder, dirs)
    for p in files:
        _check_image_name(p)
    if not files:
        raise DataError(f"{folder}: folder holds no images ({_EXT_LIST}); point --data at a folder of images")
    if not label_files:
        raise DataError(f"{folder}: images have no labels; add labels.csv (rows 'file,label') or labels.json "
                        "({\"file\": label}), or sort the images into class sub-folders")
    labels = _read_labels(label_files[0], {p.name for p in files}, folder)
    return [FolderItem(p, p.name, labels[p.name]) for p in files]


def _class_folders(folder: Path, dirs: list[Path]) -> list[FolderItem]:
    names = [d.name for d in dirs]
    numeric = all(n.isdigit() for n in names)
    items: list[FolderItem] = []
    for i, d in enumerate(dirs):
        label = int(d.name) if numeric else i
        for p in _visible(d):
            _check_image_name(p)
            items.append(FolderItem(p, f"{d.name}/{p.name}", label))
    if not items:
        raise DataError(f"{folder}: the class folders hold no images ({_EXT_LIST}); add images to them")
    return items


def _read_labels(path: Path, present: set[str], folder: Path) -> dict[str, int]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the labels file ({e}); save it as UTF-8 text") from e
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
    rows = [(i, r) for i, r in enumerate(csv.reader(text.splitlines()), 1) if r and any(c.strip() for c in r)]
    out = []
    for k, (i, row) in enumerate(rows):
        if len(row) != 2:
            raise DataError(f"{path}: row {i} has {len(row)} fields; each row is 'file,label'")
        name, label = row[0].strip(), row[1].strip()
        if k == 0 and not _is_int(label):
            continue  # a header row such as "file,label"
        if not _is_int(label):
            raise DataError(f"{path}: row {i} has label {label!r}; labels are class numbers 0..N-1")
        out.append((f"row {i}", name, int(label)))
    return out


def _parse_json(path: Path, text: str) -> list[tuple[str, str, int]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e}); write an object {{\"file.png\": label, ...}}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{\"file.png\": label, ...}}, got {type(data).__name__}")
    out = []
    for name, label in data.items():
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{path}: {name!r} has label {label!r}; labels are class numbers 0..N-1")
        out.append((f"entry {name!r}", name, label))
    return out


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


def read_image(path: Path) -> np.ndarray:
    """Pixels as float32 (H, W, C) in [0, 1] with the file's own channels (1, 2, 3 or 4)."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_array(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e}); re-save it as PNG or "
                        "remove it") from e


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
