"""The HTML ``sentence`` view of a text sample: the true line and the recovered one side by side, token by
token, with what the attack recovered highlighted. Everything from the user's files (tokens, lines, names) is
escaped: a line may hold markup."""

from __future__ import annotations

from typing import Any

from ..safetext import html_text


def _token(token: dict[str, Any], hit_key: str) -> str:
    classes = ["tok"]
    if token.get(hit_key):
        classes.append("hit")
    if token.get("in_place"):
        classes.append("placed")
    return f'<span class="{" ".join(classes)}">{html_text(str(token.get("text", "")))}</span>'


def _line(tokens: Any, hit_key: str, missing: str) -> str:
    if not isinstance(tokens, list):
        return f'<span class="missing-line">{html_text(missing)}</span>'
    if not tokens:
        return '<span class="missing-line">(nothing recovered)</span>'
    return " ".join(_token(t, hit_key) for t in tokens if isinstance(t, dict))


def sentence_html(sentence: dict[str, Any]) -> str:
    """The two lines of one sample, as an HTML fragment (a table of two rows)."""
    recovered = _line(sentence.get("recovered_tokens"), "in_line", "")
    true = _line(sentence.get("true_tokens"), "recovered", "true line not embedded (--embed-data)")
    return ('<table class="sentence"><tr><th>true line</th>'
            f'<td>{true}</td></tr><tr><th>recovered</th><td>{recovered}</td></tr></table>'
            '<p class="legend"><span class="tok hit">word</span> recovered (in the line) '
            '<span class="tok hit placed">word</span> and in its place</p>')
