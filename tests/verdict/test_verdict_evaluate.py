"""The verdict: worst value over attacks and samples, metric directions, not-evaluated never passing."""

from __future__ import annotations

import pytest
import torch

from leakaudit.metrics import AttackScore, SampleScore, score
from leakaudit.verdict import Rule, RuleSet, evaluate, load_rules


def _score(attack: str, per_sample: dict[str, dict[str, float]], unavailable: dict[str, str] | None = None,
           label_accuracy: float | None = None) -> AttackScore:
    samples = tuple(SampleScore(index=i, original_index=i, name=n, metrics=m)
                    for i, (n, m) in enumerate(per_sample.items()))
    metric_names = {k for m in per_sample.values() for k in m}
    means = {k: sum(m[k] for m in per_sample.values()) / len(per_sample) for k in metric_names}
    if label_accuracy is not None:
        means["label_accuracy"] = label_accuracy
    return AttackScore(attack=attack, samples=samples, means=means, label_accuracy=label_accuracy,
                       unavailable=unavailable or {})


def _rules(*rules: Rule) -> RuleSet:
    return RuleSet(name="test", source="test", description="", rules=rules)


def _rule(rule_id: str, metric: str, threshold: float, comparison: str, severity: str = "fail",
          scope: str = "any") -> Rule:
    return Rule(rule_id, metric, threshold, comparison, severity, scope)


IG = _score("ig", {"cat.png": {"ssim": 0.2, "mse": 0.05}, "dog.png": {"ssim": 0.7, "mse": 0.004}})
DIA = _score("dia", {"cat.png": {"ssim": 0.95, "mse": 0.001}, "dog.png": {"ssim": 0.3, "mse": 0.03}})


def test_any_scope_reports_the_worst_sample_over_all_attacks() -> None:
    verdict = evaluate(_rules(_rule("s", "ssim", 0.6, ">=")), [IG, DIA])
    (result,) = verdict.results
    assert (result.status, result.observed, result.attack, result.sample) == ("fail", 0.95, "dia", "cat.png")
    assert "0.95 >= 0.6" in result.reason and "cat.png" in result.reason
    assert verdict.overall == "fail" and verdict.outcome().exit_code == 1


def test_lower_is_leakier_metrics_take_the_minimum() -> None:
    (result,) = evaluate(_rules(_rule("m", "mse", 0.0005, "<=")), [IG, DIA]).results
    assert (result.status, result.observed, result.attack) == ("pass", 0.001, "dia")


def test_mean_scope_uses_each_attacks_batch_mean() -> None:
    (result,) = evaluate(_rules(_rule("mean", "ssim", 0.6, ">=", scope="mean")), [IG, DIA]).results
    assert result.status == "fail" and result.observed == pytest.approx(0.625)
    assert result.attack == "dia" and result.sample is None


def test_strict_and_non_strict_comparisons_at_the_threshold() -> None:
    exact = _score("ig", {"a": {"ssim": 0.6}})
    assert evaluate(_rules(_rule("ge", "ssim", 0.6, ">=")), [exact]).overall == "fail"
    assert evaluate(_rules(_rule("gt", "ssim", 0.6, ">")), [exact]).overall == "pass"


def test_warn_rules_do_not_fail_the_verdict() -> None:
    verdict = evaluate(_rules(_rule("w", "ssim", 0.6, ">=", severity="warn")), [IG, DIA])
    assert verdict.results[0].status == "warn"
    assert verdict.overall == "pass" and verdict.outcome().exit_code == 0


def test_unavailable_metric_is_not_evaluated_and_fails_only_under_strict() -> None:
    reason = "LPIPS needs torchvision's alex backbone weights"
    no_lpips = _score("ig", {"a": {"ssim": 0.1}}, unavailable={"lpips": reason})
    rules = _rules(_rule("lp", "lpips", 0.3, "<="), _rule("s", "ssim", 0.6, ">="))
    relaxed = evaluate(rules, [no_lpips])
    lp = relaxed.results[0]
    assert lp.status == "not_evaluated" and lp.observed is None and reason in lp.reason
    assert relaxed.overall == "pass" and relaxed.outcome().exit_code == 0
    strict = evaluate(rules, [no_lpips], strict=True)
    assert strict.overall == "fail" and strict.outcome().exit_code == 1
    assert strict.outcome(exit_zero=True).exit_code == 0


def test_strict_does_not_fail_on_a_warn_rule_that_cannot_be_evaluated() -> None:
    no_lpips = _score("ig", {"a": {"ssim": 0.1}}, unavailable={"lpips": "LPIPS needs weights"})
    rules = _rules(_rule("lp", "lpips", 0.3, "<=", severity="warn"), _rule("s", "ssim", 0.6, ">="))
    strict = evaluate(rules, [no_lpips], strict=True)
    assert strict.results[0].status == "not_evaluated"
    assert strict.overall == "pass" and strict.outcome().exit_code == 0


