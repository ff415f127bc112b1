"""Images in reports: small PNG data URIs, so one HTML file carries its evidence without network access."""

from __future__ import annotations

import base64
import io
import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where an image is made: checking a data URI (leakaudit render) needs neither
    import numpy as np
    import torch

MAX_SIDE = 128  # larger images are downscaled in reports (the JSON stays small; metrics use full size)
_DATA_URI = re.compile(r"^data:image/png;base64,[A-Za-z0-9+/]+={0,2}$")


def is_png_data_uri(value: object) -> bool:
    """True for the only image form a report may contain; anything else (a URL, javascript:) is dropped."""
    return isinstance(value, str) and bool(_DATA_URI.match(value))


def _to_hwc(pixels: torch.Tensor) -> np.ndarray:
    """One sample in [0,1] -> uint8 (H, W, C) with C in {1, 3}."""
    import numpy as np
    import torch

    t = pixels.detach().float().cpu().clamp(0, 1)
    if t.dim() == 1:  # feature vector: shown as a near-square grayscale grid, zero-padded
        side = math.ceil(math.sqrt(t.numel()))
        t = torch.nn.functional.pad(t, (0, side * side - t.numel())).view(1, side, side)
    elif t.dim() == 2:
        t = t.unsqueeze(0)
    elif t.dim() > 3:
        t = t.flatten(0, t.dim() - 3)
    if t.shape[0] not in (1, 3):  # e.g. 2 or 4+ channels: show the first one
        t = t[:1]
    return (t.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def png_data_uri(pixels: torch.Tensor) -> str:
    from PIL import Image

    array = _to_hwc(pixels)
    grey = array.shape[2] == 1
    image = Image.fromarray(array[:, :, 0] if grey else array, mode="L" if grey else "RGB")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
