"""Recommendations that must not claim what the scan cannot know: an ONNX file without Dropout nodes may be an
eval-mode export or a model without dropout, and --no-dropout says which."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from leakaudit.config import ScanSettings, coerce, setting_args
from leakaudit.detect.interface import Findings
from leakaudit.errors import ConfigError
from leakaudit.report.document import build_document

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import make_result  # noqa: E402


def _no_dropout_onnx(settings: ScanSettings):
    result = make_result(leaked=False)
    return dataclasses.replace(result, model=dataclasses.replace(result.model, looks_eval_exported=True),
                               findings=Findings(layers=(("fc", "Linear", 1234),)), settings=settings)


def test_a_file_without_dropout_nodes_asks_which_case_it_is_without_claiming_an_export_removed_it():
    recs = {r["id"]: r for r in build_document(_no_dropout_onnx(ScanSettings()))["recommendations"]}
    rec = recs["declare-dropout"]
    assert rec["title"] == "Say whether the model trains with dropout"
    assert "cannot tell" in rec["text"] and "--no-dropout" in rec["text"] and "--dropout LAYER=P" in rec["text"]
    assert "removed" not in rec["because"]


def test_no_dropout_stated_silences_the_advice_and_round_trips():
    recs = build_document(_no_dropout_onnx(ScanSettings(no_dropout=True)))["recommendations"]
    assert "declare-dropout" not in {r["id"] for r in recs}
    assert coerce("no_dropout", True) is True
    assert "--no-dropout" in setting_args(ScanSettings(no_dropout=True))


def test_no_dropout_and_declared_rates_contradict_each_other():
    from leakaudit.audit import preflight

    with pytest.raises(ConfigError, match="^no_dropout with dropout fc1"):
        preflight(ScanSettings(no_dropout=True, dropout={"fc1": 0.5}))