def test_a_metric_the_samples_cannot_have_is_not_applicable_even_under_strict() -> None:
    """A next-word model's lines have no class labels: a label rule (fail-severity in a user's profile) says
    nothing about them, so --strict must not fail the scan on it as "not evaluated"."""
    lines = _score("lamp", {"a": {"ssim": 0.1}}, unavailable={"label_accuracy": "label_accuracy was not computed"})
    rules = _rules(_rule("labels", "label_accuracy", 0.5, ">=", scope="mean"), _rule("s", "ssim", 0.6, ">="))
    assert evaluate(rules, [lines], strict=True).overall == "fail"  # without saying why: not evaluated
    why = "a next-word model has no class labels"
    verdict = evaluate(rules, [lines], strict=True, inapplicable={"label_accuracy": why})
    assert verdict.results[0].status == "not_applicable" and why in verdict.results[0].reason
    assert verdict.overall == "pass" and verdict.outcome().exit_code == 0


def test_a_metric_missing_in_one_attack_blocks_a_pass_but_not_a_fail() -> None:
    partial = _score("dlg", {"a": {"mse": 0.2}}, unavailable={"ssim": "not computed for this attack"})
    quiet = _score("ig", {"a": {"ssim": 0.1}})
    (blocked,) = evaluate(_rules(_rule("s", "ssim", 0.6, ">=")), [quiet, partial]).results
    assert blocked.status == "not_evaluated" and "dlg: not computed" in blocked.reason
    assert blocked.observed == 0.1  # what was measured is still reported
    (fired,) = evaluate(_rules(_rule("s", "ssim", 0.6, ">=")), [DIA, partial]).results
    assert fired.status == "fail"


def test_no_attack_means_nothing_was_evaluated() -> None:
    verdict = evaluate(load_rules("default"), [])
    # on images (no scores say otherwise): the image rules are not evaluated, the text and record rules not applicable
    assert {r.rule.id for r in verdict.results if r.status != "not_evaluated"} == {"text-recognised", "token-set",
                                                                                 "record-recognised"}
    assert all(r.status in ("not_evaluated", "not_applicable") for r in verdict.results)
    assert verdict.overall == "pass"
    assert evaluate(load_rules("default"), [], strict=True).overall == "fail"


def test_nan_values_are_not_evaluated_rather_than_passed() -> None:
    broken = _score("ig", {"a": {"ssim": float("nan")}})
    (result,) = evaluate(_rules(_rule("s", "ssim", 0.6, ">=")), [broken]).results
    assert result.status == "not_evaluated" and "NaN" in result.reason


def test_default_profile_on_real_scores(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """End to end with score(): an exact reconstruction fails the default profile, noise passes it."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no LPIPS weights here
    monkeypatch.delenv("LEAKAUDIT_LPIPS_WEIGHTS", raising=False)
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(0, 1, 24 * 24).view(1, 1, 24, 24)
    originals = torch.cat([base, base.flip(-1), base.transpose(-1, -2)]).repeat(1, 3, 1, 1)
    originals = (originals + 0.1 * torch.rand(originals.shape, generator=g)).clamp(0, 1)
    exact = score(originals.flip(0), originals, attack="dia", labels_true=[0, 1, 2], labels_recovered=[2, 1, 0])
    noise = score(torch.rand(originals.shape, generator=g), originals, attack="ig",
                  labels_true=[0, 1, 2], labels_recovered=[5, 5, 5])
    rules = load_rules("default")
    leak = evaluate(rules, [noise, exact])
    status = {r.rule.id: r.status for r in leak.results}
    assert status["recognised-structure"] == "fail" and status["recognised-pixels"] == "fail"
    assert status["label-recovery"] == "warn"
    assert status["perceptual-lpips"] == "not_evaluated"
    clean = evaluate(rules, [noise])
    status = {r.rule.id: r.status for r in clean.results}
    assert status["recognised-structure"] == "pass" and status["label-recovery"] == "pass"
    assert clean.overall == "pass"


def test_results_serialise_flat() -> None:
    (result,) = evaluate(_rules(_rule("s", "ssim", 0.6, ">=")), [IG, DIA]).results
    d = result.to_dict()
    assert d["id"] == "s" and d["status"] == "fail" and d["observed"] == 0.95 and d["comparison"] == ">="


def test_a_reason_shared_by_several_attacks_is_given_once_with_their_names() -> None:
    reason = "LPIPS needs torchvision's alex backbone weights"
    scores = [_score(a, {"x": {"ssim": 0.1}}, unavailable={"lpips": reason}) for a in ("ig", "dia")]
    (result,) = evaluate(_rules(_rule("lp", "lpips", 0.3, "<=")), scores).results
    assert result.status == "not_evaluated"
    assert result.reason.count(reason) == 1 and "ig, dia: " + reason in result.reason
