"""Applying a rule set to the scores of every attack: one result per rule, then the overall verdict.

For each rule the worst (most leaking) value over all attacks -- and over all samples for scope "any" --
is compared with the threshold. A rule fires on any attack; it passes only when every attack produced the
metric and none crossed the threshold. A metric without a value (LPIPS without weights, label accuracy when
the labels were given to the attacker, no attack run) makes the rule "not_evaluated" with the reason: it
never passes silently, and under ``strict`` a fail-severity one counts as a failure (a warn-severity one
never fails a scan; see ``outcome``). A structure metric (SSIM) on a flat
original is not counted (see ``leakaudit.metrics.scoring``): the rule says which samples it left out, and is
not evaluated when no other sample remains.

A rule whose metric belongs to another modality than the batch's (an image metric on tabular records) is
``not_applicable``: neither fired, passed nor not evaluated, it is left out of the verdict and listed as such.

The scan's overall verdict and exit code, which also weigh crashed attacks and interruptions, are decided
by ``outcome.decide``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

from ..metrics import METRICS
from .outcome import Outcome, decide, rules_fail
from .rules import Rule, RuleSet

if TYPE_CHECKING:  # scores are computed with torch; a verdict is read (leakaudit rules, reports) without it
    from ..metrics import AttackScore

# "suppressed": what a fail or warn becomes under an [[ignore]] entry (``verdict.outcome.suppressed_statuses``)
Status = Literal["pass", "fail", "warn", "not_evaluated", "not_applicable", "suppressed"]


@dataclass(frozen=True)
class Observation:
    value: float
    attack: str
    sample: str | None  # None for a batch mean


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    status: Status
    observed: float | None  # the worst (most leaking) value seen, None when nothing was measured
    attack: str | None  # where the worst value was seen
    sample: str | None
    reason: str
    unavailable: dict[str, str]  # attack -> why the metric had no value there

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready (the report's rule row)."""
        r = self.rule
        return {
            "id": r.id, "metric": r.metric, "comparison": r.comparison, "threshold": r.threshold,
            "severity": r.severity, "scope": r.scope, "status": self.status, "observed": self.observed,
            "attack": self.attack, "sample": self.sample, "reason": self.reason,
            "description": r.description, "rationale": r.rationale, "reference": r.reference, "max_p": r.max_p,
        }


@dataclass(frozen=True)
class Verdict:
    overall: Literal["pass", "fail"]
    results: tuple[RuleResult, ...]
    profile: str
    strict: bool

    def outcome(self, *, exit_zero: bool = False) -> Outcome:
        """The rules' outcome alone (no crashed attack, not interrupted); a scan's is ``AuditResult.outcome``."""
        return decide([(r.rule.id, r.status, r.rule.severity) for r in self.results], strict=self.strict,
                      exit_zero=exit_zero)


def evaluate(ruleset: RuleSet, scores: Sequence[AttackScore], *, strict: bool = False,
             modality: str | None = None, inapplicable: Mapping[str, str] | None = None) -> Verdict:
    """The verdict of ``ruleset`` on the scores of every attack that ran, on samples of ``modality`` (None: the
    scores' own, "image" when there are none). ``inapplicable``: metrics these samples cannot have, with why (a
    next-word model's lines have no class labels): their rules are not applicable, as another modality's are."""
    modality = modality or next((getattr(s, "modality", "image") for s in scores), "image")
    inapplicable = inapplicable or {}
    results = tuple(_not_for_these(rule, inapplicable[rule.metric]) if rule.metric in inapplicable
                    else evaluate_rule(rule, scores) if METRICS.get(rule.metric).applies_to(modality)
                    else not_applicable(rule, modality) for rule in ruleset.rules)
    failing = rules_fail(((r.rule.id, r.status, r.rule.severity) for r in results), strict=strict)
    return Verdict(overall="fail" if failing else "pass", results=results, profile=ruleset.name, strict=strict)


def not_applicable(rule: Rule, modality: str) -> RuleResult:
    """The result of a rule on another modality's metric: it says nothing about these samples."""
    declared = METRICS.get(rule.metric).modality
    return RuleResult(rule=rule, status="not_applicable", observed=None, attack=None, sample=None,
                      reason=f"not applicable: a rule of the {declared} criterion ({rule.metric}), and these "
                             f"samples are {modality}",
                      unavailable={})


def _not_for_these(rule: Rule, why: str) -> RuleResult:
    return RuleResult(rule=rule, status="not_applicable", observed=None, attack=None, sample=None,
                      reason=f"not applicable: {why}", unavailable={})


