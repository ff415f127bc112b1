"""The report says what the process did: report.json's verdict and exit_code, the HTML banner, the JUnit
properties and the terminal line all equal the scan's exit code, for pass, leak, crash, interrupt and
--exit-zero (one decision: leakaudit.verdict.outcome)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from leakaudit.cli import app_main
from leakaudit.report import schema

INPUT_SHAPE = (3, 16, 16)
HARDSIGMOID_FACTORY = '''
import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable


class _Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class OnceDifferentiable(nn.Module):
    def forward(self, x):
        return _Relu.apply(x)


def hs(num_classes=4, **kwargs):
    # a custom activation with no double backward: every gradient-matching attack crashes on it
    return nn.Sequential(nn.Flatten(), nn.Linear(768, 16), OnceDifferentiable(), nn.Linear(16, num_classes))
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """An MLP the analytic attack inverts exactly, a twin torch cannot differentiate twice, 2 photos."""
    from PIL import Image
    from safetensors.torch import save_model
    from skimage import data

    from leakaudit.models import create_model
    from leakaudit.models.safetensors_loader import save_safetensors

    root = tmp_path_factory.mktemp("outcome")
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=4, input_shape=INPUT_SHAPE, hidden=(32,))
    save_safetensors(model, root / "mlp.safetensors", arch="mlp", input_shape=INPUT_SHAPE, num_classes=4,
                     arch_kwargs={"hidden": [32]})
    (root / "hs.py").write_text(HARDSIGMOID_FACTORY)
    namespace: dict = {}
    exec(HARDSIGMOID_FACTORY, namespace)
    save_model(namespace["hs"](), str(root / "hs.safetensors"),
               metadata={"leakaudit.input_shape": json.dumps(list(INPUT_SHAPE)), "leakaudit.num_classes": "4"})
    photos = [data.astronaut(), data.coffee()]
    x = np.stack([np.asarray(Image.fromarray(p).resize((16, 16), Image.BILINEAR)) for p in photos])
    np.savez(root / "samples.npz", x=(x.astype(np.float32) / 255).transpose(0, 3, 1, 2), y=np.array([0, 1]))
    return root


def scan(workdir: Path, out: Path, *extra: str, model: str = "mlp.safetensors") -> int:
    return app_main(["scan", str(workdir / model), "--data", str(workdir / "samples.npz"), "--output-dir", str(out),
                     "--format", "json,html,junit", *extra])


def outputs(out: Path) -> tuple[dict, str, dict[str, str]]:
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    banner = re.search(r'class="banner ([a-z]+)"', (out / "report.html").read_text()).group(1)
    props = {p.get("name"): p.get("value") for p in ET.parse(out / "report.junit.xml").getroot().iter("property")}
    return doc, banner, props


def crash(monkeypatch, name: str) -> None:
    from leakaudit.attacks import ATTACKS

    def broken(*args, **kwargs):
        raise RuntimeError("simulated attack bug")

    monkeypatch.setattr(ATTACKS.get(name), "run", broken)


def interrupt(monkeypatch) -> None:
    from leakaudit.cli.progress import RichObserver

    monkeypatch.setattr(RichObserver, "should_stop", lambda self: True)


@pytest.mark.parametrize("case, extra, setup, overall, code, banner, word", [
    ("pass", ["--attacks", "analytic", "--defense", "noise:sigma=10"], None, "pass", 0, "pass", "PASS"),
    ("leak", ["--attacks", "analytic"], None, "fail", 1, "fail", "LEAK"),
    ("every attack crashed", ["--attacks", "analytic"], "crash analytic", "error", 3, "error", "ERROR"),
    ("a crash and a leak", ["--attacks", "analytic,ig", "--iterations", "2"], "crash ig", "fail", 1, "fail", "LEAK"),
    ("interrupted", ["--attacks", "analytic"], "interrupt", "incomplete", 130, "incomplete", "INCOMPLETE"),
    ("--exit-zero leak", ["--attacks", "analytic", "--exit-zero"], None, "fail", 0, "fail", "LEAK"),
    ("--exit-zero crash", ["--attacks", "analytic", "--exit-zero"], "crash analytic", "error", 3, "error", "ERROR"),
])
def test_the_report_states_the_exit_code_the_process_returned(workdir, tmp_path, monkeypatch, capsys, case, extra,
                                                              setup, overall, code, banner, word):
    if setup == "interrupt":
        interrupt(monkeypatch)
    elif setup:
        crash(monkeypatch, setup.split()[1])
    out = tmp_path / "r"
    returned = scan(workdir, out, *extra)
    doc, shown, props = outputs(out)
    assert returned == code == doc["verdict"]["exit_code"], case
    assert doc["verdict"]["overall"] == overall and shown == banner
    assert props == {"leakaudit.overall": overall, "leakaudit.exit_code": str(code)}
    assert doc["verdict"]["exit_zero"] is ("--exit-zero" in extra)
    assert doc["verdict"]["summary"].startswith(word + ":")
    err = " ".join(capsys.readouterr().err.split())  # the terminal wraps long lines
    assert " ".join(doc["verdict"]["summary"].split()) in err
    assert not [w for w in ("PASS:", "LEAK:", "ERROR:") if w in err and w != word + ":"]


def test_a_crashed_attack_is_named_and_never_reads_as_a_pass(workdir, tmp_path, monkeypatch, capsys):
    crash(monkeypatch, "analytic")
    assert scan(workdir, tmp_path / "r", "--attacks", "analytic") == 3
    doc, banner, _ = outputs(tmp_path / "r")
    assert doc["verdict"]["crashed_attacks"] == ["analytic"] and doc["verdict"]["rules_overall"] == "pass"
    err = capsys.readouterr().err
    assert "ERROR: 1 attack(s) crashed (analytic)" in err and "PASS" not in err


def test_a_leak_beside_a_crash_keeps_the_crash_in_the_summary(workdir, tmp_path, monkeypatch):
    crash(monkeypatch, "ig")
    assert scan(workdir, tmp_path / "r", "--attacks", "analytic,ig", "--iterations", "2", "--quiet") == 1
    doc, _, _ = outputs(tmp_path / "r")
    assert doc["verdict"]["crashed_attacks"] == ["ig"] and "1 attack(s) crashed (ig)" in doc["verdict"]["summary"]


def test_a_real_double_backward_crash_is_an_error_not_a_pass(workdir, tmp_path):
    """An activation with no double backward (torch.func refuses it, or autograd: once_differentiable)."""
    out = tmp_path / "r"
    code = scan(workdir, out, "--arch", f"{workdir / 'hs.py'}:hs", "--attacks", "ig", "--iterations", "2",
                "--quiet", model="hs.safetensors")
    doc, banner, _ = outputs(out)
    assert code == doc["verdict"]["exit_code"] == 3 and doc["verdict"]["overall"] == "error" and banner == "error"
    assert doc["attacks"][0]["status"] == "failed" and "Function" in doc["attacks"][0]["reason"]


def test_exit_zero_keeps_the_underlying_verdict(workdir, tmp_path):
    assert scan(workdir, tmp_path / "r", "--attacks", "analytic", "--exit-zero", "--quiet") == 0
    verdict = outputs(tmp_path / "r")[0]["verdict"]
    assert (verdict["overall"], verdict["rules_overall"], verdict["exit_code"]) == ("fail", "fail", 0)
    assert verdict["summary"].endswith("(--exit-zero: exit 0)")


def test_a_blank_sample_is_flagged_flat_in_the_report_and_not_a_leak_by_ssim(workdir, tmp_path):
    np.savez(tmp_path / "blank.npz", x=np.full((1, *INPUT_SHAPE), 0.5, np.float32), y=np.array([2]))
    out = tmp_path / "r"
    code = app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(tmp_path / "blank.npz"),
                     "--output-dir", str(out), "--attacks", "ig", "--iterations", "3", "--quiet"])
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert code == doc["verdict"]["exit_code"]
    sample = doc["attacks"][0]["samples"][0]
    assert sample["flat"] is True and {"ssim_skill", "match_p"} <= set(sample["excluded"])
    rule = next(r for r in doc["rules"]["results"] if r["id"] == "recognised-structure")
    assert rule["status"] == "not_evaluated" and "every original is flat" in rule["reason"]


def test_a_crash_gets_a_recommendation_that_names_it(workdir, tmp_path, monkeypatch):
    crash(monkeypatch, "analytic")
    scan(workdir, tmp_path / "r", "--attacks", "analytic", "--quiet")
    recs = {r["id"]: r for r in outputs(tmp_path / "r")[0]["recommendations"]}
    assert "simulated attack bug" in recs["attack-crashed"]["because"] and "pass-scope" not in recs


def without_lpips_weights(monkeypatch, tmp_path: Path) -> None:
    """A machine without LPIPS weights: an empty torch hub cache and no env var (leakaudit never downloads)."""
    from leakaudit.metrics import LPIPS_WEIGHTS_ENV

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(LPIPS_WEIGHTS_ENV, raising=False)


def junit_case(out: Path, rule_id: str) -> ET.Element:
    cases = ET.parse(out / "report.junit.xml").getroot().iter("testcase")
    return next(c for c in cases if c.get("name", "").startswith(rule_id + ":"))


def test_strict_keeps_an_earned_pass_when_a_warn_rule_cannot_be_evaluated(workdir, tmp_path, monkeypatch, capsys):
    # issue 19: the default profile's LPIPS rule is a warning; without its weights --strict used to fail the scan
    without_lpips_weights(monkeypatch, tmp_path)
    out = tmp_path / "r"
    assert scan(workdir, out, "--attacks", "analytic", "--defense", "noise:sigma=10", "--strict") == 0
    doc, banner, props = outputs(out)
    lpips = next(r for r in doc["rules"]["results"] if r["id"] == "perceptual-lpips")
    assert (lpips["status"], lpips["severity"]) == ("not_evaluated", "warn")
    assert (doc["verdict"]["overall"], banner, doc["verdict"]["control_reconstructed"]) == ("pass", "pass", True)
    assert doc["verdict"]["summary"].startswith("PASS:") and "1 rule(s) not evaluated" in doc["verdict"]["summary"]
    case = junit_case(out, "perceptual-lpips")
    assert case.find("skipped") is not None and case.find("failure") is None
    err = capsys.readouterr().err
    assert "PASS:" in err and "LEAK" not in err


def test_strict_fails_on_an_unevaluable_fail_rule_without_calling_it_a_leak(workdir, tmp_path, monkeypatch, capsys):
    # the strict profile's LPIPS rule is fail-severity: --strict counts it as failed, but no leak was found
    without_lpips_weights(monkeypatch, tmp_path)
    out = tmp_path / "r"
    assert scan(workdir, out, "--attacks", "analytic", "--defense", "noise:sigma=10", "--rules", "strict",
                "--strict") == 1
    doc, banner, props = outputs(out)
    verdict = doc["verdict"]
    assert (verdict["overall"], verdict["exit_code"], verdict["counts"]["fail"]) == ("fail", 1, 0)
    assert verdict["summary"].startswith("FAIL (strict): 1 fail-severity rule(s) could not be evaluated")
    assert "perceptual-lpips" in verdict["summary"] and "no leak was found" in verdict["summary"]
    html = (out / "report.html").read_text()
    assert "<strong>FAIL (strict)</strong>" in html and "<strong>LEAK" not in html
    failure = junit_case(out, "perceptual-lpips").find("failure")
    assert failure is not None and failure.get("type") == "not_evaluated" and "leak," not in failure.get("message")
    assert "a leak was found" not in json.dumps(doc)  # the control's reason too
    err = capsys.readouterr().err
    assert "FAIL (strict):" in " ".join(err.split()) and "LEAK" not in err


def test_flat_samples_are_flagged_on_the_terminal_and_in_the_report(workdir, tmp_path, capsys):
    # issue 19: one-colour samples got a verdict with no warning; now the scan names them everywhere
    photos = np.load(workdir / "samples.npz")
    x = np.concatenate([photos["x"], np.zeros((1, *INPUT_SHAPE), np.float32),
                        np.full((1, *INPUT_SHAPE), 0.5, np.float32)])
    np.savez(tmp_path / "mixed.npz", x=x, y=np.array([0, 1, 2, 3]))
    out = tmp_path / "r"
    code = app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(tmp_path / "mixed.npz"),
                     "--output-dir", str(out), "--attacks", "analytic"])
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert code == doc["verdict"]["exit_code"]
    (note,) = [n for n in doc["notes"] if n.startswith("flat samples")]
    assert "2 of 4 audited sample(s) are flat" in note and "mixed.npz[2], mixed.npz[3]" in note
    assert "flat-samples" in {r["id"] for r in doc["recommendations"]}
    html = (out / "report.html").read_text()
    assert "Audit samples with structure" in html and "2 of 4 audited sample(s) are flat" in html
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: flat samples: 2 of 4 audited sample(s) are flat" in err
    # photos only: no such warning
    assert scan(workdir, tmp_path / "photos", "--attacks", "analytic", "--quiet") == 1
    assert not [n for n in outputs(tmp_path / "photos")[0]["notes"] if n.startswith("flat samples")]
