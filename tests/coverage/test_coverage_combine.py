"""How per-batch results combine into one scan verdict, and the batch progress a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leakaudit.coverage.combine import combine_control, combine_rules
from leakaudit.metrics.stats import clopper_pearson
from leakaudit.result import BatchCoverage, ControlOutcome, RuleOutcome


def rule(status: str, observed: float | None) -> RuleOutcome:
    return RuleOutcome(id="recognisable-ssim", metric="ssim_adjusted", comparison=">=", threshold=0.6,
                       severity="fail", scope="any", status=status, observed=observed, reason=f"{status} {observed}")


def batch(index: int, status: str, observed: float | None, control: bool | None) -> BatchCoverage:
    return BatchCoverage(index=index, seed=index, size=1, overall="x", rules=(rule(status, observed),),
                         control=control, control_evidence=f"control: batch {index}")


def test_a_leak_in_any_batch_fails_the_rule_with_the_worst_value():
    combined = combine_rules([batch(0, "pass", 0.2, True), batch(1, "fail", 0.7, None), batch(2, "fail", 0.9, None)])
    assert [(r.status, r.observed) for r in combined] == [("fail", 0.9)]
    assert combined[0].reason.startswith("batch 3:") and "2 of 3 batches" in combined[0].reason


def test_a_rule_passes_only_when_it_passed_in_every_batch():
    assert combine_rules([batch(0, "pass", 0.2, True), batch(1, "not_evaluated", None, True)])[0].status \
        == "not_evaluated"
    passed = combine_rules([batch(0, "pass", 0.2, True), batch(1, "pass", 0.4, True)])[0]
    assert (passed.status, passed.observed) == ("pass", 0.4)


def test_one_batch_whose_control_did_not_reconstruct_leaves_the_pass_unearned():
    shown = ControlOutcome("ran", "the main run's attacks", True, evidence="control: fine")
    earned = combine_control(shown, [batch(0, "pass", 0.1, True), batch(1, "pass", 0.1, True)])
    assert earned is not None and earned.counts is True
    unearned = combine_control(shown, [batch(0, "pass", 0.1, True), batch(1, "pass", 0.1, False)])
    assert unearned is not None and unearned.counts is False and unearned.evidence.startswith("batch 2")
    assert "1 did not" in unearned.reason
    # every batch leaked: no control weighs on the verdict
    none = combine_control(ControlOutcome("not_needed", "a leak was found", None),
                           [batch(0, "fail", 0.9, None), batch(1, "fail", 0.9, None)])
    assert none is not None and none.counts is None


@pytest.mark.parametrize("k,n", [(0, 1), (0, 64), (3, 10), (17, 500), (64, 64)])
def test_clopper_pearson_matches_the_beta_quantiles(k, n):
    from scipy.stats import beta

    lower = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    upper = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert clopper_pearson(k, n) == pytest.approx((lower, upper), abs=1e-9)


class Stages:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def stage(self, name: str, detail: str = "") -> None:
        self.seen.append((name, detail))

    def attack_progress(self, event) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def test_progress_names_batches_done_and_an_eta():
    from leakaudit.audit import audit
    from leakaudit.data import SampleBatch, normalization
    from leakaudit.models import LoadedModel, create_model

    torch.manual_seed(0)
    net = create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,))
    model = LoadedModel(net, (1, 8, 8), 4, Path("mlp.safetensors"), "0" * 64, "safetensors", arch="mlp")
    pixels = torch.rand(3, 1, 8, 8)
    data = SampleBatch(pixels, torch.tensor([0, 1, 2]), pixels, ("a", "b", "c"), "mem",
                       normalization("none", channels=1))
    observer = Stages()
    result = audit(model, data, attacks=("analytic",), observer=observer)
    batches = [(n, d) for n, d in observer.seen if n.startswith("batch ")]
    assert [n for n, _ in batches] == ["batch 1/3", "batch 2/3", "batch 3/3"]
    assert batches[0][1].startswith("0 of 3 batches done") and "ETA" in batches[2][1]
    assert result.coverage is not None and result.coverage.audited == 3
