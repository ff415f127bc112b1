"""A PASS must be earned (issue 12): the positive control, the verdict ``inconclusive`` (exit 4) and how every
output shows it. Tiny budgets on small models: these check the decision and its reporting, not attack strength.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import torch

from leakaudit.cli import app_main
from leakaudit.report import schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "models" / "mlp_dropout.onnx"
SAMPLES = ROOT / "examples" / "samples"
WEAK = ("--attacks", "ig", "--iterations", "1", "--restarts", "1")  # cannot reconstruct anything


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    """The zoo's small ConvNet, random weights, no dropout: no closed-form attack applies to it."""
    from leakaudit.models import create_model
    from leakaudit.models.safetensors_loader import save_safetensors

    path = tmp_path_factory.mktemp("control") / "cnn.safetensors"
    torch.manual_seed(0)
    save_safetensors(create_model("cnn", num_classes=10, input_shape=(3, 32, 32)), path, arch="cnn",
                     input_shape=(3, 32, 32), num_classes=10)
    return path


def _scan(model: Path, out: Path, *extra: str) -> int:
    return app_main(["scan", str(model), "--data", str(SAMPLES), "--output-dir", str(out),
                     "--format", "json,html,junit", *extra])


def _reports(out: Path) -> tuple[dict, str, ET.Element]:
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    return doc, (out / "report.html").read_text(), ET.parse(out / "report.junit.xml").getroot()


def test_attacks_that_cannot_reconstruct_the_undefended_model_give_inconclusive_everywhere(cnn, tmp_path, capsys):
    out = tmp_path / "r"
    assert _scan(cnn, out, *WEAK) == 4
    doc, html, junit = _reports(out)
    verdict, control = doc["verdict"], doc["control"]
    assert (verdict["overall"], verdict["exit_code"], verdict["control_reconstructed"]) == ("inconclusive", 4, False)
    assert verdict["summary"].startswith("INCONCLUSIVE: the attacks could not reconstruct even without the defenses")
    # no defense was simulated: the main run's IG is the control, not run twice
    assert control["status"] == "ran" and control["reconstructed"] is False
    assert control["shared_attacks"] == ["ig"] and control["attacks"] == [] and control["defenses_removed"] == []
    # judged by the recognition test: the best structure score seen, or that nothing was even attributable
    assert ("ssim_skill" in control["evidence"] and "(ig)" in control["evidence"]) or \
        "no reconstruction was attributable to its own sample" in control["evidence"]
    assert doc["recommendations"][0]["id"] == "inconclusive" and "--device cuda" in doc["recommendations"][0]["text"]
    assert '<div class="banner inconclusive" id="verdict"><strong>INCONCLUSIVE</strong>' in html
    assert '<h2>Positive control</h2><p id="control">' in html and "did not reconstruct" in html
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props == {"leakaudit.overall": "inconclusive", "leakaudit.exit_code": "4"}
    case = next(c for c in junit.iter("testcase") if c.get("name") == "positive control reconstructs")
    assert case.find("failure").get("type") == "inconclusive"
    assert case.find("failure").get("message") == verdict["summary"]
    assert junit.get("failures") == "1"
    err = " ".join(capsys.readouterr().err.split())  # the terminal wraps long lines
    assert " ".join(verdict["summary"].split()) in err


def test_strict_makes_inconclusive_exit_1_and_exit_zero_does_not_hide_it(cnn, tmp_path):
    # one fail-severity rule that is always evaluated: the strict exit rests on the control alone
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "recognisable"\nmetric = "ssim_adjusted"\nthreshold = 0.6\n')
    assert _scan(cnn, tmp_path / "s", *WEAK, "--strict", "--rules", str(rules), "--quiet") == 1
    doc, _, junit = _reports(tmp_path / "s")
    assert (doc["verdict"]["overall"], doc["verdict"]["exit_code"]) == ("inconclusive", 1)
    assert doc["verdict"]["summary"].endswith("(--strict: exit 1)")
    assert {p.get("name"): p.get("value") for p in junit.iter("property")}["leakaudit.exit_code"] == "1"
    assert _scan(cnn, tmp_path / "z", *WEAK, "--exit-zero", "--quiet") == 4


def test_with_a_defense_the_control_attacks_the_clean_update(cnn, tmp_path):
    assert _scan(cnn, tmp_path / "d", *WEAK, "--defense", "noise:sigma=0.1", "--quiet") == 4
    control = _reports(tmp_path / "d")[0]["control"]
    assert control["defenses_removed"] == ["noise:sigma=0.1"] and control["shared_attacks"] == []
    assert [(a["name"], a["status"]) for a in control["attacks"]] == [("ig", "ran")]
    assert control["attacks"][0]["settings"]["iterations"] == 1  # the scan's budget, not more


def test_the_bundled_example_defended_passes_earned_by_the_analytic_control(tmp_path):
    """README: mlp_dropout.onnx with --defense noise:sigma=0.3 passes; the control (no noise) is the exact
    analytic inversion, so the slower control attacks are not needed. (At sigma 0.1 DIA still recovers the
    coffee cup's outline and the cat's face: recognised, a LEAK -- the old absolute rule called it a pass.)"""
    out = tmp_path / "p"
    assert _scan(EXAMPLE, out, "--defense", "noise:sigma=0.3", "--budget", "quick", "--quiet") == 0
    doc, html, _ = _reports(out)
    verdict, control = doc["verdict"], doc["control"]
    assert (verdict["overall"], verdict["control_reconstructed"]) == ("pass", True)
    assert control["reconstructed"] is True and control["defenses_removed"] == ["noise:sigma=0.3"]
    assert _scan(EXAMPLE, tmp_path / "l", "--defense", "noise:sigma=0.1", "--budget", "quick", "--quiet") == 1
    ran = [a["name"] for a in control["attacks"] if a["status"] == "ran"]
    assert ran == ["analytic"]
    assert all(a["reason"] == "not needed: the control already reconstructed"
               for a in control["attacks"] if a["status"] == "skipped")
    assert "(analytic)" in verdict["summary"] and "reconstructed the undefended case" in html


