"""--max-time and --attack-iterations on the command line: bad values are one line and exit 2, and a report's
reproduce command pins the iterations its attacks were fitted to (issue 24: the figures repeat on any machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leakaudit.cli import app_main

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "examples" / "models" / "mlp_dropout.onnx"
SAMPLES = ROOT / "examples" / "samples"


@pytest.mark.parametrize("args, words", [
    (("--max-time", "0"), "--max-time"),
    (("--max-time", "soon"), "--max-time"),
    (("--attack-iterations", "ig"), "ATTACK=N"),
    (("--attack-iterations", "ig=many"), "--attack-iterations"),
    (("--attack-iterations", "igg=10"), "did you mean ig"),
])
def test_bad_time_settings_are_one_line_and_exit_2(args, words, tmp_path, capsys):
    code = app_main(["scan", str(MLP), "--data", str(SAMPLES), "--output-dir", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_the_reproduce_command_pins_the_fitted_iterations(monkeypatch, tmp_path):
    import leakaudit.attacks.clock as clock

    # a machine on which IG's share holds 20 iterations
    monkeypatch.setattr(clock, "fitted_iterations", lambda done, elapsed, planned, seconds, rate=None: max(done, 20))
    out = tmp_path / "r"
    code = app_main(["scan", str(MLP), "--data", str(SAMPLES), "--samples", "1", "--attacks", "ig", "--budget",
                     "quick", "--restarts", "1", "--output-dir", str(out), "--quiet"])
    assert code in (0, 1, 4)
    doc = json.loads((out / "report.json").read_text())
    ig = next(a for a in doc["attacks"] if a["name"] == "ig")
    assert (ig["iterations_planned"], ig["iterations_run"]) == (300, 20)
    assert "--attack-iterations ig=20" in doc["command"]
    assert doc["settings"]["max_time"] == 120 and doc["budget"]["max_time"] == 120
    assert "of 300 planned, fitted to its" in doc["budget"]["text"]


def test_max_time_from_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leakaudit.toml").write_text('max-time = 45\n')
    out = tmp_path / "r"
    code = app_main(["scan", str(MLP), "--data", str(SAMPLES), "--samples", "1", "--output-dir", str(out), "--quiet"])
    assert code == 1
    doc = json.loads((out / "report.json").read_text())
    assert doc["settings"]["max_time"] == 45 and "--max-time 45" in doc["command"]
