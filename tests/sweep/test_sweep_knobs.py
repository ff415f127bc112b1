"""--vary parsing: lists, lin/log ranges, and one clear error per mistake."""

import itertools
import math

import pytest

from leakaudit.cli.app import _named_by_flag
from leakaudit.errors import ConfigError
from leakaudit.sweep import KNOBS, parse_values, parse_vary


def test_list_is_sorted_ascending():
    values, scale = parse_values("0.2, 0.05,0.1")
    assert values == (0.05, 0.1, 0.2)
    assert scale == "list"


def test_lin_range_includes_both_ends_evenly_spaced():
    values, scale = parse_values("0:0.5:lin:6")
    assert scale == "lin"
    assert values == pytest.approx((0.0, 0.1, 0.2, 0.3, 0.4, 0.5))
    # tidy values, no 0.30000000000000004 in reports or resume comparisons
    assert 0.3 in values


def test_log_range_is_geometric():
    values, scale = parse_values("1e-4:1e-1:log:4")
    assert scale == "log"
    assert values == pytest.approx((1e-4, 1e-3, 1e-2, 1e-1))
    ratios = [b / a for a, b in itertools.pairwise(values)]
    assert all(math.isclose(r, 10.0, rel_tol=1e-9) for r in ratios)


def test_descending_range_gives_same_values():
    assert parse_values("1e-1:1e-4:log:4")[0] == parse_values("1e-4:1e-1:log:4")[0]


@pytest.mark.parametrize("spec, match", [
    ("", "no values"),
    ("0.1", "at least 2 values"),
    ("0.1,,0.2", "empty item"),
    ("0.1,abc", "'abc' is not a number"),
    ("0.1,nan", "not finite"),
    ("0.1,0.1", "given twice"),
    ("1e-4:1e-1:log", "4 parts"),
    ("1e-4:1e-1:cubic:4", "neither 'log' nor 'lin'"),
    ("1e-4:1e-1:log:1", "count is 1"),
    ("1e-4:1e-1:log:x", "not a whole number"),
    ("0:1e-1:log:4", "positive ends"),
    ("-1:1e-1:log:4", "positive ends"),
    ("0.1:0.1:lin:3", "two different ends"),
    ("0:1:lin:100000", "too large"),
])
def test_bad_values_one_line_error(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_values(spec)
    assert "\n" not in str(info.value)
    # a Python caller reads the argument (run_sweep's vary), the CLI the option
    assert str(info.value).startswith("vary")
    assert _named_by_flag(info.value).startswith("--vary")


def test_parse_vary_knob_and_values():
    vary = parse_vary("noise.sigma=1e-4:1e-1:log:6")
    assert vary.knob.name == "noise.sigma"
    assert len(vary.values) == 6
    assert vary.scale == "log"


def test_unknown_knob_suggests_close_name():
    with pytest.raises(ConfigError, match=r"unknown knob 'noise.sgma': did you mean noise.sigma\?"):
        parse_vary("noise.sgma=0.1,0.2")


def test_missing_equals_lists_knobs():
    with pytest.raises(ConfigError, match="expected KNOB=VALUES.*clip.norm"):
        parse_vary("noise.sigma")


@pytest.mark.parametrize("text, match", [
    ("prune.keep=0,0.5", r"outside \(0, 1\]"),
    ("prune.keep=0.5,1.5", r"outside \(0, 1\]"),
    ("mask.fraction=0.5,1", r"outside \[0, 1\)"),
    ("dropout.p=0.5,1.0", r"outside \[0, 1\)"),
    ("clip.norm=0,1", r"outside \(0, inf\)"),
    ("noise.sigma=-0.1,0.1", r"outside \[0, inf\)"),
])
def test_values_outside_knob_domain(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_vary(text)


@pytest.mark.parametrize("name, stronger", [
    ("noise.sigma", "higher"), ("clip.norm", "lower"), ("prune.keep", "lower"),
    ("mask.fraction", "higher"), ("ppp.sigma", "higher"), ("dropout.p", "higher"),
])
def test_strength_direction(name, stronger):
    knob = KNOBS.get(name)
    assert knob.stronger == stronger
    vary = parse_vary(f"{name}=0.2,0.5")
    weakest, strongest = vary.by_strength()
    assert (strongest > weakest) == (stronger == "higher")
