"""The bundled example photos as 32x32 tensors, shared by the benchmarks that need real images
(``bench_conditioning.py``, ``bench_bn_buffers.py``). A benchmark run as ``python benchmarks/NAME.py`` finds this
module beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("astronaut", "chelsea", "coffee", "rocket")  # examples/samples/*.png
SHAPE = (3, 32, 32)
SEEDS = (0, 1, 2)


def pixels(name: str) -> torch.Tensor:
    """examples/samples/NAME.png as (3, 32, 32) floats in [0, 1]."""
    image = Image.open(ROOT / "examples" / "samples" / f"{name}.png").convert("RGB").resize((32, 32))
    return torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
