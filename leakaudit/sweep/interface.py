"""Typed results of a sweep: one ``Point`` per value of the varied knob, and the threshold found."""

from __future__ import annotations

from dataclasses import dataclass, field

# A point's status. "done" points count for the threshold; "error" and "interrupted" points are kept with
# their reason (one value's failure never loses the others) and are run again by ``--resume``.
DONE, ERROR, INTERRUPTED = "done", "error", "interrupted"


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one attack at one value, over the batch's samples (pixel space, matched)."""

    name: str
    per_sample: tuple[float | None, ...]
    higher_is_better: bool | None = None  # the metric's own declaration: True for PSNR/SSIM (more leakage)
    unavailable: str | None = None  # reason when the metric could not be computed (e.g. LPIPS weights)

    @property
    def mean(self) -> float | None:
        vals = [v for v in self.per_sample if v is not None]
        return sum(vals) / len(vals) if vals else None

    def worst(self) -> float | None:
        """The most leaking sample's value (largest SSIM/PSNR, smallest LPIPS/MSE)."""
        vals = [v for v in self.per_sample if v is not None]
        if not vals:
            return None
        return min(vals) if self.higher_is_better is False else max(vals)


@dataclass(frozen=True)
class PointAttack:
    """One attack at one knob value: its metrics over the samples (an audit's ``AttackOutcome``, summarised)."""

    attack: str
    metrics: tuple[MetricSummary, ...]
    attack_loss: float | None = None
    seconds: float | None = None
    iterations_run: int | None = None
    images: tuple[str, ...] = ()  # reconstructions as PNG data URIs (pixel space), matched to the originals

    def metric(self, name: str) -> MetricSummary | None:
        return next((m for m in self.metrics if m.name == name), None)


@dataclass(frozen=True)
class PointRule:
    """One rule at one knob value (an audit's ``RuleOutcome``, as sweep.json keeps it)."""

    id: str
    metric: str
    comparison: str  # e.g. ">=" : the rule fails when observed <comparison> threshold
    threshold: float
    severity: str  # "fail" or "warn"
    status: str  # "pass", "fail", "warn", "not_evaluated" or "not_applicable" (another modality's rule)
    observed: float | None = None
    attack: str | None = None  # the attack whose reconstruction decided the rule, when known
    reason: str | None = None  # why not evaluated


@dataclass(frozen=True)
class PointCost:
    """What the defense at this value costs the update (an audit's ``DefenseCost``, as sweep.json keeps it)."""

    cosine: float | None
    relative_error: float | None
    kept: float | None  # fraction of the clean server step's loss reduction kept; None with the reason in summary
    summary: str


@dataclass(frozen=True)
class Point:
    value: float
    status: str  # DONE, ERROR or INTERRUPTED
    passed: bool | None = None  # overall verdict at this value (None unless done)
    attacks: tuple[PointAttack, ...] = ()
    rules: tuple[PointRule, ...] = ()
    seconds: float | None = None
    error: str | None = None  # one line, for ERROR points
    notes: tuple[str, ...] = ()
    # "input" (a LeakauditError: fix the options), "internal" (an attack crashed) or "inconclusive" (the control
    # did not reconstruct the undefended update: no evidence at this value)
    error_kind: str | None = None
    cost: PointCost | None = None  # the defense's cost, beside its protection (None: no defense at this value)


@dataclass(frozen=True)
class Threshold:
    """Where the defense starts to pass.

    ``stable`` is the recommendation: the weakest tested value from which every stronger tested value also
    passes (so a non-monotone curve cannot recommend a lucky dip). ``weakest_passing`` is the weakest value
    that passes at all; the two differ only when the curve is not monotone.
    """

    stable: float | None
    weakest_passing: float | None
    monotone: bool
    message: str
    unknown: tuple[float, ...] = ()  # values without a verdict (error / interrupted / not run)


@dataclass(frozen=True)
class SweepResult:
    knob: str
    values: tuple[float, ...]  # every requested value, ascending
    points: tuple[Point, ...]  # one per value that was attempted, ascending by value
    threshold: Threshold
    incomplete: bool
    context: dict = field(default_factory=dict)  # model/data/settings facts for the report (JSON-ready)
