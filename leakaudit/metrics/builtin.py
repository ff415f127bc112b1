"""The METRICS registry: every metric leakaudit can score and a rule can name.

Each entry is a thin wrapper over the functional core (``functional``, ``perceptual``) plus its declaration
(direction, range, description), so reports, rules and the ``rules`` command read one source of truth.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from ..modality import ANY
from ..registry import Registry
from .interface import Metric, MetricFn, MetricOptions
from .tabular import register as _register_tabular

METRICS: Registry[Metric] = Registry("metric")


def _register(metric: Metric) -> Metric:
    return METRICS.register(metric.name)(metric)


def _lazy(name: str, module: str = "functional", plain: bool = True) -> MetricFn:
    """``leakaudit.metrics.<module>.<name>``, imported on the first computation: rules, reports and
    ``leakaudit rules`` read this registry without computing anything, and the functional core imports torch."""

    def compute(preds: Any, target: Any, options: MetricOptions) -> Any:
        fn = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        return fn(preds, target) if plain else fn(preds, target, options)

    return compute


_register(Metric(
    "ssim", True, "higher", (-1.0, 1.0),
    "structural similarity (Wang et al. 2004; Gaussian 11x11 window, sigma 1.5), mean over channels",
    fn=_lazy("ssim"), needs_structure=True))
_register(Metric(
    "ssim_adjusted", True, "higher", (-1.0, 1.0),
    "best SSIM over the reconstruction and its brightness/contrast-adjusted copies (least-squares fit and "
    "moment match, clamped to [0, 1]): what an attacker sees after adjusting levels",
    fn=_lazy("ssim_best_adjusted"), needs_structure=True))
_register(Metric(
    "psnr", True, "higher", (0.0, math.inf), "peak signal-to-noise ratio, data range 1 (inf when identical)",
    unit="dB", fn=_lazy("psnr")))
_register(Metric(
    "mse", False, "lower", (0.0, 1.0), "mean squared error in pixel space [0, 1]", fn=_lazy("mse")))
_register(Metric(
    "rmse", False, "lower", (0.0, 1.0), "root mean squared error in pixel space [0, 1]", fn=_lazy("rmse")))
_register(Metric(
    "lpips", False, "lower", (0.0, math.inf),
    "learned perceptual distance (Zhang et al. 2018, AlexNet by default); needs local backbone weights",
    fn=_lazy("lpips_distance", "perceptual", plain=False)))
# The recognition test (metrics.recognition): is the reconstruction attributable to its own sample, and better
# than a trivial output? Computed against the sample's references, so they have no pixel function.
_register(Metric(
    "match_p", False, "lower", (0.0, 1.0),
    "re-identification p-value: (1 + references at least as similar as the sample itself) / (K + 1), after "
    "registration (flip, shifts, levels, light denoising); 1/(K+1) = closer to its own sample than to every "
    "reference", needs_structure=True, recognition=True))
_register(Metric(
    "ssim_skill", True, "higher", (-math.inf, 1.0),
    "structure score: (s - s_base) / (1 - s_base) with s the registered SSIM and s_base the better of the "
    "sample's mean-colour blank and its heavy blur; 0 = no better than those, 1 = exact",
    needs_structure=True, recognition=True))
_register(Metric(
    "psnr_gain", True, "higher", (-math.inf, math.inf),
    "registered PSNR minus the better PSNR of the sample's mean-colour blank and heavy blur",
    unit="dB", needs_structure=True, recognition=True))
RECOGNITION_METRICS: tuple[str, ...] = ("match_p", "ssim_skill", "psnr_gain")

_register(Metric(
    "label_accuracy", True, "higher", (0.0, 1.0),
    "fraction of the batch's true labels the attacker recovered (as multisets: order is arbitrary)",
    per_sample=False, modality=ANY))

# Scan-level metrics of a coverage scan (leakaudit.coverage): one value for the whole sample set, computed from
# the per-sample verdicts, never from pixels. Rules on them are evaluated once over all batches.
_register(Metric(
    "recognised_fraction", True, "higher", (0.0, 1.0),
    "fraction of the audited samples recognisably reconstructed (a per-sample fail rule fired on them), over "
    "every batch of the scan", per_sample=False, modality=ANY))
_register(Metric(
    "recognised_upper", True, "higher", (0.0, 1.0),
    "upper bound of the 95% Clopper-Pearson interval of recognised_fraction: what the data still allows",
    per_sample=False, modality=ANY))
COVERAGE_METRICS: tuple[str, ...] = ("recognised_fraction", "recognised_upper")

# Text (metrics.text): token ids against the true line, padding left out. The recognition test reuses match_p
# (the rank among reference lines); text_skill is its "better than trivial" half.
_register(Metric(
    "token_precision", True, "higher", (0.0, 1.0),
    "fraction of the recovered tokens that are in the line (as multisets: bag of words)", modality="text"))
_register(Metric(
    "token_recall", True, "higher", (0.0, 1.0),
    "fraction of the line's tokens that were recovered (as multisets: bag of words)", modality="text"))
_register(Metric(
    "token_f1", True, "higher", (0.0, 1.0), "harmonic mean of token precision and recall", modality="text"))
_register(Metric("rouge1", True, "higher", (0.0, 1.0), "ROUGE-1 F1: unigram overlap with the line", modality="text"))
_register(Metric("rouge2", True, "higher", (0.0, 1.0), "ROUGE-2 F1: bigram overlap with the line", modality="text"))
_register(Metric(
    "rougeL", True, "higher", (0.0, 1.0), "ROUGE-L F1: longest common subsequence with the line (word order)",
    modality="text"))
_register(Metric(
    "exact_match", True, "higher", (0.0, 1.0), "1 when the recovered sequence is the line, token for token",
    modality="text"))
_register(Metric(
    "text_skill", True, "higher", (-math.inf, 1.0),
    "(F1 - F1_base) / (1 - F1_base): token F1 to the line over that of the references' most frequent tokens; "
    "0 = no better than guessing frequent words, 1 = exact", recognition=True, modality="text"))
TEXT_METRIC_NAMES: tuple[str, ...] = ("token_precision", "token_recall", "token_f1", "rouge1", "rouge2", "rougeL",
                                      "exact_match", "text_skill")
# Tabular records (metrics.tabular): which features a reconstruction recovered, and the recognition test on records.
_register_tabular(METRICS)

# What score() computes unless told otherwise: every pixel metric.
DEFAULT_METRICS: tuple[str, ...] = ("ssim", "ssim_adjusted", "psnr", "mse", "rmse", "lpips", *RECOGNITION_METRICS)

__all__ = ["METRICS", "DEFAULT_METRICS", "COVERAGE_METRICS", "RECOGNITION_METRICS", "MetricOptions"]