def _observations(rule: Rule, score: AttackScore) -> tuple[list[Observation], str | None]:
    """The values of ``rule.metric`` in one attack's score, or why there are none. Samples where the metric
    is excluded (SSIM on a flat original) do not count; their means are already taken without them."""
    if rule.metric in score.unavailable:
        return [], score.unavailable[rule.metric]
    if rule.max_p is not None and "match_p" in score.unavailable:
        return [], f"attribution (match_p) not computed: {score.unavailable['match_p']}"
    if rule.scope == "mean":
        value = score.means.get(rule.metric)
        found = [] if value is None else [Observation(value, score.attack, None)]
    else:
        found = [Observation(v, score.attack, name) for name, v in score.counted(rule.metric)]
    if not found and score.excluded(rule.metric):
        return [], next(iter(score.excluded(rule.metric).values()))
    if not found:
        return [], f"{rule.metric} was not computed"
    nan = [o for o in found if math.isnan(o.value)]
    if nan:
        return [], f"{rule.metric} is NaN for {len(nan)} value(s)"
    return found, None


def attributed(score: AttackScore, max_p: float) -> dict[str, float]:
    """Sample name -> match_p for the samples whose reconstruction is attributable to them at ``max_p``."""
    from ..metrics.interface import attributable

    return {s.name: s.metrics["match_p"] for s in score.samples
            if "match_p" in s.metrics and "match_p" not in s.excluded and s.references is not None
            and not math.isnan(s.metrics["match_p"]) and attributable(s.metrics["match_p"], s.references, max_p)}


def _split_attributed(rule: Rule, score: AttackScore,
                      found: list[Observation]) -> tuple[list[Observation], list[Observation]]:
    """``found`` as (attributable, not attributable) under the rule's ``max_p`` (all attributable without one)."""
    if rule.max_p is None:
        return found, []
    ok = attributed(score, rule.max_p)
    return [o for o in found if o.sample in ok], [o for o in found if o.sample not in ok]


def evaluate_rule(rule: Rule, scores: Sequence[AttackScore]) -> RuleResult:
    metric = METRICS.get(rule.metric)
    observations: list[Observation] = []
    unattributed: list[Observation] = []
    missing: dict[str, str] = {}
    for score in scores:
        found, why = _observations(rule, score)
        ok, not_ok = _split_attributed(rule, score, found)
        observations += ok
        unattributed += not_ok
        if why is not None:
            missing[score.attack or "attack"] = why
    worst = None
    if observations:
        pick = max if metric.leak_direction == "higher" else min
        worst = pick(observations, key=lambda o: o.value)
    fired = worst is not None and metric.leaks(worst.value, rule.threshold, rule.comparison)
    status: Status
    if fired:
        status = "fail" if rule.severity == "fail" else "warn"
    elif not scores:
        status = "not_evaluated"
        missing = {"": "no attack produced a score"}
    elif missing:
        status = "not_evaluated"
    else:
        status = "pass"
    if worst is None and unattributed and status == "pass":
        return RuleResult(rule=rule, status=status, observed=None, attack=None, sample=None,
                          reason=_unattributed_reason(rule, unattributed), unavailable=missing)
    return RuleResult(
        rule=rule, status=status,
        observed=None if worst is None else worst.value,
        attack=None if worst is None else worst.attack,
        sample=None if worst is None else worst.sample,
        reason=_reason(rule, status, worst, missing, len(scores)) + _not_counted(rule, scores, missing),
        unavailable=missing,
    )


def _unattributed_reason(rule: Rule, seen: list[Observation]) -> str:
    pick = max if METRICS.get(rule.metric).leak_direction == "higher" else min
    best = pick(seen, key=lambda o: o.value)
    return (f"no reconstruction is attributable to its own sample (match_p <= {rule.max_p:g}); the most leaking "
            f"unattributed one, {rule.metric} {best.value:.4g} on {_where(best)}, is not counted")


def _not_counted(rule: Rule, scores: Sequence[AttackScore], missing: dict[str, str]) -> str:
    """Names the samples a rule left out (flat originals), unless the not-evaluated reason already says so."""
    names = sorted({name for score in scores if (score.attack or "attack") not in missing
                    for name in score.excluded(rule.metric)})
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"; {len(names)} flat original(s) not counted ({shown}: {rule.metric} needs structure)"


def _where(o: Observation) -> str:
    sample = "batch mean" if o.sample is None else f"sample {o.sample}"
    return f"{sample}, attack {o.attack}" if o.attack else sample


def _reason(rule: Rule, status: Status, worst: Observation | None, missing: dict[str, str], n: int) -> str:
    if status in ("fail", "warn"):
        assert worst is not None
        return f"{rule.metric} {worst.value:.4g} {rule.comparison} {rule.threshold:g} on {_where(worst)}"
    if status == "not_evaluated":
        # Group attacks that share a reason (LPIPS weights missing is the same for every attack).
        by_reason: dict[str, list[str]] = {}
        for attack, r in missing.items():
            by_reason.setdefault(r, []).append(attack)
        why = "; ".join(f"{', '.join(a for a in attacks if a)}: {r}" if any(attacks) else r
                        for r, attacks in by_reason.items())
        seen = f" (worst measured elsewhere: {worst.value:.4g} on {_where(worst)})" if worst else ""
        return f"not evaluated: {why}{seen}"
    assert worst is not None
    return (f"worst {rule.metric} {worst.value:.4g} on {_where(worst)} does not reach "
            f"{rule.comparison} {rule.threshold:g} ({n} attack(s))")
