"""The sweep loop: a failing value keeps the others, Ctrl-C stops with partial results, resume skips done
values, sweep.json validates against its schema, and the HTML embeds plots and escapes user strings."""

import json
import sys
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sweep_factory import CONTEXT, SHA, VARY, Recorder, StopAfter, png_uri, synthetic_point  # noqa: E402

from leakaudit.errors import ConfigError, InputError  # noqa: E402
from leakaudit.sweep import DONE, ERROR, INTERRUPTED, run_sweep  # noqa: E402
from leakaudit.sweep import jsonio  # noqa: E402
from leakaudit.sweep.html import render_html  # noqa: E402


def test_all_values_run_and_threshold_found():
    result = run_sweep(VARY, Recorder(), context=CONTEXT)
    assert not result.incomplete
    assert [p.value for p in result.points] == list(VARY.values)
    assert result.threshold.stable == 0.08  # ssim(0.08)=0.36 < 0.5, ssim(0.05)=0.6


def test_failing_value_is_recorded_and_others_kept():
    result = run_sweep(VARY, Recorder(fail_on={0.05}), context=CONTEXT)
    statuses = {p.value: p.status for p in result.points}
    assert statuses[0.05] == ERROR
    assert all(s == DONE for v, s in statuses.items() if v != 0.05)
    err = next(p for p in result.points if p.value == 0.05).error
    assert err == "RuntimeError: CUDA out of memory (second line)"  # one line
    assert not result.incomplete
    assert result.threshold.stable == 0.08
    assert 0.05 in result.threshold.unknown


def test_stop_request_leaves_incomplete_partial_results():
    result = run_sweep(VARY, Recorder(), observer=StopAfter(2), context=CONTEXT)
    assert result.incomplete
    assert [p.value for p in result.points] == [0.01, 0.03]


def test_keyboard_interrupt_marks_value_interrupted_and_stops():
    rec = Recorder(interrupt_on={0.05})
    result = run_sweep(VARY, rec, context=CONTEXT)
    assert result.incomplete
    assert rec.calls == [0.01, 0.03, 0.05]
    assert result.points[-1].status == INTERRUPTED


def test_checkpoint_after_every_value():
    seen = []
    run_sweep(VARY, Recorder(), context=CONTEXT, on_point=lambda r: seen.append(len(r.points)))
    assert seen == [1, 2, 3, 4, 5]


def write(tmp_path: Path, result) -> Path:
    path = tmp_path / "sweep.json"
    jsonio.write_json(path, jsonio.to_dict(result, VARY))
    return path


def test_json_validates_against_schema(tmp_path):
    result = run_sweep(VARY, Recorder(fail_on={0.05}), context=CONTEXT)
    doc = json.loads(write(tmp_path, result).read_text())
    jsonschema.Draft202012Validator.check_schema(jsonio.schema())
    jsonschema.validate(doc, jsonio.schema())
    assert doc["threshold"]["stable"] == 0.08
    assert doc["points"][2]["status"] == "error" and doc["points"][2]["passed"] is None


def test_schema_rejects_done_point_without_verdict(tmp_path):
    doc = jsonio.to_dict(run_sweep(VARY, Recorder(), context=CONTEXT), VARY)
    doc["points"][0]["passed"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, jsonio.schema())


def test_resume_skips_done_values_and_reruns_the_rest(tmp_path):
    partial = run_sweep(VARY, Recorder(fail_on={0.03}), observer=StopAfter(3), context=CONTEXT)
    path = write(tmp_path, partial)
    doc = jsonio.read_json(path)
    previous = jsonio.previous_points(path, doc, knob="noise.sigma", sha256=SHA, settings=CONTEXT["settings"])
    rec = Recorder()
    result = run_sweep(VARY, rec, previous=previous, context=CONTEXT)
    assert rec.calls == [0.03, 0.08, 0.1]  # 0.01 and 0.05 were done; the failed 0.03 is retried
    assert not result.incomplete
    assert all(p.status == DONE for p in result.points)
    # reused points survive the JSON round trip intact
    assert result.points[0] == synthetic_point(0.01)


def test_resume_refuses_other_model_or_settings(tmp_path):
    path = write(tmp_path, run_sweep(VARY, Recorder(), context=CONTEXT))
    doc = jsonio.read_json(path)
    with pytest.raises(ConfigError, match="model sha256 differs"):
        jsonio.previous_points(path, doc, knob="noise.sigma", sha256="cd" * 32, settings=CONTEXT["settings"])
    with pytest.raises(ConfigError, match=r"settings differ from that run: iterations \(20 -> 50\)"):
        jsonio.previous_points(path, doc, knob="noise.sigma", sha256=SHA,
                               settings={**CONTEXT["settings"], "iterations": 50})
    with pytest.raises(ConfigError, match="that sweep varied noise.sigma, this one clip.norm"):
        jsonio.previous_points(path, doc, knob="clip.norm", sha256=SHA, settings=CONTEXT["settings"])


def test_resume_rejects_foreign_or_broken_files(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({"schema": "leakaudit-report"}))
    with pytest.raises(InputError, match="not a leakaudit sweep file"):
        jsonio.read_json(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(InputError, match="broken.json: invalid JSON at line 1"):
        jsonio.read_json(broken)
    with pytest.raises(InputError, match="file not found"):
        jsonio.read_json(tmp_path / "missing.json")


def test_html_embeds_plots_and_reconstructions(tmp_path):
    result = run_sweep(VARY, Recorder(), context=CONTEXT)
    page = render_html(jsonio.to_dict(result, VARY), originals=[png_uri(7)])
    # one curve per attack x metric with values (ssim; lpips is unavailable everywhere)
    assert page.count("<figure><img") == 1
    assert page.count("src='data:image/png;base64,") == 1 + 5 * 2 + 1
    assert "http://" not in page and "https://" not in page.replace("https://json-schema", "")
    assert "noise.sigma=0.08 is the weakest tested setting" in page


def test_html_escapes_user_strings():
    evil = "<script>alert(1)</script>"
    ctx = {**CONTEXT, "model": {**CONTEXT["model"], "path": evil}, "data": {"source": evil},
           "command": f"leakaudit sweep '{evil}'"}

    def run_one(v):
        p = synthetic_point(v, attack=evil)
        return p

    def fail_one(v):
        raise ValueError(evil)

    result = run_sweep(VARY, lambda v: fail_one(v) if v == 0.1 else run_one(v), context=ctx)
    page = render_html(jsonio.to_dict(result, VARY))
    assert "<script" not in page
    assert "&lt;script&gt;" in page


def test_html_drops_image_sources_that_are_not_png_data_uris():
    doc = jsonio.to_dict(run_sweep(VARY, Recorder(), context=CONTEXT), VARY)
    doc["points"][0]["attacks"][0]["images"] = ["javascript:alert(1)", "https://evil.example/x.png"]
    page = render_html(doc)
    assert "javascript:" not in page and "evil.example" not in page
