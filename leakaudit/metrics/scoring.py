"""Scoring one attack: match its reconstructions to the originals, then compute every metric per pair.

Ground truth enters here and only here (the attacks never see it). Inputs are pixel-space tensors in
[0, 1]; a metric that cannot be computed (LPIPS without weights, label accuracy without recovered labels)
is listed in ``unavailable`` with the reason and has no number anywhere.

Flat originals: an original whose pixel standard deviation (over all pixels and channels, in [0, 1]) is
below ``FLAT_STD`` has no structure, and SSIM against it is ~1 for any flat reconstruction of about the
right brightness (brightness-adjusted SSIM: for any reconstruction at all), so a blank sample would read as
recognised. Such a sample is flagged ``flat`` and its structure metrics (``Metric.needs_structure``: ssim,
ssim_adjusted) are listed in its ``excluded`` with the reason: the numbers stay in ``metrics`` for display,
but rules do not count them, and the attack's mean of those metrics is over the other samples only. When
every original is flat, those metrics are ``unavailable`` with that reason, so their rules are not
evaluated. Pixel metrics (PSNR, MSE) still count: they measure how close the pixels are, flat or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .builtin import DEFAULT_METRICS, METRICS
from .functional import _check_tensor, label_accuracy
from .interface import Metric, MetricOptions, Unavailable
from .matching import Matching, match

if TYPE_CHECKING:
    from .recognition import Recognition

# 8-bit images quantise to steps of 1/255 ~ 0.004: below 1e-3 at most a few pixels of an image differ by one
# level from the rest, which shows nothing recognisable.
FLAT_STD = 1e-3


@dataclass(frozen=True)
class SampleScore:
    """One reconstruction scored against the original it was matched to."""

    index: int  # row of the reconstruction batch
    original_index: int  # row of the original batch it was matched to
    name: str  # the matched original's name
    metrics: dict[str, float]
    label_true: int | None = None
    label_recovered: int | None = None  # the recovered label at the same row (labels are unordered: see accuracy)
    flat: bool = False  # the original's pixel std is below FLAT_STD
    excluded: dict[str, str] = field(default_factory=dict)  # metric -> why rules do not count it for this sample
    references: int | None = None  # K of the recognition test (match_p); None when it did not run
    transform: str = ""  # the registration the recognition test chose against the original ("flipped", ...)


@dataclass(frozen=True)
class AttackScore:
    attack: str
    samples: tuple[SampleScore, ...]
    means: dict[str, float]  # per-sample metrics averaged over matched samples, plus label_accuracy
    label_accuracy: float | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> reason it has no value
    matched_by: str = "ssim"
    notes: tuple[str, ...] = ()
    modality: str = "image"  # the batch's (leakaudit.modality): rules on other modalities' metrics do not apply

    def values(self, metric: str) -> list[tuple[str, float]]:
        """(sample name, value) for every matched sample that has ``metric``."""
        return [(s.name, s.metrics[metric]) for s in self.samples if metric in s.metrics]

    def counted(self, metric: str) -> list[tuple[str, float]]:
        """``values`` less the samples where ``metric`` is excluded (structure metrics on flat originals)."""
        return [(s.name, s.metrics[metric]) for s in self.samples if metric in s.metrics and metric not in s.excluded]

    def excluded(self, metric: str) -> dict[str, str]:
        """Sample name -> why ``metric`` is not counted there."""
        return {s.name: s.excluded[metric] for s in self.samples if metric in s.excluded}

    def to_dict(self) -> dict[str, Any]:
        """Plain types for JSON; PSNR of an exact reconstruction stays ``inf`` (json writes ``Infinity``)."""
        return {
            "attack": self.attack,
            "matched_by": self.matched_by,
            "samples": [
                {"index": s.index, "original_index": s.original_index, "name": s.name, "metrics": dict(s.metrics),
                 "label_true": s.label_true, "label_recovered": s.label_recovered, "flat": s.flat,
                 "excluded": dict(s.excluded), "references": s.references, "transform": s.transform}
                for s in self.samples
            ],
            "means": dict(self.means),
            "label_accuracy": self.label_accuracy,
            "unavailable": dict(self.unavailable),
            "notes": list(self.notes),
        }


def _labels(value: torch.Tensor | Sequence[int] | None) -> list[int] | None:
    return None if value is None else [int(v) for v in torch.as_tensor(value).flatten().tolist()]


def score(
    reconstruction_pixels: torch.Tensor,
    original_pixels: torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    labels_true: torch.Tensor | Sequence[int] | None = None,
    labels_recovered: torch.Tensor | Sequence[int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    lpips_weights: str | None = None,
    lpips_net: str = "alex",
    match_by: str = "ssim",
    attack: str = "",
    references: torch.Tensor | None = None,
    batch: Any = None,
) -> AttackScore:
    """Score ``reconstruction_pixels`` against ``original_pixels`` (both [0, 1], (N, C, H, W) or (N, D)).

    Reconstructions are matched to originals one-to-one (Hungarian, maximising SSIM by default) before any
    metric is computed. ``label_accuracy`` is added whenever both label sets are given. The recognition
    metrics (``match_p``, ``ssim_skill``, ``psnr_gain``; ``metrics.recognition``) judge each reconstruction
    against its original and K references: the batch's other originals plus ``references`` (pixel space, the
    originals' sample shape; the scan's other samples and a reference set). Copies of a sample among them
    are left out of its references.

    ``batch``: the ``SampleBatch`` scored, whose modality decides how -- tabular records are scored by
    ``metrics.tabular`` (``references`` then in model space); metrics of another modality are left out.
    """
    modality = getattr(batch, "modality", "image")
    if modality == "tabular":
        from .tabular import score_records

        return score_records(reconstruction_pixels, batch, references=references, attack=attack,
                             labels_recovered=labels_recovered)
    orig = _check_tensor("original_pixels", original_pixels)
    sample_names = _sample_names(names, orig.shape[0])
    # unknown names: UnknownNameError with suggestions
    chosen = [m for m in (METRICS.get(name) for name in metrics) if m.applies_to(modality)]
    diverged = _diverged(reconstruction_pixels)
    if diverged:
        # No number can honestly be given for a NaN reconstruction; the rules see "unavailable", not a pass.
        return AttackScore(attack=attack, samples=(), means={}, label_accuracy=None, matched_by=match_by,
                           unavailable={m.name: diverged for m in chosen}, notes=(diverged,))
    recon = _check_tensor("reconstruction_pixels", reconstruction_pixels)
    paired = _pair(recon, orig.to(recon.device), chosen, match_by, references)
    values = _metric_values(paired, chosen, MetricOptions(lpips_weights=lpips_weights, lpips_net=lpips_net))
    true, recovered = _labels(labels_true), _labels(labels_recovered)
    samples = _sample_scores(paired, values, sample_names, true, recovered)
    means = _means(values, samples)
    accuracy = _label_accuracy(true, recovered, means, values.unavailable)
    return AttackScore(attack=attack, samples=samples, means=means, label_accuracy=accuracy,
                       unavailable=values.unavailable, matched_by=paired.matching.by,
                       notes=_matching_notes(paired.matching))


@dataclass(frozen=True)
class _Paired:
    """Reconstructions paired with originals: ``preds[k]`` was matched to ``target[k]``."""

    matching: Matching
    preds: torch.Tensor
    target: torch.Tensor
    judged: list[Recognition]  # recognition judgements, one per pair; empty when no recognition metric was asked for


@dataclass
class _MetricValues:
    per_metric: dict[str, list[float]]  # metric -> one value per pair
    unavailable: dict[str, str]  # metric -> reason it has no value
    structural: list[str]  # computed metrics that need structure (not counted on flat originals)


def _sample_names(names: Sequence[str] | None, n: int) -> list[str]:
    chosen = list(names) if names is not None else [f"sample-{i}" for i in range(n)]
    if len(chosen) != n:
        raise ValueError(f"Expected `names` to hold one name per original ({n}), got {len(chosen)}.")
    return chosen


def _pair(recon: torch.Tensor, orig: torch.Tensor, chosen: Sequence[Metric], match_by: str,
          references: torch.Tensor | None) -> _Paired:
    judged: list[Recognition] = []
    if any(m.recognition for m in chosen):
        # Matched by registered skill: a mirrored or shifted batch would pair up wrongly by raw SSIM.
        from .recognition import recognise

        pairs, judged = recognise(recon, orig, references)
        matching = Matching(pairs, "registered skill", *_unmatched(pairs, recon.shape[0], orig.shape[0]))
    else:
        matching = match(recon, orig, by=match_by)
    rows = [r for r, _ in matching.pairs]
    cols = [c for _, c in matching.pairs]
    return _Paired(matching, recon[rows], orig[cols], judged)


def _metric_values(paired: _Paired, chosen: Sequence[Metric], options: MetricOptions) -> _MetricValues:
    pixel_metrics = [m for m in chosen if m.per_sample and not m.recognition]
    recognition = [m for m in chosen if m.recognition]
    per_metric: dict[str, list[float]] = {}
    unavailable: dict[str, str] = {}
    for metric in pixel_metrics:
        value = metric.compute(paired.preds, paired.target, options)
        if isinstance(value, Unavailable):
            unavailable[metric.name] = value.reason
        else:
            per_metric[metric.name] = [float(v) for v in value.detach().cpu()]
    if paired.judged:
        for m in recognition:
            per_metric[m.name] = [float(getattr(j, m.name)) for j in paired.judged]
    structural = [m.name for m in pixel_metrics + recognition if m.needs_structure and m.name in per_metric]
    return _MetricValues(per_metric, unavailable, structural)


def _sample_scores(paired: _Paired, values: _MetricValues, names: list[str], true: list[int] | None,
                   recovered: list[int] | None) -> tuple[SampleScore, ...]:
    stds = _pixel_std(paired.target)
    judged = paired.judged
    return tuple(
        SampleScore(
            index=r, original_index=c, name=names[c],
            metrics={name: per_pair[k] for name, per_pair in values.per_metric.items()},
            label_true=true[c] if true is not None and c < len(true) else None,
            label_recovered=recovered[r] if recovered is not None and r < len(recovered) else None,
            flat=stds[k] < FLAT_STD,
            excluded={m: _flat_reason(m, stds[k]) for m in values.structural} if stds[k] < FLAT_STD else {},
            references=judged[k].references if judged else None,
            transform=judged[k].transform if judged else "",
        )
        for k, (r, c) in enumerate(paired.matching.pairs)
    )


def _means(values: _MetricValues, samples: tuple[SampleScore, ...]) -> dict[str, float]:
    """Each metric's mean over the samples that count it; a structure metric no sample counts becomes
    unavailable (recorded in ``values.unavailable``) rather than a mean of nothing."""
    means = {name: _mean([v for v, s in zip(per_pair, samples, strict=True)
                          if name not in s.excluded and not math.isnan(v)])
             for name, per_pair in values.per_metric.items()}
    for name in values.structural:
        if samples and all(name in s.excluded for s in samples):
            del means[name]
            values.unavailable[name] = (f"every original is flat (pixel std < {FLAT_STD:g}): {name} compares "
                                        "structure, which a flat original does not have")
    return means


def _label_accuracy(true: list[int] | None, recovered: list[int] | None, means: dict[str, float],
                    unavailable: dict[str, str]) -> float | None:
    """The accuracy, also added to ``means``; when it cannot be computed, the reason goes to ``unavailable``."""
    if true is None or recovered is None:
        unavailable["label_accuracy"] = (
            "no true labels given" if true is None
            else "the attack recovered no labels (labels known to the attacker, or optimised jointly)"
        )
        return None
    accuracy = label_accuracy(recovered, true)
    means["label_accuracy"] = accuracy
    return accuracy


def _matching_notes(matching: Matching) -> tuple[str, ...]:
    notes = []
    if matching.unmatched_originals:
        notes.append(f"{len(matching.unmatched_originals)} original(s) had no reconstruction to match")
    if matching.unmatched_reconstructions:
        notes.append(f"{len(matching.unmatched_reconstructions)} extra reconstruction(s) were not scored")
    return tuple(notes)


def _unmatched(pairs: Sequence[tuple[int, int]], n: int, m: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (tuple(sorted(set(range(n)) - {r for r, _ in pairs})),
            tuple(sorted(set(range(m)) - {c for _, c in pairs})))


def _diverged(pixels: object) -> str | None:
    if isinstance(pixels, torch.Tensor) and pixels.is_floating_point() and not torch.isfinite(pixels).all():
        bad = int((~torch.isfinite(pixels)).sum())
        return f"the reconstruction holds {bad} NaN/inf value(s): the attack diverged, so no metric is computed"
    return None


def _pixel_std(pixels: torch.Tensor) -> list[float]:
    """Each sample's population standard deviation over all its pixels and channels."""
    return [float(v) for v in pixels.detach().flatten(1).to(torch.float64).std(dim=1, correction=0).cpu()]


