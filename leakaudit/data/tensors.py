"""Samples a Python caller holds as tensors: ``(images, labels)``, images in [0, 1] of shape (N, C, H, W).

The same checks as a file's samples (labels in range, values in [0, 1], the model's input shape), named by
what the caller passed rather than a path.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError
from .arrays import check_labels
from .interface import Normalization, SampleBatch

SOURCE = "tensors (in memory)"


def is_tensor_pair(data: Any) -> bool:
    """``(images, labels)``: a tuple or list of two tensors (what a ``TensorDataset`` or a data loader yields)."""
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


def sample_shape(data: Any) -> tuple[int, ...] | None:
    """One sample's shape when ``data`` is an ``(images, labels)`` pair, else None."""
    return tuple(int(d) for d in data[0].shape[1:]) if is_tensor_pair(data) and data[0].dim() >= 2 else None


def batch_from_tensors(data: Any, *, input_shape: tuple[int, ...], num_classes: int,
                       normalization: Normalization) -> SampleBatch:
    if not is_tensor_pair(data):
        raise DataError(f"data: got {type(data).__name__}; pass a path (image folder, .npz, .npy, .safetensors), a "
                        "SampleBatch, or (images, labels) tensors with images in [0, 1] of shape (N, C, H, W)")
    images, labels = data
    shape = tuple(int(d) for d in images.shape[1:])
    if images.dim() < 2 or shape != tuple(input_shape):
        raise DataError(f"data: images of shape {tuple(images.shape)} do not fit the model's input "
                        f"{tuple(input_shape)}; pass images of shape (N, {', '.join(map(str, input_shape))})")
    if len(images) == 0:
        raise DataError("data: the images tensor holds no samples; pass at least one")
    pixels = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(pixels).all():
        raise DataError("data: the images hold NaN or infinite values; pass finite pixel values in [0, 1]")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0.0 or high > 1.0:
        raise DataError(f"data: image values range over [{low:.3g}, {high:.3g}], not [0, 1]; pass the pixels "
                        "before normalization (e.g. divide 8-bit images by 255) and name the model's "
                        "normalization with normalize= (or mean=/std=)")
    y = check_labels("data: labels", labels.detach().to("cpu").numpy(), len(pixels), num_classes)
    return SampleBatch(x=normalization.to_model(pixels), y=torch.from_numpy(y), pixels=pixels,
                       names=tuple(f"sample[{i}]" for i in range(len(pixels))), source=SOURCE,
                       normalization=normalization)
