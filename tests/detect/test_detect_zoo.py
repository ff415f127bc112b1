"""Detection on every built-in architecture (registry-driven) and on hand-written torch modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leakaudit.detect import detect, findings_to_dict
from leakaudit.errors import ModelError
from leakaudit.models import ARCHITECTURES, LoadedModel, MaskableDropout, VariationalBottleneck, create_model

SHAPE = (3, 16, 16)


def wrap(module: nn.Module, shape: tuple[int, ...] = SHAPE, classes: int = 10) -> LoadedModel:
    return LoadedModel(module=module, input_shape=shape, num_classes=classes, path=Path("model.safetensors"),
                       sha256="0" * 64, format="safetensors")


def zoo(name: str, **kw) -> LoadedModel:
    torch.manual_seed(0)
    extra = {"hidden": (32, 32)} if name == "mlp" else {}
    return wrap(create_model(name, num_classes=10, input_shape=SHAPE, latent_dim=16, **extra, **kw))


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_dropout_layer_of_a_zoo_model_is_found_with_its_rate(arch: str) -> None:
    model = zoo(arch, dropout=0.3)
    expected = {n for n, m in model.module.named_modules() if isinstance(m, MaskableDropout)}
    findings = detect(model, probe=False)
    assert {d.name for d in findings.dropout} == expected
    assert all(d.p == pytest.approx(0.3) and d.source == "module" for d in findings.dropout)
    positions = [d.position for d in findings.dropout]
    assert positions == sorted(positions)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_precode_bottleneck_splits_parameters_at_its_encoder(arch: str) -> None:
    model = zoo(arch, precode=True)
    (vb_name,) = [n for n, m in model.module.named_modules() if isinstance(m, VariationalBottleneck)]
    classifier = [n for n, m in model.module.named_modules() if isinstance(m, nn.Linear) and m.out_features == 10][-1]
    trainable = set(model.trainable())
    after = {n for n in trainable if n.startswith(f"{vb_name}.") or n.startswith(f"{classifier}.")}

    (b,) = detect(model, probe=False).bottlenecks
    assert b.name == vb_name and b.latent_dim == 16 and b.source == "module"
    assert set(b.params_after) == after
    assert set(b.params_before) == trainable - after
    assert f"{vb_name}.encoder.weight" in b.params_after  # the encoder's gradient depends on the noise


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_zoo_models_have_no_unexplained_randomness_and_layers_cover_all_parameters(arch: str) -> None:
    model = zoo(arch, dropout=0.2, precode=True)
    findings = detect(model)
    assert findings.unrecognized_stochastic == ()
    assert sum(count for _, _, count in findings.layers) == model.num_trainable()


def test_layers_are_listed_in_forward_order_with_their_parameter_counts() -> None:
    model = zoo("mlp")
    findings = detect(model, probe=False)
    seq = model.module
    assert [name for name, _, _ in findings.layers] == [str(i) for i in range(len(seq))]
    assert findings.layers[1] == ("1", "Linear", 3 * 16 * 16 * 32 + 32)


def test_container_parameters_get_their_own_row() -> None:
    findings = detect(zoo("vit"), probe=False)
    first = findings.layers[0]
    assert first[0] == "<model>" and "own parameters" in first[1]
    assert first[2] == zoo("vit").module.cls_token.numel() + zoo("vit").module.pos_embed.numel()


def test_dropout_with_rate_zero_is_not_reported() -> None:
    model = wrap(nn.Sequential(nn.Flatten(), nn.Linear(768, 10), MaskableDropout(0.0)))
    assert detect(model).dropout == ()


def test_batchnorm_layers_are_listed_with_a_warning() -> None:
    model = zoo("resnet20")
    expected = [n for n, m in model.module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    findings = detect(model, probe=False)
    assert sorted(findings.batchnorm) == sorted(expected)
    assert any("BatchNorm" in w and "train-mode" in w for w in findings.warnings)


def test_detection_leaves_weights_buffers_modes_and_rng_untouched() -> None:
    model = zoo("resnet20", dropout=0.5, precode=True)
    model.module.train()
    model.module.head.eval()  # a mixed state must survive too
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    modes = {n: m.training for n, m in model.module.named_modules()}
    rng = torch.get_rng_state()
    detect(model)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats restored after the probe
    assert modes == {n: m.training for n, m in model.module.named_modules()}
    assert torch.equal(rng, torch.get_rng_state())


class GaussianNoise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.randn_like(x) if self.training else x


class FunctionalDropoutBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.fc(x), 0.3, self.training)


class HandWrittenBottleneck(nn.Module):
    """PRECODE written by a user: no VariationalBottleneck, same structure."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.enc = nn.Linear(d, 2 * k)
        self.dec = nn.Linear(k, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, s = self.enc(x).chunk(2, dim=1)
        return self.dec(mu + torch.randn_like(mu) * F.softplus(s))


def test_probe_reports_a_hand_written_random_layer() -> None:
    model = wrap(nn.Sequential(nn.Flatten(), nn.Linear(12, 8), GaussianNoise(), nn.Linear(8, 3)), (3, 2, 2), 3)
    findings = detect(model)
    assert findings.unrecognized_stochastic == ("2",)
    assert any("unrecognized stochastic" in w and "2" in w for w in findings.warnings)
    assert detect(model, probe=False).unrecognized_stochastic == ()


def test_probe_blames_a_container_with_functional_randomness() -> None:
    model = wrap(nn.Sequential(nn.Linear(4, 8), FunctionalDropoutBlock(), nn.Linear(8, 2)), (4,), 2)
    assert detect(model).unrecognized_stochastic == ("1",)


class NoisyThenFunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.noise = GaussianNoise()
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.dropout(self.noise(self.fc(x)), 0.2, self.training))


