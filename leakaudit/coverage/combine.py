"""Per-batch audits -> per-sample records -> one scan verdict.

Each client batch is audited on its own (its own update, attacks, settled-verdict plan and positive control).
This module reads each batch's ``AuditResult`` into small records (``BatchCoverage``, ``SampleCoverage``) and,
at the end, combines them:

- a rule's result over the scan is its worst over the batches: it fires when it fired in any batch (a leak in
  any batch is a FAIL), is not evaluated when it fired nowhere and was not evaluated somewhere, and passes only
  when it passed in every batch;
- the rules on the scan-level metrics (``recognised_fraction``, ``recognised_upper``) are evaluated once, on the
  records of every batch;
- the control: a batch's pass is earned by its own control (its samples reconstructed without the defenses).
  The scan's pass needs every passing batch's pass earned, so one batch whose control did not reconstruct makes
  an otherwise passing scan inconclusive (its samples were not shown to be safe, only not reconstructed);
- an attack that crashed in any batch makes a scan without a leak an ERROR.

Only what the report shows is kept: the per-sample scores of every sample, and reconstruction images of the
worst ``GALLERY`` samples; the full result (tensors) of one batch, the one with the worst sample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Sequence

from ..result import (AuditResult, BatchCoverage, ControlOutcome, CoverageOutcome, DataCard, RuleOutcome,
                      SampleCoverage, _leak_key, worst_key)

if TYPE_CHECKING:
    import torch

    from ..metrics.scoring import SampleScore
    from ..verdict.rules import Rule, RuleSet
    from .run import Plan

GALLERY = 12  # worst cases whose reconstructions the report keeps


def coverage_rules(ruleset: RuleSet) -> tuple[Rule, ...]:
    from ..metrics.builtin import COVERAGE_METRICS

    return tuple(r for r in ruleset.rules if r.metric in COVERAGE_METRICS)


def batch_ruleset(ruleset: RuleSet) -> RuleSet:
    """The rules a single batch is judged by: all but the scan-level (coverage) ones."""
    rules = coverage_rules(ruleset)
    return replace(ruleset, rules=tuple(r for r in ruleset.rules if r not in rules)) if rules else ruleset


def criterion(ruleset: RuleSet, modality: str | None = None) -> tuple[Rule, ...]:
    """The rules that say a sample of ``modality`` is recognised (``verdict.rules.recognition_rules``): the
    profile's per-sample fail-severity rules on that modality's metrics, or the default profile's when it has
    none."""
    from ..verdict.rules import recognition_rules

    return recognition_rules(ruleset, modality)


def ranking_metric(rules: Sequence[Rule]) -> str:
    return rules[0].metric if rules else "ssim"


def batch_record(result: AuditResult, *, index: int, seed: int, offset: int, rules: Sequence[Rule], metric: str,
                 seconds: float) -> tuple[BatchCoverage, list[SampleCoverage]]:
    """The records of one batch's audit: the batch's verdict and, per sample, the best attack and its scores.
    Every sample's reconstruction image is made here; ``prune`` drops all but the worst cases'."""
    data = result.data
    best, hits = _best_attacks(result, rules, metric)
    samples = [_sample_record(offset + i, name, data.labels[i] if i < len(data.labels) else None, index, i,
                              best.get(i), hits.get(i, set()), data) for i, name in enumerate(data.names)]
    control = result.control
    outcome = result.outcome
    record = BatchCoverage(index=index, seed=seed, size=len(data.names), overall=outcome.overall,
                           rules=result.rules, crashed=outcome.crashed, control=control.counts if control else None,
                           control_evidence=control.evidence if control else "", seconds=seconds,
                           incomplete=result.incomplete,
                           conditioning=result.conditioning.as_dict() if result.conditioning else None,
                           batchnorm_statistics=result.batchnorm_statistics.as_dict()
                           if result.batchnorm_statistics else None)
    return record, samples


def _recovered(data: DataCard, row: int, x: torch.Tensor | None) -> tuple[int, ...]:
    """Per feature of a tabular record: recovered (1) by its best attack's reconstruction ``x`` or not (0)."""
    if data.records is None or x is None or data.pixels is None:
        return ()
    hits = data.records.schema.hits(x.reshape(-1).float(), data.pixels[row].reshape(-1).float())
    return tuple(int(h) for h in hits.tolist())


@dataclass(frozen=True)
class _Best:
    """The best attack on one sample: one that recognised it, then the most leaking on the ranking metric."""

    key: tuple[bool, float]
    attack: str
    metrics: dict[str, float]
    pixels: torch.Tensor | None  # its reconstruction
    score: SampleScore


