"""The report names the attack power that ran, not only the budget's name (issue 12): a scan at
``--iterations 1`` was reported as "the standard budget", which makes a PASS look earned by a full-strength
attack."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jsonschema

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import make_result  # noqa: E402

from leakaudit.config import ScanSettings  # noqa: E402
from leakaudit.report import FORMATS, build_document, schema  # noqa: E402
from leakaudit.report.html import render_html  # noqa: E402


def _doc(settings: ScanSettings, *, leaked: bool = True) -> dict:
    result = dataclasses.replace(make_result(leaked=leaked), settings=settings)
    return json.loads(FORMATS.get("json").render(build_document(result)))


def test_overridden_budget_is_named_with_its_overrides_in_json_and_html() -> None:
    doc = _doc(ScanSettings(budget="standard", iterations=1, restarts=3))
    jsonschema.Draft202012Validator(schema()).validate(doc)
    budget = doc["budget"]
    assert budget["overrides"] == {"iterations": 1, "restarts": 3}
    assert budget["text"].startswith("standard budget with overrides: iterations=1, restarts=3")
    # the factory's dia outcome ran 20 iterations with 1 restart: the report says what ran
    assert budget["attacks"] == [{"name": "dia", "iterations": 20, "restarts": 1}]
    assert "dia 20 iteration(s) x 1 restart(s)" in budget["text"]
    assert "standard budget with overrides: iterations=1, restarts=3" in render_html(doc)


def test_budget_without_overrides_is_named_plainly() -> None:
    budget = _doc(ScanSettings(budget="quick"))["budget"]
    assert budget["overrides"] == {}
    assert budget["text"].startswith("quick budget (ran:") and "overrides" not in budget["text"]


def test_a_pass_names_the_overridden_budget_it_rests_on() -> None:
    doc = _doc(ScanSettings(budget="standard", iterations=1), leaked=False)
    scope = next(r for r in doc["recommendations"] if r["id"] == "pass-scope")
    assert "standard budget with overrides: iterations=1" in scope["because"]


def test_a_report_written_before_the_budget_field_still_renders_its_budget() -> None:
    doc = _doc(ScanSettings(budget="standard", iterations=2))
    del doc["budget"]
    assert "standard budget with overrides: iterations=2" in render_html(doc)
