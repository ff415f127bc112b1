"""SARIF 2.1.0 (--format sarif): valid against the official OASIS schema (a committed copy: tests have no
network), one result per failed/warned rule and per recognised sample, rule metadata with help text, locations
at the model file and fingerprints stable across runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import make_result  # noqa: E402

from leakaudit.cli import app_main  # noqa: E402
from leakaudit.report import FORMATS, build_document, write_reports  # noqa: E402
from leakaudit.report.output import REPORT_NAMES  # noqa: E402
from leakaudit.report.sarif import SAMPLE_RULE, model_uri, render_sarif  # noqa: E402

SCHEMA_PATH = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


def _official_schema() -> dict:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    assert schema["id"].endswith("/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    return schema


def validate_sarif(log: dict) -> None:
    schema = _official_schema()
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]


def _with_coverage(doc: dict) -> dict:
    sample = {"index": 0, "name": "0-cat.png", "label": 3, "batch": 0, "position": 0, "attack": "dia",
              "metrics": {"ssim": 0.93}, "recognised": True, "rules": ["ssim-any"], "reconstruction": None,
              "references": 69, "transform": "as is",
              "explanation": "matched to its own original among 70 (chance 1 in 70); structure score 0.90"}
    other = {**sample, "index": 1, "name": "1-cat.png", "recognised": False, "rules": [], "explanation": "no"}
    doc["coverage"] = {"audited": 2, "recognised": 1, "fraction": 0.5, "samples": [sample, other]}
    return doc


def _sarif(doc: dict) -> dict:
    log = json.loads(render_sarif(doc))
    validate_sarif(log)
    return log


@pytest.mark.parametrize("kwargs", [{}, {"leaked": False}, {"incomplete": True}, {"not_evaluated": False}])
def test_sarif_validates_against_the_official_schema(kwargs):
    _sarif(build_document(make_result(**kwargs)))
    _sarif(_with_coverage(build_document(make_result(**kwargs))))


def test_the_official_schema_rejects_what_is_not_sarif():
    """The validator really checks: a wrong version and a result without a message are refused."""
    log = json.loads(render_sarif(build_document(make_result())))
    log["version"] = "2.0.0"
    with pytest.raises(AssertionError):
        validate_sarif(log)
    log = json.loads(render_sarif(build_document(make_result())))
    del log["runs"][0]["results"][0]["message"]
    with pytest.raises(AssertionError):
        validate_sarif(log)


def test_one_result_per_failed_or_warned_rule_and_per_recognised_sample():
    doc = _with_coverage(build_document(make_result()))
    run = _sarif(doc)["runs"][0]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert [r["ruleId"] for r in run["results"]] == ["ssim-any", "labels", SAMPLE_RULE]  # lpips: not evaluated
    assert by_rule["ssim-any"]["level"] == "error" and by_rule["labels"]["level"] == "warning"
    assert "observed 0.93 (attack dia, sample 0-cat.png)" in by_rule["ssim-any"]["message"]["text"]
    assert "a recognisable reconstruction" in by_rule["ssim-any"]["message"]["text"]
    sample = by_rule[SAMPLE_RULE]
    assert sample["message"]["text"].startswith("sample 0-cat.png reconstructed by dia: matched to its own original")
    for result in run["results"]:
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/features.3.onnx"
        assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
    assert run["artifacts"][0]["hashes"]["sha-256"] == "a" * 64


def test_rules_carry_metadata_with_help_and_level_by_severity():
    run = _sarif(build_document(make_result()))["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "leakaudit" and driver["version"]
    rules = {r["id"]: r for r in driver["rules"]}
    assert set(rules) == {"ssim-any", "labels", "lpips-any", SAMPLE_RULE}
    ssim = rules["ssim-any"]
    assert ssim["fullDescription"]["text"] == "SSIM of any sample"
    assert ssim["help"]["text"] == "why\nReference: Wang et al. 2004"
    assert ssim["shortDescription"]["text"] == "ssim-any: ssim >= 0.6 (any)"
    assert ssim["defaultConfiguration"]["level"] == "error"
    assert rules["labels"]["defaultConfiguration"]["level"] == "warning"


def test_fingerprints_are_stable_across_runs_and_distinct_per_finding():
    first = _sarif(_with_coverage(build_document(make_result(seed=1))))["runs"][0]["results"]
    second = _sarif(_with_coverage(build_document(make_result(seed=2))))["runs"][0]["results"]
    prints = [r["partialFingerprints"] for r in first]
    assert prints == [r["partialFingerprints"] for r in second]
    assert len({json.dumps(p) for p in prints}) == len(prints)


def test_a_pass_has_no_error_results_and_a_crash_or_interruption_is_not_a_successful_execution():
    passed = _sarif(build_document(make_result(leaked=False, not_evaluated=False)))["runs"][0]
    assert [r["level"] for r in passed["results"]] == ["warning"]
    assert passed["invocations"][0] == {**passed["invocations"][0], "executionSuccessful": True, "exitCode": 0}
    stopped = _sarif(build_document(make_result(incomplete=True)))["runs"][0]["invocations"][0]
    assert stopped["executionSuccessful"] is False and stopped["exitCode"] == 130
    assert stopped["toolExecutionNotifications"][0]["message"]["text"].startswith("INCOMPLETE")


def test_strict_counts_a_fail_severity_rule_not_evaluated_as_an_error_result():
    doc = build_document(make_result(leaked=False))
    doc["rules"]["strict"] = True
    results = {r["ruleId"]: r for r in _sarif(doc)["runs"][0]["results"]}
    assert results["lpips-any"]["level"] == "error"
    assert "--strict counts as failed" in results["lpips-any"]["message"]["text"]


def test_model_uri_is_a_relative_reference_or_a_file_uri():
    assert model_uri("examples/models/mlp dropout.onnx") == "examples/models/mlp%20dropout.onnx"
    assert model_uri("/srv/m#1.onnx") == "file:///srv/m%231.onnx"
    assert model_uri("C:\\models\\m.onnx") == "file:///C%3A/models/m.onnx"


def test_sarif_is_written_by_a_scan_set_and_rendered_again_from_report_json(tmp_path):
    assert "report.sarif" in REPORT_NAMES  # a run replaces the previous set's SARIF too
    doc = build_document(make_result())
    write_reports(doc, tmp_path, (FORMATS.get("json"), FORMATS.get("sarif")))
    written = (tmp_path / "report.sarif").read_text(encoding="utf-8")
    validate_sarif(json.loads(written))
    out = tmp_path / "again.sarif"
    assert app_main(["render", str(tmp_path / "report.json"), "--format", "sarif", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == written
