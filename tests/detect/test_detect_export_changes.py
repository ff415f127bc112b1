"""Exports that changed the model's function: BatchNorm folded into the convolutions by torch's dynamo
exporter, even for a model in training mode (issue 12). The client update computed from such a file is not
the client's, so detection must say so, with the re-export command, and stay quiet on models without
BatchNorm."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from leakaudit.detect import detect
from leakaudit.models import load_model

pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")


def _convnet(batchnorm: bool) -> nn.Module:
    norm = [nn.BatchNorm2d(4)] if batchnorm else []
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *norm, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def _export(model: nn.Module, path: Path, *, dynamo: bool) -> Path:
    x = torch.randn(2, 3, 8, 8)
    kwargs = {} if dynamo else {"training": torch.onnx.TrainingMode.TRAINING}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.train(), x, str(path), dynamo=dynamo, **kwargs)
    return path


def _fold_warnings(path: Path) -> list[str]:
    return [w for w in detect(load_model(path), probe=False).warnings if "BatchNorm" in w and "re-export" in w]


def test_dynamo_export_that_folded_batchnorm_is_reported_with_the_reexport_command(tmp_path: Path) -> None:
    path = _export(_convnet(batchnorm=True), tmp_path / "m.onnx", dynamo=True)
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)  # the fold happened
    (warning,) = _fold_warnings(path)
    assert "folded 1 BatchNorm" in warning and "dynamo=False" in warning and "TrainingMode.TRAINING" in warning


def test_metadata_stripped_fold_is_reported_as_uncertain(tmp_path: Path) -> None:
    path = _export(_convnet(batchnorm=True), tmp_path / "m.onnx", dynamo=True)
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
    onnx.save(proto, str(tmp_path / "stripped.onnx"))
    (warning,) = _fold_warnings(tmp_path / "stripped.onnx")
    assert "may have folded" in warning and "Uncertain" in warning


@pytest.mark.parametrize("batchnorm, dynamo", [(False, True), (False, False), (True, False)])
def test_no_fold_warning_when_the_file_computes_the_models_function(tmp_path: Path, batchnorm: bool,
                                                                      dynamo: bool) -> None:
    path = _export(_convnet(batchnorm), tmp_path / "m.onnx", dynamo=dynamo)
    assert _fold_warnings(path) == []


def test_no_fold_warning_for_an_mlp_exported_by_dynamo(tmp_path: Path) -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))
    assert _fold_warnings(_export(mlp, tmp_path / "m.onnx", dynamo=True)) == []


# ------------------------------------------------------------- a scan refuses the folded file unless told
def _samples(tmp_path: Path) -> Path:
    path = tmp_path / "x.npz"
    gen = np.random.default_rng(0)
    np.savez(path, x=gen.random((2, 3, 8, 8), dtype=np.float32), y=np.array([1, 2]))
    return path


def _scan(tmp_path: Path, model: Path, *extra: str) -> int:
    from leakaudit.cli import app_main

    return app_main(["scan", str(model), "--data", str(_samples(tmp_path)), "--attacks", "ig", "--iterations", "2",
                     "--restarts", "1", "--output-dir", str(tmp_path / "out"), "--format", "json", "--quiet",
                     *extra])


def test_a_scan_refuses_a_recorded_fold_with_the_reexport_command_and_the_flag(tmp_path: Path, capsys) -> None:
    path = _export(_convnet(batchnorm=True), tmp_path / "m.onnx", dynamo=True)
    assert _scan(tmp_path, path) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("leakaudit: error:")]
    assert str(path) in line and "folded 1 BatchNorm" in line and "Traceback" not in err
    assert "dynamo=False, training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False" in line
    assert "--allow-folded-batchnorm" in line and not (tmp_path / "out" / "report.json").exists()


def test_an_allowed_fold_is_audited_and_every_verdict_line_says_what_was_audited(tmp_path: Path) -> None:
    path = _export(_convnet(batchnorm=True), tmp_path / "m.onnx", dynamo=True)
    assert _scan(tmp_path, path, "--allow-folded-batchnorm") in (0, 1, 4)
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    summary = doc["verdict"]["summary"]
    assert summary.split(": ", 1)[1].startswith("this verdict is about the BatchNorm-folded function"), summary
    assert "--allow-folded-batchnorm" in doc["command"]


@pytest.mark.parametrize("strip", [False, True])
def test_files_that_keep_batchnorm_or_only_suggest_a_fold_are_scanned(tmp_path: Path, strip: bool) -> None:
    if strip:  # metadata stripped: the Conv names only suggest a fold, which a zero bias also gives
        path = _export(_convnet(batchnorm=True), tmp_path / "m.onnx", dynamo=True)
        proto = onnx.load(str(path))
        for node in proto.graph.node:
            del node.metadata_props[:]
        onnx.save(proto, str(path))
    else:
        path = _export(_convnet(batchnorm=True), tmp_path / "m.onnx", dynamo=False)
    assert _scan(tmp_path, path) in (0, 1, 4)
    summary = json.loads((tmp_path / "out" / "report.json").read_text())["verdict"]["summary"]
    assert "BatchNorm-folded" not in summary


# --------------------------------------------------------------------- dropout the exporter wrote out as ops
def _inplace_dropout_net() -> nn.Module:
    # torchvision's MobileNetV3 classifier uses nn.Dropout(inplace=True): the dynamo exporter writes it as
    # RandomUniformLike -> Less -> Cast -> Div -> Mul instead of a Dropout node
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Dropout(0.3, inplace=True),
                         nn.Linear(16, 10))


def test_dynamo_exported_inplace_dropout_is_dropout_with_its_rate_and_dia_is_planned(tmp_path: Path) -> None:
    from leakaudit.attacks import plan
    from leakaudit.models import MaskableDropout

    net = _inplace_dropout_net()
    path = _export(net, tmp_path / "m.onnx", dynamo=True)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "RandomUniformLike" in ops and "Dropout" not in ops  # the decomposition this fixes
    model = load_model(path)
    findings = detect(model)
    (layer,) = findings.dropout
    assert layer.p == pytest.approx(0.3) and layer.source == "onnx"
    assert findings.unrecognized_stochastic == ()  # was the random op's node, e.g. "n1"
    assert any(p.name == "dia" and p.run for p in plan(findings, model))

    # the converted layer computes the client's function: x * mask / (1 - p) with the mask the attacks set
    x = torch.randn(2, 3, 8, 8)
    mask = (torch.rand(2, 16) > 0.3).float()
    dropout = dict(model.module.named_modules())[layer.name]
    assert isinstance(dropout, MaskableDropout)
    dropout.mask = mask
    state = {name: p for name, p in net.named_parameters()}
    expected = nn.functional.linear(torch.relu(nn.functional.linear(x.flatten(1), state["1.weight"], state["1.bias"]))
                                    * mask / 0.7, state["4.weight"], state["4.bias"])
    assert torch.allclose(model.module(x), expected, atol=1e-5)


# ------------------------------------------------------------- attention dropout the exporter left out
class _Attention(nn.Module):
    """timm's fused attention in miniature: the attention dropout is SDPA's dropout_p in train mode."""

    def __init__(self, attn_drop: float) -> None:
        super().__init__()
        self.qkv, self.head, self.attn_drop = nn.Linear(8, 24), nn.Linear(8, 10), attn_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).unsqueeze(1).chunk(3, dim=-1)
        p = self.attn_drop if self.training else 0.0
        return self.head(nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p).mean((1, 2)))


def _export_attention(path: Path, attn_drop: float) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Attention(attn_drop).train(), torch.randn(2, 8, 2, 2), str(path), dynamo=True)
    return path


def test_attention_dropout_the_dynamo_exporter_left_out_is_reported(tmp_path: Path) -> None:
    path = _export_attention(tmp_path / "m.onnx", attn_drop=0.2)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"Dropout", "RandomUniformLike", "Bernoulli"}  # the loss this reports
    (warning,) = [w for w in detect(load_model(path), probe=False).warnings if "attention dropout" in w]
    assert "rate 0.2" in warning and "1 attention layer" in warning and "dynamo=False" in warning


def test_attention_without_dropout_gets_no_such_warning(tmp_path: Path) -> None:
    path = _export_attention(tmp_path / "m.onnx", attn_drop=0.0)
    assert not any("attention dropout" in w for w in detect(load_model(path), probe=False).warnings)