def _best_attacks(result: AuditResult, rules: Sequence[Rule],
                  metric: str) -> tuple[dict[int, _Best], dict[int, set[str]]]:
    """Per sample of the batch (its position): the best attack on it, and the ids of the rules that fired on it."""
    from ..verdict.rules import fires_on

    best: dict[int, _Best] = {}
    hits: dict[int, set[str]] = {}
    for attack in result.attacks:
        if not attack.ran:
            continue
        for row, s in enumerate(attack.samples):
            i = s.original_index if s.original_index is not None else s.index
            fired = {rule.id for rule in rules if fires_on(rule, s.metrics, s.excluded, s.references)}
            hits.setdefault(i, set()).update(fired)
            key = (bool(fired), _leak_key(None if metric in s.excluded else s.metrics.get(metric), metric))
            if i not in best or key > best[i].key:
                pixels = attack.pixels[row] if attack.pixels is not None and row < attack.pixels.shape[0] else None
                best[i] = _Best(key, attack.name, dict(s.metrics), pixels, s)
    return best, hits


def _sample_record(index: int, name: str, label: int | None, batch: int, position: int, found: _Best | None,
                   hits: set[str], data: DataCard | None = None) -> SampleCoverage:
    from ..report.images import png_data_uri

    image = data is None or data.modality == "image"  # a record has no picture; its recovered features instead
    return SampleCoverage(
        index=index, name=name, label=label, batch=batch, position=position,
        attack=found.attack if found else None,
        metrics={k: float(v) for k, v in found.metrics.items()} if found else {}, recognised=bool(hits),
        rules=tuple(sorted(hits)),
        reconstruction=png_data_uri(found.pixels) if image and found and found.pixels is not None else None,
        references=found.score.references if found else None, transform=found.score.transform if found else "",
        recovered=_recovered(data, position, found.pixels if found else None) if data is not None else (),
        label_recovered=found.score.label_recovered if found else None)


def prune(samples: Iterable[SampleCoverage], metric: str, keep: int = GALLERY) -> list[SampleCoverage]:
    """All samples, in index order, with reconstruction images only on the ``keep`` worst."""
    samples = sorted(samples, key=lambda s: s.index)
    worst = {s.index for s in sorted(samples, key=lambda s: worst_key(s, metric), reverse=True)[:keep]}
    return [s if s.index in worst or s.reconstruction is None else replace(s, reconstruction=None) for s in samples]


def worst_batch(samples: Sequence[SampleCoverage], metric: str) -> int:
    """The batch of the worst sample (the first such batch on a tie): the one the report shows in detail."""
    ranked = sorted(samples, key=lambda s: (worst_key(s, metric), -s.index), reverse=True)
    return ranked[0].batch if ranked else 0


def _combine_rule(rows: list[tuple[int, RuleOutcome]], many: bool) -> RuleOutcome:
    from ..metrics import METRICS

    def key(item: tuple[int, RuleOutcome]) -> float:
        return _leak_key(item[1].observed, item[1].metric) if item[1].metric in METRICS else 0.0

    fired = [x for x in rows if x[1].status in ("fail", "warn", "suppressed")]
    unevaluated = [x for x in rows if x[1].status == "not_evaluated"]
    pick = max(fired, key=key) if fired else unevaluated[0] if unevaluated else max(rows, key=key)
    index, rule = pick
    if not many or rule.status == "not_applicable":  # the same in every batch: nothing to combine
        return rule
    if fired:
        reason = f"batch {index + 1}: {rule.reason} ({len(fired)} of {len(rows)} batches)"
    elif unevaluated:
        reason = f"batch {index + 1}: {rule.reason} ({len(unevaluated)} of {len(rows)} batches not evaluated)"
    else:
        reason = f"{rule.reason} (worst of {len(rows)} batches, in batch {index + 1})"
    return replace(rule, reason=reason, sample=rule.sample)


def combine_rules(batches: Sequence[BatchCoverage]) -> list[RuleOutcome]:
    order: list[str] = []
    rows: dict[str, list[tuple[int, RuleOutcome]]] = {}
    for b in batches:
        for r in b.rules:
            if r.id not in rows:
                order.append(r.id)
            rows.setdefault(r.id, []).append((b.index, r))
    return [_combine_rule(rows[rid], len(batches) > 1) for rid in order]


def rate_rules(rules: Sequence[Rule], recognised: int, audited: int, interval: tuple[float, float],
               criterion_ids: Sequence[str]) -> list[RuleOutcome]:
    """The scan-level rules, on the recognised fraction (or its interval's upper bound) of every audited sample."""
    from ..metrics import METRICS

    out = []
    for rule in rules:
        common = RuleOutcome(id=rule.id, metric=rule.metric, comparison=rule.comparison,
                             threshold=float(rule.threshold), severity=rule.severity, scope=rule.scope, status="",
                             description=rule.description, rationale=rule.rationale, reference=rule.reference)
        if not audited or not criterion_ids:
            why = "no sample was audited" if not audited else \
                "the rules have no per-sample rule that says what recognised means"
            out.append(replace(common, status="not_evaluated", reason=f"not evaluated: {why}"))
            continue
        value = recognised / audited if rule.metric == "recognised_fraction" else interval[1]
        fired = METRICS.get(rule.metric).leaks(value, rule.threshold, rule.comparison)
        status = ("fail" if rule.severity == "fail" else "warn") if fired else "pass"
        shown = (f"{rule.metric} {value:.4g}" + (f" {rule.comparison} {rule.threshold:g}" if fired
                 else f" does not reach {rule.comparison} {rule.threshold:g}"))
        reason = (f"{shown}: {recognised} of {audited} sample(s) recognised ({', '.join(criterion_ids)}), "
                  f"95% interval {interval[0]:.3g}-{interval[1]:.3g} (Clopper-Pearson)")
        out.append(replace(common, status=status, observed=value, reason=reason))
    return out


