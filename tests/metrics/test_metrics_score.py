"""Matching, scoring and the METRICS registry's declarations, on real images (scikit-image's bundled data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data, transform

from leakaudit.errors import UnknownNameError
from leakaudit.metrics import METRICS, Unavailable, match, score
from leakaudit.metrics import functional as MF


def _photos(size: int = 24) -> torch.Tensor:
    rgb = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    arr = np.stack([transform.resize(im, (size, size), anti_aliasing=True) for im in rgb])
    return torch.tensor(arr, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def _noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


@pytest.mark.parametrize("by", ["ssim", "mse"])
def test_matching_recovers_a_permutation_of_noisy_reconstructions(by: str) -> None:
    originals = _photos()
    perm = [2, 0, 3, 1]
    recon = _noisy(originals[perm], 0.1)
    m = match(recon, originals, by=by)
    assert m.pairs == tuple((i, perm[i]) for i in range(4))


def test_score_is_invariant_to_the_order_of_reconstructions() -> None:
    originals = _photos()
    recon = _noisy(originals, 0.15)
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    in_order = score(recon, originals, names=names, metrics=["ssim", "psnr"])
    shuffled = score(recon[[3, 1, 0, 2]], originals, names=names, metrics=["ssim", "psnr"])
    by_name = {s.name: s.metrics for s in in_order.samples}
    for s in shuffled.samples:
        assert s.metrics == pytest.approx(by_name[s.name])
    assert shuffled.means == pytest.approx(in_order.means)
    # each sample's value is the metric of the pair it was matched to
    direct = MF.ssim(recon, originals)
    assert [by_name[n]["ssim"] for n in names] == pytest.approx(direct.tolist(), abs=1e-6)


def test_matching_with_unequal_counts_reports_the_leftovers() -> None:
    originals = _photos()
    result = score(originals[[1, 3]], originals, metrics=["mse"])
    assert sorted(s.original_index for s in result.samples) == [1, 3]
    assert all(s.metrics["mse"] == 0 for s in result.samples)
    assert any("2 original(s) had no reconstruction" in n for n in result.notes)


def test_label_accuracy_in_score_and_its_absence() -> None:
    x = _photos()
    with_labels = score(x, x, metrics=["ssim"], labels_true=[0, 1, 1, 2], labels_recovered=[1, 2, 0, 0])
    assert with_labels.label_accuracy == 0.75 and with_labels.means["label_accuracy"] == 0.75
    without = score(x, x, metrics=["ssim"], labels_true=[0, 1, 1, 2])
    assert without.label_accuracy is None and "label_accuracy" in without.unavailable


def test_unknown_metric_name_suggests_the_close_one() -> None:
    x = _photos()
    with pytest.raises(UnknownNameError, match=r"unknown metric 'ssmi': did you mean ssim"):
        score(x, x, metrics=["ssmi"])


def test_scores_serialise_to_plain_types() -> None:
    x = _photos()
    d = score(x, x, metrics=["psnr"], attack="ig").to_dict()
    assert d["attack"] == "ig" and math.isinf(d["samples"][0]["metrics"]["psnr"])


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_declares_a_consistent_direction(name: str) -> None:
    metric = METRICS.get(name)
    assert metric.leak_direction == ("higher" if metric.higher_is_better else "lower")
    lo, hi = metric.range
    assert lo < hi and metric.description


@pytest.mark.parametrize("name", [n for n in METRICS.names() if METRICS.get(n).per_sample
                                  and METRICS.get(n).modality == "image"])  # text, records: their own tests
def test_a_closer_reconstruction_moves_every_metric_in_its_leak_direction(name: str) -> None:
    """Registry-driven: less noise = more leakage, in the direction each metric declares (on photos: the image
    metrics; the record metrics' directions are checked in tests/tabular)."""
    metric = METRICS.get(name)
    x = _photos()
    if metric.recognition:  # judged against references: through score(), the way scans compute it
        def compute(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            sc = score(recon, target, metrics=(name,))
            return torch.tensor([s.metrics[name] for s in sorted(sc.samples, key=lambda s: s.original_index)])

        close, far = compute(_noisy(x, 0.02), x), compute(_noisy(x, 0.3), x)
        if name == "match_p":  # a p-value: as low as the references allow, and never lower for the closer one
            assert torch.all(close <= far) and torch.all(close == close.min())
            return
    else:
        close, far = metric.compute(_noisy(x, 0.05), x), metric.compute(_noisy(x, 0.3), x)
    if isinstance(close, Unavailable):
        pytest.skip(f"{name}: {close.reason}")
    lo, hi = metric.range
    assert torch.all((close >= lo) & (close <= hi)) and torch.all((far >= lo) & (far <= hi))
    if metric.leak_direction == "higher":
        assert torch.all(close > far)
    else:
        assert torch.all(close < far)


def test_a_diverged_reconstruction_has_no_numbers_only_reasons() -> None:
    x = _photos()
    broken = x.clone()
    broken[1, 0, 0, 0] = float("nan")
    result = score(broken, x, metrics=["ssim", "psnr"], labels_true=[0, 1, 2, 3], labels_recovered=[0, 1, 2, 3])
    assert result.samples == () and result.means == {}
    assert set(result.unavailable) == {"ssim", "psnr"} and "diverged" in result.unavailable["ssim"]
