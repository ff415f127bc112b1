"""The report layer on hand-built results: schema, HTML safety, JUnit, render round trip, atomic writes."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import XSS_IMG, XSS_SCRIPT, make_result  # noqa: E402

from leakaudit.cli import app_main  # noqa: E402
from leakaudit.errors import InputError  # noqa: E402
from leakaudit.report import FORMATS, build_document, load_document, schema, write_reports  # noqa: E402
from leakaudit.report.html import render_html  # noqa: E402
from leakaudit.report.junit import render_junit  # noqa: E402


def _validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(schema()).validate(doc)


@pytest.mark.parametrize("kwargs", [{}, {"leaked": False}, {"incomplete": True}, {"not_evaluated": False}])
def test_document_validates_against_the_schema(kwargs):
    doc = json.loads(FORMATS.get("json").render(build_document(make_result(**kwargs))))
    _validate(doc)
    assert doc["schema_version"] == schema()["properties"]["schema_version"]["enum"][-1] == "1.9"
    expected = "incomplete" if kwargs.get("incomplete") else ("pass" if kwargs.get("leaked") is False else "fail")
    assert doc["verdict"]["overall"] == expected
    assert doc["verdict"]["rules_overall"] == ("pass" if kwargs.get("leaked") is False else "fail")
    assert doc["data"]["modality"] == doc["findings"]["modality"] == "image"


def test_a_rule_of_another_modality_is_listed_as_not_applicable_in_every_format():
    import dataclasses

    result = make_result(leaked=False)
    row = dataclasses.replace(result.rules[0], status="not_applicable",
                              reason="not applicable: a rule of the image criterion (ssim), and these samples are "
                                     "tabular")
    doc = build_document(dataclasses.replace(result, rules=(row, *result.rules[1:])))
    _validate(json.loads(FORMATS.get("json").render(doc)))
    assert "not applicable: a rule of the image criterion (ssim)" in FORMATS.get("markdown").render(doc)
    assert 'class="badge not_applicable"' in render_html(doc)
    skipped = ET.fromstring(render_junit(doc)).find(f".//testcase[@name='{row.id}: ssim >= 0.6 (any)']/skipped")
    assert skipped is not None and skipped.get("message", "").startswith(f"{row.id}: not applicable")


def test_a_schema_1_0_report_still_renders(tmp_path):
    """Reports archived before 1.1 (overall pass/fail only, no flat/excluded) still validate and render."""
    doc = json.loads(FORMATS.get("json").render(build_document(make_result(incomplete=True, leaked=False))))
    doc["schema_version"] = "1.0"
    doc["verdict"] = {k: v for k, v in doc["verdict"].items() if k in ("overall", "exit_code", "summary", "counts")}
    doc["verdict"].update(overall="pass", exit_code=0)  # what 1.0 wrote for an interrupted scan
    for attack in doc["attacks"]:
        for sample in attack["samples"]:
            del sample["flat"], sample["excluded"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    html = render_html(load_document(path))
    assert 'class="banner incomplete"' in html and "no leak so far" in html


def test_a_schema_1_6_report_without_suppressions_still_renders(tmp_path):
    doc = json.loads(FORMATS.get("json").render(build_document(make_result())))
    assert doc["suppressions"] == []
    del doc["suppressions"]
    doc["schema_version"] = "1.6"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    loaded = load_document(path)
    assert "Suppressions" not in render_html(loaded) and FORMATS.get("sarif").render(loaded)


def test_schema_rejects_a_document_missing_the_verdict():
    doc = build_document(make_result())
    del doc["verdict"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(doc)


def test_exact_reconstruction_psnr_is_written_as_inf_string_not_invalid_json():
    text = FORMATS.get("json").render(build_document(make_result()))
    doc = json.loads(text)  # strict JSON: would fail on Infinity only with a custom parser
    assert "Infinity" not in text
    psnrs = [s["metrics"]["psnr"] for s in doc["attacks"][0]["samples"]]
    assert "inf" in psnrs


def test_originals_are_embedded_only_on_request_reconstructions_always():
    plain = build_document(make_result())
    assert plain["data"]["originals_embedded"] is False
    assert all(s["original"] is None for s in plain["data"]["samples"])
    assert all(s["reconstruction"].startswith("data:image/png;base64,") for s in plain["attacks"][0]["samples"])
    html = render_html(plain)
    assert "original not embedded" in html
    embedded = build_document(make_result(), embed_data=True)
    assert all(s["original"].startswith("data:image/png;base64,") for s in embedded["data"]["samples"])
    assert "original not embedded" not in render_html(embedded)


def test_html_is_self_contained_with_a_blocking_csp():
    html = render_html(build_document(make_result(), embed_data=True))
    assert "default-src 'none'; img-src data:; style-src 'unsafe-inline'" in html
    assert not re.search(r"https?://", html), "no external URL may appear in the report"
    sources = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]*)""", html, flags=re.I)
    external = [s for s in sources if not s.startswith(("data:image/png;base64,", "#"))]  # "#": in-page links
    assert sources and external == []
    assert "<script" not in html.lower()