def combine_control(shown: ControlOutcome | None, batches: Sequence[BatchCoverage]) -> ControlOutcome | None:
    """One control per batch; the scan's: did not reconstruct when any batch's did not, else reconstructed when
    any batch's did, else none (every batch leaked, or no fail rule to reach)."""
    if shown is None or len(batches) <= 1:
        return shown
    counts = [b.control for b in batches]
    failed = [b for b in batches if b.control is False]
    value = False if failed else True if any(c is True for c in counts) else None
    tally = (f"one control per batch: {sum(c is True for c in counts)} of {len(batches)} reconstructed, "
             f"{len(failed)} did not, {sum(c is None for c in counts)} not needed or not run")
    evidence = (f"batch {failed[0].index + 1} {failed[0].control_evidence}" if failed else shown.evidence)
    status = "ran" if value is not None else shown.status
    return replace(shown, status=status, reconstructed=value, reason=f"{shown.reason}; {tally}",
                   evidence=evidence)


@dataclass(frozen=True)
class Finished:
    """What the run over a plan's batches ended with (``coverage.run.run_batches``)."""

    batches: Sequence[BatchCoverage]  # every batch audited, restored ones included
    samples: Sequence[SampleCoverage]
    shown_batch: int  # the batch whose full result is the report's detail
    resumed: int  # batches restored from a checkpoint
    interrupted: bool
    # why batches could not be audited (their worker died twice): the scan is then incomplete, like an
    # interrupted one -- what ran is reported, and no verdict is final
    lost: Sequence[str] = ()


def combine(shown: AuditResult, *, ruleset: RuleSet, plan: Plan, finished: Finished, strict: bool) -> AuditResult:
    """The scan's result: ``shown``'s detail sections, the rules and control combined over the finished batches,
    and the coverage section of ``plan``."""
    from ..verdict.outcome import rules_fail

    samples, shown_batch, resumed, interrupted, lost = (finished.samples, finished.shown_batch, finished.resumed,
                                                         finished.interrupted, finished.lost)
    available, planned, drawn, remainder = plan.available, plan.planned, plan.drawn, plan.remainder
    batch_size, batches_planned = len(plan.batches[0]) if plan.batches else 0, len(plan.batches)

    rules_for_samples = criterion(ruleset, shown.data.modality)
    ids = tuple(r.id for r in rules_for_samples)
    metric = ranking_metric(rules_for_samples)
    batches = sorted(finished.batches, key=lambda b: b.index)
    coverage = CoverageOutcome(
        available=available, planned=planned, batch_size=batch_size, batches_planned=batches_planned,
        samples=tuple(prune(samples, metric)), batches=tuple(batches), criterion=ids, ranking_metric=metric,
        shown_batch=shown_batch, drawn=drawn, remainder=remainder, resumed=resumed,
        criterion_rules=tuple({"id": r.id, "metric": r.metric, "comparison": r.comparison,
                               "threshold": r.threshold, "max_p": r.max_p} for r in rules_for_samples))
    rules = combine_rules(batches) + rate_rules(coverage_rules(ruleset), coverage.recognised, coverage.audited,
                                                coverage.interval, ids)
    leaked = rules_fail(((r.id, r.status, r.severity) for r in rules), strict=strict)
    incomplete = interrupted or shown.incomplete or any(b.incomplete for b in batches) or bool(lost)
    missing = batches_planned - len(batches)
    reason = shown.incomplete_reason
    if lost:
        reason = (f"{len(lost)} of {batches_planned} batches not audited ({'; '.join(lost[:3])}); run the scan "
                  "again with --resume to audit them")
    elif incomplete and missing:
        reason = f"interrupted after {len(batches)} of {batches_planned} batches; resume with --resume"
    notes = shown.notes + ((remainder,) if remainder else ())
    from ..suppress import apply_to_result

    # the suppressions again on the combined rules: the scan-level rate rules, and a changed file on --resume
    return apply_to_result(replace(shown, rules=tuple(rules), rules_overall="fail" if leaked else "pass",
                                   control=combine_control(shown.control, batches), coverage=coverage,
                                   incomplete=incomplete, incomplete_reason=reason if incomplete else "",
                                   notes=notes, finished_at=datetime.now(timezone.utc)))