def test_a_leak_needs_no_control(tmp_path):
    assert _scan(EXAMPLE, tmp_path / "l", "--attacks", "analytic", "--quiet") == 1
    control = _reports(tmp_path / "l")[0]["control"]
    assert control["status"] == "not_needed" and control["reconstructed"] is None and control["attacks"] == []


def test_dropout_without_defenses_adds_only_dia_informed_to_the_control(tmp_path):
    """The main run's IG is shared; the control adds the attacker's best case for dropout (the true masks)."""
    assert _scan(EXAMPLE, tmp_path / "m", *WEAK, "--quiet") == 4
    control = _reports(tmp_path / "m")[0]["control"]
    assert control["shared_attacks"] == ["ig"]
    assert [(a["name"], a["status"]) for a in control["attacks"]] == [("dia-informed", "ran")]
    assert "true dropout masks" in control["reason"]
    # the control hands the client's masks to it (GroundTruth), or it would only be IG again
    assert not any("no usable true masks" in n for n in control["attacks"][0]["notes"])


def test_the_summary_shows_the_control_s_own_attacks_beside_the_main_run_s(tmp_path, capsys):
    """The main run lists dia-informed as skipped; the control ran it, and the terminal must say so."""
    assert _scan(EXAMPLE, tmp_path / "s", *WEAK) == 4
    lines = capsys.readouterr().err.splitlines()  # the summary is on stderr, like the progress
    control_line = next(line for line in lines if line.strip().startswith("control dia-informed"))
    assert "ssim" in control_line and "psnr" in control_line


def test_an_interrupted_scan_runs_no_control_and_stays_incomplete(cnn, tmp_path, monkeypatch):
    from leakaudit.cli.progress import RichObserver

    monkeypatch.setattr(RichObserver, "should_stop", lambda self: True)
    assert _scan(cnn, tmp_path / "i", *WEAK, "--defense", "noise:sigma=0.1", "--quiet") == 130
    doc, html, _ = _reports(tmp_path / "i")
    assert doc["verdict"]["overall"] == "incomplete" and doc["control"]["status"] == "interrupted"
    assert doc["control"]["attacks"] == [] and "Interrupted before it reconstructed" in html


RATE_ONLY = """
[[rule]]
id = "no-sample-recognised"
metric = "recognised_fraction"
comparison = ">"
threshold = 0.0
"""
WARN_ONLY = """
[[rule]]
id = "structure"
metric = "ssim_skill"
threshold = 0.1
max_p = 0.02
severity = "warn"
"""


@pytest.mark.parametrize("profile", [RATE_ONLY, WARN_ONLY], ids=["rate-rule-only", "warn-rules-only"])
def test_no_profile_earns_a_pass_without_a_control_that_reconstructed(cnn, tmp_path, profile):
    """Issue 19: a profile holding only a rate rule (the README's own example) or only warn rules gave exit 0
    with no positive control at all, even with --strict. "Recognised" then means the default profile's test,
    and the control must meet it."""
    rules = tmp_path / "profile.toml"
    rules.write_text(profile)
    assert _scan(cnn, tmp_path / "r", *WEAK, "--rules", str(rules), "--quiet") == 4
    doc = _reports(tmp_path / "r")[0]
    assert doc["verdict"]["overall"] == "inconclusive" and doc["control"]["reconstructed"] is False
    assert [c["id"] for c in doc["recognition"]["criterion"]] == ["recognised-structure", "recognised-pixels"]
    assert _scan(cnn, tmp_path / "s", *WEAK, "--rules", str(rules), "--strict", "--quiet") == 1


@pytest.mark.parametrize("profile", [RATE_ONLY, WARN_ONLY], ids=["rate-rule-only", "warn-rules-only"])
def test_with_such_a_profile_a_pass_is_still_earned_by_a_control_that_reconstructs(tmp_path, profile):
    rules = tmp_path / "profile.toml"
    rules.write_text(profile)
    assert _scan(EXAMPLE, tmp_path / "p", "--rules", str(rules), "--defense", "noise:sigma=1.0", "--attacks",
                 "analytic", "--samples", "2", "--quiet") == 0
    doc = _reports(tmp_path / "p")[0]
    assert doc["verdict"]["overall"] == "pass" and doc["control"]["reconstructed"] is True


def test_sweep_with_a_rate_only_profile_does_not_call_weak_noise_enough(cnn, tmp_path):
    """Issue 19: with a rate-only profile, sweep recommended sigma 0.001 noise as enough, with attacks that
    could not reconstruct even the undefended update: no value may count as passing without a control."""
    rules = tmp_path / "profile.toml"
    rules.write_text(RATE_ONLY)
    out = tmp_path / "sweep"
    code = app_main(["sweep", str(cnn), "--data", str(SAMPLES), *WEAK, "--rules", str(rules),
                     "--vary", "noise.sigma=0.001,0.01", "--output-dir", str(out), "--quiet"])
    doc = json.loads((out / "sweep.json").read_text())
    assert code == 4  # inconclusive at every value, not "0: sigma 0.001 is enough"
    assert all(p["passed"] is not True and p["error_kind"] == "inconclusive" for p in doc["points"])
    assert doc["threshold"]["stable"] is None and doc["threshold"]["weakest_passing"] is None
