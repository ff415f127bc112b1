"""The bundled tabular example end to end: an undefended model LEAKs with the recovered record shown, a strong
noise defense earns its PASS only with a control that reconstructs, and every view says "record"."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from leakaudit.cli import app_main
from leakaudit.report import schema

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "records"
MODEL = ROOT / "examples" / "models" / "tabular_mlp.onnx"


def _scan(out: Path, *extra: str, data: Path = DATA / "patients.csv") -> int:
    return app_main(["scan", str(MODEL), "--data", str(data), "--schema", str(DATA / "schema.json"),
                     "--samples", "2", "--budget", "quick", "--no-dropout", "--output-dir", str(out),
                     "--format", "json,html,markdown", "--quiet", *extra])


@pytest.fixture(scope="module")
def leaked(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tab") / "leak"
    assert _scan(out) == 1
    return out


def test_the_undefended_example_leaks_with_the_recovered_record_in_the_report(leaked: Path) -> None:
    doc = json.loads((leaked / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert doc["verdict"]["overall"] == "fail" and doc["data"]["modality"] == "tabular"
    fired = {r["id"]: r["status"] for r in doc["rules"]["results"]}
    assert fired["record-recognised"] == "fail" and fired["recognised-structure"] == "not_applicable"
    sample = doc["attacks"][0]["samples"][0]
    truth = dict(zip(doc["records"]["schema"]["continuous"] + list(doc["records"]["schema"]["categorical"]),
                     sample["record"], strict=True))
    assert all(c["match"] for c in sample["record"]) and truth["smoker"]["recovered"]
    # the user's private record stays out of a report written without --embed-data; the recovered one is evidence
    assert all(c["true"] is None for c in sample["record"])
    assert sample["reconstruction"] is None  # a record is never drawn as an image
    # no image metric anywhere for records
    assert not {"ssim", "psnr", "lpips", "ssim_skill"} & set(doc["attacks"][0]["means"])
    columns = doc["records"]["columns"]
    assert {c["column"] for c in columns} == {*truth, "diagnosis"} and columns[0]["fraction"] == 1
    # the label column (the diagnosis) is exposed through label recovery, and the report says so
    assert next(c for c in columns if c["column"] == "diagnosis")["kind"] == "label"


def test_html_and_markdown_show_the_record_side_by_side_and_say_record(leaked: Path) -> None:
    html = (leaked / "report.html").read_text()
    assert '<table class="record"' in html and 'class="recovered"' in html and "<h2>Columns</h2>" in html
    md = (leaked / "report.md").read_text()
    assert "record(s) recognised" in md and "| features recovered | record score |" in md and "SSIM" not in md


def test_a_strong_noise_defense_passes_only_with_a_control_that_reconstructs(tmp_path: Path) -> None:
    assert _scan(tmp_path / "p", "--defense", "noise:sigma=0.1") == 0
    doc = json.loads((tmp_path / "p" / "report.json").read_text())
    assert doc["verdict"]["control_reconstructed"] is True and doc["control"]["reconstructed"] is True
    # the same defense with attacks too weak to reconstruct even the undefended update earns no pass
    assert _scan(tmp_path / "i", "--defense", "noise:sigma=0.1", "--attacks", "tableak", "--iterations", "1",
                 "--restarts", "1") == 4
    assert json.loads((tmp_path / "i" / "report.json").read_text())["verdict"]["overall"] == "inconclusive"


def test_values_from_the_csv_are_escaped_in_the_html(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    text = (DATA / "patients.csv").read_text().replace("north", evil).replace("region", f"<b>{evil}")
    (tmp_path / "p.csv").write_text(text)
    raw = json.loads((DATA / "schema.json").read_text())
    raw["categorical"] = {(f"<b>{evil}" if k == "region" else k): ([evil, "south", "east", "west"] if k == "region"
                                                                  else v) for k, v in raw["categorical"].items()}
    (tmp_path / "s.json").write_text(json.dumps(raw))
    code = app_main(["scan", str(MODEL), "--data", str(tmp_path / "p.csv"), "--schema", str(tmp_path / "s.json"),
                     "--samples", "4", "--budget", "quick", "--no-dropout", "--attacks", "analytic", "--output-dir",
                     str(tmp_path / "o"), "--format", "html", "--quiet"])
    html = (tmp_path / "o" / "report.html").read_text()
    assert code == 1 and "<script>alert" not in html and "<b>" not in html
    assert "&lt;b&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the column, in the record and the columns


def test_reference_records_join_the_scans_other_records(tmp_path: Path) -> None:
    assert _scan(tmp_path / "r", "--reference-data", str(DATA / "references.csv"), "--attacks", "analytic") == 1
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    sample = doc["attacks"][0]["samples"][0]
    assert sample["references"] == 127 and sample["metrics"]["match_p"] == 1 / 128
    assert "--reference-data" in doc["command"] and "--schema" in doc["command"]


def test_the_true_record_is_in_the_report_only_with_embed_data(tmp_path: Path) -> None:
    out = tmp_path / "embedded"
    assert _scan(out, "--embed-data") == 1
    sample = json.loads((out / "report.json").read_text())["attacks"][0]["samples"][0]
    assert all(c["true"] == c["recovered"] for c in sample["record"] if c["kind"] == "categorical")
    assert all(c["true"] is not None for c in sample["record"])
    assert "not embedded" not in (out / "report.html").read_text()
