""""Recognised" = attributable to its own sample and better than a trivial output (metrics.recognition).

Each case class of the criterion's benchmark (benchmarks/bench_recognition.py) on the bundled example photos:
recognisable outputs -- exact, mirrored, shifted, noisy -- are recognised; trivial ones -- a blank of the mean
colour, a heavy blur, another photo -- are not; and the test cannot be fooled by giving the scan's own samples
as references.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leakaudit.metrics import score
from leakaudit.metrics.interface import attributable, chance
from leakaudit.metrics.recognition import blank, heavy_blur, recognise
from leakaudit.metrics.references import load_reference_set
from leakaudit.verdict import evaluate, load_rules
from leakaudit.verdict.rules import fires_on, recognition_rules

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "samples"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _photo(name: str) -> torch.Tensor:
    arr = np.asarray(Image.open(SAMPLES / f"{name}.png").convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def refs() -> torch.Tensor:
    return load_reference_set(None, (3, 32, 32)).pixels


def _judge(recon: torch.Tensor, original: torch.Tensor, refs: torch.Tensor):
    _, (verdict,) = recognise(recon, original, refs, [(0, 0)])
    return verdict


def _recognised(verdict) -> bool:
    metrics = {"match_p": verdict.match_p, "ssim_skill": verdict.ssim_skill, "psnr_gain": verdict.psnr_gain}
    return any(fires_on(r, metrics, (), verdict.references) for r in recognition_rules(load_rules("default")))


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("how", ["exact", "mirrored", "shifted 2 px", "noise 0.05", "colour shift", "down-up x2"])
def test_recognisable_outputs_are_recognised(name, how, refs):
    x = _photo(name)
    gen = torch.Generator().manual_seed(0)
    half = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="area")
    recon = {"exact": x, "mirrored": x.flip(-1), "shifted 2 px": torch.roll(x, (2, -1), dims=(2, 3)),
             "noise 0.05": (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1),
             "colour shift": (x + torch.tensor([0.12, 0.0, -0.1]).view(1, 3, 1, 1)).clamp(0, 1),
             "down-up x2": torch.nn.functional.interpolate(half, size=(32, 32), mode="bilinear").clamp(0, 1)}[how]
    v = _judge(recon, x, refs)
    assert v.references == 64
    assert v.match_p == pytest.approx(chance(64))  # closer to its own photo than to every reference
    assert _recognised(v), v
    if how == "mirrored":
        assert v.transform.startswith("flipped")


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("how", ["blank", "heavy blur", "grey"])
def test_trivial_outputs_are_not_recognised(name, how, refs):
    x = _photo(name)
    recon = {"blank": blank(x), "heavy blur": heavy_blur(x), "grey": torch.full_like(x, 0.5)}[how]
    v = _judge(recon, x, refs)
    assert v.ssim_skill <= 0.05 and v.psnr_gain <= 0.5, v  # a baseline scores 0 by construction
    assert not _recognised(v)


def test_another_photo_is_not_attributed_to_the_sample(refs):
    misses = 0
    for a in PHOTOS:
        for b in PHOTOS:
            if a != b:
                v = _judge(_photo(b), _photo(a), refs)
                misses += not _recognised(v)
    assert misses == len(PHOTOS) * (len(PHOTOS) - 1)


def test_copies_of_the_sample_among_the_references_are_left_out(refs):
    """--reference-data pointing at the scan's own folder must not make every sample unattributable."""
    x = _photo("rocket")
    v = _judge(x.flip(-1), x, torch.cat([refs, x, x]))
    assert v.references == 64 and v.match_p == pytest.approx(chance(64))


def test_few_references_use_the_strictest_test_there_is():
    x = torch.cat([_photo(n) for n in PHOTOS])
    pairs, verdicts = recognise(x, x)  # no reference set: each photo's references are the 3 others
    assert [v.references for v in verdicts] == [3] * 4
    assert all(v.match_p == pytest.approx(0.25) for v in verdicts)
    assert attributable(0.25, 3, 0.02)  # nearest of 4 is all 3 references allow
    assert not attributable(0.5, 3, 0.02)


def test_a_mirrored_batch_is_matched_to_the_right_originals(refs):
    x = torch.cat([_photo(n) for n in PHOTOS])
    recon = x.flip(-1)[[2, 0, 3, 1]]  # mirrored and out of order, as attacks return batches
    sc = score(recon, x, names=list(PHOTOS), references=refs)
    assert sorted((s.index, s.original_index) for s in sc.samples) == [(0, 2), (1, 0), (2, 3), (3, 1)]
    assert all(s.metrics["ssim_skill"] > 0.99 for s in sc.samples)
    assert sc.matched_by == "registered skill"


def test_feature_vectors_are_judged_without_geometry():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, 40, generator=gen)
    _, verdicts = recognise(x + 0.01 * torch.randn(x.shape, generator=gen), x)
    assert all(v.transform == "as is" and v.references == 4 for v in verdicts)
    assert all(v.match_p == pytest.approx(0.2) for v in verdicts)


def test_a_rule_with_max_p_counts_only_attributable_samples(refs):
    """The same structure score fires on a sample matched to its own original, not on one matched elsewhere."""
    x = torch.cat([_photo("astronaut"), _photo("rocket")])
    recon = torch.cat([x[:1].flip(-1), x[1:]])
    sc = score(recon, x, names=["astronaut", "rocket"], references=refs)
    ruleset = load_rules("default")
    verdict = evaluate(ruleset, [sc])
    assert verdict.overall == "fail"
    # the same scores without attribution: every sample's match_p made 1 (a reference as close as itself)
    from dataclasses import replace

    unattributed = replace(sc, samples=tuple(replace(s, metrics={**s.metrics, "match_p": 1.0}) for s in sc.samples))
    verdict = evaluate(ruleset, [unattributed])
    structure = next(r for r in verdict.results if r.rule.id == "recognised-structure")
    assert structure.status == "pass" and "not attributable" in structure.reason or \
        "no reconstruction is attributable" in structure.reason


def test_a_large_scan_uses_a_bounded_evenly_spaced_set_of_its_samples_as_references():
    """Every reconstruction is compared with every reference: all of a large scan's samples would make scoring
    grow with the square of the scan's size."""
    from leakaudit.metrics.references import MAX_SCAN_REFERENCES, scan_references

    samples = torch.rand(MAX_SCAN_REFERENCES * 2 + 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    refs = scan_references(None, samples)
    assert refs.scan_samples == MAX_SCAN_REFERENCES and refs.reference_set == 64
    assert len(refs.pixels) == 64 + MAX_SCAN_REFERENCES
    assert torch.equal(refs.pixels[64], samples[0]) and torch.equal(refs.pixels[-1], samples[-1])
    assert "evenly spaced" in refs.note
    assert scan_references(None, samples[:10]).scan_samples == 10 and scan_references(None, samples[:10]).note == ""
