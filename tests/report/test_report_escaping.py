"""Text from model files, sample names and rule files reaches every output escaped (leakaudit.safetext):
no raw control/bidi character, no rich markup taken as markup, JUnit that parses, HTML without injected tags."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import make_result  # noqa: E402

from leakaudit.report import FORMATS, build_document  # noqa: E402
from leakaudit.safetext import html_text, json_text, markdown_text, terminal, visible, xml_text  # noqa: E402
from leakaudit.sweep import run_sweep  # noqa: E402
from leakaudit.sweep import jsonio  # noqa: E402
from leakaudit.sweep.html import render_html as render_sweep_html  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "sweep"))
from sweep_factory import CONTEXT, VARY, synthetic_point  # noqa: E402

ANSI = "a\x1b[31mred\n.png"
OSC_TITLE = "t\x1b]0;title\x07"
OSC_LINK = "l\x1b]8;;http://x\x1b\\link"
HIDDEN = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\u200b", "\u202e", "\u2066", "\u2069", "\u2028",
          "\ufeff", "\udcff", "\U000e0041"]
HOSTILE = [ANSI, OSC_TITLE, OSC_LINK, "[bold red]x[/]", "[/]", "x\\", "<script>alert(1)<\"'&", *HIDDEN]


def raw_hidden(text: str, keep: str = "") -> list[str]:
    """The characters a reader does not see (and a terminal may obey) that ``text`` holds unescaped."""
    return [ch for ch in text if ch not in keep and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


@pytest.mark.parametrize("s", HOSTILE)
def test_visible_shows_every_hidden_character_as_an_escape(s):
    out = visible(s)
    assert raw_hidden(out) == []
    assert out.encode("utf-8")  # lone surrogates (undecodable file names) included


def test_visible_spells_escapes_the_python_way_and_keeps_ordinary_text():
    assert visible(ANSI) == "a\\x1b[31mred\\n.png"
    assert visible("ab\u202ecd") == "ab\\u202ecd"
    assert visible("Café Ωμέγα 猫.png") == "Café Ωμέγα 猫.png"


@pytest.mark.parametrize("s", HOSTILE)
def test_terminal_text_prints_literally_through_rich_markup(s):
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None, highlight=False)
    console.print(f"[bold]{terminal(s)}[/bold]")  # no MarkupError, and the closing tag still closes
    assert buffer.getvalue().rstrip("\n") == visible(s)


@pytest.mark.parametrize("s", HOSTILE)
def test_xml_text_always_parses_back(s):
    element = ET.Element("case", name=xml_text(s))
    element.text = xml_text(s)
    parsed = ET.fromstring(ET.tostring(element, encoding="unicode"))
    assert raw_hidden(parsed.text, keep="\n") == []


def test_html_text_escapes_markup_and_quotes_for_attributes():
    assert html_text("<script>\"'&") == "&lt;script&gt;&quot;&#x27;&amp;"
    assert html_text(ANSI) == "a\\x1b[31mred\n.png"


def test_json_text_keeps_the_value_and_hides_nothing():
    doc = {"names": HOSTILE}
    text = json_text(json.dumps(doc, indent=2, ensure_ascii=False))
    assert json.loads(text) == doc
    assert raw_hidden(text, keep="\n") == []


# -- the report formats --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_doc() -> dict:
    return build_document(make_result(layer_name="[/]\x1b]0;pwn\x07" + OSC_LINK,
                                      sample_name="<script>alert(1)<\x01" + ANSI + "\u202e\x9b"), embed_data=True)


def test_html_report_shows_hostile_names_escaped(hostile_doc):
    page = FORMATS.get("html").render(hostile_doc)
    assert raw_hidden(page, keep="\n") == []
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;\\x01a\\x1b[31mred" in page  # the sample name, as a user can read it
    assert "[/]\\x1b]0;pwn\\x07" in page  # the layer name


def test_junit_report_parses_and_names_the_sample(hostile_doc):
    text = FORMATS.get("junit").render(hostile_doc)
    root = ET.fromstring(text)  # a raw \x01 or ESC made this ill-formed
    failure = root.find(".//failure")
    assert failure is not None and "\\x01a\\x1b[31mred" in failure.get("message")
    assert raw_hidden(text, keep="\n") == []


def test_json_report_keeps_names_exact_with_nothing_raw(hostile_doc):
    text = FORMATS.get("json").render(hostile_doc)
    assert raw_hidden(text, keep="\n") == []  # also when printed to a terminal with --output -
    names = [s["name"] for s in json.loads(text)["data"]["samples"]]
    assert any(n.endswith("<script>alert(1)<\x01" + ANSI + "\u202e\x9b") for n in names)


def test_sarif_report_keeps_names_exact_with_nothing_raw(hostile_doc):
    text = FORMATS.get("sarif").render(hostile_doc)
    assert raw_hidden(text, keep="\n") == []  # valid JSON, nothing a terminal or a viewer would obey
    run = json.loads(text)["runs"][0]
    messages = [r["message"]["text"] for r in run["results"]]
    assert any("<script>alert(1)<\x01" + ANSI + "\u202e\x9b" in m for m in messages)  # the sample name, exact
    uri = run["artifacts"][0]["location"]["uri"]
    assert raw_hidden(uri) == [] and "\x1b" not in uri  # the layer-named model path, percent-escaped


def test_suppression_text_from_the_ignore_file_is_escaped_in_every_format(hostile_doc):
    doc = json.loads(json.dumps(hostile_doc))
    hostile = "<script>x</script>|`" + ANSI + "\u202e"
    doc["suppressions"] = [{"rule": doc["rules"]["results"][0]["id"], "model": hostile, "matched_by": "path glob",
                            "reason": hostile, "expires": "2020-01-01", "file": hostile, "status": status,
                            "applied": False, "rule_status": "fail"} for status in ("active", "expired")]
    for name in ("html", "markdown", "junit", "sarif", "json"):
        text = FORMATS.get(name).render(doc)
        assert raw_hidden(text, keep="\n") == [], name
        assert "<script>x" not in text or name in ("json", "sarif"), name
    ET.fromstring(FORMATS.get("junit").render(doc))


MARKDOWN_SYNTAX = ["a|b", "`code`", "**bold** _it_ ~~del~~", "[link](http://x)", "![img](x.png)", "<b>x</b>&amp;",
                   "x\\|y", "# heading"]


@pytest.mark.parametrize("s", HOSTILE + MARKDOWN_SYNTAX)
def test_markdown_text_is_one_line_with_no_syntax_and_nothing_hidden(s):
    out = markdown_text(s)
    assert raw_hidden(out) == [] and "\n" not in out
    assert "<" not in out and ">" not in out  # no inline HTML: entities instead
    for ch in "|`*_~[]":  # each one backslash-escaped: shown literally, never a cell end, code, link, emphasis
        assert all(out[i - 1] == "\\" for i, c in enumerate(out) if c == ch), (ch, out)
    # an escaped backslash is never taken for an escape of what follows it
    assert "\\\\|" in markdown_text("x\\|y")


def test_markdown_report_shows_hostile_names_escaped(hostile_doc):
    doc = json.loads(json.dumps(hostile_doc))
    doc["rules"]["results"][0]["id"] = "evil|id`<img src=x>"
    doc["coverage"] = {"audited": 2, "recognised": 2, "fraction": 1.0, "interval": {"lower": 0.16, "upper": 1.0},
                       "batches_run": 2, "batch_size": 1,
                       "worst": {"name": doc["data"]["samples"][0]["name"], "explanation": "exact | copy"}}
    text = FORMATS.get("markdown").render(doc)
    assert raw_hidden(text, keep="\n") == []
    assert "<script" not in text and "<img" not in text
    assert "| **FAIL** | evil\\|id\\`&lt;img src=x&gt; |" in text
    assert "&lt;script&gt;alert(1)&lt;\\\\x01a\\\\x1b\\[31mred" in text  # the sample name, as typed
    assert "exact \\| copy" in text


def test_sweep_page_renders_a_rule_id_that_is_bad_mathtext_or_markup():
    def point(value: float):
        p = synthetic_point(value)
        return dataclasses.replace(p, rules=(dataclasses.replace(p.rules[0], id="$\\frac$ <b>\x1b"),))

    page = render_sweep_html(jsonio.to_dict(run_sweep(VARY, point, context=CONTEXT), VARY))
    assert "$\\frac$ &lt;b&gt;\\x1b" in page and "<b>" not in page
    assert raw_hidden(page, keep="\n") == []
