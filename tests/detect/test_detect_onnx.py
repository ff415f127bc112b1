"""Detection on ONNX files (the bundled examples and fresh exports) and on the custom-layer example."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from leakaudit.detect import detect
from leakaudit.models import load_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = EXAMPLES / "models"


def onnx_dropout_ratios(path: Path) -> list[float]:
    """Dropout ratios read from the file with onnx alone (independent of the loader)."""
    graph = onnx.load(str(path)).graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    return [float(consts[n.input[1]]) for n in graph.node if n.op_type == "Dropout"]


@pytest.mark.parametrize("name, rate", [("mlp_dropout.onnx", 0.5), ("cnn_dropout.onnx", 0.25)])
def test_example_onnx_dropout_is_found_with_its_rate(name: str, rate: float) -> None:
    path = MODELS / name
    model = load_model(path)
    findings = detect(model)
    modules = dict(model.module.named_modules())
    assert [d.p for d in findings.dropout] == pytest.approx(onnx_dropout_ratios(path))
    assert all(d.p == pytest.approx(rate) and d.source == "onnx" and d.name in modules for d in findings.dropout)
    assert len(findings.dropout) == 2
    assert findings.unrecognized_stochastic == ()
    assert not any("no Dropout nodes" in w for w in findings.warnings)


def test_example_onnx_precode_is_found_with_the_parameters_before_it() -> None:
    model = load_model(MODELS / "mlp_precode.onnx")
    findings = detect(model)
    (b,) = findings.bottlenecks
    params = model.trainable()
    before = sum(params[n].numel() for n in b.params_before)
    after = sum(params[n].numel() for n in b.params_after)
    # hidden layers 3072->64->64 come before the bottleneck; encoder 64->512, decoder 256->64, classifier 64->10 after
    assert before == (3 * 32 * 32 * 64 + 64) + (64 * 64 + 64)
    assert after == (64 * 512 + 512) + (256 * 64 + 64) + (64 * 10 + 10)
    assert set(b.params_before) | set(b.params_after) == set(params)
    assert (b.source, b.latent_dim) == ("onnx", 256)
    assert findings.unrecognized_stochastic == ()  # the RandomNormalLike op is explained by the bottleneck


def test_onnx_precode_split_matches_the_safetensors_twin() -> None:
    onnx_b = detect(load_model(MODELS / "mlp_precode.onnx"), probe=False).bottlenecks[0]
    st_model = load_model(MODELS / "mlp_precode.safetensors")
    st_b = detect(st_model, probe=False).bottlenecks[0]
    assert len(onnx_b.params_before) == len(st_b.params_before) == 4
    assert len(onnx_b.params_after) == len(st_b.params_after)


def test_eval_export_warns_that_dropout_may_have_been_removed() -> None:
    findings = detect(load_model(MODELS / "mlp_dropout_eval.onnx"))
    assert findings.dropout == ()
    (warning,) = [w for w in findings.warnings if "no Dropout nodes" in w]
    assert "training=TrainingMode.TRAINING" in warning and "--dropout LAYER=P" in warning


def test_declared_dropout_on_an_eval_export_is_reported_and_silences_the_warning() -> None:
    path = MODELS / "mlp_dropout_eval.onnx"
    layer = next(n for n, m in load_model(path).module.named_modules() if isinstance(m, nn.Linear))
    findings = detect(load_model(path, dropout={layer: 0.5}))
    (d,) = findings.dropout
    assert (d.p, d.source) == (0.5, "declared")
    assert not any("no Dropout nodes" in w for w in findings.warnings)
    assert findings.unrecognized_stochastic == ()


def test_custom_random_layer_example_is_reported_by_the_probe() -> None:
    model = load_model(MODELS / "noisy_mlp.safetensors", arch=str(EXAMPLES / "custom_arch.py") + ":noisy_mlp")
    findings = detect(model)
    assert findings.dropout == () and findings.bottlenecks == ()
    (name,) = findings.unrecognized_stochastic
    assert type(dict(model.module.named_modules())[name]).__name__ == "GaussianNoise"


def test_batchnorm_in_an_onnx_export_is_found(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Dropout(0.1), nn.Linear(4 * 8 * 8, 5)).train()
    path = tmp_path / "bn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: torch 2.14's dynamo exporter folds BatchNorm into the Conv even in
        # training mode, so its files have no BatchNormalization node left to find.
        torch.onnx.export(net, (torch.zeros(2, 3, 8, 8),), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
    findings = detect(load_model(path))
    assert len(findings.batchnorm) == 1
    assert [d.p for d in findings.dropout] == [pytest.approx(0.1)]
    assert any("BatchNorm" in w for w in findings.warnings)


def test_gaussian_noise_in_onnx_is_not_mistaken_for_precode(tmp_path: Path) -> None:
    """RandomNormalLike -> Mul -> Add without an encoder/decoder around it is noise: the probe reports it."""
    import sys

    sys.path.insert(0, str(EXAMPLES))
    try:
        from custom_arch import noisy_mlp
    finally:
        sys.path.remove(str(EXAMPLES))
    torch.manual_seed(0)
    net = noisy_mlp(num_classes=3, input_shape=(3, 4, 4), hidden=8).train()
    path = tmp_path / "noisy.onnx"
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (in the dev extra)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 3, 4, 4),), str(path), dynamo=True, external_data=False,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, verbose=False)
    model = load_model(path)
    findings = detect(model)
    assert findings.bottlenecks == ()
    (name,) = findings.unrecognized_stochastic
    random_ops = [n for n, _ in model.onnx.random_nodes]
    assert len(random_ops) == 1 and type(dict(model.module.named_modules())[name]).__name__.startswith("OnnxRandom")


def test_onnx_dropout_nodes_map_to_modules_by_order_when_names_differ() -> None:
    """A loader that renames converted modules still gets the file's rates, in execution order."""
    import dataclasses

    from leakaudit.models import LoadedModel, MaskableDropout, OnnxGraphInfo

    net = nn.Sequential(nn.Linear(4, 4), MaskableDropout(0.5), nn.Linear(4, 4), MaskableDropout(0.5), nn.Linear(4, 2))
    info = OnnxGraphInfo(opset=20, producer="test", op_types=("Gemm", "Dropout", "Gemm", "Dropout", "Gemm"),
                         dropout_nodes=(("/drop_a", 0.5), ("/drop_b", 0.5)), random_nodes=(),
                         looks_eval_exported=False)
    model = LoadedModel(net, (4,), 2, Path("m.onnx"), "0" * 64, "onnx", onnx=info)
    findings = detect(model)
    assert [(d.name, d.source) for d in findings.dropout] == [("1", "onnx"), ("3", "onnx")]
    missing = dataclasses.replace(info, dropout_nodes=info.dropout_nodes + (("/drop_c", 0.2),))
    findings = detect(LoadedModel(net, (4,), 2, Path("m.onnx"), "0" * 64, "onnx", onnx=missing))
    assert any("'/drop_c'" in w and "not simulated" in w for w in findings.warnings)


class TwoEncoderBottleneck(nn.Module):
    """A VAE-style bottleneck: separate mu and log-variance encoders, sigma = exp(logvar / 2)."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.mu = nn.Linear(d, k)
        self.logvar = nn.Linear(d, k)
        self.dec = nn.Linear(k, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.mu(x)
        return self.dec(mu + torch.randn_like(mu) * torch.exp(0.5 * self.logvar(x)))


def test_onnx_bottleneck_with_separate_mu_and_sigma_encoders(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), TwoEncoderBottleneck(8, 4), nn.Linear(8, 3))
    path = tmp_path / "vae.onnx"
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (in the dev extra)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.train(), (torch.zeros(2, 3, 2, 2),), str(path), dynamo=True, external_data=False,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, verbose=False)
    model = load_model(path)
    findings = detect(model)
    (b,) = findings.bottlenecks
    params = model.trainable()
    # only the first Linear(12, 8) is in front of both encoders
    assert sum(params[n].numel() for n in b.params_before) == 12 * 8 + 8
    assert b.latent_dim == 4 and findings.unrecognized_stochastic == ()
