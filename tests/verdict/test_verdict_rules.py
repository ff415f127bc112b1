"""Rule files: the built-in profiles load, and each mistake in a user file gets its own one-line error.

One bad file per failure mode lives in ``rule_files/``; each is matched to its message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leakaudit.errors import ConfigError
from leakaudit.metrics import METRICS
from leakaudit.verdict import list_profiles, load_rules

FILES = Path(__file__).parent / "rule_files"


def test_builtin_profiles_are_listed_and_load() -> None:
    assert {"default", "strict"} <= set(list_profiles())
    for name in list_profiles():
        rs = load_rules(name)
        assert rs.name == name and rs.source == "built-in" and rs.description
        assert rs.rules and len({r.id for r in rs.rules}) == len(rs.rules)


@pytest.mark.parametrize("name", ["default", "strict"])
def test_builtin_rules_are_documented_and_follow_metric_directions(name: str) -> None:
    for rule in load_rules(name).rules:
        assert rule.description and rule.rationale and rule.reference, rule.id
        direction = METRICS.get(rule.metric).leak_direction
        assert rule.comparison in ((">=", ">") if direction == "higher" else ("<=", "<")), rule.id


def test_default_profile_has_the_documented_thresholds() -> None:
    rules = {(r.metric, r.scope): r for r in load_rules("default").rules}
    structure, pixels = rules[("ssim_skill", "any")], rules[("psnr_gain", "any")]
    assert structure.threshold == 0.1 and structure.severity == "fail" and structure.max_p == 0.02
    assert pixels.threshold == 1.0 and pixels.severity == "fail" and pixels.max_p == 0.02
    assert rules[("match_p", "any")].threshold == 0.02 and rules[("match_p", "any")].severity == "warn"
    assert rules[("lpips", "any")].threshold == 0.3 and rules[("lpips", "any")].comparison == "<="
    assert rules[("label_accuracy", "mean")].severity == "warn"


def test_strict_is_stricter_than_default_for_every_shared_rule() -> None:
    default = {(r.metric, r.scope): r for r in load_rules("default").rules}
    for rule in load_rules("strict").rules:
        base = default.get((rule.metric, rule.scope))
        if base is None:
            continue
        if METRICS.get(rule.metric).leak_direction == "higher":
            assert rule.threshold <= base.threshold, rule.id
        else:
            assert rule.threshold >= base.threshold, rule.id
        assert not (base.severity == "fail" and rule.severity == "warn"), rule.id


def test_a_valid_user_file_loads_with_directions_from_the_metrics() -> None:
    rs = load_rules(FILES / "valid.toml")
    assert rs.name == "valid" and len(rs.rules) == 2
    mse, labels = rs.rules
    assert (mse.comparison, mse.scope, mse.severity) == ("<=", "any", "fail")
    assert (labels.comparison, labels.scope, labels.severity) == (">=", "mean", "warn")


@pytest.mark.parametrize(
    ("file", "match"),
    [
        ("unknown_metric.toml",
         r"unknown_metric\.toml: rule 1 \('my-ssim'\): unknown metric 'sssim': did you mean ssim"),
        ("bad_comparison.toml", r"bad_comparison\.toml: rule 2 \('wrong-way'\): comparison '<=' contradicts ssim's "
                                r"direction \(higher values leak more\).*use '>=' or '>'"),
        ("unknown_comparison.toml", r"rule 1 \('eq'\): bad comparison '=='; use one of >=, >, <=, <"),
        ("missing_threshold.toml", r"missing_threshold\.toml: rule 1 \('no-threshold'\): missing threshold; add"),
        ("misspelt_key.toml", r"rule 1 \('typo'\): unknown key 'treshold'; did you mean 'threshold'\?"),
        ("bad_severity.toml", r"rule 1 \('sev'\): bad severity 'error'; use one of 'fail', 'warn'"),
        ("bad_scope.toml", r"rule 1 \('scope'\): bad scope 'all'; use one of 'any', 'mean'"),
        ("duplicate_id.toml", r"duplicate_id\.toml: rule 2 \('same'\): duplicate id \(rule 1 has it too\)"),
        ("syntax_error.toml", r"syntax_error\.toml: invalid TOML \(.*line 4.*\); fix the syntax"),
        ("threshold_out_of_range.toml", r"rule 1 \('percent'\): threshold 60 is outside ssim's range \[-1, 1\]"),
        ("threshold_not_number.toml", r"rule 1 \('text'\): threshold must be a number, got '0\.6'"),
        ("threshold_infinite.toml", r"rule 1 \('never'\): threshold inf is not finite.*give a finite number"),
        ("batch_metric_any.toml",
         r"rule 1 \('labels'\): metric label_accuracy has one value per batch.*scope = \"mean\""),
        ("no_rules.toml", r"no_rules\.toml: no \[\[rule\]\] tables; add at least one"),
    ],
)
def test_each_mistake_gets_one_line_naming_file_and_rule(file: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_rules(str(FILES / file))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(FILES / file))


def test_unknown_profile_and_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"^strcit: no built-in rule profile of that name; did you mean strict\?"):
        load_rules("strcit")
    with pytest.raises(ConfigError, match=r"nowhere\.toml: rule file not found"):
        load_rules("nowhere.toml")


def test_cli_validation_refuses_an_infinite_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    from leakaudit.cli import app_main

    assert app_main(["rules", "--file", str(FILES / "threshold_infinite.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "threshold inf is not finite" in err
