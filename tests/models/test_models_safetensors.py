"""safetensors + architecture: zoo round trips, metadata, user factories, dropout normalisation."""

from __future__ import annotations

import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from leakaudit.models import MaskableDropout, VariationalBottleneck, create_model, load_model
from leakaudit.models import save_safetensors
from leakaudit.models.zoo import image_architectures

SHAPE = (3, 16, 16)


def _zoo(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=5, input_shape=SHAPE, latent_dim=8, **kw)


@pytest.mark.parametrize("arch", image_architectures())
def test_every_zoo_architecture_round_trips(tmp_path, arch):
    model = _zoo(arch, dropout=0.25, precode=True).eval()
    path = tmp_path / f"{arch}.safetensors"
    save_safetensors(model, path, arch=arch, input_shape=SHAPE, num_classes=5,
                     arch_kwargs={"dropout": 0.25, "precode": True, "latent_dim": 8})
    loaded = load_model(path)  # everything from the file's metadata
    assert (loaded.arch, loaded.input_shape, loaded.num_classes, loaded.format) == (arch, SHAPE, 5, "safetensors")
    assert loaded.num_trainable() == sum(p.numel() for p in model.parameters())
    assert [m.p for m in loaded.module.modules() if isinstance(m, MaskableDropout)] == \
        [m.p for m in model.modules() if isinstance(m, MaskableDropout)]
    assert any(isinstance(m, VariationalBottleneck) for m in loaded.module.modules())
    x = torch.randn(2, *SHAPE)
    loaded.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x))


def test_options_override_metadata_and_classes_come_from_the_weights(tmp_path):
    model = _zoo("cnn").eval()
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))  # plain file, no metadata
    loaded = load_model(path, arch="cnn", input_shape=SHAPE)
    assert loaded.num_classes == 5 and loaded.input_shape == SHAPE
    save_safetensors(model, path, arch="mlp", input_shape=(3, 8, 8), num_classes=5)
    assert load_model(path, arch="cnn", input_shape=SHAPE).arch == "cnn"


def test_user_file_factory_gets_its_dropout_replaced(tmp_path):
    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        from torch import nn

        def build(num_classes=3, hidden=16):
            return nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.ReLU(), nn.Dropout(0.2),
                                 nn.AlphaDropout(0.1), nn.Linear(hidden, num_classes))
    """))
    import importlib.util

    spec = importlib.util.spec_from_file_location("mynet_ref", tmp_path / "mynet.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    model = ref.build(num_classes=3, hidden=8)
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    loaded = load_model(weights, arch=f"{tmp_path / 'mynet.py'}:build", input_shape=(12,),
                        arch_kwargs={"hidden": 8})
    assert loaded.num_classes == 3 and loaded.arch.endswith("mynet.py:build")
    assert isinstance(loaded.module[3], MaskableDropout) and loaded.module[3].p == pytest.approx(0.2)
    assert isinstance(loaded.module[4], nn.AlphaDropout)  # not element-wise inverted dropout: kept
    torch.testing.assert_close(loaded.module.eval()(torch.ones(2, 12)), model.eval()(torch.ones(2, 12)))


def test_package_module_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "acme_models"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny(**kwargs):
            return nn.Sequential(nn.Linear(kwargs.get("d", 6), 4))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.safetensors"
    save_file(nn.Sequential(nn.Linear(6, 4)).state_dict(), str(weights))
    loaded = load_model(weights, arch="acme_models.nets:tiny", input_shape=(6,))
    assert loaded.num_classes == 4 and loaded.num_trainable() == 6 * 4 + 4


def test_declared_dropout_on_a_zoo_model_keeps_parameter_names(tmp_path):
    model = _zoo("mlp")
    path = tmp_path / "m.safetensors"
    save_safetensors(model, path, arch="mlp", input_shape=SHAPE, num_classes=5)
    loaded = load_model(path, dropout={"1": 0.5})
    assert set(loaded.trainable()) == {n for n, _ in model.named_parameters()}
    drops = [m for m in loaded.module.modules() if isinstance(m, MaskableDropout)]
    assert [d.p for d in drops] == [0.5]
    # The hook follows the module through deepcopy (clients copy the global model).
    import copy

    clone = copy.deepcopy(loaded.module).train()
    clone_drop = next(m for m in clone.modules() if isinstance(m, MaskableDropout))
    clone_drop.record = True
    clone(torch.randn(2, *SHAPE))
    assert clone_drop.last_mask is not None and drops[0].last_mask is None


class _FlowerQuickstartNet(nn.Module):
    """Flower's quickstart PyTorch ``Net`` as its tutorial writes it (F.relu, ``view``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_weights_saved_from_flowers_quickstart_net_load_with_arch_flower(tmp_path):
    # A Flower user saves the global model's state_dict; --arch flower must read it without renaming keys.
    torch.manual_seed(0)
    net = _FlowerQuickstartNet().eval()
    path = tmp_path / "global.safetensors"
    save_file(net.state_dict(), str(path))
    loaded = load_model(path, arch="flower", input_shape=(3, 32, 32))
    assert loaded.num_classes == 10 and loaded.num_trainable() == 62006
    x = torch.rand(2, 3, 32, 32)
    loaded.module.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), net(x))
    torch.manual_seed(0)  # the same seed gives the quickstart's initial weights
    fresh = create_model("flower")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values(), strict=True))
