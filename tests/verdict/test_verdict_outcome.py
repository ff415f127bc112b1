"""decide(): the one place that turns rule results, crashed attacks and an interruption into the verdict,
the exit code and the summary line that every output shows."""

from __future__ import annotations

import pytest

from leakaudit.verdict import load_rules
from leakaudit.verdict.evaluate import evaluate
from leakaudit.verdict.outcome import EXIT_CODES, OVERALLS, WORDS, decide

LEAK = [("recognisable-ssim", "fail"), ("labels", "warn")]
CLEAN = [("recognisable-ssim", "pass"), ("labels", "warn")]
UNEVALUATED = [("recognisable-ssim", "not_evaluated")]


@pytest.mark.parametrize("rules, crashed, incomplete, overall, code", [
    (CLEAN, (), False, "pass", 0),
    (LEAK, (), False, "fail", 1),
    (UNEVALUATED, ("ig",), False, "error", 3),  # every attack crashed: never a pass
    (CLEAN, ("ig",), False, "error", 3),  # one crashed, the others found nothing: no pass on less evidence
    (LEAK, ("ig",), False, "fail", 1),  # a leak found by another attack is real
    (CLEAN, (), True, "incomplete", 130),
    (LEAK, ("ig",), True, "incomplete", 130),  # interrupted wins: the run did not finish
])
def test_overall_and_exit_code(rules, crashed, incomplete, overall, code):
    outcome = decide(rules, crashed=crashed, incomplete=incomplete)
    assert (outcome.overall, outcome.exit_code) == (overall, code)
    assert outcome.summary.startswith(WORDS[overall] + ":")
    assert outcome.crashed == tuple(crashed)


def test_every_verdict_has_an_exit_code_and_a_word():
    assert set(OVERALLS) == set(EXIT_CODES) == set(WORDS)


def test_error_summary_names_the_crashed_attacks():
    summary = decide(UNEVALUATED, crashed=["ig", "dia"]).summary
    assert summary.startswith("ERROR: 2 attack(s) crashed (ig, dia) and no leak was found")
    assert "1 rule(s) not evaluated" in summary


def test_a_leak_with_a_crash_says_both():
    summary = decide(LEAK, crashed=["ig"]).summary
    assert summary == "LEAK: 1 rule(s) failed (recognisable-ssim); 1 attack(s) crashed (ig)"


@pytest.mark.parametrize("rules, crashed, incomplete, code", [
    (LEAK, (), False, 0),  # only a leak becomes 0
    (CLEAN, ("ig",), False, 3),  # a crash still is not a pass
    (LEAK, (), True, 130),  # an interrupted run still says so
    (CLEAN, (), False, 0),
])
def test_exit_zero_changes_only_a_leaks_exit_code_and_keeps_the_verdict(rules, crashed, incomplete, code):
    plain = decide(rules, crashed=crashed, incomplete=incomplete)
    zero = decide(rules, crashed=crashed, incomplete=incomplete, exit_zero=True)
    assert zero.overall == plain.overall and zero.rules_overall == plain.rules_overall
    assert zero.exit_code == code and zero.exit_zero is True
    assert zero.summary.endswith("(--exit-zero: exit 0)") == (plain.overall == "fail")


def test_strict_counts_an_unevaluated_rule_as_failed_and_names_it():
    outcome = decide(UNEVALUATED, strict=True)
    assert (outcome.overall, outcome.exit_code, outcome.rules_overall) == ("fail", 1, "fail")
    assert "--strict counts as failed (recognisable-ssim)" in outcome.summary
    assert "0 rule(s) failed" not in outcome.summary


def test_rules_verdict_uses_the_same_decision():
    verdict = evaluate(load_rules("default"), [], strict=True)
    assert verdict.overall == "fail" and verdict.outcome().exit_code == 1
    # nothing was measured: strict fails it, but no leak was found, so the summary does not say LEAK
    assert verdict.outcome(exit_zero=True).exit_code == 0 and verdict.outcome().summary.startswith("FAIL (strict):")


# --strict and rules that cannot be evaluated (issue 19): (id, status, severity)
LPIPS_WARN = ("perceptual-lpips", "not_evaluated", "warn")
LPIPS_FAIL = ("perceptual-lpips", "not_evaluated", "fail")
SSIM_PASS = ("recognisable-ssim", "pass", "fail")
SSIM_FIRED = ("recognisable-ssim", "fail", "fail")


