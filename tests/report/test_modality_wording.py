"""A record or a line is never described in an image's words (issue 23): the recognition test, the conditioning
diagnostic and the coverage count speak of records and lines in the terminal, report.json, the HTML and the
markdown, on the bundled tabular and text examples."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from leakaudit.cli import app_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# What only an image has: a reconstruction image, pixels, photos, SSIM/PSNR, blur and flip baselines, "its own
# original" (the original image a reconstruction is matched to), and the image-scan count of "sample(s)".
IMAGE_WORDS = re.compile(r"pixel|image|photo|ssim|psnr|blur|flip|its own original|sample\(s\) recognised", re.I)


def _scan(out: Path, *args: str) -> dict[str, Any]:
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal), contextlib.redirect_stderr(terminal):  # the summary is on stderr
        code = app_main(["scan", *args, "--output-dir", str(out), "--format", "json,html,markdown"])
    assert code == 1  # both undefended examples leak: the wording below is about a real recognition
    return {"terminal": terminal.getvalue(), "json": json.loads((out / "report.json").read_text()),
            "html": (out / "report.html").read_text(), "md": (out / "report.md").read_text()}


@pytest.fixture(scope="module")
def tabular(tmp_path_factory) -> dict[str, Any]:
    records = EXAMPLES / "records"
    return _scan(tmp_path_factory.mktemp("tab"), str(EXAMPLES / "models" / "tabular_mlp.onnx"), "--data",
                 str(records / "patients.csv"), "--schema", str(records / "schema.json"), "--samples", "2",
                 "--budget", "quick", "--no-dropout")


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> dict[str, Any]:
    pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("text")
    lines = folder / "lines.txt"
    lines.write_text("\n".join((EXAMPLES / "text" / "batch.txt").read_text().splitlines()[:2]) + "\n")
    # token-set alone: the bag of words is enough for a recognised line, in seconds
    return _scan(folder / "out", str(EXAMPLES / "models" / "text_lstm.onnx"), "--data", str(lines),
                 "--tokenizer", str(EXAMPLES / "text" / "tokenizer.json"), "--batch-size", "2", "--reference-data",
                 str(EXAMPLES / "text" / "lines.txt"), "--budget", "quick", "--attacks", "token-set")


def _json_texts(doc: dict[str, Any]) -> list[str]:
    """The report.json strings that describe the samples (not the rules' own texts, which name their modality)."""
    coverage = doc["coverage"]
    out = [doc["conditioning"]["summary"], doc["recognition"]["definition"], doc["recognition"]["text"]]
    out += [b["conditioning"]["summary"] for b in coverage["batches"]]
    out += [s["explanation"] for s in [coverage["worst"], *coverage["samples"]]]
    out += [s["explanation"] for a in doc["attacks"] for s in a["samples"]]
    return out


def _html_sections(html: str) -> str:
    """The HTML's conditioning, coverage and attacks sections, as text (the rules table names the image rules on
    purpose)."""
    parts = [m.group(0) for m in re.finditer(r'<h2[^>]*>(Conditioning|Coverage[^<]*|Attacks)</h2>.*?(?=<h2)', html,
                                             re.S)]
    assert len(parts) == 3
    return re.sub(r"<[^>]+>", " ", "".join(parts))


def _md_coverage(md: str) -> str:
    return "\n".join(line for line in md.splitlines() if line.startswith(("**Coverage:**", "- worst", "- chance")))


def _terminal(out: str) -> str:
    # the not-applicable line lists the image rules by id (recognised-pixels): that is the point of the line;
    # progress and "report:" lines hold paths, which are the user's words
    return "\n".join(line for line in out.splitlines()
                     if "not applicable" not in line and not line.startswith(("[", "report:")))


@pytest.mark.parametrize("case, noun", [("tabular", "record"), ("text", "line")])
def test_records_and_lines_are_described_in_their_own_words(case: str, noun: str, request) -> None:
    scan = request.getfixturevalue(case)
    doc = scan["json"]
    assert doc["data"]["modality"] == case
    places = {"terminal": _terminal(scan["terminal"]), "json": "\n".join(_json_texts(doc)),
              "html": _html_sections(scan["html"]), "markdown": _md_coverage(scan["md"])}
    for where, words in places.items():
        assert not IMAGE_WORDS.findall(words), (where, IMAGE_WORDS.findall(words), words)
        assert f"its own {noun} among" in words, where
    for where in ("terminal", "markdown"):
        assert f"{noun}(s) recognised" in places[where], where
    assert f"its own {noun}" in doc["recognition"]["definition"]


def test_conditioning_says_how_a_record_moves_and_why_a_line_cannot(tabular, text) -> None:
    moved = tabular["json"]["conditioning"]["summary"]
    assert tabular["json"]["conditioning"]["verdict"] == "stable"
    assert "standard deviations per continuous column" in moved and "per one-hot entry" in moved
    assert "standard deviations per continuous column" in _html_sections(tabular["html"])
    line = text["json"]["conditioning"]
    assert line["verdict"] == "not_measured" and line["cosine"] is None and "token ids" in line["summary"]
    # no cosine row for a test that did not run: the summary says why
    assert "Update cosine" not in _html_sections(text["html"]) and "token ids" in _html_sections(text["html"])


@pytest.mark.parametrize("case, says", [("tabular", "by the schema"), ("text", "token ids from the tokenizer")])
def test_the_data_card_says_how_records_and_lines_were_encoded_not_an_image_normalization(case: str, says: str,
                                                                                         request) -> None:
    """A record's or a line's data normalization is the identity; "none (mean [0.0], std [1.0])" read as if the
    records had not been standardised."""
    html = request.getfixturevalue(case)["html"]
    card = re.search(r"<h2[^>]*>Data[^<]*</h2>.*?(?=<h2)", html, re.S)
    assert card is not None
    text = re.sub(r"<[^>]+>", " ", card.group(0))
    assert says in text and "Normalization" not in text
