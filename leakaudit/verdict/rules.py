"""Rule files (TOML): built-in profiles and user files, validated with one clear line per mistake.

A rule file holds a ``description`` and ``[[rule]]`` tables::

    [[rule]]
    id = "recognisable-ssim"      # unique within the file
    metric = "ssim_adjusted"      # a name from leakaudit.metrics.METRICS
    threshold = 0.6               # inside the metric's range
    comparison = ">="             # optional; must agree with the metric's leak direction
    severity = "fail"             # "fail" | "warn"
    scope = "any"                 # "any" sample | "mean" over the batch (batch-level metrics: "mean" only)
    max_p = 0.02                  # optional, scope "any": count only samples attributable to their own original
                                  # (re-identification p-value match_p <= max_p; metrics.recognition)
    description = "..."
    rationale = "..."
    reference = "..."             # the paper the threshold leans on

``load_rules("default")`` loads a built-in profile (``rules/<name>.toml``); anything that looks like a path
(has a suffix or a separator, or exists) is read as a user file.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from ..errors import ConfigError
from ..metrics import METRICS
from ..metrics.interface import COMPARISONS, COMPARISONS_FOR, DEFAULT_COMPARISON, Metric
from ..resources import rules_dir
from ..userfiles import parse_toml, read_user_text

SEVERITIES = ("fail", "warn")
SCOPES = ("any", "mean")
REQUIRED = ("id", "metric", "threshold")
TEXT_KEYS = ("description", "rationale", "reference")
RULE_KEYS = (*REQUIRED, "comparison", "severity", "scope", "max_p", *TEXT_KEYS)
TOP_KEYS = ("description", "rule")


@dataclass(frozen=True)
class Rule:
    id: str
    metric: str
    threshold: float
    comparison: str  # resolved: the file's, or the metric's default for its leak direction
    severity: str
    scope: str
    description: str = ""
    rationale: str = ""
    reference: str = ""
    # Count a sample only when its reconstruction is attributable to it: match_p <= max_p (None: every sample).
    max_p: float | None = None

    def describe(self) -> str:
        """e.g. ``ssim_skill >= 0.2 on any sample attributable to it (match_p <= 0.02)``."""
        from ..metrics.builtin import COVERAGE_METRICS

        where = ("over every audited sample" if self.metric in COVERAGE_METRICS
                 else "on any sample" if self.scope == "any" else "on the batch mean")
        unit = METRICS.get(self.metric).unit
        attributed = f" attributable to it (match_p <= {self.max_p:g})" if self.max_p is not None else ""
        return f"{self.metric} {self.comparison} {self.threshold:g}{' ' + unit if unit else ''} {where}{attributed}"


@dataclass(frozen=True)
class RuleSet:
    name: str  # profile name, or the file's stem
    source: str  # "built-in" or the file path as given
    description: str
    rules: tuple[Rule, ...]

    def get(self, rule_id: str) -> Rule:
        return next(r for r in self.rules if r.id == rule_id)


def per_sample(rule: Rule) -> bool:
    """A rule judged on each sample (scope "any" over a per-sample metric, not a scan-level rate)."""
    from ..metrics.builtin import COVERAGE_METRICS

    return rule.scope == "any" and rule.metric not in COVERAGE_METRICS and METRICS.get(rule.metric).per_sample


def recognition_rules(ruleset: RuleSet, modality: str | None = None) -> tuple[Rule, ...]:
    """What "recognised" means for one sample: the profile's per-sample fail-severity rules (any of them firing);
    in a profile without any -- one that gates on the rate alone, or only warns -- the default profile's. The
    positive control and the recognised fraction use this definition, so no profile can earn a pass without a
    control that reconstructed under it. ``modality``: only the rules on metrics of that modality (a profile
    covers every modality; an image rule says nothing about a tabular record)."""
    def criterion(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        return tuple(r for r in rules if per_sample(r) and r.severity == "fail"
                     and (modality is None or METRICS.get(r.metric).applies_to(modality)))

    return criterion(ruleset.rules) or criterion(load_rules("default").rules)


def fires_on(rule: Rule, metrics: dict[str, float], excluded: Collection[str] = (),
             references: int | None = None) -> bool:
    """Whether a per-sample ``rule`` fires on one sample's scores (``SampleScore``'s fields): its metric is counted
    there, crosses the threshold, and -- with ``max_p`` -- the reconstruction is attributable to the sample."""
    from ..metrics.interface import attributable

    value = metrics.get(rule.metric)
    if value is None or rule.metric in excluded or math.isnan(value):
        return False
    if not METRICS.get(rule.metric).leaks(float(value), rule.threshold, rule.comparison):
        return False
    if rule.max_p is None:
        return True
    p = metrics.get("match_p")
    return (p is not None and references is not None and "match_p" not in excluded and not math.isnan(p)
            and attributable(p, references, rule.max_p))


def list_profiles() -> list[str]:
    """Names of the built-in profiles (``rules/*.toml``)."""
    return sorted(p.name[: -len(".toml")] for p in rules_dir().iterdir() if p.name.endswith(".toml"))


def load_rules(name_or_path: str | Path) -> RuleSet:
    """A built-in profile by name, or a user rule file by path; ConfigError (one line) on any mistake."""
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or path.suffix or "/" in text or "\\" in text or path.is_file():
        return _load_file(path, label=text)
    profiles = list_profiles()
    if text not in profiles:
        close = difflib.get_close_matches(text, profiles, n=2)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"{text}: no built-in rule profile of that name; {hint}use one of {', '.join(profiles)} "
            "or a path to a .toml rule file"
        )
    resource = rules_dir().joinpath(f"{text}.toml")
    return _parse(resource.read_text(encoding="utf-8"), label=f"{text} (built-in)", name=text, source="built-in")


def _load_file(path: Path, *, label: str) -> RuleSet:
    text = read_user_text(
        path, ConfigError,
        missing=f"{label}: rule file not found; check the path or use a built-in profile "
                f"({', '.join(list_profiles())})",
        unreadable=f"{label}: cannot read the rule file ({{e}}); give a readable UTF-8 .toml file")
    return _parse(text, label=label, name=path.stem, source=label)


def _parse(text: str, *, label: str, name: str, source: str) -> RuleSet:
    doc = parse_toml(text, label, ConfigError, "fix the syntax at that line")
    _check_keys(doc, TOP_KEYS, f"{label}:", "top-level key")
    raw_rules = doc.get("rule")
    if not isinstance(raw_rules, list) or not raw_rules or not all(isinstance(r, dict) for r in raw_rules):
        raise ConfigError(f"{label}: no [[rule]] tables; add at least one [[rule]] with id, metric and threshold")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{label}: description must be a string; quote it")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(raw, where=_where(label, index, raw))
        if rule.id in seen:
            raise ConfigError(
                f"{_where(label, index, raw)}: duplicate id (rule {seen[rule.id]} has it too); "
                "give each rule its own id"
            )
        seen[rule.id] = index
        rules.append(rule)
    return RuleSet(name=name, source=source, description=description, rules=tuple(rules))


def _where(label: str, index: int, raw: dict[str, Any]) -> str:
    rid = raw.get("id")
    return f"{label}: rule {index}" + (f" ({rid!r})" if isinstance(rid, str) and rid else "")


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str, what: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where} unknown {what} {key!r}; {hint}allowed: {', '.join(allowed)}")


def _parse_rule(raw: dict[str, Any], *, where: str) -> Rule:
    _check_keys(raw, RULE_KEYS, f"{where}:", "key")
    for key in REQUIRED:
        if key not in raw:
            raise ConfigError(f"{where}: missing {key}; add `{key} = ...` to the rule")
    rule_id, metric_name = raw["id"], raw["metric"]
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise ConfigError(f"{where}: id must be a non-empty string; e.g. id = \"recognisable-ssim\"")
    if not isinstance(metric_name, str) or metric_name not in METRICS:
        raise ConfigError(f"{where}: {METRICS.unknown_message(str(metric_name))}; fix the metric name")
    metric = METRICS.get(metric_name)
    threshold = _threshold(raw["threshold"], metric, where)
    comparison = _comparison(raw.get("comparison"), metric, where)
    severity = _choice(raw.get("severity", "fail"), SEVERITIES, "severity", where)
    scope = _choice(raw.get("scope", "any" if metric.per_sample else "mean"), SCOPES, "scope", where)
    if scope == "any" and not metric.per_sample:
        raise ConfigError(f"{where}: metric {metric.name} has one value per batch, not per sample; "
                          "use scope = \"mean\"")
    max_p = _max_p(raw.get("max_p"), scope, metric, where)
    texts = {}
    for key in TEXT_KEYS:
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string; quote it")
        texts[key] = value
    return Rule(id=rule_id, metric=metric.name, threshold=threshold, comparison=comparison, severity=severity,
                scope=scope, max_p=max_p, **texts)


def _max_p(value: Any, scope: str, metric: Metric, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 1:
        raise ConfigError(f"{where}: max_p must be a number in (0, 1], got {value!r}; e.g. max_p = 0.02 "
                          "(attributable at 1 in 50)")
    if scope != "any" or not metric.per_sample:
        raise ConfigError(f"{where}: max_p filters samples, so it needs a per-sample metric with scope = \"any\"; "
                          "remove max_p or set scope = \"any\"")
    return float(value)


def _threshold(value: Any, metric: Metric, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN != NaN
        raise ConfigError(f"{where}: threshold must be a number, got {value!r}; e.g. threshold = 0.6")
    try:
        number = float(value)
    except OverflowError:  # a TOML integer beyond float range
        number = math.inf
    if not math.isfinite(number):  # psnr's range is [0, inf]: inf would pass the range check below
        raise ConfigError(f"{where}: threshold {value!r} is not finite, so the rule could never (or would always) "
                          "fire; give a finite number, e.g. threshold = 0.6")
    lo, hi = metric.range
    if not lo <= number <= hi:
        raise ConfigError(f"{where}: threshold {number:g} is outside {metric.name}'s range [{lo:g}, {hi:g}]; "
                          "choose a value inside it")
    return number


def _comparison(value: Any, metric: Metric, where: str) -> str:
    agree = COMPARISONS_FOR[metric.leak_direction]
    if value is None:
        return DEFAULT_COMPARISON[metric.leak_direction]
    if value not in COMPARISONS:
        raise ConfigError(f"{where}: bad comparison {value!r}; use one of {', '.join(COMPARISONS)} "
                          "or leave it out to follow the metric's direction")
    if value not in agree:
        more = "higher" if metric.leak_direction == "higher" else "lower"
        raise ConfigError(
            f"{where}: comparison {value!r} contradicts {metric.name}'s direction ({more} values leak more), "
            f"so it would fire on samples that do not leak; use {' or '.join(repr(c) for c in agree)} or leave it out"
        )
    return value


def _choice(value: Any, allowed: tuple[str, ...], key: str, where: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{where}: bad {key} {value!r}; use one of {', '.join(repr(a) for a in allowed)}")
    return value
