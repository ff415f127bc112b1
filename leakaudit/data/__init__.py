"""The user's samples: an image folder, ``.npz``/``.npy`` or ``.safetensors``, brought to the model's input.

``load_samples`` returns a ``SampleBatch`` whose ``pixels`` are the [0, 1] originals at the model's input
size (what reconstructions are scored against) and whose ``x`` is ``normalization.to_model(pixels)``.
Order is deterministic: sorted file names, or the array order. ``original_shapes`` records each sample's
(C, H, W) as read, before images were converted and resized to the model's input (arrays never are).

Only regular files are read: a FIFO would block forever and ``/dev/zero`` never ends. Images above
``MAX_IMAGE_PIXELS`` and arrays above ``MAX_READ_BYTES`` are refused before they are decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, argument_ref, setting_ref
from .arrays import ARRAY_EXTENSIONS, MAX_READ_BYTES, check_labels, read_arrays
from .convert import array_layout, fit, to_chw, to_unit_range
from .folder import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, check_regular, list_folder, read_image
from .interface import Normalization, SampleBatch
from .normalize import PRESETS, normalization


def load_samples(path: str | Path, *, input_shape: tuple[int, ...], num_classes: int,
                 normalization: Normalization, limit: int | None = None) -> SampleBatch:
    path = Path(path)
    if limit is not None and limit < 1:
        # a Python caller's argument: no command has a flag for it (--samples draws from every sample loaded)
        raise ConfigError(f"limit={limit}: must be a positive number of samples; give 1 or more, or None for all")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; point {argument_ref('data')} at an image folder, .npz, "
                        ".npy or .safetensors file")
    _check_normalization(path, normalization, input_shape)
    if not path.is_dir():  # a FIFO would block forever, /dev/zero never ends
        check_regular(path, f"point {argument_ref('data')} at an image folder, .npz, .npy or .safetensors file")
    if path.is_dir():
        pixels, labels, names, shapes = _from_folder(path, input_shape, num_classes, limit)
    elif path.suffix.lower() in ARRAY_EXTENSIONS:
        pixels, labels, names, shapes = _from_arrays(path, input_shape, num_classes, limit)
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
        original_shapes=tuple(shapes),
    )


def _image_shape(path: Path, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise DataError(f"{path}: images need a model input of shape (C, H, W) but the model takes "
                        f"{tuple(input_shape)}; use .npz/.safetensors samples of shape (N, "
                        f"{', '.join(map(str, input_shape))}) or pass {setting_ref('input_shape')} C,H,W")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def _from_folder(path: Path, input_shape: tuple[int, ...], num_classes: int, limit: int | None):
    shape = _image_shape(path, input_shape)
    items = list_folder(path)[:limit]
    for item in items:
        if not 0 <= item.label < num_classes:
            raise DataError(f"{item.path}: label {item.label} is out of range for a model with {num_classes} "
                            f"classes; labels must be 0..{num_classes - 1}")
    fitted, originals = [], []
    for item in items:  # one full-size image in memory at a time
        img = read_image(item.path)
        originals.append((img.shape[2], img.shape[0], img.shape[1]))
        fitted.append(fit(item.path, img, shape))
    labels = np.array([item.label for item in items], dtype=np.int64)
    return np.stack(fitted), labels, [item.name for item in items], originals


def _from_arrays(path: Path, input_shape: tuple[int, ...], num_classes: int, limit: int | None):
    if len(input_shape) != 1:
        _image_shape(path, input_shape)
    x, y = read_arrays(path, lambda sample: array_layout(path, sample, input_shape), limit)
    labels = check_labels(path, y, x.shape[0], num_classes)
    pixels = to_chw(to_unit_range(path, x), array_layout(path, x.shape[1:], input_shape))
    names = [f"{path.name}[{i}]" for i in range(pixels.shape[0])]
    return pixels, labels, names, [tuple(input_shape)] * pixels.shape[0]


def _check_normalization(path: Path, norm: Normalization, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) == 3 and len(norm.mean) not in (1, input_shape[0]):
        raise ConfigError(f"{setting_ref('normalize')} {norm.name}: {len(norm.mean)} channel values for {path} with "
                          f"{input_shape[0]} channel(s); pass normalization(..., channels={input_shape[0]})")


__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "MAX_READ_BYTES", "Normalization", "PRESETS", "SampleBatch",
           "load_samples", "normalization"]