def test_user_strings_are_escaped_in_html():
    result = make_result(layer_name=XSS_SCRIPT, sample_name=XSS_IMG)
    html = render_html(build_document(result))
    assert XSS_SCRIPT not in html and XSS_IMG not in html
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in html
    assert "<script" not in html.lower() and "<img src=x" not in html


def test_a_non_png_image_source_in_a_tampered_report_is_dropped():
    doc = build_document(make_result())
    doc["attacks"][0]["samples"][0]["reconstruction"] = "javascript:alert(1)"
    html = render_html(doc)
    assert "javascript:" not in html


def test_html_shows_verdict_rules_recommendations_and_reproduction():
    html = render_html(build_document(make_result()))
    assert 'id="verdict"' in html and "LEAK" in html
    assert "ssim-any" in html and "Dropout alone does not protect" in html
    assert "leakaudit scan m.onnx --data s --seed 0" in html
    passing = render_html(build_document(make_result(leaked=False)))
    assert "PASS" in passing and "not proof" in passing


def test_recommendations_follow_from_findings():
    leaked = {r["id"] for r in build_document(make_result())["recommendations"]}
    assert {"dropout-bypassed", "labels-recovered", "defense-too-weak", "not-evaluated-lpips-any"} <= leaked
    assert "pass-scope" not in leaked
    passed = {r["id"] for r in build_document(make_result(leaked=False))["recommendations"]}
    assert "dropout-bypassed" not in passed and {"pass-scope", "deploy-defense"} <= passed


def test_junit_has_one_case_per_rule_with_failure_and_skipped():
    doc = build_document(make_result())
    root = ET.fromstring(render_junit(doc))
    cases = root.findall(".//testcase")
    assert len(cases) == len(doc["rules"]["results"]) == 3
    by_name = {c.get("name").split(":")[0]: c for c in cases}
    assert by_name["ssim-any"].find("failure") is not None
    assert by_name["lpips-any"].find("skipped") is not None
    assert by_name["labels"].find("failure") is None and by_name["labels"].find("skipped") is None
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")


def test_junit_strict_counts_not_evaluated_as_failure_and_incomplete_as_error():
    doc = build_document(make_result(incomplete=True))
    doc["rules"]["strict"] = True
    root = ET.fromstring(render_junit(doc))
    suite = root.find("testsuite")
    assert suite.get("failures") == "2" and suite.get("errors") == "1"


def test_a_strict_fail_without_a_fired_rule_is_not_a_leak_in_any_format():
    import dataclasses

    # no rule fired; the fail-severity LPIPS rule was not evaluated, which --strict counts as failed
    result = dataclasses.replace(make_result(leaked=False), strict=True)
    assert (result.overall, result.exit_code, result.leaked) == ("fail", 1, False)
    doc = build_document(result)
    assert doc["verdict"]["summary"].startswith("FAIL (strict): 1 fail-severity rule(s) could not be evaluated")
    assert "<strong>FAIL (strict)</strong>" in render_html(doc) and "<strong>LEAK" not in render_html(doc)
    failure = ET.fromstring(render_junit(doc)).find(".//failure")
    assert failure is not None and failure.get("type") == "not_evaluated"
    incomplete = build_document(dataclasses.replace(result, incomplete=True))
    assert "INCOMPLETE (no leak so far)" in render_html(incomplete)


