"""Suppressions (issue 21, item 3): the [[ignore]] file is checked like a rule file, an entry applies to a model by
sha256 or path glob, and ``outcome`` decides what it does: an active one turns a fail/warn into "suppressed" (never a
leak), an expired one suppresses nothing and fails the scan."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from leakaudit.errors import ConfigError
from leakaudit.result import RuleOutcome
from leakaudit.suppress import Entry, applies, apply_rules, load_entries
from leakaudit.verdict.outcome import decide, suppressed_statuses, unsuppressed

SHA = "ab" * 32
TODAY = dt.date(2026, 3, 1)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".leakaudit-ignore.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _entry(rule: str = "r", model: str = "*.onnx", expires: dt.date = dt.date(2026, 12, 31)) -> Entry:
    return Entry(rule=rule, model=model, reason="reviewed", expires=expires, file="f.toml", index=1)


def test_an_active_suppression_turns_fail_and_warn_into_suppressed_and_leaves_the_rest():
    rules = [("a", "fail", "fail"), ("b", "warn", "warn"), ("c", "pass", "fail"), ("d", "not_evaluated", "fail"),
             ("e", "fail", "fail")]
    assert suppressed_statuses(rules, ["a", "b", "c", "d"]) == ["suppressed", "suppressed", "pass", "not_evaluated",
                                                                 "fail"]
    assert (unsuppressed("suppressed", "fail"), unsuppressed("suppressed", "warn")) == ("fail", "warn")


def test_a_suppressed_rule_never_counts_towards_a_leak_but_is_named():
    outcome = decide([("a", "suppressed", "fail"), ("b", "pass", "fail")], control=True)
    assert (outcome.overall, outcome.exit_code, outcome.leak) == ("pass", 0, False)
    assert outcome.summary == "PASS: no fail-severity rule failed; 1 rule(s) suppressed (a)"
    assert outcome.suppressed == ("a",)
    # the pass still has to be earned: a control that did not reconstruct is inconclusive, suppression or not
    assert decide([("a", "suppressed", "fail")], control=False).overall == "inconclusive"


def test_an_expired_suppression_fails_the_scan_with_exit_1_even_when_no_rule_fired():
    outcome = decide([("a", "warn", "warn")], control=True, expired=["a (expired 2026-01-31)"])
    assert (outcome.overall, outcome.exit_code, outcome.leak) == ("fail", 1, False)
    assert outcome.summary.startswith("FAIL (expired suppression): 1 suppression(s) expired (a (expired "
                                      "2026-01-31)): renew or remove them; no leak was found")
    assert outcome.word == "FAIL (expired suppression)"
    leak = decide([("a", "fail", "fail")], expired=["a (expired 2026-01-31)"])
    assert leak.summary.startswith("LEAK: 1 rule(s) failed (a); 1 suppression(s) expired") and leak.word == "LEAK"


def test_apply_rules_records_every_entry_and_is_idempotent():
    rules = (RuleOutcome("r", "ssim_skill", ">=", 0.1, "fail", "any", "fail", observed=1.0),
             RuleOutcome("w", "match_p", "<=", 0.02, "warn", "any", "warn", observed=0.01))
    entries = (_entry("r"), _entry("w", expires=dt.date(2026, 2, 28)), _entry("other"))
    after, records = apply_rules(rules, entries, TODAY)
    assert [r.status for r in after] == ["suppressed", "warn"]
    assert [(s.rule, s.status, s.applied, s.rule_status) for s in records] == [
        ("r", "active", True, "fail"), ("w", "expired", False, "warn"), ("other", "active", False, "absent")]
    assert apply_rules(after, entries, TODAY) == (after, records)  # re-applied (--resume): the same
    assert [r.status for r in apply_rules(after, (), TODAY)[0]] == ["fail", "warn"]  # entry removed: back


def test_the_expiry_day_itself_still_holds():
    assert not _entry(expires=TODAY).expired(TODAY) and _entry(expires=TODAY).expired(TODAY + dt.timedelta(days=1))


@pytest.mark.parametrize("pattern, path, hit", [
    ("*.onnx", "examples/models/mlp_dropout.onnx", True),
    ("models/*.onnx", "/srv/x/models/m.onnx", True),
    ("examples/models/mlp_dropout.onnx", "examples/models/mlp_dropout.onnx", True),
    ("other/*.onnx", "examples/models/mlp_dropout.onnx", False),
    ("*.safetensors", "m.onnx", False),
    (SHA, "anything.onnx", True),
    (SHA.upper(), "anything.onnx", True),
    ("cd" * 32, "anything.onnx", False),
])
def test_an_entry_applies_by_full_sha256_or_path_glob(tmp_path, pattern, path, hit):
    entry = load_entries(_write(tmp_path, f'[[ignore]]\nrule = "r"\nmodel = "{pattern}"\nreason = "x"\n'
                                          'expires = 2026-12-31\n'))[0]
    assert applies(entry, path, SHA) is hit


def test_a_valid_file_reads_dates_as_toml_dates_or_strings(tmp_path):
    entries = load_entries(_write(tmp_path, '[[ignore]]\nrule = "a"\nmodel = "*"\nreason = "r"\nexpires = 2026-06-30\n'
                                            '[[ignore]]\nrule = "b"\nmodel = "*"\nreason = "r"\n'
                                            'expires = "2026-07-01"\n'))
    assert [e.expires for e in entries] == [dt.date(2026, 6, 30), dt.date(2026, 7, 1)]
    assert load_entries(_write(tmp_path, "")) == ()


@pytest.mark.parametrize("body, message", [
    ('rule = "a"\nmodel = "*"\nexpires = 2026-06-30', "ignore 1: missing reason; say why the finding is accepted"),
    ('rule = "a"\nmodel = "*"\nreason = "  "\nexpires = 2026-06-30', "ignore 1: reason must be a non-empty string"),
    ('rule = "a"\nmodel = "*"\nreason = "r"', "ignore 1: missing expires; add an expiry date"),
    ('rule = "a"\nmodel = "*"\nreason = "r"\nexpires = "30/06/2026"', "ignore 1: expires must be a date YYYY-MM-DD"),
    ('rule = "a"\nmodel = "*"\nreason = "r"\nexpires = "2026-02-30"', "ignore 1: expires must be a date YYYY-MM-DD"),
    ('rule = "a"\nmodel = "*"\nreason = "r"\nexpires = 2026-06-30T10:00:00', "expires must be a date YYYY-MM-DD"),
    ('rule = "a"\nmodel = "*"\nreason = "r"\nexpires = 2026-06-30\nexpiry = 1', "ignore 1: unknown key 'expiry'"),
])
def test_a_bad_entry_is_one_line_naming_the_file_entry_and_key(tmp_path, body, message):
    path = _write(tmp_path, f"[[ignore]]\n{body}\n")
    with pytest.raises(ConfigError) as e:
        load_entries(path)
    text = str(e.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text


def test_a_file_that_is_not_ignore_tables_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown top-level key 'rule'"):
        load_entries(_write(tmp_path, '[[rule]]\nid = "a"\n'))
    with pytest.raises(ConfigError, match="ignore file not found"):
        load_entries(tmp_path / "missing.toml")
