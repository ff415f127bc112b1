"""The result of an audit: typed, frozen, and free of the pipeline that produced it.

``leakaudit.audit`` builds an ``AuditResult``; the report layer (``leakaudit.report``) reads one. Tensors
(reconstructions and originals in pixel space) are kept for Python callers and never written to a report
unless asked for (``--embed-data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .verdict.outcome import Outcome, decide

if TYPE_CHECKING:
    import torch

    from .config import ScanSettings
    from .data.interface import Normalization
    from .detect.interface import Findings
    from .metrics.scoring import SampleScore
    from .update.cost import DefenseCost
    from .update.interface import ThreatModel

__all__ = ["AttackOutcome", "AuditResult", "ControlOutcome", "DataCard", "LabelOutcome", "ModelCard", "RuleOutcome"]


@dataclass(frozen=True)
class ModelCard:
    path: str
    sha256: str
    format: str  # "onnx" | "safetensors"
    input_shape: tuple[int, ...]
    num_classes: int
    num_trainable: int
    arch: str | None = None
    onnx_opset: int | None = None
    onnx_producer: str | None = None
    looks_eval_exported: bool | None = None


@dataclass(frozen=True)
class DataCard:
    source: str
    count: int
    shape: tuple[int, ...]  # one sample, no batch dimension
    normalization: Normalization
    names: tuple[str, ...]
    labels: tuple[int, ...]
    # The [0,1] originals: for Python callers and --embed-data only; never written to a report otherwise.
    pixels: torch.Tensor | None = field(default=None, repr=False, compare=False)
    # (C, H, W) of each sample as read; differs from ``shape`` where an image was converted/resized to fit.
    original_shapes: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class AttackOutcome:
    """One planned attack: run (with scores), skipped (with the reason) or failed (with the error)."""

    name: str
    status: str  # "ran" | "skipped" | "failed" | "interrupted"
    reason: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    seconds: float | None = None
    iterations_planned: int | None = None
    iterations_run: int | None = None
    attack_loss: float | None = None
    stopped_early: bool = False
    notes: tuple[str, ...] = ()
    samples: tuple[SampleScore, ...] = ()
    means: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it has no value
    label_accuracy: float | None = None
    # Reconstructions in pixel space [0,1], row i belongs to samples[i].
    pixels: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def ran(self) -> bool:
        return self.status in ("ran", "interrupted") and bool(self.samples)


@dataclass(frozen=True)
class LabelOutcome:
    known: bool  # True: the threat model gives the attacker the labels (--labels-known)
    strategy: str
    labels: tuple[int, ...]
    accuracy: float | None  # multiset accuracy against the true labels


@dataclass(frozen=True)
class RuleOutcome:
    id: str
    metric: str
    comparison: str
    threshold: float
    severity: str  # "fail" | "warn"
    scope: str  # "any" | "mean"
    status: str  # "pass" | "fail" | "warn" | "not_evaluated"
    observed: float | None = None  # the worst (most leaking) value seen
    attack: str | None = None
    sample: str | None = None
    reason: str = ""
    description: str = ""
    rationale: str = ""
    reference: str = ""


@dataclass(frozen=True)
class ControlOutcome:
    """The positive control: the scan's attacks on the same samples without the defenses under evaluation
    (no simulated ``--defense``; dropout as the attacker would most like it: the client's true masks, through
    ``dia-informed``). A pass needs a control that reconstructs (``leakaudit.verdict.outcome``)."""

    status: str  # "ran" | "not_needed" (a leak was found, or no fail-severity rule to reach) | "interrupted"
    reason: str  # how the control was formed, or why it did not run
    reconstructed: bool | None  # a fail-severity rule fired on the control's scores; None when it did not run
    defenses_removed: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()  # main-run attacks that are the control too (no defenses were simulated)
    attacks: tuple[AttackOutcome, ...] = ()  # the attacks run for the control alone
    rules: tuple[RuleOutcome, ...] = ()  # the rules on the control's scores (shared and own)
    evidence: str = ""  # the control's best result against the fail rules, one phrase

    @property
    def counts(self) -> bool | None:
        """What the verdict weighs: whether the control reconstructed, None when there was no control."""
        return self.reconstructed if self.status == "ran" else None


@dataclass(frozen=True)
class AuditResult:
    model: ModelCard
    findings: Findings
    data: DataCard
    threat: ThreatModel
    attacks: tuple[AttackOutcome, ...]
    rules: tuple[RuleOutcome, ...]
    rules_overall: str  # "pass" | "fail": what the rules alone say; the scan's verdict is ``overall``
    rules_profile: str
    strict: bool
    seed: int
    device: str
    started_at: datetime
    finished_at: datetime
    label_recovery: LabelOutcome | None = None
    settings: ScanSettings | None = None
    command: str = ""
    incomplete: bool = False
    incomplete_reason: str = ""
    notes: tuple[str, ...] = ()
    control: ControlOutcome | None = None
    defense_cost: DefenseCost | None = None  # with simulated defenses: what they cost the update's usefulness

    @property
    def outcome(self) -> Outcome:
        """The verdict, exit code and summary line every output shows (``leakaudit.verdict.outcome``)."""
        control = self.control
        return decide([(r.id, r.status) for r in self.rules], strict=self.strict,
                      crashed=[a.name for a in self.attacks if a.status == "failed"], incomplete=self.incomplete,
                      exit_zero=bool(self.settings and self.settings.exit_zero),
                      control=control.counts if control else None, control_evidence=control.evidence if control else "")

    @property
    def overall(self) -> str:
        """"pass" | "fail" | "error" (an attack crashed, no leak found) | "inconclusive" (the control did not
        reconstruct either) | "incomplete" (interrupted)."""
        return self.outcome.overall

    @property
    def leaked(self) -> bool:
        """A fail-severity rule failed (whatever else happened: a leak found is real)."""
        return self.rules_overall == "fail"

    @property
    def exit_code(self) -> int:
        """What a CI gate acts on: 0 pass, 1 leak, 3 a crashed attack, 4 inconclusive (--strict: 1), 130
        interrupted (--exit-zero: a leak 0)."""
        return self.outcome.exit_code
