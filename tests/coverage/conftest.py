"""Shared by the coverage tests: a folder of small synthetic photos with a labels.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest


def _write(folder: Path, n: int, marked: int | None = None) -> Path:
    """``n`` 8x8 photos ``img00.png``... labelled ``i % 4``: smooth structure (SSIM needs it), a gradient times a
    random colour with a darkened random corner; photo ``marked`` (if any) is flat grey 77."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,label"]
    for i in range(n):
        yy, xx = np.mgrid[0:8, 0:8] / 7.0
        img = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * rng.uniform(0.3, 1.0, size=3)
        img[rng.integers(0, 6):, rng.integers(0, 6):] *= 0.3
        if i == marked:
            img[:] = 77 / 255
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
        rows.append(f"img{i:02d}.png,{i % 4}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def write_images() -> Callable[..., Path]:
    return _write


@pytest.fixture(scope="session")
def mlp_workdir() -> Callable[..., Path]:
    return _mlp_workdir


def _mlp_workdir(root: Path, n: int, shape: tuple[int, ...] = (3, 8, 8)) -> Path:
    """``root`` with ``mlp.safetensors`` (a seeded MLP whose first layer is Linear: the analytic attack inverts
    one sample exactly) and ``images/``, ``n`` photos from ``_write``."""
    import torch

    from leakaudit.models import create_model
    from leakaudit.models.safetensors_loader import save_safetensors

    torch.manual_seed(0)
    model = create_model("mlp", num_classes=4, input_shape=shape, hidden=(32,))
    save_safetensors(model, root / "mlp.safetensors", arch="mlp", input_shape=shape, num_classes=4,
                     arch_kwargs={"hidden": [32]})
    _write(root / "images", n)
    return root


@pytest.fixture
def interrupt_batch(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Callable]:
    """``interrupt_batch(n)`` makes the scan's n-th client batch raise KeyboardInterrupt (Ctrl-C while it runs);
    it returns the real batch function, to put back before a ``--resume``."""
    import leakaudit.audit as audit_module

    real = audit_module.audit_loaded

    def arm(n: int) -> Callable:
        calls: list[int] = []

        def stop_at_nth(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(audit_module, "audit_loaded", stop_at_nth)
        return real

    return arm