def test_probe_finds_a_containers_own_randomness_behind_a_random_sub_module() -> None:
    # The noise already makes every later output differ; the functional dropout is found by its random op.
    findings = detect(wrap(NoisyThenFunctionalDropout(), (4,), 2))
    assert findings.unrecognized_stochastic == ("<model>", "noise")


def test_hand_written_bottleneck_is_recognised_structurally() -> None:
    model = wrap(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), HandWrittenBottleneck(8, 5), nn.Linear(8, 2)), (4,), 2)
    findings = detect(model)
    (b,) = findings.bottlenecks
    assert (b.name, b.latent_dim, b.source) == ("2", 5, "module")
    assert set(b.params_before) == {"0.weight", "0.bias"}
    assert findings.unrecognized_stochastic == ()  # the probe's finding is explained by the bottleneck


def test_torch_dropout_classes_are_found() -> None:
    model = wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout2d(0.2), nn.Flatten(), nn.Dropout(0.4),
                               nn.Linear(4 * 14 * 14, 10)))
    findings = detect(model)
    assert [(d.name, d.p) for d in findings.dropout] == [("1", pytest.approx(0.2)), ("3", pytest.approx(0.4))]
    assert findings.unrecognized_stochastic == ()


def test_wrong_input_shape_is_a_model_error_naming_the_setting() -> None:
    model = wrap(nn.Sequential(nn.Flatten(), nn.Linear(10, 2)), (3, 16, 16), 2)
    says = r"^model\.safetensors: forward pass on input shape 3,16,16 failed.*input_shape C,H,W"
    with pytest.raises(ModelError, match=says):
        detect(model)


def test_findings_serialise_to_json_ready_dicts() -> None:
    import json

    d = findings_to_dict(detect(zoo("mlp", dropout=0.5, precode=True)))
    text = json.dumps(d)
    assert json.loads(text)["dropout"][0]["p"] == 0.5
    assert {"name", "type", "trainable"} == set(d["layers"][0])


def test_parameters_the_forward_never_uses_are_warned_about_and_not_matched() -> None:
    class WithSpare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.spare = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    findings = detect(wrap(WithSpare(), (4,), 2))
    assert any("not used by the forward pass" in w and "spare." in w for w in findings.warnings)
    assert [name for name, _, _ in findings.layers] == ["fc"]


class VaeBottleneck(nn.Module):
    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.mu = nn.Linear(d, k)
        self.logvar = nn.Linear(d, k)
        self.dec = nn.Linear(k, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.mu(x)
        return self.dec(mu + torch.randn_like(mu) * torch.exp(0.5 * self.logvar(x)))


def test_vae_style_bottleneck_with_two_encoders_is_recognised() -> None:
    net = nn.Sequential(nn.Linear(4, 8), VaeBottleneck(8, 3), nn.Linear(8, 2))
    findings = detect(wrap(net, (4,), 2))
    (b,) = findings.bottlenecks
    assert (b.name, b.latent_dim) == ("1", 3) and set(b.params_before) == {"0.weight", "0.bias"}
    assert findings.unrecognized_stochastic == ()
