"""Text scans end to end on the bundled next-word LSTM (issue 23): an undefended update leaks the sentences, a
strong noise defense earns its pass only with a control that reconstructs, bad text input is one clear line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from leakaudit.cli import app_main

pytest.importorskip("tokenizers")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODEL = EXAMPLES / "models" / "text_lstm.onnx"
TEXT = EXAMPLES / "text"
# two lines and the quick budget keep the scan short (about 30 s on one core)
FAST = ["--budget", "quick", "--reference-data", str(TEXT / "lines.txt")]


def _two_lines(tmp_path: Path) -> Path:
    data = tmp_path / "lines.txt"
    data.write_text("\n".join((TEXT / "batch.txt").read_text().splitlines()[:2]) + "\n")
    return data


def _scan(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "out"
    code = app_main(["scan", str(MODEL), "--data", str(_two_lines(tmp_path)), "--tokenizer",
                     str(TEXT / "tokenizer.json"), "--batch-size", "2", "--output-dir", str(out), *FAST, *extra])
    return code, json.loads((out / "report.json").read_text())


@pytest.mark.slow  # a real order attack, about 30 s on one core
def test_an_undefended_next_word_lstm_leaks_its_sentences(tmp_path, capsys):
    code, doc = _scan(tmp_path, "--embed-data")
    assert code == 1 and doc["verdict"]["overall"] == "fail"
    assert doc["findings"]["modality"] == "text" and "token ids" in doc["findings"]["modality_reason"]
    fired = {r["id"] for r in doc["rules"]["results"] if r["status"] == "fail"}
    assert fired == {"text-recognised"}
    lamp = next(a for a in doc["attacks"] if a["name"] == "lamp")
    lines = (TEXT / "batch.txt").read_text().splitlines()[:2]
    recovered = {s["sentence"]["recovered"] for s in lamp["samples"] if s["recognised"]}
    assert recovered & set(lines)  # at least one line recovered word for word
    assert lamp["means"]["rougeL"] >= 0.8
    assert all(s["reconstruction"] is None for s in lamp["samples"])  # no image of a sentence
    assert not any(k in s["metrics"] for s in lamp["samples"] for k in ("ssim", "psnr"))
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "sentence lines.txt:" in shown  # the terminal shows what the server reads (rich may wrap the line)
    assert any(" ".join(line.split()[:3]) in shown for line in recovered)
    html = (tmp_path / "out" / "report.html").read_text()
    assert '<table class="sentence">' in html and '<span class="tok hit placed">' in html


def test_the_true_line_stays_out_of_the_report_without_embed_data(tmp_path):
    _, doc = _scan(tmp_path, "--attacks", "token-set")
    sample = doc["attacks"][0]["samples"][0]
    assert sample["sentence"]["true"] is None and sample["sentence"]["recovered"]
    assert all(s["text"] is None for s in doc["data"]["samples"])


@pytest.mark.slow  # the attacks on the defended update, then the control: about 45 s on one core
def test_strong_noise_passes_only_with_a_control_that_reconstructs(tmp_path):
    code, doc = _scan(tmp_path, "--defense", "noise:sigma=0.1")
    assert code == 0 and doc["verdict"]["overall"] == "pass"
    assert doc["control"]["reconstructed"] is True
    recognised = next(r for r in doc["rules"]["results"] if r["id"] == "text-recognised")
    assert recognised["status"] == "pass"


def test_a_sentence_with_markup_is_escaped_in_the_html(tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("we enjoyed <script>alert(1)</script>\n")
    out = tmp_path / "out"
    app_main(["scan", str(MODEL), "--data", str(data), "--tokenizer", str(TEXT / "tokenizer.json"),
              "--output-dir", str(out), "--attacks", "token-set", "--embed-data", *FAST])
    html = (out / "report.html").read_text()
    assert "<script>alert" not in html


def test_a_text_model_without_a_tokenizer_is_one_clear_error(tmp_path, capsys):
    code = app_main(["scan", str(MODEL), "--data", str(_two_lines(tmp_path)), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "give --tokenizer tokenizer.json" in err and "Traceback" not in err


def test_without_the_tokenizers_library_the_fix_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
    code = app_main(["scan", str(MODEL), "--data", str(_two_lines(tmp_path)), "--tokenizer",
                     str(TEXT / "tokenizer.json"), "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "pip install 'leakaudit[text]'" in capsys.readouterr().err


def test_a_frozen_embedding_leaks_no_token_set(tmp_path):
    code, doc = _scan(tmp_path, "--attacks", "token-set", "--freeze", "weights.embedding")
    token_set = doc["attacks"][0]
    assert any("frozen embedding" in n for n in token_set["notes"])
    assert token_set["means"]["token_recall"] == 0.0
    code, doc = _scan(tmp_path, "--attacks", "token-set")
    # the same batch with the embedding trained: every word but, at most, a line's last one (docs/text.md)
    assert doc["attacks"][0]["means"]["token_recall"] >= 0.9


def test_freeze_naming_no_parameter_is_one_clear_error(tmp_path, capsys):
    code = app_main(["scan", str(MODEL), "--data", str(_two_lines(tmp_path)), "--tokenizer",
                     str(TEXT / "tokenizer.json"), "--batch-size", "2", "--freeze", "embedings",
                     "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--freeze embedings: no trainable parameter's name starts with it" in err
