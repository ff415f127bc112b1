"""--client-batchnorm: a client that trains its BatchNorm layers in eval mode (frozen running statistics) sends
another update than one in train mode; the attacks compute the update the same way; batch 1 is allowed; the
report, the reproduce command and the settings record the mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leakaudit.audit import audit
from leakaudit.config import ScanSettings, coerce, setting_args
from leakaudit.data import SampleBatch, normalization
from leakaudit.errors import ConfigError
from leakaudit.models import LoadedModel, create_model
from leakaudit.models.batchnorm import FrozenBatchNorm, client_model, resolve_batch_size
from leakaudit.report.document import build_document
from leakaudit.update import client_update
from leakaudit.update.interface import ThreatModel

SHAPE = (3, 4, 4)  # resnet20's last stage sees 1x1 maps: train mode needs batch 2


def _model() -> LoadedModel:
    torch.manual_seed(0)
    net = create_model("resnet20", num_classes=4, input_shape=SHAPE)
    with torch.no_grad():  # running statistics a trained model would have, not the initial 0 / 1
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return LoadedModel(net, SHAPE, 4, Path("resnet20.safetensors"), "0" * 64, "safetensors", arch="resnet20")


def _batch(n: int) -> SampleBatch:
    pixels = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1))
    return SampleBatch(pixels, torch.arange(n) % 4, pixels, tuple(f"s{i}.png" for i in range(n)), "in memory",
                       normalization("none", channels=3))


def _flat(g: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for v in g.values()])


def test_eval_mode_gives_another_update_and_leaves_the_model_as_it_was():
    model, batch = _model(), _batch(2)
    before = {n: b.clone() for n, b in model.module.named_buffers()}
    train = client_update(model, batch, ThreatModel(batch_size=2), seed=0).gradients
    frozen = client_update(model, batch, ThreatModel(batch_size=2, batchnorm="eval"), seed=0).gradients
    assert set(train) == set(frozen)
    assert not torch.allclose(_flat(train), _flat(frozen))
    # the frozen copy computes exactly what the eval-mode client does, with the same parameter names
    copy = client_model(model, "eval")
    assert any(isinstance(m, FrozenBatchNorm) for m in copy.module.modules())
    same = client_update(copy, batch, ThreatModel(batch_size=2, batchnorm="eval"), seed=0).gradients
    assert torch.allclose(_flat(same), _flat(frozen), atol=1e-6)
    assert all(torch.equal(before[n], b) for n, b in model.module.named_buffers())  # statistics untouched


def test_the_attackers_copy_computes_the_clients_eval_mode_update():
    from leakaudit.attacks.engine import attacker_copy
    from leakaudit.update.losses import client_loss

    model, batch = client_model(_model(), "eval"), _batch(1)
    sent = client_update(model, batch, ThreatModel(batch_size=1, batchnorm="eval"), seed=0).gradients
    copy = attacker_copy(model.module, torch.device("cpu"))
    params = dict(copy.named_parameters())
    names = list(sent)
    for n in names:
        params[n].requires_grad_(True)
    loss = client_loss(copy, copy(batch.x), batch.y, "cross_entropy")
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    assert torch.allclose(torch.cat([g.flatten() for g in grads]), _flat(sent), atol=1e-5)


def test_eval_mode_allows_batch_1_where_train_mode_refuses_it():
    with pytest.raises(ConfigError, match="or give client_batchnorm eval if your clients train"):
        resolve_batch_size(_model(), 1)
    assert resolve_batch_size(_model(), None)[0] == 2
    assert resolve_batch_size(client_model(_model(), "eval"), 1) == (1, "")
    assert resolve_batch_size(client_model(_model(), "eval"), None) == (1, "")


def test_the_setting_is_checked_and_round_trips_through_the_reproduce_command():
    assert coerce("client_batchnorm", "eval") == "eval"
    with pytest.raises(ConfigError, match="client_batchnorm frozen: unknown BatchNorm mode"):
        coerce("client_batchnorm", "frozen")
    assert "--client-batchnorm" not in setting_args(ScanSettings())
    args = setting_args(ScanSettings(client_batchnorm="eval"))
    assert args[args.index("--client-batchnorm") + 1] == "eval"


def test_a_scan_at_batch_1_in_eval_mode_records_the_mode():
    result = audit(_model(), _batch(1), attacks=("ig",), iterations=2, restarts=1, client_batchnorm="eval")
    assert result.threat.batchnorm == "eval" and result.data.count == 1
    doc = build_document(result)
    assert doc["threat_model"]["batchnorm"] == "eval" and doc["settings"]["client_batchnorm"] == "eval"
    assert doc["conditioning"]["verdict"] == "stable" and doc["conditioning"]["layers"] == []
    assert any("eval mode (--client-batchnorm eval)" in w for w in result.findings.warnings)
