"""Bring pixels to the model's input shape: value range, layout, channels, size.

Everything here works on float32 arrays in [0, 1]; resizing uses PIL's bilinear filter per channel (mode "F",
so no rounding to 8 bits), the same filter for image files and arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")


def to_unit_range(path: Path | str, x: np.ndarray) -> np.ndarray:
    """uint8 (or integers 0-255) -> /255; floats must already be in [0, 1]. Rejects NaN/inf."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: samples 'x' have dtype {x.dtype}; use uint8 0-255 or floats in [0, 1]")
    if x.size == 0:
        raise DataError(f"{path}: holds no samples (x has shape {tuple(x.shape)}); add at least one sample")
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: integer pixels range {lo}..{hi}; use uint8 0-255 or floats in [0, 1]")
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        n = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{path}: {n} NaN/inf value(s) in 'x'; remove or fix those samples")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise DataError(f"{path}: float pixels range {lo:.4g}..{hi:.4g}; give unnormalized pixels in [0, 1] "
                        "(leakaudit applies --normalize itself) or uint8 0-255")
    return np.clip(x, 0.0, 1.0)


def to_nhwc(path: Path | str, x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """(N, C, H, W) / (N, H, W, C) / (N, H, W) -> (N, H, W, C) with the data's own channels and size."""
    c, h, w = input_shape
    if x.ndim == 3:
        return x[..., None]
    if x.ndim != 4:
        raise DataError(f"{path}: samples 'x' have shape {tuple(x.shape)}; expected images (N, C, H, W), "
                        f"(N, H, W, C) or (N, H, W) for a model input of {_fmt(input_shape)}")
    if x.shape[1:] == (c, h, w):
        return x.transpose(0, 2, 3, 1)
    if x.shape[1:] == (h, w, c):
        return x
    chan1, chan3 = x.shape[1] in (1, 2, 3, 4), x.shape[3] in (1, 2, 3, 4)
    if chan3 and not chan1:
        return x
    if chan1:  # ambiguous or channels-first: torch's convention wins
        return x.transpose(0, 2, 3, 1)
    raise DataError(f"{path}: samples 'x' have shape {tuple(x.shape)}: no channel axis of 1-4 found; "
                    f"the model takes {_fmt(input_shape)}; save them as (N, C, H, W)")


def fit(source: Path | str, pixels: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """One image (H, W, C) in [0, 1] -> (C, H, W) of the model's shape: channels converted, then resized."""
    c, h, w = input_shape
    pixels = _channels(source, pixels, c)
    if pixels.shape[:2] != (h, w):
        pixels = np.stack([_resize(pixels[:, :, i], h, w) for i in range(c)], axis=2)
    return np.clip(pixels, 0.0, 1.0).transpose(2, 0, 1)


def _channels(source: Path | str, px: np.ndarray, c: int) -> np.ndarray:
    have = px.shape[2]
    if have == c:
        return px
    if have in (2, 4):  # drop alpha: the model sees colour only
        px, have = px[:, :, : have - 1], have - 1
        if have == c:
            return px
    if have == 1 and c == 3:
        return np.repeat(px, 3, axis=2)
    if have == 3 and c == 1:
        return (px @ _LUMA)[:, :, None]
    raise DataError(f"{source}: has {px.shape[2]} channel(s) but the model takes {c}; convert the data to "
                    f"{c} channel(s) (1 = grey, 3 = RGB) or check --input-shape")


def _resize(channel: np.ndarray, h: int, w: int) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # float32 2-D -> mode "F"
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
