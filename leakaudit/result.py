"""The result of an audit: typed, frozen, and free of the pipeline that produced it.

``leakaudit.audit`` builds an ``AuditResult``; the report layer (``leakaudit.report``) reads one. Tensors
(reconstructions and originals in pixel space) are kept for Python callers and never written to a report
unless asked for (``--embed-data``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .modality import words
from .verdict.outcome import Outcome, decide

from .metrics.interface import FLAT_NOTE as FLAT_NOTE  # defined beside the metrics, which sit below result.py

if TYPE_CHECKING:
    import torch

    from .config import ScanSettings
    from .data.interface import Normalization
    from .detect.interface import Findings
    from .metrics.scoring import SampleScore
    from .update.cost import DefenseCost
    from .update.interface import ThreatModel
    from .suppress import SuppressionOutcome

__all__ = ["AttackOutcome", "AuditResult", "BatchCoverage", "Conditioning", "ControlOutcome", "CoverageOutcome",
           "DataCard", "LabelOutcome", "ModelCard", "RuleOutcome", "SampleCoverage"]


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
    # "recorded": the exporter's metadata says it folded BatchNorm into the convolutions, so the audited
    # function is not the client's (a scan only gets here with --allow-folded-batchnorm)
    folded_batchnorm: str = ""


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
    modality: str = "image"  # leakaudit.modality
    # text: each line as the model sees it (decoded after truncation); private like ``pixels`` (--embed-data)
    texts: tuple[str, ...] = field(default=(), repr=False, compare=False)
    # Tabular records: ``data.tabular.TabularRecords`` (the schema and the raw rows); None for other samples.
    records: Any = field(default=None, repr=False, compare=False)


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
    # Reconstructions in pixel space [0,1], row i belongs to samples[i] (non-image samples: model space).
    pixels: torch.Tensor | None = field(default=None, repr=False, compare=False)
    # text: per scored sample (``samples`` order) the recovered line next to the true one, token by token, with
    # what was recovered (``metrics.text.sentence_view``); the true side goes into a report only with --embed-data
    sentences: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)
    # Tabular records: per sample (row i belongs to samples[i]) and feature how much the attack's restarts
    # disagreed (``Reconstruction.feature_spread``); None when the attack gives none.
    feature_spread: torch.Tensor | None = field(default=None, repr=False, compare=False)

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
    status: str  # "pass" | "fail" | "warn" | "not_evaluated" | "not_applicable" (another modality's rule)
    observed: float | None = None  # the worst (most leaking) value seen
    attack: str | None = None
    sample: str | None = None
    reason: str = ""
    description: str = ""
    rationale: str = ""
    reference: str = ""
    max_p: float | None = None  # the rule counts only samples attributable to their own original (match_p <= max_p)


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
    # Why the control cannot vouch for a pass although it ran, e.g. the time cap stopped the defended attacks
    # before their planned iterations (schema 1.8); "" when nothing limits it
    limited: str = ""

    @property
    def counts(self) -> bool | None:
        """What the verdict weighs: whether the control reconstructed (False when ``limited``), None when there
        was no control."""
        if self.status != "ran":
            return None
        return False if self.limited else self.reconstructed


@dataclass(frozen=True)
class Conditioning:
    """Whether gradient matching can work on this batch's update at all (``update.conditioning``): the cosine
    between the client's update at the true samples and at the samples moved by ``epsilon`` per element (times
    the pixel range on images, in the encoded record's units on records; ``modality.Words.moved``), and the
    train-mode BatchNorm layers that see few values per channel at this batch.

    ``verdict``: "stable" (cosine >= ``threshold``: a candidate close to the samples gives a close update, so
    matching has a basin to descend into), "ill-conditioned" (below it: a tiny input change gives an unrelated
    update; no gradient-matching attack converges, on any hardware) or "not_measured" (``reason`` says why).
    ``layers``: [{"name", "values_per_channel"}] for the BatchNorm layers at or below ``FEW_VALUES`` values per
    channel (N*H*W of their input). JSON-plain, so a checkpoint's ``BatchCoverage`` keeps it as ``as_dict()``."""

    verdict: str
    cosine: float | None
    epsilon: float
    threshold: float
    batch_size: int
    input_shape: tuple[int, ...]
    layers: tuple[dict[str, Any], ...] = ()
    reason: str = ""
    modality: str = "image"  # only for the summary's words: the report states the modality once, in ``data``

    @property
    def ill(self) -> bool:
        return self.verdict == "ill-conditioned"

    def summary(self) -> str:
        """One phrase a user can act on, e.g. "the update is ill-conditioned (cosine 0.12 between ...)"."""
        if self.verdict == "not_measured":
            return f"conditioning not measured: {self.reason}"
        moved = (f"cosine {self.cosine:.3g} between the update at the samples and at samples moved by "
                 f"{words(self.modality).move(self.epsilon)}")
        if not self.ill:
            return f"the update is stable ({moved})"
        return f"the update is ill-conditioned ({moved}): {self.cause()}; {self.advice()}"

    def _shape(self) -> str:
        return "x".join(str(s) for s in self.input_shape[1:]) if len(self.input_shape) == 3 else \
            "x".join(str(s) for s in self.input_shape)

    def cause(self) -> str:
        if not self.layers:
            return ("no BatchNorm layer with few values per channel explains it: the model's function is very "
                    "sensitive near these samples")
        shown = ", ".join(f"{d['name']} ({d['values_per_channel']} values per channel)" for d in self.layers[:4])
        more = f" and {len(self.layers) - 4} more" if len(self.layers) > 4 else ""
        return (f"BatchNorm layer(s) {shown}{more} at batch {self.batch_size}, {self._shape()} input normalise "
                "almost nothing")

    def advice(self) -> str:
        if not self.layers:
            return "try a larger --batch-size or check the model's weights and --normalize"
        fewest = min(int(d["values_per_channel"]) for d in self.layers)
        per_sample = max(1, fewest // max(1, self.batch_size))
        larger = max(2 * self.batch_size, -(-8 // per_sample))
        return (f"try --batch-size {larger} (if your clients train on that many samples), --client-batchnorm eval "
                "(if they freeze BatchNorm statistics) or a larger input")

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "cosine": self.cosine, "epsilon": self.epsilon, "threshold": self.threshold,
                "batch_size": self.batch_size, "input_shape": list(self.input_shape),
                "layers": [dict(d) for d in self.layers], "reason": self.reason, "summary": self.summary(),
                "advice": self.advice() if self.ill else ""}


@dataclass(frozen=True)
class BufferLeak:
    """What the BatchNorm running statistics sent with the update reveal (``--update-buffers yes``): the server's
    closed form (``attacks.bnstats``) scored against the client's true batch statistics (``update.buffers``).

    ``status``: "recovered" (``layers`` holds each layer's measured errors), "unchanged" (the client's BatchNorm
    layers are frozen, so the buffers it sends are the global model's: nothing to recover) or "not_recovered"
    (``reason``). ``layers``: [{"name", "values_per_channel", "mean_error", "var_error", "activation_error"}], the
    errors relative (norm of the error over the norm of the truth); ``activation_error`` only where a layer sees two
    values per channel (each sample's pre-BatchNorm activations, up to a swap per channel), else None. A feature
    leak, not an image reconstruction: a warning that does not change the verdict. JSON-plain (checkpoints)."""

    status: str
    batch_size: int
    layers: tuple[dict[str, Any], ...] = ()
    reason: str = ""
    seconds: float = 0.0  # the server's closed form alone

    @property
    def activation_layers(self) -> tuple[dict[str, Any], ...]:
        """The layers whose two values per channel the server recovered (error below 1%)."""
        return tuple(d for d in self.layers if d.get("activation_error") is not None
                     and d["activation_error"] < ACTIVATION_RECOVERED)

    @property
    def leaks(self) -> bool:
        return self.status == "recovered" and bool(self.layers)

    def title(self) -> str:
        shown = self.activation_layers
        if shown:
            names = ", ".join(d["name"] for d in shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3
                                                               else "")
            return f"BatchNorm statistics in the update reveal each sample's activations at {names} (closed form)"
        return "BatchNorm statistics in the update reveal every BatchNorm layer's batch mean and variance (closed form)"

    def summary(self) -> str:
        if self.status == "unchanged":
            return ("the update carries BatchNorm buffers, but the client's BatchNorm layers are frozen "
                    "(--client-batchnorm eval): they are the global model's, and reveal nothing")
        if self.status == "not_recovered":
            return f"BatchNorm statistics not recovered: {self.reason}"
        if not self.layers:
            return "the update carries BatchNorm buffers, but no train-mode BatchNorm layer changed them"
        worst_mean = max(float(d["mean_error"]) for d in self.layers)
        worst_var = max(float(d["var_error"]) for d in self.layers)
        text = (f"from the running_mean/var change the server recovers the batch mean and variance of "
                f"{len(self.layers)} BatchNorm layer(s) at batch {self.batch_size} in {self.seconds * 1000:.3g} ms "
                f"(largest relative error: mean {worst_mean:.2g}, variance {worst_var:.2g})")
        two = [d for d in self.layers if d.get("activation_error") is not None]
        if two:
            worst = max(float(d["activation_error"]) for d in two)
            text += (f"; {len(two)} layer(s) ({', '.join(d['name'] for d in two[:3])}"
                     f"{' …' if len(two) > 3 else ''}) see two values per channel, so the server has each sample's "
                     f"pre-BatchNorm activations there up to a swap per channel (relative error {worst:.2g})")
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "batch_size": self.batch_size, "layers": [dict(d) for d in self.layers],
                "reason": self.reason, "seconds": self.seconds, "leaks": self.leaks,
                "title": self.title() if self.leaks else "", "summary": self.summary()}


ACTIVATION_RECOVERED = 1e-2  # relative error below which two values per channel count as recovered


@dataclass(frozen=True)
class SampleCoverage:
    """One audited sample over the whole set: its best attack (the most leaking on the ranking metric), that
    attack's scores on it, and whether it was recognisably reconstructed (``CoverageOutcome.criterion``)."""

    index: int  # in the audited set (the drawn samples, in file order)
    name: str
    label: int | None
    batch: int  # 0-based client batch
    position: int  # 0-based place in its batch
    attack: str | None  # None: no attack produced a reconstruction of it
    metrics: dict[str, float] = field(default_factory=dict)
    recognised: bool = False
    rules: tuple[str, ...] = ()  # the recognition rules it crossed
    reconstruction: str | None = None  # PNG data URI; kept only for the worst cases (the report's gallery)
    references: int | None = None  # K of its recognition test (match_p); None: not run
    transform: str = ""  # the registration that test chose ("flipped", "shifted (1, 0) px", "as is")
    # Tabular records: per feature (the schema's columns) whether its best attack recovered it (1) or not (0)
    recovered: tuple[int, ...] = ()
    label_recovered: int | None = None  # the label its best attack used or recovered (None: none)


def _leak_key(value: float | None, metric: str) -> float:
    """Larger = more leaking, whatever the metric's direction; a missing or NaN value is the least."""
    from .metrics import METRICS

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return float(value) if METRICS.get(metric).leak_direction == "higher" else -float(value)


def worst_key(s: SampleCoverage, metric: str) -> tuple[bool, float]:
    return s.recognised, _leak_key(s.metrics.get(metric), metric)


@dataclass(frozen=True)
class BatchCoverage:
    """One client batch of a coverage scan: its own update, attacks, control and verdict."""

    index: int
    seed: int  # the scan's seed + index: each batch is another client step
    size: int
    overall: str  # this batch's verdict (leakaudit.verdict.outcome)
    rules: tuple[RuleOutcome, ...] = ()
    crashed: tuple[str, ...] = ()
    control: bool | None = None  # whether its positive control reconstructed (None: not needed / not run)
    control_evidence: str = ""
    seconds: float = 0.0
    incomplete: bool = False
    conditioning: dict[str, Any] | None = None  # Conditioning.as_dict() of its update (JSON-plain: checkpoints)
    batchnorm_statistics: dict[str, Any] | None = None  # BufferLeak.as_dict() (--update-buffers yes), JSON-plain


@dataclass(frozen=True)
class CoverageOutcome:
    """The audit over every sample given (or --samples drawn with the seed), batch by batch.

    ``recognised`` means: a fail-severity per-sample rule of the profile fires on the sample for some attack
    (the default profile's when the profile has none, e.g. one that gates on the rate alone:
    ``verdict.rules.recognition_rules``); ``criterion`` names the rules. The interval is Clopper-Pearson
    (``metrics.stats``)."""

    available: int  # samples found in --data
    planned: int  # samples drawn for the audit
    batch_size: int
    batches_planned: int
    samples: tuple[SampleCoverage, ...]  # the audited ones, in index order
    batches: tuple[BatchCoverage, ...]  # the batches that ran (or were restored from the checkpoint)
    criterion: tuple[str, ...]  # rule ids that define "recognised"
    ranking_metric: str  # what "best attack" and "worst sample" are judged by
    shown_batch: int  # the batch whose attacks, images and control the report's detail sections show
    drawn: str = "all"  # "all" | "N of M drawn with seed S"
    remainder: str = ""  # what happened to samples a batch size does not divide
    resumed: int = 0  # batches restored from a checkpoint
    confidence: float = 0.95
    # the rules of ``criterion`` themselves (id, metric, comparison, threshold, max_p): the default profile's
    # when the scan's profile has no per-sample fail rule, so they are not among the scan's rule results
    criterion_rules: tuple[dict[str, Any], ...] = ()

    @property
    def audited(self) -> int:
        return len(self.samples)

    @property
    def recognised(self) -> int:
        return sum(1 for s in self.samples if s.recognised)

    @property
    def fraction(self) -> float | None:
        return self.recognised / self.audited if self.audited else None

    @property
    def interval(self) -> tuple[float, float]:
        from .metrics.stats import clopper_pearson

        return clopper_pearson(self.recognised, self.audited, self.confidence)

    @property
    def crashed(self) -> tuple[str, ...]:
        """Attacks that crashed in any batch, each named once (``batches`` say which)."""
        return tuple(dict.fromkeys(name for b in self.batches for name in b.crashed))


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
    # Every batch of the scan (schema 1.4). The sections above show one batch (``coverage.shown_batch``); the
    # rules and the control are combined over all batches.
    coverage: CoverageOutcome | None = None
    # What the recognition test compared each reconstruction with (``metrics.references.ScanReferences.summary``)
    references: dict[str, Any] | None = None
    # Whether matching can work on this batch's update (schema 1.6): the update at the samples vs at the samples
    # moved a tiny bit, and the BatchNorm layers responsible when it cannot
    conditioning: Conditioning | None = None
    # The [[ignore]] entries that apply to the model (schema 1.7; leakaudit.suppress): active or expired
    suppressions: tuple[SuppressionOutcome, ...] = ()
    # What the BatchNorm running statistics sent with the update reveal (schema 1.7, --update-buffers yes)
    batchnorm_statistics: BufferLeak | None = None
    # Why ``command`` is empty (a model or samples passed in memory have no file a command line could name)
    command_reason: str = ""

    @property
    def outcome(self) -> Outcome:
        """The verdict, exit code and summary line every output shows (``leakaudit.verdict.outcome``)."""
        control = self.control
        return decide([(r.id, r.status, r.severity) for r in self.rules], strict=self.strict,
                      crashed=list(dict.fromkeys([a.name for a in self.attacks if a.status == "failed"]
                                                   + list(self.coverage.crashed if self.coverage else ()))),
                      incomplete=self.incomplete,
                      exit_zero=bool(self.settings and self.settings.exit_zero),
                      control=control.counts if control else None, control_evidence=control.evidence if control else "",
                      expired=[f"{s.rule} (expired {s.expires})" for s in self.suppressions if s.status == "expired"],
                      caveat=_caveat(self.model))

    @property
    def overall(self) -> str:
        """"pass" | "fail" | "error" (an attack crashed, no leak found) | "inconclusive" (the control did not
        reconstruct either) | "incomplete" (interrupted)."""
        return self.outcome.overall

    def fitted_iterations(self) -> dict[str, int]:
        """The attacks whose iterations were fitted to their time share (``attacks.clock``), with the iterations
        they ran: what a reproduce command pins so that the scan repeats on any machine."""
        return {a.name: int(a.iterations_run) for a in self.attacks
                if a.status == "ran" and "seconds" in a.settings and not a.stopped_early and a.iterations_run
                and a.iterations_planned and a.iterations_run < a.iterations_planned}

    @property
    def leaked(self) -> bool:
        """A fail-severity rule fired (whatever else happened: a leak found is real). Not the same as
        ``rules_overall == "fail"``, which under --strict also counts a fail-severity rule not evaluated."""
        return any(r.status == "fail" for r in self.rules)

    @property
    def exit_code(self) -> int:
        """What a CI gate acts on: 0 pass, 1 leak, 3 a crashed attack, 4 inconclusive (--strict: 1), 130
        interrupted (--exit-zero: a leak 0)."""
        return self.outcome.exit_code


def _caveat(model: ModelCard) -> str:
    """What the verdict is about when it is not the client's model (stated in the summary every output shows)."""
    if model.folded_batchnorm == "recorded":
        return ("this verdict is about the BatchNorm-folded function of the ONNX file, not the client's train-mode "
                "model (--allow-folded-batchnorm)")
    return ""
