"""The threshold search on synthetic verdicts: the weakest setting that passes, and when none does."""

import pytest

from leakaudit.sweep import DONE, ERROR, KNOBS, Point, find_threshold


def pts(verdicts):
    return [Point(v, DONE, passed=ok) if ok is not None else Point(v, ERROR, error="boom")
            for v, ok in verdicts.items()]


SIGMA = KNOBS.get("noise.sigma")  # stronger when larger
CLIP = KNOBS.get("clip.norm")  # stronger when smaller


def test_monotone_increasing_strength():
    values = [1e-4, 1e-3, 1e-2, 1e-1]
    t = find_threshold(SIGMA, values, pts({1e-4: False, 1e-3: False, 1e-2: True, 1e-1: True}))
    assert t.stable == 1e-2
    assert t.weakest_passing == 1e-2
    assert t.monotone
    assert "noise.sigma=0.01 is the weakest tested setting that passes" in t.message


def test_lower_is_stronger_knob():
    values = [0.1, 1.0, 10.0]
    t = find_threshold(CLIP, values, pts({0.1: True, 1.0: True, 10.0: False}))
    assert t.stable == 1.0  # weakest = largest passing clip norm
    assert t.monotone


def test_non_monotone_recommends_stable_region_only():
    values = [0.1, 0.2, 0.3, 0.4, 0.5]
    verdicts = {0.1: False, 0.2: True, 0.3: False, 0.4: True, 0.5: True}
    t = find_threshold(SIGMA, values, pts(verdicts))
    assert t.weakest_passing == 0.2
    assert t.stable == 0.4
    assert not t.monotone
    assert "not monotone" in t.message


def test_none_passing():
    values = [0.1, 0.2, 0.3]
    t = find_threshold(SIGMA, values, pts({v: False for v in values}))
    assert t.stable is None and t.weakest_passing is None
    assert "no tested value of noise.sigma passes" in t.message
    assert "try larger values" in t.message


def test_none_passing_lower_is_stronger_suggests_smaller():
    t = find_threshold(CLIP, [1.0, 2.0], pts({1.0: False, 2.0: False}))
    assert "strongest tested was clip.norm=1" in t.message
    assert "try smaller values" in t.message


def test_all_passing_says_test_weaker():
    values = [0.1, 0.2]
    t = find_threshold(SIGMA, values, pts({0.1: True, 0.2: True}))
    assert t.stable == 0.1
    assert "every tested value passes" in t.message


def test_strongest_fails_gives_no_stable_threshold():
    t = find_threshold(SIGMA, [0.1, 0.2], pts({0.1: True, 0.2: False}))
    assert t.stable is None
    assert t.weakest_passing == 0.1
    assert not t.monotone


def test_error_value_breaks_the_stable_run():
    # 0.3 has no verdict: nothing is known there, so the stable threshold cannot extend below it.
    values = [0.1, 0.2, 0.3, 0.4]
    t = find_threshold(SIGMA, values, pts({0.1: False, 0.2: True, 0.3: None, 0.4: True}))
    assert t.stable == 0.4
    assert t.unknown == (0.3,)


def test_values_not_run_are_unknown():
    t = find_threshold(SIGMA, [0.1, 0.2, 0.3], pts({0.1: False}))
    assert t.stable is None
    assert t.unknown == (0.2, 0.3)
    assert "without a result" in t.message


@pytest.mark.parametrize("knob", ["noise.sigma", "clip.norm", "prune.keep", "mask.fraction"])
def test_stable_threshold_always_passes_and_everything_stronger_passes(knob):
    k = KNOBS.get(knob)
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    import random

    rng = random.Random(0)
    for _ in range(50):
        verdicts = {v: rng.random() < 0.6 for v in values}
        t = find_threshold(k, values, pts(verdicts))
        if t.stable is None:
            assert not verdicts[max(values, key=k.strength_key)]
            continue
        stronger = [v for v in values if k.strength_key(v) >= k.strength_key(t.stable)]
        assert all(verdicts[v] for v in stronger)
        weaker = [v for v in values if k.strength_key(v) < k.strength_key(t.stable)]
        if weaker:
            assert not verdicts[max(weaker, key=k.strength_key)]
