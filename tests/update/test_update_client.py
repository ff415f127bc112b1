"""The simulated client: the update a server receives must be the gradient a real client computes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.errors import ConfigError, DataError, UnknownNameError
from leakaudit.models.interface import LoadedModel
from leakaudit.models.layers import VariationalBottleneck
from leakaudit.models.zoo import ARCHITECTURES, create_model
from leakaudit.update import ThreatModel, client_update

SHAPE = (3, 8, 8)


def _loaded(arch: str = "mlp", shape=SHAPE, **kw) -> LoadedModel:
    torch.manual_seed(0)
    module = create_model(arch, num_classes=10, input_shape=shape, **kw)
    return LoadedModel(module, shape, 10, Path("model.safetensors"), "0" * 64, "safetensors", arch=arch)


def _batch(n: int = 3, shape=SHAPE, seed: int = 1) -> SampleBatch:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return SampleBatch(pixels, y, pixels, tuple(f"s{i}" for i in range(n)), "samples/",
                       Normalization("none", (0.0,), (1.0,)))


def test_fedsgd_gradient_equals_hand_computed_gradient_for_the_realised_masks():
    p = 0.5
    model, batch = _loaded("mlp", dropout=p), _batch()
    update = client_update(model, batch, ThreatModel(), seed=3)
    assert set(update.true_dropout_masks) == {"3", "6"}  # the two MaskableDropout layers of the zoo MLP
    m1, m2 = update.true_dropout_masks["3"], update.true_dropout_masks["6"]
    assert set(m1.unique().tolist()) == {0.0, 1.0} and m1.shape == (3, 256)

    # The same network written out by hand with those masks, differentiated by autograd.
    w = {n: q.detach().clone().requires_grad_(True) for n, q in model.trainable().items()}
    h = batch.x.flatten(1)
    h = F.relu(F.linear(h, w["1.weight"], w["1.bias"])) * m1 / (1 - p)
    h = F.relu(F.linear(h, w["4.weight"], w["4.bias"])) * m2 / (1 - p)
    loss = F.cross_entropy(F.linear(h, w["7.weight"], w["7.bias"]), batch.y)
    expected = dict(zip(w, torch.autograd.grad(loss, list(w.values())), strict=True))

    assert set(update.gradients) == set(expected)
    for name, g in expected.items():
        torch.testing.assert_close(update.gradients[name], g, rtol=1e-5, atol=1e-7)


def test_seed_repeats_masks_and_gradient_and_leaves_the_callers_rng_alone():
    model, batch = _loaded("cnn", dropout=0.3), _batch()
    before = torch.get_rng_state()
    a = client_update(model, batch, ThreatModel(), seed=7)
    b = client_update(model, batch, ThreatModel(), seed=7)
    c = client_update(model, batch, ThreatModel(), seed=8)
    assert torch.equal(torch.get_rng_state(), before)
    assert a.true_dropout_masks and a.true_dropout_masks.keys() == b.true_dropout_masks.keys()
    for name in a.true_dropout_masks:
        assert torch.equal(a.true_dropout_masks[name], b.true_dropout_masks[name])
    for name in a.gradients:
        assert torch.equal(a.gradients[name], b.gradients[name])
    assert any(not torch.equal(a.true_dropout_masks[n], c.true_dropout_masks[n]) for n in a.true_dropout_masks)


def test_masks_not_recorded_when_not_asked():
    model, batch = _loaded("mlp", dropout=0.5), _batch()
    assert client_update(model, batch, ThreatModel(), seed=0, record_masks=False).true_dropout_masks == {}
    assert all(not m.record for m in model.module.modules() if hasattr(m, "record"))


def test_model_parameters_buffers_and_modes_are_left_as_found():
    model, batch = _loaded("resnet20", dropout=0.2), _batch()
    model.module.eval()
    model.module.stem.train()  # a user's deliberately mixed modes must survive too
    modes = {n: m.training for n, m in model.module.named_modules()}
    state = copy.deepcopy(model.module.state_dict())
    client_update(model, batch, ThreatModel(protocol="fedavg", local_steps=3, local_lr=0.5), seed=0)
    client_update(model, batch, ThreatModel(), seed=0)
    assert {n: m.training for n, m in model.module.named_modules()} == modes
    for name, value in model.module.state_dict().items():  # includes BatchNorm running statistics
        assert torch.equal(value, state[name]), name
    assert all(q.grad is None for q in model.module.parameters())


def test_fedavg_with_one_step_equals_fedsgd():
    model, batch = _loaded("lenet", dropout=0.25), _batch()
    sgd = client_update(model, batch, ThreatModel(), seed=5)
    avg = client_update(model, batch, ThreatModel(protocol="fedavg", local_steps=1, local_lr=0.3), seed=5)
    for name in sgd.gradients:
        torch.testing.assert_close(avg.gradients[name], sgd.gradients[name])


def test_fedavg_update_is_the_weight_delta_of_local_sgd_over_minus_lr_times_steps():
    model, batch = _loaded("mlp"), _batch()
    lr, steps = 0.2, 4
    update = client_update(model, batch, ThreatModel(protocol="fedavg", local_steps=steps, local_lr=lr))

    client = copy.deepcopy(model.module).train()  # an ordinary torch training loop as the reference
    w0 = {n: q.detach().clone() for n, q in client.named_parameters()}
    opt = torch.optim.SGD(client.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(client(batch.x), batch.y).backward()
        opt.step()
    for name, q in client.named_parameters():
        torch.testing.assert_close(update.gradients[name], (q.detach() - w0[name]) / (-lr * steps),
                                   rtol=1e-4, atol=1e-6)
    assert update.threat.protocol == "fedavg" and update.num_samples == 3


def test_fedavg_records_one_mask_per_local_step():
    model, batch = _loaded("mlp", dropout=0.5), _batch()
    update = client_update(model, batch, ThreatModel(protocol="fedavg", local_steps=3), seed=0)
    assert update.true_dropout_masks["3"].shape == (3, 3, 256)
    assert not torch.equal(update.true_dropout_masks["3"][0], update.true_dropout_masks["3"][1])


def test_precode_loss_includes_beta_times_kl():
    model, batch = _loaded("mlp", precode=True, latent_dim=16), _batch()
    update = client_update(model, batch, ThreatModel(), seed=11)

    def reference(with_kl: bool) -> dict[str, torch.Tensor]:
        module = copy.deepcopy(model.module).train()
        vb = next(m for m in module.modules() if isinstance(m, VariationalBottleneck))
        with torch.random.fork_rng():
            torch.manual_seed(11)  # the same PRECODE noise as the client's
            loss = F.cross_entropy(module(batch.x), batch.y) + (vb.beta * vb.kl if with_kl else 0.0)
        grads = torch.autograd.grad(loss, list(module.parameters()))
        return dict(zip(dict(module.named_parameters()), grads, strict=True))

    with_kl, without = reference(True), reference(False)
    encoder = "7.encoder.weight"
    torch.testing.assert_close(update.gradients[encoder], with_kl[encoder])
    assert not torch.allclose(update.gradients[encoder], without[encoder])


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_architecture_yields_a_finite_gradient_for_every_trainable_weight(arch):
    shape = (3, 16, 16)
    model = _loaded(arch, shape=shape, dropout=0.1)
    update = client_update(model, _batch(2, shape), ThreatModel(), seed=0)
    assert update.gradients.keys() == model.trainable().keys()
    for name, g in update.gradients.items():
        assert g.shape == model.trainable()[name].shape and torch.isfinite(g).all(), name
    assert sum(float(g.abs().sum()) for g in update.gradients.values()) > 0


def test_mse_loss_is_pluggable():
    model, batch = _loaded("mlp"), _batch()
    ce = client_update(model, batch, ThreatModel())
    mse = client_update(model, batch, ThreatModel(loss="mse"))
    assert not torch.allclose(ce.gradients["7.weight"], mse.gradients["7.weight"])


@pytest.mark.parametrize("threat, error, match", [
    (ThreatModel(protocol="fedprox"), ConfigError, r"^protocol fedprox: unknown protocol; use one of fedsgd"),
    (ThreatModel(protocol="fedavg", local_steps=0), ConfigError, r"^local_steps 0: must be at least 1"),
    (ThreatModel(protocol="fedavg", local_lr=-1.0), ConfigError, r"^local_lr -1.0: must be a positive"),
    (ThreatModel(loss="hinge"), UnknownNameError, r"unknown loss 'hinge'.*available: cross_entropy, mse"),
])
def test_bad_threat_settings_are_one_line_config_errors(threat, error, match):
    with pytest.raises(error, match=match):
        client_update(_loaded(), _batch(), threat)


def test_labels_outside_the_models_classes_are_a_data_error():
    batch = _batch()
    bad = SampleBatch(batch.x, torch.tensor([0, 1, 12]), batch.pixels, batch.names, "samples/", batch.normalization)
    with pytest.raises(DataError, match=r"^samples/: labels must lie in 0\.\.9 .*got 0\.\.12"):
        client_update(_loaded(), bad, ThreatModel())


def test_samples_of_the_wrong_shape_are_a_data_error():
    with pytest.raises(DataError, match=r"^samples/: samples have shape \(3, 4, 4\) but the model expects"):
        client_update(_loaded(), _batch(shape=(3, 4, 4)), ThreatModel())
