"""Names chosen by whoever made the model or the data (ONNX node and producer names, sample and model file
names, rule ids) reach the terminal escaped: no rich MarkupError, no raw ESC/BEL/C1/bidi character, and the
reports a scan writes stay well-formed (JUnit parses, HTML carries no injected tag)."""

from __future__ import annotations

import io
import json
import shutil
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from leakaudit.cli import app_main

MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"
MARKUP = "[bold red]x[/]"
OSC_TITLE = "\x1b]0;title\x07"
OSC_LINK = "\x1b]8;;http://x\x1b\\link"
RULE_ID = "[/]x\x1b]0;t\x07"


@pytest.fixture(autouse=True)
def _no_forced_colour(monkeypatch):
    """rich writes no styling escapes of its own to a pipe unless forced: any ESC seen below came from a name."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def raw_hidden(text: str) -> list[str]:
    """Characters a reader does not see and a terminal may obey (C0 but newline, DEL, C1, bidi, zero-width)."""
    return [ch for ch in text if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


def hostile_onnx(folder: Path) -> Path:
    """A Relu -> Dropout -> MatMul graph whose node names and producer are rich markup and terminal escapes,
    saved under a file name holding both too."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32), "W")
    ratio = numpy_helper.from_array(np.array(0.3, dtype=np.float32), "ratio")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name=MARKUP + OSC_TITLE),
             helper.make_node("Dropout", ["r", "ratio"], ["d"], name="[/]" + OSC_LINK + "\u202e\x85"),
             helper.make_node("MatMul", ["d", "W"], ["y"], name="f\x9bc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializer=[w, ratio])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=MARKUP + OSC_TITLE)
    model.ir_version = 8
    path = folder / "m[bold red]x\x1b[31m.onnx"  # a file name cannot hold the "/" of a closing tag
    onnx.save(model, str(path))
    return path


def test_inspect_table_prints_hostile_names_literally(tmp_path, capsys):
    assert app_main(["inspect", str(hostile_onnx(tmp_path))]) == 0  # was exit 3, MarkupError
    captured = capsys.readouterr()
    assert raw_hidden(captured.out + captured.err) == []
    assert "producer [bold red]x[/]\\x1b]0;title\\x07" in captured.out
    assert "m[bold red]x\\x1b[31m.onnx" in captured.out


def test_inspect_json_keeps_names_exact_and_escaped(tmp_path, capsys):
    assert app_main(["inspect", str(hostile_onnx(tmp_path)), "--json"]) == 0
    out = capsys.readouterr().out
    assert raw_hidden(out) == [] and "\\u001b]0;title\\u0007" in out
    assert json.loads(out)["model"]["onnx"]["producer"] == MARKUP + OSC_TITLE


def test_rules_listing_of_a_user_file_shows_markup_and_escapes_literally(tmp_path, capsys):
    rules = tmp_path / "rules.toml"
    rules.write_text('description = "d\\u001b[31m [/]"\n[[rule]]\nid = "[/]x\\u001b]0;t\\u0007"\n'
                     'metric = "ssim"\nthreshold = 0.5\nreference = "[bold]r[/] \\u202e"\n')
    assert app_main(["rules", "--file", str(rules)]) == 0  # was exit 3, MarkupError
    out = capsys.readouterr().out
    assert raw_hidden(out) == []
    assert "[/]x\\x1b]0;t\\x07" in out and "[bold]r[/] \\u202e" in out


@pytest.fixture(scope="module")
def hostile_samples(tmp_path_factory) -> Path:
    """Three images in class folders, named with ESC + newline, an HTML tag, and a bidi override + C1 CSI."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hostile") / "samples"
    rng = np.random.default_rng(0)
    for label, name in (("0", "a\x1b[31mred\n.png"), ("1", "<script>alert(1)<.png"), ("0", "b\u202e\x9bc.png")):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / label / name)
    return root


def test_scan_with_hostile_file_names_and_rule_ids(tmp_path, capsys, hostile_samples):
    model = tmp_path / f"m{OSC_TITLE}.safetensors"  # shown in the progress lines
    shutil.copy(MODELS / "mlp.safetensors", model)
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[[rule]]\nid = {json.dumps(RULE_ID)}\nmetric = "ssim"\nthreshold = 0.5\n')
    out = tmp_path / "out"
    code = app_main(["scan", str(model), "--data", str(hostile_samples), "--attacks", "ig", "--iterations", "2",
                     "--restarts", "1", "--batch-size", "3", "--rules", str(rules), "--format", "json,html,junit",
                     "--output", "-", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code in (0, 1, 4), captured.err  # 4: 2 IG iterations reconstruct nothing (inconclusive)
    assert raw_hidden(captured.err) == [] and raw_hidden(captured.out) == []
    assert "[/]x\\x1b]0;t\\x07:" in captured.err  # the summary line of the user's rule
    names = [s["name"] for s in json.loads(captured.out)["data"]["samples"]]  # stdout: the JSON report
    assert any(n.endswith("a\x1b[31mred\n.png") for n in names)

    junit = ET.parse(out / "report.junit.xml").getroot()  # ill-formed before: raw ESC in the sample name
    assert RULE_ID.replace("\x1b", "\\x1b").replace("\x07", "\\x07") in junit.find(".//testcase").get("name")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and raw_hidden(html) == []
    assert "&lt;script&gt;alert(1)&lt;.png" in html and "a\\x1b[31mred\n.png" in html


def test_an_error_about_a_hostile_file_name_is_one_escaped_line(tmp_path, capsys):
    bad = tmp_path / "data" / "0"
    bad.mkdir(parents=True)
    (bad / f"bad{OSC_TITLE}.png").write_bytes(b"not a png")
    code = app_main(["scan", str(MODELS / "mlp.safetensors"), "--data", str(tmp_path / "data"), "--quiet",
                     "--attacks", "ig", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("leakaudit: error: ")
    assert raw_hidden(err) == [] and "bad\\x1b]0;title\\x07.png" in err


def test_sweep_table_shows_a_point_error_literally():
    from rich.console import Console

    from leakaudit.cli.sweep_cmd import _table

    doc = {"knob": {"name": "noise.sigma"}, "values": [0.1],
           "points": [{"value": 0.1, "status": "error", "passed": None, "seconds": None, "attacks": [], "rules": [],
                       "notes": [], "error": f"samples/a{OSC_TITLE}[/].png: cannot read the image"}]}
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(_table(doc))  # no MarkupError
    assert raw_hidden(buffer.getvalue()) == [] and "a\\x1b]0;title\\x07[/].png" in buffer.getvalue()
