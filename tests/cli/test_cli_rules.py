"""``leakaudit rules``: listing profiles, validating a user file, JSON output, exit 2 on a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leakaudit.cli import app_main
from leakaudit.verdict import list_profiles, load_rules

FILES = Path(__file__).parents[1] / "verdict" / "rule_files"


def test_lists_every_profile_and_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["rules"]) == 0
    out = capsys.readouterr().out
    for name in list_profiles():
        assert name in out
        for rule in load_rules(name).rules:
            assert rule.id in out
    assert "ssim_skill >= 0.1" in out and "match_p <= 0.02" in out and "lpips <= 0.3" in out


def test_one_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["rules", "--profile", "strict"]) == 0
    out = capsys.readouterr().out
    assert "attributable" in out and "recognised-structure" not in out


def test_json_lists_profiles_and_metric_directions(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["rules", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["profiles"]] == list_profiles()
    directions = {m["name"]: m["leak_direction"] for m in doc["metrics"]}
    assert directions["ssim"] == "higher" and directions["lpips"] == "lower" and directions["mse"] == "lower"


def test_validates_a_good_user_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = FILES / "valid.toml"
    assert app_main(["rules", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "close-mse" in out and "mse <= 0.01" in out and "valid, 2 rule(s)" in out
    assert app_main(["rules", "--file", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True and doc["profiles"][0]["rules"][0]["comparison"] == "<="


@pytest.mark.parametrize(
    ("file", "needle"),
    [("unknown_metric.toml", "unknown metric 'sssim': did you mean ssim"),
     ("missing_threshold.toml", "missing threshold"),
     ("bad_comparison.toml", "contradicts ssim's direction"),
     ("syntax_error.toml", "invalid TOML")],
)
def test_a_bad_file_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], file: str, needle: str) -> None:
    assert app_main(["rules", "--file", str(FILES / file)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("leakaudit: error: ")
    assert "Traceback" not in captured.err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["rules", "--file", str(FILES / "unknown_metric.toml"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_unknown_profile_and_exclusive_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["rules", "--profile", "defualt"]) == 2
    assert "did you mean default" in capsys.readouterr().err
    assert app_main(["rules", "--profile", "default", "--file", str(FILES / "valid.toml")]) == 2
    assert "give one of them, not both" in capsys.readouterr().err
