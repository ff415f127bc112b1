"""The Python API with what a notebook or an FL framework holds: a plain torch module and tensors."""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import leakaudit
from leakaudit.errors import ConfigError, DataError
from leakaudit.models.inmemory import state_sha256, wrap_module
from leakaudit.models.layers import MaskableDropout

ROOT = Path(__file__).resolve().parents[2]


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))


def _data(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(n) % 4


def test_a_module_and_tensors_are_audited_and_the_module_is_left_as_it_was():
    net = _net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = leakaudit.audit(net, _data(), attacks=("analytic",))
    assert result.overall == "fail" and result.exit_code == 1  # the first Linear layer gives the samples away
    assert result.model.format == "torch" and result.model.path == "Sequential (in memory)"
    assert result.model.input_shape == (3, 8, 8) and result.model.num_classes == 4  # from the tensors, a forward
    assert [(s.name, s.label) for s in result.coverage.samples] == [("sample[0]", 0), ("sample[1]", 1)]
    # the caller's object: same class of dropout, same mode, same weights
    assert type(net[3]) is nn.Dropout and net.training is False
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_identity_is_the_state_dicts_sha256():
    net = _net()
    same = copy.deepcopy(net)
    assert state_sha256(same) == state_sha256(net)
    with torch.no_grad():
        same[1].weight[0, 0] += 1e-3
    assert state_sha256(same) != state_sha256(net)
    assert leakaudit.audit(net, _data(), attacks=("analytic",)).model.sha256 == state_sha256(net)


def test_a_plain_dropout_is_found_and_trains_like_the_clients_while_the_attacker_copy_turns_it_off():
    """Issue 22: an nn.Dropout passed through the API stayed active in the attacker's copy."""
    from leakaudit.attacks.engine import attacker_copy
    from leakaudit.detect import detect

    loaded = wrap_module(_net(), input_shape=(3, 8, 8), num_classes=None)
    assert [(d.name, d.p) for d in detect(loaded).dropout] == [("3", 0.5)]
    assert isinstance(loaded.module[3], MaskableDropout) and loaded.module.training
    x = torch.rand(4, 3, 8, 8)
    assert not torch.equal(loaded.module(x), loaded.module(x))  # the client's step draws masks
    attacker = attacker_copy(loaded.module, torch.device("cpu"))
    assert attacker.training and torch.equal(attacker(x), attacker(x))  # the attacker's plain forward: no masks


def test_dia_runs_on_a_module_passed_in_memory():
    result = leakaudit.audit(_net(), _data(1), attacks=("ig", "dia"), iterations=3, restarts=1)
    assert [(a.name, a.status) for a in result.attacks] == [("ig", "ran"), ("dia", "ran")]
    assert [d.name for d in result.findings.dropout] == ["3"]


def test_num_classes_is_checked_and_a_missing_input_shape_is_named():
    with pytest.raises(ConfigError, match=r"^num_classes: 10 given but the Sequential outputs 4 logits; pass "):
        leakaudit.audit(_net(), _data(), num_classes=10)
    with pytest.raises(ConfigError, match=r"^input_shape: not given for the Sequential passed in memory.*pass "
                                          r"input_shape=\(C, H, W\)"):
        leakaudit.audit(_net(), str(ROOT / "examples" / "samples"))
    with pytest.raises(ConfigError, match=r"^input_shape: the Sequential fails on input of shape \[1, 28, 28\]"):
        leakaudit.audit(_net(), str(ROOT / "examples" / "samples"), input_shape=(1, 28, 28))


@pytest.mark.parametrize(("data", "message"), [
    ((torch.rand(2, 3, 8, 8) * 255, torch.tensor([0, 1])), r"^data: image values range over \[.*\], not \[0, 1\]"),
    ((torch.rand(2, 3, 8, 8), torch.tensor([0, 9])), r"label 9 of sample 1 is out of range .* 4 classes"),
    ((torch.rand(2, 3, 8, 8), torch.tensor([0])), r"labels 'y' have shape \(1,\) for 2 samples"),
    ((torch.full((1, 3, 8, 8), float("nan")), torch.tensor([0])), r"^data: the images hold NaN"),
    ([torch.rand(2, 3, 8, 8)], r"^data: got list; pass a path"),
])
def test_bad_tensors_are_one_line_naming_the_data(data, message):
    with pytest.raises(DataError, match=message):
        leakaudit.audit(_net(), data, input_shape=(3, 8, 8))


def test_a_model_of_another_kind_is_named():
    with pytest.raises(ConfigError, match=r"^model: got dict; pass a model file's path"):
        leakaudit.audit({}, _data())


def test_a_path_audit_writes_the_command_that_repeats_it(tmp_path):
    model, samples = ROOT / "examples" / "models" / "mlp_dropout.onnx", ROOT / "examples" / "samples"
    result = leakaudit.audit(str(model), str(samples), attacks=("analytic",), samples=1)
    argv = shlex.split(result.command)
    assert argv[:5] == ["leakaudit", "scan", str(model), "--data", str(samples)] and result.command_reason == ""
    from leakaudit.cli import app_main

    code = app_main([*argv[1:], "--output-dir", str(tmp_path), "--quiet", "--format", "json"])
    assert code == result.exit_code == 1
    import json

    doc = json.loads((tmp_path / "report.json").read_text())
    # the CLI writes the same command back: the settings survived the round trip
    assert doc["command"] == result.command and doc["model"]["sha256"] == result.model.sha256


def test_in_memory_inputs_say_why_there_is_no_command_and_the_report_shows_it():
    from leakaudit.report import build_document
    from leakaudit.report.html import render_html

    result = leakaudit.audit(_net(), _data(), attacks=("analytic",))
    assert result.command == ""
    assert result.command_reason.startswith("no reproduce command: the model and the samples were passed in memory")
    doc = build_document(result)
    import jsonschema

    from leakaudit.report import schema

    jsonschema.Draft202012Validator(schema()).validate(doc)  # format "torch" and command_reason are in the schema
    assert doc["command_reason"] == result.command_reason
    assert result.command_reason.split(";")[0] in render_html(doc)


def test_the_reason_names_what_was_in_memory():
    samples = str(ROOT / "examples" / "samples")
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))  # the photos' labels
    model_only = leakaudit.audit(net, samples, attacks=("analytic",), input_shape=(3, 8, 8), samples=1)
    assert model_only.command_reason.startswith("no reproduce command: the model was passed in memory")
    from leakaudit.data import load_samples, normalization

    batch = load_samples(samples, input_shape=(3, 32, 32), num_classes=10, normalization=normalization("none"))
    data_only = leakaudit.audit(str(ROOT / "examples" / "models" / "mlp.onnx"), batch.subset(1), attacks=("analytic",))
    assert data_only.command_reason.startswith("no reproduce command: the samples were passed in memory")
    assert "np.savez" in data_only.command_reason and "torch.onnx.export" not in data_only.command_reason


def test_import_leakaudit_does_not_import_torch_and_its_api_is_callable():
    code = ("import sys, leakaudit; assert 'torch' not in sys.modules; "
            "from leakaudit import audit, prepare, run, ScanSettings, AuditResult, ConfigError; "
            "assert callable(audit) and audit.audit is audit.__call__.__globals__['audit']; "
            "assert all(getattr(leakaudit, n) is not None for n in leakaudit.__all__); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
