"""Suppressions end to end (issue 21, item 3) on the bundled leaking example: an active suppression of its two
failing rules turns exit 1 into 0 -- the pass still earned by the positive control -- and shows it on stderr and in
every report; an expired one fails (exit 1); an entry without a reason is exit 2 in one line; a glob that does not
match the model changes nothing."""

from __future__ import annotations

import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from leakaudit.cli import app_main
from leakaudit.report import schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from test_report_sarif import validate_sarif  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "models" / "mlp_dropout.onnx"
SAMPLES = ROOT / "examples" / "samples"
FAST = ("--samples", "1", "--attacks", "analytic")
FAILING = ("recognised-structure", "recognised-pixels")  # the example's fail-severity rules that fire


def _entries(model: str, expires: str, reason: str = "accepted for the example, PRIV-12") -> str:
    return "".join(f'[[ignore]]\nrule = "{rule}"\nmodel = "{model}"\nreason = "{reason}"\nexpires = {expires}\n\n'
                   for rule in FAILING)


@pytest.fixture()
def model(tmp_path) -> Path:
    """The example in a folder of its own, where .leakaudit-ignore.toml is looked for."""
    path = tmp_path / "models" / "mlp_dropout.onnx"
    path.parent.mkdir()
    shutil.copy(EXAMPLE, path)
    return path


def _scan(model: Path, out: Path, *extra: str) -> int:
    return app_main(["scan", str(model), "--data", str(SAMPLES), "--output-dir", str(out),
                     "--format", "json,html,junit,markdown,sarif", *FAST, *extra])


def test_an_active_suppression_passes_the_leaking_example_and_shows_it_everywhere(model, tmp_path, capsys):
    (model.parent / ".leakaudit-ignore.toml").write_text(_entries("*/mlp_dropout.onnx", "2999-12-31"))
    out = tmp_path / "r"
    assert _scan(model, out) == 0
    err = capsys.readouterr().err
    for rule in FAILING:
        assert f"suppressed {rule} (fail) for */mlp_dropout.onnx (path glob) until 2999-12-31: accepted for the " \
               "example, PRIV-12" in err
        assert f"suppressed  {rule}:" in err
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    verdict = doc["verdict"]
    assert (verdict["overall"], verdict["exit_code"]) == ("pass", 0)
    assert "2 rule(s) suppressed (recognised-structure, recognised-pixels)" in verdict["summary"]
    assert {r["id"]: r["status"] for r in doc["rules"]["results"]}["recognised-structure"] == "suppressed"
    assert [(s["rule"], s["status"], s["applied"], s["rule_status"]) for s in doc["suppressions"]] == [
        (rule, "active", True, "fail") for rule in FAILING]
    # a suppressed finding is no evidence: the positive control ran and earned the pass on its own rules
    assert doc["control"]["status"] == "ran" and doc["control"]["reconstructed"] is True
    # nor does it change what was measured: the sample is still recognised
    assert doc["coverage"]["recognised"] == 1
    assert "--ignore-file" in doc["command"]  # found beside the model; the reproduce command names it
    html = (out / "report.html").read_text()
    assert "<h3>Suppressions</h3>" in html and "accepted for the example, PRIV-12" in html
    assert "### Suppressions" in (out / "report.md").read_text()
    junit = ET.parse(out / "report.junit.xml").getroot()
    assert junit.get("failures") == "0"
    assert any("suppressed: accepted for the example" in (s.get("message") or "") for s in junit.iter("skipped"))
    sarif = json.loads((out / "report.sarif").read_text())
    validate_sarif(sarif)
    results = sarif["runs"][0]["results"]
    suppressed = [r for r in results if r.get("suppressions")]
    assert {r["ruleId"] for r in suppressed} == {*FAILING, "sample-recognised"}
    assert all(r["suppressions"][0]["status"] == "accepted" for r in suppressed)


def test_an_expired_suppression_fails_the_scan(model, tmp_path, capsys):
    ignore = tmp_path / "baseline.toml"  # named by --ignore-file this time
    ignore.write_text(_entries(model.name, "2020-01-31"))
    out = tmp_path / "r"
    assert _scan(model, out, "--ignore-file", str(ignore)) == 1
    err = capsys.readouterr().err
    assert "EXPIRED suppression recognised-structure (fail)" in err
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert doc["verdict"]["overall"] == "fail"
    assert "2 suppression(s) expired (recognised-structure (expired 2020-01-31)" in doc["verdict"]["summary"]
    assert {r["id"]: r["status"] for r in doc["rules"]["results"]}["recognised-structure"] == "fail"
    assert [s["status"] for s in doc["suppressions"]] == ["expired", "expired"]
    junit = ET.parse(out / "report.junit.xml").getroot()
    assert [f.get("type") for f in junit.iter("failure")].count("expired_suppression") == 2
    sarif = json.loads((out / "report.sarif").read_text())
    validate_sarif(sarif)
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]].count("expired-suppression") == 2
    assert "EXPIRED" in (out / "report.md").read_text()


def test_a_suppression_without_a_reason_is_exit_2_in_one_line(model, tmp_path, capsys):
    (model.parent / ".leakaudit-ignore.toml").write_text(
        '[[ignore]]\nrule = "recognised-structure"\nmodel = "*.onnx"\nexpires = 2999-12-31\n')
    out = tmp_path / "r"
    assert _scan(model, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".leakaudit-ignore.toml: ignore 1: missing reason" in err
    assert not (out / "report.json").exists()


def test_a_glob_that_does_not_match_the_model_changes_nothing(model, tmp_path):
    (model.parent / ".leakaudit-ignore.toml").write_text(_entries("other/*.onnx", "2999-12-31"))
    out = tmp_path / "r"
    assert _scan(model, out, "--format", "json") == 1
    doc = json.loads((out / "report.json").read_text())
    assert doc["verdict"]["summary"].startswith("LEAK: 2 rule(s) failed") and doc["suppressions"] == []
    assert "suppressed" not in doc["verdict"]["summary"]
