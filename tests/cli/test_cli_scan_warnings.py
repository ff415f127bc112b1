"""``leakaudit scan`` shows detection's warnings on the terminal, not only in the HTML report (issue 12): a user
gating CI on the exit code reads the terminal. They name the model's file, so they are escaped."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

from leakaudit.cli import app_main

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"
SAMPLES = ROOT / "examples" / "samples"


def test_scan_prints_detection_warnings_escaped_on_stderr(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one warning one line: rich wraps at the terminal's width
    # mlp.onnx has no Dropout node: detection warns that the export may have removed dropout
    model = tmp_path / "m[bold red]x\x1b[31m.onnx"
    shutil.copy(MODELS / "mlp.onnx", model)
    code = app_main(["scan", str(model), "--data", str(SAMPLES), "--attacks", "ig", "--iterations", "2",
                     "--restarts", "1", "--batch-size", "1", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code in (0, 1, 4), err
    assert "warning:" in err and "no Dropout nodes" in err
    assert "budget: standard budget with overrides: iterations=2, restarts=1; 900 s cap (ran:" in err  # not "standard"
    assert "m[bold red]x\\x1b[31m.onnx" in err  # the file name literally, its ESC made visible
    assert not [ch for ch in err if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")]


def test_no_dropout_stated_removes_the_export_warning_and_the_advice(tmp_path: Path, capsys) -> None:
    import json

    out = tmp_path / "out"
    code = app_main(["scan", str(MODELS / "mlp.onnx"), "--data", str(SAMPLES), "--attacks", "analytic",
                     "--samples", "1", "--no-dropout", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code in (0, 1, 4), err
    assert "no Dropout nodes" not in err
    doc = json.loads((out / "report.json").read_text())
    assert doc["settings"]["no_dropout"] is True and "--no-dropout" in doc["command"]
    assert "declare-dropout" not in {r["id"] for r in doc["recommendations"]}
    assert not any("no Dropout nodes" in w for w in doc["findings"]["warnings"])