@pytest.mark.parametrize("strict", [False, True])
def test_a_warn_rule_that_cannot_be_evaluated_never_fails_a_scan(strict):
    # the default profile on a machine without LPIPS weights: an earned pass stays a pass under --strict
    outcome = decide([SSIM_PASS, LPIPS_WARN], strict=strict, control=True, control_evidence="control: ssim 1")
    assert (outcome.overall, outcome.exit_code, outcome.rules_overall) == ("pass", 0, "pass")
    assert outcome.summary.startswith("PASS: no fail-severity rule failed; 1 rule(s) not evaluated")
    assert "LEAK" not in outcome.summary


def test_strict_fails_on_an_unevaluated_fail_rule_without_calling_it_a_leak():
    outcome = decide([SSIM_PASS, LPIPS_FAIL, ("label-recovery", "not_evaluated", "warn")], strict=True,
                     control=True)
    assert (outcome.overall, outcome.exit_code, outcome.leak) == ("fail", 1, False)
    assert outcome.word == "FAIL (strict)"
    assert outcome.summary == ("FAIL (strict): 1 fail-severity rule(s) could not be evaluated, which --strict counts "
                               "as failed (perceptual-lpips); no leak was found; 1 rule(s) not evaluated "
                               "(warn-severity: --strict does not fail on them)")
    assert "LEAK" not in outcome.summary and "a leak was found" not in outcome.summary
    # without --strict the same results pass, and say what was not evaluated
    relaxed = decide([SSIM_PASS, LPIPS_FAIL], control=True)
    assert (relaxed.overall, relaxed.exit_code) == ("pass", 0) and "1 rule(s) not evaluated" in relaxed.summary


def test_strict_with_a_fired_rule_is_a_leak_and_names_the_unevaluated_one_apart():
    outcome = decide([SSIM_FIRED, LPIPS_FAIL], strict=True)
    assert (outcome.overall, outcome.exit_code, outcome.leak, outcome.word) == ("fail", 1, True, "LEAK")
    assert outcome.summary == ("LEAK: 1 rule(s) failed (recognisable-ssim); 1 fail-severity rule(s) could not be "
                               "evaluated, which --strict counts as failed (perceptual-lpips)")


# The positive control (issue 12): control=True it reconstructed the undefended case, False it did not,
# None there was none to weigh.
@pytest.mark.parametrize("rules, crashed, incomplete, control, overall, code", [
    (CLEAN, (), False, True, "pass", 0),  # a pass earned: the control reconstructed, the defended run did not
    (CLEAN, (), False, False, "inconclusive", 4),  # the attacks could not reconstruct even without the defenses
    (UNEVALUATED, (), False, False, "inconclusive", 4),  # nothing measured is no evidence either
    (LEAK, (), False, False, "fail", 1),  # a leak found stays a leak whatever the control says
    (CLEAN, ("ig",), False, False, "error", 3),  # a crash outranks inconclusive: the more specific fix
    (CLEAN, (), True, False, "incomplete", 130),
    (CLEAN, (), False, None, "pass", 0),  # no control (old results, or no fail-severity rule): as before
])
def test_the_control_decides_between_pass_and_inconclusive(rules, crashed, incomplete, control, overall, code):
    outcome = decide(rules, crashed=crashed, incomplete=incomplete, control=control)
    assert (outcome.overall, outcome.exit_code) == (overall, code)
    assert outcome.summary.startswith(WORDS[overall] + ":")


def test_inconclusive_summary_gives_the_reason_and_the_controls_evidence():
    summary = decide(CLEAN, control=False, control_evidence="control: ssim_adjusted 0.09 (ig), needs >= 0.6").summary
    assert summary == ("INCONCLUSIVE: the attacks could not reconstruct even without the defenses: no evidence "
                       "either way (control: ssim_adjusted 0.09 (ig), needs >= 0.6) (1 warning(s))")


def test_a_pass_names_what_it_was_earned_against():
    summary = decide(CLEAN, control=True, control_evidence="control: ssim_adjusted 1 (analytic), needs >= 0.6").summary
    assert summary.startswith("PASS: no fail-severity rule failed") and summary.endswith("(analytic), needs >= 0.6")


def test_strict_makes_inconclusive_exit_1_and_keeps_the_verdict():
    outcome = decide(CLEAN, control=False, strict=True)
    assert (outcome.overall, outcome.exit_code) == ("inconclusive", 1)
    assert outcome.summary.endswith("(--strict: exit 1)")


@pytest.mark.parametrize("strict, code", [(False, 4), (True, 1)])
def test_exit_zero_does_not_change_inconclusive(strict, code):
    outcome = decide(CLEAN, control=False, strict=strict, exit_zero=True)
    assert (outcome.overall, outcome.exit_code) == ("inconclusive", code)
    assert "--exit-zero" not in outcome.summary
