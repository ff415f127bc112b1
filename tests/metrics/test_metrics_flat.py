"""Flat originals: SSIM against a sample without structure is ~1 for any flat reconstruction (adjusted SSIM:
for any reconstruction), so it is flagged and not counted as recognition; pixel metrics still count."""

from __future__ import annotations

import pytest
import torch

from leakaudit.metrics import score
from leakaudit.metrics.functional import ssim_best_adjusted
from leakaudit.metrics.scoring import FLAT_STD
from leakaudit.verdict import evaluate, load_rules


def _textured(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 16, 16, generator=gen)


def _flat(level: float = 0.5) -> torch.Tensor:
    return torch.full((1, 3, 16, 16), level)


def _rule(verdict, rule_id: str):
    return next(r for r in verdict.results if r.rule.id == rule_id)


def test_the_problem_adjusted_ssim_of_anything_against_a_flat_original_is_1():
    assert float(ssim_best_adjusted(_textured(), _flat())[0]) == pytest.approx(1.0, abs=1e-6)


def test_a_flat_original_is_flagged_and_its_ssim_not_counted():
    sc = score(_textured(), _flat(), names=["blank.png"], metrics=("ssim", "ssim_adjusted", "psnr"))
    sample = sc.samples[0]
    assert sample.flat is True
    assert set(sample.excluded) == {"ssim", "ssim_adjusted"} and "flat original" in sample.excluded["ssim_adjusted"]
    assert sample.metrics["ssim_adjusted"] == pytest.approx(1.0, abs=1e-6)  # the number stays, for display
    assert "psnr" in sc.means and "ssim_adjusted" not in sc.means  # a mean of nothing is not a mean
    assert "every original is flat" in sc.unavailable["ssim_adjusted"]


def _absolute_ssim_rule(tmp_path):
    """A user profile with the old absolute rule: flat originals must not count there either."""
    path = tmp_path / "absolute.toml"
    path.write_text('[[rule]]\nid = "recognisable-ssim"\nmetric = "ssim_adjusted"\nthreshold = 0.6\n')
    return load_rules(path)


def test_a_blank_sample_is_not_a_leak_by_ssim_and_the_rule_says_why(tmp_path):
    sc = score(_textured(), _flat(), names=["blank.png"])
    ssim_rule = _rule(evaluate(_absolute_ssim_rule(tmp_path), [sc]), "recognisable-ssim")
    assert ssim_rule.status == "not_evaluated" and "every original is flat" in ssim_rule.reason
    verdict = evaluate(load_rules("default"), [sc])
    for rule_id in ("recognised-structure", "partial-leak"):  # the recognition test needs structure too
        assert _rule(verdict, rule_id).status == "not_evaluated", rule_id
        assert "every original is flat" in _rule(verdict, rule_id).reason


def test_a_normal_sample_still_fails(tmp_path):
    original = _textured()
    sc = score(original.clone(), original, names=["photo.png"])
    assert sc.samples[0].flat is False and sc.samples[0].excluded == {}
    assert _rule(evaluate(_absolute_ssim_rule(tmp_path), [sc]), "recognisable-ssim").status == "fail"
    verdict = evaluate(load_rules("default"), [sc])
    assert _rule(verdict, "recognised-structure").status == "fail" and verdict.overall == "fail"


def test_in_a_mixed_batch_the_rule_judges_the_other_samples_and_names_the_flat_one(tmp_path):
    originals = torch.cat([_flat(), _textured(1)])
    recon = torch.cat([_textured(2), _textured(3)])  # noise: no real reconstruction of either
    sc = score(recon, originals, names=["blank.png", "photo.png"], metrics=("ssim", "ssim_adjusted", "psnr"),
               match_by="mse")
    rule = _rule(evaluate(_absolute_ssim_rule(tmp_path), [sc]), "recognisable-ssim")
    assert rule.status == "pass" and rule.sample == "photo.png" and rule.observed < 0.6
    assert "1 flat original(s) not counted (blank.png" in rule.reason
    flat_mean = sc.means["ssim_adjusted"]
    assert flat_mean == pytest.approx(next(s for s in sc.samples if s.name == "photo.png").metrics["ssim_adjusted"])


@pytest.mark.parametrize("std, flat", [(0.0, True), (FLAT_STD / 2, True), (FLAT_STD * 2, False)])
def test_near_flat_means_pixel_std_below_flat_std(std, flat):
    original = _flat()
    original[0, 0, 0, :2] += torch.tensor([std, -std]) * (original.numel() / 2) ** 0.5  # population std = std
    sc = score(_textured(), original, metrics=("ssim",))
    assert sc.samples[0].flat is flat