def test_render_round_trip_reproduces_the_html(tmp_path):
    doc = build_document(make_result(layer_name=XSS_SCRIPT), embed_data=True)
    written = write_reports(doc, tmp_path, (FORMATS.get("json"), FORMATS.get("html")))
    assert [p.name for p in written] == ["report.json", "report.html"]
    out = tmp_path / "again.html"
    assert app_main(["render", str(tmp_path / "report.json"), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (tmp_path / "report.html").read_text(encoding="utf-8")


def test_render_refuses_unsupported_or_broken_reports(tmp_path, capsys):
    doc = build_document(make_result())
    bad_version = tmp_path / "v2.json"
    bad_version.write_text(json.dumps({**doc, "schema_version": "2.0"}))
    with pytest.raises(InputError, match=r"v2\.json: report schema 2\.0 is not supported"):
        load_document(bad_version)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert app_main(["render", str(broken)]) == 2
    assert "broken.json: invalid JSON at line 1" in capsys.readouterr().err
    missing = dict(doc)
    del missing["attacks"]
    incomplete = tmp_path / "partial.json"
    incomplete.write_text(json.dumps(missing))
    with pytest.raises(InputError, match=r"partial\.json: invalid report at \(top level\): 'attacks' is a required"):
        load_document(incomplete)
    assert not (tmp_path / "report.html").exists()


def test_a_renderer_error_leaves_no_file_behind(tmp_path, monkeypatch):
    from leakaudit.report import Format

    def boom(doc):
        raise RuntimeError("renderer bug")

    broken = Format("html", "report.html", boom, "broken")
    with pytest.raises(RuntimeError):
        write_reports(build_document(make_result()), tmp_path / "out", (FORMATS.get("json"), broken))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_writes_leave_no_temp_files(tmp_path):
    write_reports(build_document(make_result()), tmp_path, tuple(FORMATS.get(n) for n in FORMATS.names()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leakaudit-manifest.json", "report.html", "report.json",
                                                          "report.junit.xml", "report.md", "report.sarif"]


def test_render_junit_next_to_the_report_and_refuses_to_overwrite_the_input(tmp_path, capsys):
    write_reports(build_document(make_result()), tmp_path, (FORMATS.get("json"),))
    report = tmp_path / "report.json"
    assert app_main(["render", str(report), "--format", "junit"]) == 0
    assert ET.parse(tmp_path / "report.junit.xml").getroot().tag == "testsuites"
    assert app_main(["render", str(report), "--format", "json"]) == 2
    assert "--output " + str(report) + ": is the report to render" in capsys.readouterr().err


def test_every_attack_that_crosses_a_failing_rule_is_named_not_only_the_worst():
    from leakaudit.report.recommendations import rules_broken_by

    doc = build_document(make_result())
    doc["rules"]["results"][0]["attack"] = "analytic"  # the verdict blames another (better) attack
    assert rules_broken_by(doc) == {"dia": ["ssim-any"]}  # dia still crossed SSIM >= 0.6 itself
    doc["attacks"][0]["samples"][0]["metrics"]["ssim"] = 0.1
    doc["attacks"][0]["samples"][1]["metrics"]["ssim"] = 0.2
    assert rules_broken_by(doc) == {}


def _with_coverage(doc: dict) -> dict:
    doc["coverage"] = {"audited": 2, "recognised": 1, "fraction": 0.5, "interval": {"lower": 0.0126, "upper": 0.987},
                       "batches_run": 2, "batch_size": 1,
                       "worst": {"name": "0-cat.png", "explanation": "matched to its own original among 70"}}
    doc["recognition"]["text"] = "a reconstruction with no information is matched by chance with probability 1/70"
    return doc


def test_markdown_has_verdict_rules_coverage_recognition_and_attacks():
    from leakaudit.report.markdown import render_markdown

    text = render_markdown(_with_coverage(build_document(make_result())))
    lines = text.splitlines()
    assert lines[0] == "## leakaudit: FAIL"
    assert "**LEAK: 1 rule(s) failed (ssim-any); 1 rule(s) not evaluated** (exit code 1)" in text
    assert "| **FAIL** | ssim-any | ssim &gt;= 0.6 | 0.93 | dia |" in lines
    assert "| not evaluated | lpips-any | lpips &lt;= 0.3 | not evaluated: lpips unavailable: backbone weights not " \
           "found offline | - |" in lines
    coverage = "**Coverage:** 1 of 2 sample(s) recognised (50%, 95% interval 1.26-98.7% Clopper-Pearson) in 2 batch"
    assert any(line.startswith(coverage) for line in lines)
    assert "- worst sample 0-cat.png: matched to its own original among 70" in lines
    assert "- chance: a reconstruction with no information is matched by chance with probability 1/70" in lines
    assert "| dia | ran | 0.93 | 27.5 | 1.5 |  |" in lines
    assert any(line.startswith("| precode-aware | skipped |") for line in lines)
    # every table row has the header's number of cells: nothing a name holds split a row
    for header in ("| status | rule |", "| attack | status |"):
        start = next(i for i, x in enumerate(lines) if x.startswith(header))
        end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
        rows = lines[start:end]
        assert len(rows) > 2 and len({len(re.findall(r"(?<!\\)\|", x)) for x in rows}) == 1


@pytest.mark.parametrize("kwargs, headline", [({"leaked": False}, "PASS"), ({"incomplete": True}, "INCOMPLETE")])
def test_markdown_headline_follows_the_verdict(kwargs, headline):
    from leakaudit.report.markdown import render_markdown

    doc = build_document(make_result(**kwargs))
    assert render_markdown(doc).splitlines()[0] == f"## leakaudit: {headline}"
    assert doc["coverage"] is None  # no coverage line for a result without batches
    assert "**Coverage:**" not in render_markdown(doc)


def test_render_markdown_from_a_report_json(tmp_path):
    write_reports(build_document(make_result()), tmp_path, (FORMATS.get("json"), FORMATS.get("markdown")))
    assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith("## leakaudit: FAIL")
    out = tmp_path / "again.md"
    assert app_main(["render", str(tmp_path / "report.json"), "--format", "markdown", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (tmp_path / "report.md").read_text(encoding="utf-8")
