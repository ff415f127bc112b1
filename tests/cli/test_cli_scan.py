"""`leakaudit scan` end to end on a tiny real model: exit codes, outputs, config precedence, interrupts.

Scans use the analytic attack (closed-form, seconds on CPU) or tiny iteration counts: these tests check the
CLI contract, not attack strength (tests/attacks does that).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from leakaudit.cli import app_main
from leakaudit.report import schema

INPUT_SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """An MLP with dropout (first layer Linear with bias: the analytic attack inverts it exactly) and 2 photos."""
    from PIL import Image
    from skimage import data

    from leakaudit.models import create_model
    from leakaudit.models.safetensors_loader import save_safetensors

    root = tmp_path_factory.mktemp("scan")
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=4, input_shape=INPUT_SHAPE, dropout=0.25, hidden=(32,))
    save_safetensors(model, root / "mlp.safetensors", arch="mlp", input_shape=INPUT_SHAPE, num_classes=4,
                     arch_kwargs={"dropout": 0.25, "hidden": [32]})
    photos = [data.astronaut(), data.coffee()]
    x = np.stack([np.asarray(Image.fromarray(p).resize((16, 16), Image.BILINEAR)) for p in photos])
    np.savez(root / "samples.npz", x=(x.astype(np.float32) / 255).transpose(0, 3, 1, 2), y=np.array([0, 1]))
    return root


def scan(workdir: Path, out: Path, *extra: str) -> int:
    return app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples.npz"),
                     "--output-dir", str(out), "--quiet", *extra])


def test_exact_reconstruction_is_a_leak_exit_1_with_valid_reports(workdir, tmp_path):
    out = tmp_path / "r"
    assert scan(workdir, out, "--attacks", "analytic", "--format", "json,html,junit") == 1
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert doc["verdict"]["overall"] == "fail" and doc["verdict"]["exit_code"] == 1
    assert doc["model"]["format"] == "safetensors" and len(doc["model"]["sha256"]) == 64
    assert [d["p"] for d in doc["findings"]["dropout"]] == [0.25]
    assert doc["attacks"][0]["name"] == "analytic" and doc["attacks"][0]["status"] == "ran"
    assert doc["attacks"][0]["samples"][0]["reconstruction"].startswith("data:image/png;base64,")
    assert doc["data"]["originals_embedded"] is False and doc["data"]["samples"][0]["original"] is None
    assert "--seed 0" in doc["command"] and "--attacks analytic" in doc["command"]
    assert doc["environment"]["libraries"]["torch"] == torch.__version__.split("+")[0] or \
        doc["environment"]["libraries"]["torch"]
    failures = ET.parse(out / "report.junit.xml").getroot().findall(".//failure")
    assert {f.get("message").split(":")[0] for f in failures} == \
        {r["id"] for r in doc["rules"]["results"] if r["status"] == "fail"}
    html = (out / "report.html").read_text()
    assert "LEAK" in html and "original not embedded" in html


def test_strong_noise_defense_passes_exit_0(workdir, tmp_path):
    out = tmp_path / "r"
    assert scan(workdir, out, "--attacks", "analytic", "--defense", "noise:sigma=10") == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["verdict"]["overall"] == "pass"
    assert doc["defenses"] == [{"name": "noise", "params": {"sigma": 10.0}, "text": "noise:sigma=10"}]


def test_exit_zero_reports_a_leak_but_exits_0(workdir, tmp_path):
    assert scan(workdir, tmp_path / "r", "--attacks", "analytic", "--exit-zero") == 0
    assert json.loads((tmp_path / "r" / "report.json").read_text())["verdict"]["overall"] == "fail"


def test_output_dash_gives_pure_json_on_stdout(workdir, tmp_path, capsys):
    code = scan(workdir, tmp_path / "r", "--attacks", "analytic", "--format", "json", "--output", "-")
    captured = capsys.readouterr()
    assert code == 1
    doc = json.loads(captured.out)  # the whole of stdout is one JSON document
    assert doc["verdict"]["overall"] == "fail"
    assert not (tmp_path / "r").exists()  # JSON went to stdout, no other format asked


def test_embed_data_puts_originals_in_the_report(workdir, tmp_path):
    scan(workdir, tmp_path / "r", "--attacks", "analytic", "--embed-data", "--batch-size", "2")
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["data"]["originals_embedded"] is True and doc["data"]["count"] == 2
    assert all(s["original"].startswith("data:image/png;base64,") for s in doc["data"]["samples"])


@pytest.mark.parametrize("args, message", [
    (["--budget", "fast"], "--budget: 'fast' is not one of quick, standard, thorough"),
    (["--attacks", "igg"], "unknown attack 'igg'"),
    (["--defense", "nois:sigma=1"], "unknown defense"),
    (["--format", "pdf"], "--format: unknown report format 'pdf'"),
    (["--rules", "nonexistent.toml"], "nonexistent.toml"),
    (["--batch-size", "5"], "2 sample(s) found but --batch-size is 5"),
])
def test_input_errors_exit_2_with_one_line_and_write_nothing(workdir, tmp_path, capsys, args, message):
    out = tmp_path / "r"
    assert scan(workdir, out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_model_exits_2(tmp_path, capsys):
    assert app_main(["scan", str(tmp_path / "nope.onnx"), "--data", str(tmp_path / "samples"), "--output-dir",
                     str(tmp_path / "r")]) == 2
    assert "nope.onnx: no such file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_internal_error_exits_3_and_writes_nothing(workdir, tmp_path, monkeypatch, capsys):
    import leakaudit.update

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug in the client update")

    monkeypatch.setattr(leakaudit.update, "client_update", broken)
    assert scan(workdir, tmp_path / "r", "--attacks", "analytic") == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: simulated bug" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_crashed_attack_is_reported_and_no_pass_is_claimed(workdir, tmp_path, monkeypatch):
    from leakaudit.attacks import ATTACKS

    def broken(*args, **kwargs):
        raise RuntimeError("simulated attack bug")

    monkeypatch.setattr(ATTACKS.get("analytic"), "run", broken)
    out = tmp_path / "r"
    assert scan(workdir, out, "--attacks", "analytic", "--format", "json,junit") == 3
    doc = json.loads((out / "report.json").read_text())
    assert doc["attacks"][0]["status"] == "failed" and "simulated attack bug" in doc["attacks"][0]["reason"]
    assert ET.parse(out / "report.junit.xml").getroot().find(".//error") is not None


def test_interrupt_writes_an_incomplete_report_and_exits_130(workdir, tmp_path, monkeypatch):
    from leakaudit.cli.progress import RichObserver

    monkeypatch.setattr(RichObserver, "should_stop", lambda self: True)
    out = tmp_path / "r"
    assert scan(workdir, out, "--attacks", "analytic") == 130
    doc = json.loads((out / "report.json").read_text())
    assert doc["incomplete"] is True and "interrupted" in doc["incomplete_reason"]
    assert doc["attacks"][0]["status"] == "skipped"
    assert "INCOMPLETE" in (out / "report.html").read_text()


def test_config_file_applies_and_flags_win(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leakaudit.toml").write_text('attacks = "analytic"\ndefense = ["noise:sigma=10"]\nquiet = true\n'
                                            'output-dir = "from-config"\n')
    data = ["--data", str(workdir / "samples.npz")]
    assert app_main(["scan", str(workdir / "mlp.safetensors"), *data]) == 0  # the file's noise defense applies
    assert (tmp_path / "from-config" / "report.json").exists()
    # a flag beats the file: no defense given on the command line -> file's list replaced
    code = app_main(["scan", str(workdir / "mlp.safetensors"), *data, "--defense", "noise:sigma=0.0001",
                     "--output-dir", "from-flag"])
    assert code == 1
    doc = json.loads((tmp_path / "from-flag" / "report.json").read_text())
    assert [d["text"] for d in doc["defenses"]] == ["noise:sigma=0.0001"]
    assert "--defense noise:sigma=0.0001" in doc["command"] and "--attacks analytic" in doc["command"]


def test_settings_from_a_config_file_are_named_on_stderr_and_in_the_report(workdir, tmp_path, monkeypatch, capsys):
    # issue 19: a defense from [tool.leakaudit] turned a leak into a PASS with an unchanged command line, unsaid
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.leakaudit]\nattacks = "analytic"\n'
                                            'defense = ["noise:sigma=1.0"]\nseed = 3\n')
    argv = ["scan", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples.npz"), "--seed", "4"]
    assert app_main(argv) == 0
    line = ("settings from pyproject.toml [tool.leakaudit] (flags win): --attacks analytic "
            "--defense noise:sigma=1.0")  # the seed is the flag's: not from the file
    err = " ".join(capsys.readouterr().err.split())  # the terminal wraps long lines
    assert err.startswith(line) and err.count(line) == 2  # before the scan, and beside the verdict
    doc = json.loads((tmp_path / "leakaudit-report" / "report.json").read_text())
    assert line in doc["notes"] and "--defense noise:sigma=1.0" in doc["command"] and "--seed 4" in doc["command"]
    assert doc["seed"] == 4 + doc["coverage"]["shown_batch"]  # the shown batch's seed (batch i uses seed + i)
    assert line in (tmp_path / "leakaudit-report" / "report.html").read_text()
    assert app_main([*argv, "--quiet", "--output-dir", "q"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: not printed, still recorded
    assert line in json.loads((tmp_path / "q" / "report.json").read_text())["notes"]


def test_render_reproduces_the_scan_html(workdir, tmp_path):
    out = tmp_path / "r"
    scan(workdir, out, "--attacks", "analytic")
    again = tmp_path / "again.html"
    assert app_main(["render", str(out / "report.json"), "--output", str(again)]) == 0
    assert again.read_text() == (out / "report.html").read_text()


def test_output_file_gets_the_json_and_the_output_dir_the_rest(workdir, tmp_path):
    target = tmp_path / "elsewhere" / "scan.json"
    assert scan(workdir, tmp_path / "r", "--attacks", "analytic", "--output", str(target)) == 1
    assert json.loads(target.read_text())["verdict"]["overall"] == "fail"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["leakaudit-manifest.json", "report.html"]


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_real_ctrl_c_stops_the_running_attack_and_exits_130(workdir, tmp_path, signum):
    """A real SIGINT to a real scan process: the attack stops at its next check, the report says so. SIGTERM
    (what a CI runner sends on a timeout) does the same, so the job keeps a report marked incomplete."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    cmd = [sys.executable, "-c", "import sys; from leakaudit.cli import main; sys.argv[0] = 'leakaudit'; main()",
           "scan", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples.npz"), "--attacks", "ig",
           "--iterations", "1000000", "--restarts", "1", "--output-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "attack ig" in line:
            break
    assert "attack ig" in seen, seen
    time.sleep(3)
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, seen + err
    doc = json.loads((out / "report.json").read_text())
    ig = doc["attacks"][0]
    assert doc["incomplete"] is True and ig["status"] == "interrupted"
    assert 0 < ig["iterations_run"] < 1000000 and ig["samples"]


def test_a_folder_named_like_a_profile_does_not_hijack_it(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()  # e.g. a project folder called "default"
    assert scan(workdir, tmp_path / "r", "--attacks", "analytic") == 1
    assert json.loads((tmp_path / "r" / "report.json").read_text())["rules"]["profile"] == "default"


def test_summary_names_each_attack_with_its_result_or_why_it_did_not_run(workdir, tmp_path, capsys):
    """The rule lines name only the worst attack; a user must also see which other attacks broke the model."""
    code = app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples.npz"),
                     "--output-dir", str(tmp_path / "r"), "--attacks", "analytic,precode-aware"])
    assert code == 1
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines() if "━" not in line]  # not the progress bars
    analytic = next(line for line in lines if line.startswith("analytic "))
    assert "ssim 1" in analytic and "psnr inf" in analytic
    assert any(line.startswith("precode-aware") and "skipped: no variational (PRECODE) bottleneck" in line
               for line in lines)
