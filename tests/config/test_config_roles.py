"""Which settings change a result is declared once, by each row's role in ``config.SETTINGS``: the reproduce
command, what ``--resume`` compares (scan checkpoint and sweep) and the report's settings all follow it."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from leakaudit import config
from leakaudit.config import ROLES, SETTINGS, ScanSettings, Setting, setting_args
from leakaudit.coverage import checkpoint
from leakaudit.report.document import _settings as report_settings
from leakaudit.sweep.pipeline import settings_for_resume

# every field away from its default, so no setting is missing from an output only because it is at its default
CHANGED = ScanSettings(
    arch="cnn", arch_args={"img_size": 32}, input_shape=(3, 32, 32), num_classes=10, dropout={"fc.1": 0.5},
    no_dropout=True, allow_folded_batchnorm=True, normalize="cifar10", mean=(0.5,), std=(0.25,), rules="strict",
    ignore_file="x.toml", attacks=("ig",), all_attacks=True, budget="quick", iterations=7, restarts=2,
    attack_iterations={"ig": 5}, max_time=60.0, defenses=("noise:sigma=0.1",), batch_size=2, samples=3,
    reference_data="refs", tokenizer="tokenizer.json", freeze=("embedding",), schema="s.json", label_column="dx",
    utility_data="held", local_steps=2, local_lr=0.05, protocol="fedavg", labels_known=True,
    client_batchnorm="eval", update_buffers="yes", client_batch_size=32, device="cpu", executor="processes",
    workers=2, threads=1, ray_address="auto", seed=3, output_dir="out", formats=("json",), strict=True,
    exit_zero=True, embed_data=True, quiet=True)


def _names(role: str, rows: tuple[Setting, ...] = SETTINGS) -> set[str]:
    return {s.name for s in rows if s.role == role}


def _identity_settings(settings: ScanSettings) -> set[str]:
    batch = SimpleNamespace(x=torch.zeros(1, 2), pixels=torch.zeros(1, 2), y=torch.zeros(1, dtype=torch.long),
                            names=("a.png",))
    prepared = SimpleNamespace(plan=None, batch=batch, ruleset=None, model=SimpleNamespace(sha256="0" * 64),
                               references=None)
    return set(checkpoint.identity(prepared, dataclasses.replace(settings, rules="default"))["settings"])


def _flags(settings: ScanSettings) -> set[str]:
    return {a for a in setting_args(settings) if a.startswith("--")}


def test_every_field_has_a_row_with_a_known_role():
    assert sorted(s.name for s in SETTINGS) == sorted(f.name for f in dataclasses.fields(ScanSettings))
    assert {s.role for s in SETTINGS} == set(ROLES)
    assert {"max_time", "attack_iterations"} <= _names("result")  # they change what the attacks run
    assert {"executor", "workers", "threads", "ray_address"} == _names("execution") == set(config.EXECUTION)
    assert {s.flag for s in SETTINGS if s.role == "result"} == _flags(CHANGED)
    with pytest.raises(ValueError, match="role 'results' is not one of result, execution, presentation"):
        Setting("x", "--x", config._name, "x", role="results")


def test_the_checkpoint_the_reproduce_command_and_the_report_follow_the_rows():
    result, presentation = _names("result"), _names("presentation")
    assert _identity_settings(CHANGED) == result == set(settings_for_resume(CHANGED))
    assert set(report_settings(CHANGED)) == result | presentation


def test_moving_a_row_to_another_role_moves_it_everywhere(monkeypatch):
    # --budget declared as execution: no output may keep treating it as a result by a list of its own
    rows = tuple(dataclasses.replace(s, role="execution") if s.name == "budget" else s for s in SETTINGS)
    monkeypatch.setattr(config, "SETTINGS", rows)
    monkeypatch.setattr(config, "SETTING", {s.name: s for s in rows})
    assert "--budget" not in _flags(CHANGED)
    assert "budget" not in _identity_settings(CHANGED)
    assert "budget" not in settings_for_resume(CHANGED)
    assert "budget" not in report_settings(CHANGED)
    # and a presentation row joins the result: the reproduce command and the checkpoint now carry it
    rows = tuple(dataclasses.replace(s, role="result") if s.name == "embed_data" else s for s in SETTINGS)
    monkeypatch.setattr(config, "SETTINGS", rows)
    monkeypatch.setattr(config, "SETTING", {s.name: s for s in rows})
    assert "--embed-data" in _flags(CHANGED) and "embed_data" in _identity_settings(CHANGED)
