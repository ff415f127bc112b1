"""Bring pixels to the model's input shape: value range, layout, and for image files channels and size.

Everything here works on float32 arrays in [0, 1]. Image files are converted to the model's channels and
resized with PIL's bilinear filter per channel (mode "F", so no rounding to 8 bits). Arrays only change
layout: one of another size or channel count is refused (``array_layout``), since an array is taken to be
prepared for the model and a silent resize would score the attack against pixels the user never had.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError, setting_ref

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")


def to_unit_range(path: Path | str, x: np.ndarray) -> np.ndarray:
    """uint8 (or integers 0-255) -> /255; floats must already be in [0, 1]. Rejects NaN/inf."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: samples 'x' have dtype {x.dtype}; use uint8 0-255 or floats in [0, 1]")
    if x.size == 0:
        raise DataError(f"{path}: holds no samples (x has shape {tuple(x.shape)}); add at least one sample")
    if np.issubdtype(x.dtype, np.integer):
        least, most = int(x.min()), int(x.max())
        if least < 0 or most > 255:
            raise DataError(f"{path}: integer pixels range {least}..{most}; use uint8 0-255 or floats in [0, 1]")
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        n = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{path}: {n} NaN/inf value(s) in 'x'; remove or fix those samples")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise DataError(f"{path}: float pixels range {lo:.4g}..{hi:.4g}; give unnormalized pixels in [0, 1] "
                        f"(leakaudit applies {setting_ref('normalize')} itself) or uint8 0-255")
    return np.clip(x, 0.0, 1.0)


def array_layout(path: Path | str, sample: tuple[int, ...], input_shape: tuple[int, ...]) -> str:
    """How one array sample of shape ``sample`` lies in the model's input: "flat", "CHW", "HWC" or "HW".

    Arrays are taken as already prepared, so they must have the model's shape: a sample of another size or
    channel count is refused rather than silently resized or converted (image folders are resized by design).
    Checked on the declared shape, before any sample is read.
    """
    if len(input_shape) == 1:
        if sample != tuple(input_shape):
            raise DataError(f"{path}: samples 'x' have shape {_fmt(sample)} but the model takes {_fmt(input_shape)} "
                            f"features; save x as (N, {input_shape[0]})")
        return "flat"
    c, h, w = input_shape
    layouts: dict[tuple[int, ...], str] = {(c, h, w): "CHW", (h, w, c): "HWC", **({(h, w): "HW"} if c == 1 else {})}
    if sample in layouts:
        return layouts[sample]
    wanted = " or ".join(_fmt(("N", *s)) for s in layouts)
    raise DataError(f"{path}: samples 'x' have shape {_fmt(sample)} but the model takes {_fmt(input_shape)}; "
                    f"arrays are used as they are (never resized or converted): save x as {wanted}, or use an "
                    "image folder, whose images are resized to the model's input")


def to_chw(x: np.ndarray, layout: str) -> np.ndarray:
    """(N, *sample) in ``layout`` (from ``array_layout``) -> (N, C, H, W), or (N, F) unchanged."""
    if layout == "HWC":
        return x.transpose(0, 3, 1, 2)
    if layout == "HW":
        return x[:, None]
    return x


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
                    f"{c} channel(s) (1 = grey, 3 = RGB) or check {setting_ref('input_shape')}")


def _resize(channel: np.ndarray, h: int, w: int) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # float32 2-D -> mode "F"
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
