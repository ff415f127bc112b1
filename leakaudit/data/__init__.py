"""The user's samples: an image folder, ``.npz``/``.npy`` or ``.safetensors``, brought to the model's input.

``load_samples`` returns a ``SampleBatch`` whose ``pixels`` are the [0, 1] originals at the model's input
size (what reconstructions are scored against) and whose ``x`` is ``normalization.to_model(pixels)``.
Order is deterministic: sorted file names, or the array order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .arrays import ARRAY_EXTENSIONS, check_labels, read_arrays
from .convert import fit, to_nhwc, to_unit_range
from .folder import IMAGE_EXTENSIONS, list_folder, read_image
from .interface import Normalization, SampleBatch
from .normalize import PRESETS, normalization


def load_samples(path: str | Path, *, input_shape: tuple[int, ...], num_classes: int,
                 normalization: Normalization, limit: int | None = None) -> SampleBatch:
    path = Path(path)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be a positive number of samples")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; point --data at an image folder, .npz, .npy or "
                        ".safetensors file")
    _check_normalization(path, normalization, input_shape)
    if path.is_dir():
        pixels, labels, names = _from_folder(path, input_shape, num_classes, limit)
    elif path.suffix.lower() in ARRAY_EXTENSIONS:
        pixels, labels, names = _from_arrays(path, input_shape, num_classes, limit)
    else:
        hint = " (a single image needs a label: put it in a folder with labels.csv)" \
            if path.suffix.lower() in IMAGE_EXTENSIONS else ""
        raise DataError(f"{path}: unsupported sample file '{path.suffix}'{hint}; use an image folder, .npz, .npy "
                        "or .safetensors")
    px = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    return SampleBatch(
        x=normalization.to_model(px),
        y=torch.from_numpy(labels),
        pixels=px,
        names=tuple(names),
        source=str(path),
        normalization=normalization,
    )


def _image_shape(path: Path, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise DataError(f"{path}: images need a model input of shape (C, H, W) but the model takes "
                        f"{tuple(input_shape)}; use .npz/.safetensors samples of shape (N, "
                        f"{', '.join(map(str, input_shape))}) or pass --input-shape C,H,W")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def _from_folder(path: Path, input_shape: tuple[int, ...], num_classes: int, limit: int | None):
    shape = _image_shape(path, input_shape)
    items = list_folder(path)[:limit]
    for item in items:
        if not 0 <= item.label < num_classes:
            raise DataError(f"{item.path}: label {item.label} is out of range for a model with {num_classes} "
                            f"classes; labels must be 0..{num_classes - 1}")
    pixels = np.stack([fit(item.path, read_image(item.path), shape) for item in items])
    labels = np.array([item.label for item in items], dtype=np.int64)
    return pixels, labels, [item.name for item in items]


def _from_arrays(path: Path, input_shape: tuple[int, ...], num_classes: int, limit: int | None):
    x, y = read_arrays(path)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{path}: holds no samples (x has shape {tuple(x.shape)}); add at least one sample")
    n = x.shape[0]
    labels = check_labels(path, y, n, num_classes)[:limit]
    x = to_unit_range(path, x[:limit])
    if len(input_shape) == 1:  # flat features (N, F): nothing to resize or convert
        if x.shape[1:] != tuple(input_shape):
            raise DataError(f"{path}: samples 'x' have shape {tuple(x.shape)} but the model takes "
                            f"{tuple(input_shape)} features; save x as (N, {input_shape[0]})")
        pixels = x
    else:
        shape = _image_shape(path, input_shape)
        pixels = np.stack([fit(path, img, shape) for img in to_nhwc(path, x, shape)])
    names = [f"{path.name}[{i}]" for i in range(pixels.shape[0])]
    return pixels, labels, names


def _check_normalization(path: Path, norm: Normalization, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) == 3 and len(norm.mean) not in (1, input_shape[0]):
        raise ConfigError(f"--normalize {norm.name}: {len(norm.mean)} channel values for {path} with "
                          f"{input_shape[0]} channel(s); pass normalization(..., channels={input_shape[0]})")


__all__ = ["IMAGE_EXTENSIONS", "Normalization", "PRESETS", "SampleBatch", "load_samples", "normalization"]
