"""Synthetic sweep points and runners shared by the sweep tests (SSIM falls as noise grows)."""

import base64
import io

import numpy as np
from PIL import Image

from leakaudit.progress import NullObserver
from leakaudit.sweep import (
    DONE,
    MetricSummary,
    Point,
    PointAttack,
    PointRule,
    parse_vary,
)

SHA = "ab" * 32


def png_uri(seed: int) -> str:
    arr = (np.random.default_rng(seed).random((8, 8, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def synthetic_point(value: float, attack: str = "ig") -> Point:
    """SSIM falls as noise grows; the rule fails at SSIM >= 0.5."""
    ssim = max(0.0, 1.0 - 8 * value)
    passed = ssim < 0.5
    return Point(
        value, DONE, passed=passed, seconds=0.01,
        attacks=(PointAttack(attack, (MetricSummary("ssim", (ssim, ssim / 2), True),
                                        MetricSummary("lpips", (None, None), False, "weights unavailable")),
                               attack_loss=0.1, seconds=0.01, iterations_run=20, images=(png_uri(1), png_uri(2))),),
        rules=(PointRule("ssim-max", "ssim", ">=", 0.5, "fail", "pass" if passed else "fail", ssim, attack),),
    )


class Recorder:
    def __init__(self, fail_on=(), interrupt_on=()):
        self.calls = []
        self.fail_on, self.interrupt_on = set(fail_on), set(interrupt_on)

    def __call__(self, value):
        self.calls.append(value)
        if value in self.fail_on:
            raise RuntimeError("CUDA out of memory\n(second line)")
        if value in self.interrupt_on:
            raise KeyboardInterrupt
        return synthetic_point(value)


class StopAfter(NullObserver):
    def __init__(self, n):
        self.n, self.seen = n, 0

    def stage(self, name, detail=""):
        self.seen += 1

    def should_stop(self):
        return self.seen >= self.n


VARY = parse_vary("noise.sigma=0.01,0.03,0.05,0.08,0.1")
CONTEXT = {"model": {"path": "m.onnx", "sha256": SHA, "arch": None, "format": "onnx"},
           "data": {"source": "samples/", "count": 2}, "settings": {"attacks": ["ig"], "iterations": 20},
           "command": "leakaudit sweep m.onnx --data samples/ --vary noise.sigma=0.01,0.03,0.05,0.08,0.1"}
