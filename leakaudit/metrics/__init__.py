"""Reconstruction-quality metrics in pixel space [0, 1].

* ``functional``: the core (mse, rmse, psnr, ssim, best-adjusted ssim, label accuracy), torchmetrics-style;
* ``perceptual``: LPIPS, offline only (local backbone weights or "unavailable: <reason>");
* ``METRICS``: the registry every rule and report reads (direction, range, description);
* ``match`` / ``score``: Hungarian matching of reconstructions to originals, then per-sample scores.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the submodule that defines it. Imported on first use (PEP 562): the registry and the rule checks that
# read it (``leakaudit rules``, ``--help``) need no torch, which the functional core imports (about a second).
_WHERE = {
    "METRICS": "builtin", "DEFAULT_METRICS": "builtin",
    "Metric": "interface", "MetricOptions": "interface", "Unavailable": "interface",
    "label_accuracy": "functional", "mse": "functional", "pairwise": "functional", "psnr": "functional",
    "rmse": "functional", "ssim": "functional", "ssim_best_adjusted": "functional",
    "Matching": "matching", "match": "matching",
    "LPIPS_WEIGHTS_ENV": "perceptual", "find_backbone_weights": "perceptual", "lpips_distance": "perceptual",
    "AttackScore": "scoring", "SampleScore": "scoring", "score": "scoring",
}
_RENAMED = {"LPIPS_WEIGHTS_ENV": "ENV_VAR"}

if TYPE_CHECKING:
    from .builtin import DEFAULT_METRICS, METRICS
    from .functional import label_accuracy, mse, pairwise, psnr, rmse, ssim, ssim_best_adjusted
    from .interface import Metric, MetricOptions, Unavailable
    from .matching import Matching, match
    from .perceptual import ENV_VAR as LPIPS_WEIGHTS_ENV, find_backbone_weights, lpips_distance
    from .scoring import AttackScore, SampleScore, score

__all__ = [
    "mse", "rmse", "psnr", "ssim", "ssim_best_adjusted", "label_accuracy", "pairwise", "lpips_distance",
    "find_backbone_weights", "LPIPS_WEIGHTS_ENV", "Metric", "MetricOptions", "Unavailable", "METRICS",
    "DEFAULT_METRICS", "Matching", "match", "AttackScore", "SampleScore", "score",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:  # a submodule (``from leakaudit.metrics import functional``) is imported by Python
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), _RENAMED.get(name, name))
    globals()[name] = value
    return value
