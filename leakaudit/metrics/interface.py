"""What a metric declares, and the value object for a metric that cannot be computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Union

if TYPE_CHECKING:  # torch only for the annotations: the registry is read without it (leakaudit rules)
    import torch

# A scan's note that starts with this names its flat (one-colour) samples (``metrics.scoring.flat_note``): the
# terminal shows it as a warning and the report recommends real samples.
FLAT_NOTE = "flat samples"

LeakDirection = Literal["higher", "lower"]


@dataclass(frozen=True)
class Unavailable:
    """A metric without a value, and why (e.g. LPIPS without local backbone weights). Never a number."""

    reason: str

    def __str__(self) -> str:
        return f"unavailable: {self.reason}"


@dataclass(frozen=True)
class MetricOptions:
    """Settings some metrics need; the others ignore them."""

    lpips_weights: str | Path | None = None  # torchvision backbone file for LPIPS (else env var / torch hub cache)
    lpips_net: str = "alex"


MetricValue = Union["torch.Tensor", Unavailable]
MetricFn = Callable[["torch.Tensor", "torch.Tensor", MetricOptions], MetricValue]


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    ``higher_is_better`` is the torchmetrics sense (a better reconstruction). ``leak_direction`` is the
    attacker's view, which rules use: "higher" means a higher value shows more leakage (SSIM, PSNR), "lower"
    that a lower one does (MSE, LPIPS). For reconstruction-quality metrics the two agree by construction;
    both are declared so a rule never has to guess.
    """

    name: str
    higher_is_better: bool
    leak_direction: LeakDirection
    range: tuple[float, float]
    description: str
    unit: str = ""
    per_sample: bool = True  # False: one value per batch (label accuracy); rules on it use scope "mean"
    # True: the value compares structure, which a flat original does not have (SSIM of anything flat against a
    # flat original is ~1), so rules do not count it on flat originals (leakaudit.metrics.scoring.FLAT_STD).
    needs_structure: bool = False
    # True: computed by the recognition test (``metrics.recognition``) against the sample's references, not by
    # ``fn`` from the pair alone.
    recognition: bool = False
    # The samples it is about (leakaudit.modality): a rule on a metric of another modality than the batch's is
    # not applicable there; "any" for what means the same on every modality (label accuracy).
    modality: str = "image"
    fn: MetricFn | None = field(default=None, repr=False, compare=False)

    def compute(self, preds: torch.Tensor, target: torch.Tensor,
                options: MetricOptions | None = None) -> MetricValue:
        """Per-sample values, shape (N,), or :class:`Unavailable`."""
        if self.fn is None:
            raise TypeError(f"metric {self.name!r} is not computed from pixels; see leakaudit.metrics.scoring")
        return self.fn(preds, target, options or MetricOptions())

    def applies_to(self, modality: str) -> bool:
        """Whether the metric means something on samples of ``modality``."""
        from ..modality import applies

        return applies(self.modality, modality)

    def leaks(self, value: float, threshold: float, comparison: str) -> bool:
        """True when ``value`` crosses ``threshold`` in the leaking direction (``comparison`` from a rule)."""
        return COMPARISONS[comparison](value, threshold)

    def worst(self, values: list[float]) -> float:
        """The most leaking of ``values``."""
        return max(values) if self.leak_direction == "higher" else min(values)


def chance(references: int) -> float:
    """The smallest re-identification p-value K references allow: closer to its own sample than to every one."""
    return 1.0 / (references + 1)


def attributable(match_p: float, references: int, max_p: float) -> bool:
    """``match_p <= max_p``; with too few references for that (1/(K+1) > max_p), the strictest test there is:
    closer to its own sample than to every reference (the report then says the per-sample evidence is weak)."""
    return match_p <= max(max_p, chance(references)) + 1e-12


COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
}

# Which comparisons agree with a leak direction: a rule fires when the value is on the leaking side.
COMPARISONS_FOR: dict[str, tuple[str, ...]] = {"higher": (">=", ">"), "lower": ("<=", "<")}
DEFAULT_COMPARISON: dict[str, str] = {"higher": ">=", "lower": "<="}
