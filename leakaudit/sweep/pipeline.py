"""The real sweep: load the model, samples and findings once, then one ``audit`` per value of the knob.

Every value runs with the same seed, so the client's dropout masks and the defenses' random draws are the
same sequence at every value (common random numbers): the curve shows the knob's effect, not the noise
of fresh draws.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..audit import Prepared
from ..audit import prepare as prepare_audit
from ..audit import run as run_audit
from ..detect.interface import Findings
from ..errors import ConfigError, argument_ref
from ..models.interface import LoadedModel
from ..progress import NullObserver, Observer
from .interface import (
    DONE,
    ERROR,
    INTERRUPTED,
    MetricSummary,
    Point,
    PointAttack,
    PointCost,
    PointRule,
)
from ..config import ScanSettings, settings_in_roles
from ..data.interface import SampleBatch
from ..result import AttackOutcome, AuditResult
from .knobs import Vary
from .settings import defenses_with, rebuild_with_dropout

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
VARY = argument_ref("vary")


def prepare(model: str | LoadedModel, data: Any, settings: Any, observer: Observer | None = None) -> Prepared:
    """``leakaudit.audit.prepare``: the same pre-flight and loading as a scan (a typo in an attack name or a rule
    file is refused before the model loads and before sweep.json is written). A sweep audits the first client
    batch at every value (``plan=None``): the coverage of the whole sample set is ``scan``'s."""
    return dataclasses.replace(prepare_audit(model, data, settings, observer=observer), plan=None)


def default_audit(prepared: Prepared, command: str = "") -> "AuditFn":
    """``leakaudit.audit.run`` on the prepared rules and batch: what ``make_runner`` calls per value (the model
    and findings may be the value's own, e.g. rebuilt with another dropout rate)."""

    def run(model: LoadedModel, batch: SampleBatch, findings: Findings, settings: ScanSettings,
            observer: Observer) -> AuditResult:
        # source=None: a worker must not load the file again when the value's model was rebuilt from it
        value = dataclasses.replace(prepared, model=model, batch=batch, findings=findings, source=None)
        return run_audit(value, settings, observer=observer, command=command)

    return run


def higher_is_better(metric: str) -> bool | None:
    try:
        from ..metrics import METRICS

        return bool(METRICS.get(metric).higher_is_better)
    except Exception:  # noqa: BLE001 -- an unregistered metric is plotted without a direction
        return None


def check_knob(vary: Vary, prepared: Prepared, defenses: tuple[str, ...]) -> None:
    """Refuse, before any value runs, a knob that cannot apply to this model (one error, not N)."""
    from ..update import parse_defense

    knob = vary.knob
    if knob.target == "model":
        rebuild_with_dropout(prepared.model, vary.values[-1])  # a weights mismatch is one error, not one per value
        return
    if knob.component == "ppp" and not prepared.findings.bottlenecks:
        raise ConfigError(f"{VARY} {knob.name}: {prepared.model.path} has no PRECODE (variational) bottleneck, so "
                          f"PPP has no layers to perturb; vary noise.sigma instead")
    for spec in defenses_with(defenses, knob, vary.values[0]):
        parse_defense(spec)


def settings_for_resume(settings: ScanSettings) -> dict[str, Any]:
    """The settings a resumed sweep must share with the first run (JSON-ready): those that change a result."""
    return settings_in_roles(settings, "result")


def point_from_audit(value: float, result: AuditResult, notes: tuple[str, ...] = ()) -> Point:
    """An ``AuditResult`` at one value -> a sweep ``Point`` (metrics per attack, rules, images)."""
    image = getattr(result.data, "modality", "image") == "image"
    attacks = tuple(_point_attack(a, image) for a in result.attacks if a.ran)
    extra = [*notes, *(f"{a.name} {a.status}: {a.reason}".rstrip(": ") for a in result.attacks if not a.ran)]
    rules = tuple(PointRule(r.id, r.metric, r.comparison, float(r.threshold), r.severity, r.status,
                              _finite(r.observed), r.attack, r.reason or None) for r in result.rules)
    seconds = (result.finished_at - result.started_at).total_seconds()
    c = result.defense_cost
    cost = None if c is None else PointCost(_finite(c.cosine), _finite(c.relative_error), _finite(c.kept), c.summary())
    outcome = result.outcome  # the scan's own verdict (leakaudit.verdict.outcome): one rule for scan and sweep
    if outcome.overall == "incomplete":
        reason = result.incomplete_reason or "interrupted"
        return Point(value, INTERRUPTED, attacks=attacks, rules=rules, seconds=seconds, error=reason,
                     notes=tuple(extra), cost=cost)
    if outcome.overall in ("pass", "fail"):  # a fail stands even if another attack crashed: the leak is real
        return Point(value, DONE, passed=outcome.overall == "pass", attacks=attacks, rules=rules,
                     seconds=seconds, notes=tuple(extra) + tuple(result.notes), cost=cost)
    # error (an attack crashed, no other found a leak) or inconclusive (the positive control did not reconstruct):
    # no verdict at this value, a pass would not be credible; only a crash is an internal error
    error = "; ".join(f"attack {a.name} failed: {a.reason}" for a in result.attacks if a.status == "failed")
    return Point(value, ERROR, attacks=attacks, rules=rules, seconds=seconds, error=error or outcome.summary,
                 error_kind="internal" if outcome.overall == "error" else "inconclusive", notes=tuple(extra),
                 cost=cost)


def _point_attack(a: AttackOutcome, image: bool = True) -> PointAttack:
    """One attack that ran: its metrics per sample (and those it could not compute, with why), its images."""
    from ..report.images import png_data_uri

    names: list[str] = []
    for s in a.samples:
        names += [n for n in s.metrics if n not in names]
    metrics = [MetricSummary(n, tuple(_finite(s.metrics.get(n)) for s in a.samples), higher_is_better(n))
               for n in names]
    metrics += [MetricSummary(n, (), higher_is_better(n), reason) for n, reason in a.unavailable.items()
                if n not in names]
    images: tuple[str, ...] = ()
    if a.pixels is not None and image:  # a record is no picture
        images = tuple(png_data_uri(a.pixels[i]) for i in range(a.pixels.shape[0]))
    return PointAttack(a.name, tuple(metrics), _finite(a.attack_loss), a.seconds, a.iterations_run, images)


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


AuditFn = Callable[[LoadedModel, SampleBatch, Findings, ScanSettings, Observer], AuditResult]


def make_runner(vary: Vary, prepared: Prepared, settings: ScanSettings, audit_fn: AuditFn,
                observer: Observer | None = None) -> Callable[[float], Point]:
    """``run_one(value)`` for ``run_sweep``: the audit of the shared model/samples at one knob value.

    ``audit_fn(model, batch, findings, settings, observer)`` runs one audit on preloaded inputs.
    """
    observer = observer or NullObserver()
    knob = vary.knob

    def run_one(value: float) -> Point:
        model, findings = prepared.model, prepared.findings
        notes: tuple[str, ...] = ()
        value_settings = settings
        if knob.target == "model":
            from ..detect import detect

            model = rebuild_with_dropout(prepared.model, value)
            findings = detect(model)
            notes = (f"model rebuilt as {model.arch} with dropout p={value:g}",)
        else:
            value_settings = dataclasses.replace(settings, defenses=defenses_with(settings.defenses, knob, value))
        result = audit_fn(model, prepared.batch, findings, value_settings, observer)
        return point_from_audit(value, result, notes)

    return run_one
