"""Applying a knob value: the defense list, and rebuilding a built-in architecture at another dropout rate."""

from pathlib import Path

import pytest
import torch

from leakaudit.errors import ConfigError
from leakaudit.models import LoadedModel, MaskableDropout, VariationalBottleneck, create_model
from leakaudit.sweep import KNOBS
from leakaudit.sweep.settings import defenses_with, rebuild_with_dropout
from leakaudit.update import parse_defense


def test_varied_defense_is_appended_and_parses():
    out = defenses_with(("clip:norm=1.0",), KNOBS.get("noise.sigma"), 0.01)
    assert out == ("clip:norm=1.0", "noise:sigma=0.01")
    assert parse_defense(out[1]).params == {"sigma": 0.01}


def test_varied_defense_replaces_same_kind_in_place():
    out = defenses_with(("noise:sigma=0.5", "clip:norm=1.0"), KNOBS.get("noise.sigma"), 1e-4)
    assert out == ("noise:sigma=0.0001", "clip:norm=1.0")


def test_same_defense_twice_is_an_error():
    with pytest.raises(ConfigError, match="given twice"):
        defenses_with(("prune:keep=0.5", "prune:keep=0.2"), KNOBS.get("prune.keep"), 0.1)


def loaded(arch="mlp", p=0.0, precode=False, fmt="safetensors", **kw):
    torch.manual_seed(0)
    module = create_model(arch, num_classes=10, input_shape=(3, 16, 16), dropout=p, precode=precode, **kw)
    return LoadedModel(module, (3, 16, 16), 10, Path("model.safetensors"), "0" * 64, fmt, arch=arch)


@pytest.mark.parametrize("arch", ["mlp", "lenet", "cnn", "vit"])
def test_rebuild_keeps_weights_and_sets_rate(arch):
    model = loaded(arch, p=0.0)
    rebuilt = rebuild_with_dropout(model, 0.5)
    rates = [m.p for m in rebuilt.module.modules() if isinstance(m, MaskableDropout)]
    assert rates and all(r == 0.5 for r in rates)
    old, new = model.module.state_dict(), rebuilt.module.state_dict()
    assert old.keys() == new.keys()
    assert all(torch.equal(old[k], new[k]) for k in old)
    # eval mode: dropout is the identity, so the rebuilt model computes the same function
    x = torch.rand(2, 3, 16, 16)
    model.module.eval()
    rebuilt.module.eval()
    assert torch.allclose(model.module(x), rebuilt.module(x), atol=1e-6)
    assert model.module is not rebuilt.module  # the loaded model is left as it was


def test_rebuild_to_zero_removes_dropout_and_keeps_precode():
    model = loaded("mlp", p=0.25, precode=True, latent_dim=32)
    rebuilt = rebuild_with_dropout(model, 0.0)
    assert not any(isinstance(m, MaskableDropout) for m in rebuilt.module.modules())
    bottlenecks = [m for m in rebuilt.module.modules() if isinstance(m, VariationalBottleneck)]
    assert len(bottlenecks) == 1 and bottlenecks[0].latent_dim == 32
    old, new = model.module.state_dict(), rebuilt.module.state_dict()
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


def test_rebuild_refuses_other_architecture_arguments():
    model = loaded("mlp", hidden=(64,))  # the zoo default is (256, 256)
    with pytest.raises(ConfigError, match="does not reproduce the weights"):
        rebuild_with_dropout(model, 0.5)


def test_rebuild_refuses_onnx():
    with pytest.raises(ConfigError, match="only rebuild built-in architectures"):
        rebuild_with_dropout(loaded(fmt="onnx"), 0.5)