def _flat_reason(metric: str, std: float) -> str:
    return (f"flat original (pixel std {std:.2g} < {FLAT_STD:g}): {metric} needs structure, which it does not "
            "have (any flat reconstruction of about its brightness matches it), so it does not show a recognisable "
            "sample")


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def flat_note(pixels: torch.Tensor, names: Sequence[str]) -> str:
    """One line that names the audited samples with no structure (pixel std below ``FLAT_STD``: one colour,
    e.g. all black or all grey) and what that does to the verdict; "" when there are none. It starts with
    ``interface.FLAT_NOTE``: the terminal shows it as a warning, and the report recommends real samples."""
    from .interface import FLAT_NOTE

    stds = _pixel_std(pixels) if len(names) else []
    flat = [name for name, std in zip(names, stds, strict=True) if std < FLAT_STD]
    if not flat:
        return ""
    shown = ", ".join(flat[:5]) + (f" and {len(flat) - 5} more" if len(flat) > 5 else "")
    return (f"{FLAT_NOTE}: {len(flat)} of {len(names)} audited sample(s) are flat (one colour, pixel std < "
            f"{FLAT_STD:g}): {shown}; SSIM rules do not count them and their verdict rests on pixel metrics "
            "(PSNR, MSE) alone, while a flat sample shows nothing an attacker could recognise: audit samples "
            "like your clients' real data")
