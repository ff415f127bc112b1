"""Reconstruction-quality metrics in pixel space [0, 1].

* ``functional``: the core (mse, rmse, psnr, ssim, best-adjusted ssim, label accuracy), torchmetrics-style;
* ``perceptual``: LPIPS, offline only (local backbone weights or "unavailable: <reason>");
* ``METRICS``: the registry every rule and report reads (direction, range, description);
* ``match`` / ``score``: Hungarian matching of reconstructions to originals, then per-sample scores.
"""

from .builtin import DEFAULT_METRICS, METRICS
from .functional import label_accuracy, mse, pairwise, psnr, rmse, ssim, ssim_best_adjusted
from .interface import Metric, MetricOptions, Unavailable
from .matching import Matching, match
from .perceptual import ENV_VAR as LPIPS_WEIGHTS_ENV, find_backbone_weights, lpips_distance
from .score import AttackScore, SampleScore, score

__all__ = [
    "mse", "rmse", "psnr", "ssim", "ssim_best_adjusted", "label_accuracy", "pairwise", "lpips_distance",
    "find_backbone_weights", "LPIPS_WEIGHTS_ENV", "Metric", "MetricOptions", "Unavailable", "METRICS",
    "DEFAULT_METRICS", "Matching", "match", "AttackScore", "SampleScore", "score",
]
