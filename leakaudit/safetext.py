"""Text from a model file, a data folder or a user rule file, made safe for the output it is written to.

Names in an ONNX graph, sample file names, rule ids and error reasons are chosen by whoever made the file, not
by the user running leakaudit. Written raw they can drive the terminal (ANSI/OSC escapes retitle it, hide text,
plant hyperlinks), reorder what is shown (bidi overrides), break the output's syntax (rich markup such as
``[/]`` raises ``MarkupError``; a control character makes XML ill-formed) or inject HTML.

Every such string goes through one of these on its way out:

- ``visible(s)``: the invisible and terminal-controlling characters (Unicode categories Cc, Cf, Cs, Zl, Zp:
  C0, DEL, C1, bidi overrides and isolates, zero-width characters, lone surrogates from undecodable file
  names) replaced by a visible Python-style escape such as ``\\x1b`` or ``\\u202e``.
- ``terminal(s)``: ``visible`` and then rich markup escaped, for text interpolated into a rich markup string or
  a rich table cell.
- ``xml_text(s)``: ``visible`` keeping tab/newline/carriage return (XML 1.0 allows them), for ElementTree text
  and attributes (ElementTree itself escapes ``<``, ``&`` and quotes).
- ``html_text(s)``: ``visible`` keeping tab/newline, then ``html.escape`` with quotes, for HTML text and
  attribute values.
- ``markdown_text(s)``: ``visible`` (one line: a newline would end a table row), HTML escaped (GitHub renders
  inline HTML), and the characters that make Markdown syntax inline -- backslash, backtick, ``*``, ``_``, ``~``,
  square brackets, ``|`` (a table cell's end) -- backslash-escaped, so a name shows as typed and never becomes a link,
  an image, emphasis, code or a new cell.
- ``json_text(text)``: a JSON document from ``json.dumps(..., ensure_ascii=False)`` (readable names) with the
  hidden characters that ``json.dumps`` leaves raw (DEL, C1, bidi, zero-width) written as ``\\u009b`` etc., so a
  report printed with ``--output -`` cannot drive the terminal either. ``ensure_ascii=True`` needs nothing.
"""

from __future__ import annotations

import html
import unicodedata

# Cc: C0, DEL, C1. Cf: bidi embeddings/overrides/isolates, zero-width space/joiners, BOM, tag characters.
# Cs: lone surrogates (os.fsdecode's surrogateescape of a non-UTF-8 file name), which cannot even be encoded.
# Zl/Zp: U+2028/U+2029, line breaks to some renderers.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_MULTILINE_KEPT = frozenset("\t\n\r")


def _escape_char(ch: str) -> str:
    return ch.encode("unicode_escape", "backslashreplace").decode("ascii")


def visible(s: object, *, keep: frozenset[str] = frozenset()) -> str:
    """``s`` (any object, as ``str``) with every hidden or controlling character shown as an escape, except those
    in ``keep``."""
    text = str(s)
    if text.isprintable():  # fast path: no Cc/Cf/Cs/Zl/Zp (nor Zs other than space, which we keep anyway)
        return text
    return "".join(_escape_char(ch) if ch not in keep and unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch
                   for ch in text)


def terminal(s: object) -> str:
    """``s`` for a rich markup string or table cell: one line, nothing hidden, markup shown literally."""
    from rich.markup import escape

    return escape(visible(s))


def xml_text(s: object) -> str:
    """``s`` for XML 1.0 text or an attribute: only characters XML allows, nothing hidden but tab/newline/CR."""
    return visible(s, keep=_MULTILINE_KEPT)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells an astral character as its UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(text: str) -> str:
    """JSON text with every hidden character as a ``\\uXXXX`` escape. Only strings can hold such characters
    (JSON's own whitespace is space, tab, newline and CR, kept), so the document's value is unchanged."""
    if text.isprintable():
        return text
    return "".join(_json_escape(ch) if ch not in _MULTILINE_KEPT and unicodedata.category(ch) in _HIDDEN_CATEGORIES
                   else ch for ch in text)


def html_text(s: object) -> str:
    """``s`` for HTML text or a quoted attribute value: markup escaped (quotes too), nothing hidden."""
    return html.escape(visible(s, keep=_MULTILINE_KEPT), quote=True)


_MARKDOWN_SPECIAL = frozenset("\\`*_~[]|")  # "(" only makes a link after "]", "!" only before "["


def markdown_text(s: object) -> str:
    """``s`` for one line of (GitHub-flavoured) Markdown, including a table cell: shown as typed, nothing hidden."""
    text = html.escape(visible(s), quote=False)
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)
