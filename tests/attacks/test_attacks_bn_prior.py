"""GradInversion's BatchNorm prior: with the BatchNorm buffers in the update (--update-buffers yes) the IG-family
attacks also match each layer's batch mean and variance, recovered by the server in closed form, per restart;
only where the batch is well-conditioned, and the report's attack notes say whether it was used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from leakaudit.attacks import ATTACKS
from leakaudit.attacks.bnstats import RecoveredLayer
from leakaudit.attacks.engine import Objective, _build, _fold_step, _loop_step
from leakaudit.attacks.engine.objective import batch_norm_inputs, batch_norm_term
from leakaudit.attacks.interface import AttackSettings, AttackTarget
from leakaudit.attacks.matching import BN_WEIGHT
from leakaudit.attacks.planner import apply_overrides
from leakaudit.audit import audit
from leakaudit.data import SampleBatch, normalization
from leakaudit.errors import ConfigError
from leakaudit.models import LoadedModel
from leakaudit.progress import NullObserver
from leakaudit.update.losses import client_loss

SHAPE = (3, 8, 8)
N = 4  # 4 x 8 x 8 = 256 values per channel in the first BatchNorm layer: a well-conditioned batch


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 5))


def _x(seed: int = 1) -> torch.Tensor:
    return torch.rand(N, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _true_statistics(net: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each BatchNorm layer's input mean and unbiased variance per channel in one train-mode forward."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    probe = _net()  # a copy: the train-mode forward moves the running statistics
    probe.load_state_dict(net.state_dict())
    def hook(name: str):
        def record(_m: nn.Module, args: tuple) -> None:
            seen.setdefault(name, (args[0].mean((0, 2, 3)), args[0].var((0, 2, 3), unbiased=True)))

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in probe.named_modules() if isinstance(m, nn.BatchNorm2d)]
    probe.train()
    with torch.no_grad():
        probe(x)
    for h in handles:
        h.remove()
    return seen


def _observed(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    probe = _net()
    probe.load_state_dict(net.state_dict())
    probe.train()
    loss = client_loss(probe, probe(x), y)
    names = [n for n, _ in probe.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(probe.parameters())), strict=True))


def _problem(weight: float = 1.0):
    net, x, y = _net(), _x(), torch.arange(N) % 5
    objective = Objective(tv=1e-4, batch_statistics=_true_statistics(net, x), bn_weight=weight)
    pb = _build(net, _observed(net, x, y), objective, (N, *SHAPE), 5, y, "cross_entropy", None,
                torch.device("cpu"))
    return pb, objective, x


def _term(pb, x: torch.Tensor) -> float:
    with torch.no_grad(), batch_norm_inputs(pb) as seen:
        pb.module(x)
    return float(batch_norm_term(pb, 1.0, seen)[0])


def test_the_term_is_zero_at_the_true_samples_statistics_and_positive_elsewhere():
    pb, _, x = _problem()
    assert _term(pb, x) == pytest.approx(0.0, abs=1e-10)
    assert _term(pb, _x(seed=2)) > 1e-3
    assert _term(pb, x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))) > 1e-6


def test_folded_and_looped_restarts_compute_the_same_term_each_with_its_own_batch():
    pb, objective, x = _problem(weight=10.0)
    plain = _build(pb.module, pb.observed, Objective(tv=1e-4), (N, *SHAPE), 5, pb.labels, "cross_entropy", None,
                   torch.device("cpu"))
    restarts = torch.stack([x, _x(seed=2), _x(seed=3)])  # restart 0 holds the true samples
    (g_fold, _, _), fold = _fold_step(pb, objective)(restarts, {}, {})
    (g_loop, _, _), loop = _loop_step(pb, objective)(restarts, {}, {})
    _, without = _loop_step(plain, Objective(tv=1e-4))(restarts, {}, {})
    assert torch.allclose(fold, loop, rtol=1e-4, atol=1e-6)
    assert torch.allclose(g_fold, g_loop, rtol=1e-3, atol=1e-4 * float(g_loop.abs().max()))
    term = loop - without
    # the true batch pays nothing; the others pay their own error, not a mix of the restarts' statistics
    assert float(term[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(term[1]) > 1e-2 and float(term[2]) > 1e-2 and float(term[1]) != pytest.approx(float(term[2]))


def _loaded() -> LoadedModel:
    return LoadedModel(_net(), SHAPE, 5, Path("bn_cnn.safetensors"), "0" * 64, "safetensors", arch="bn_cnn")


def _batch() -> SampleBatch:
    pixels = _x()
    return SampleBatch(pixels, torch.arange(N) % 5, pixels, tuple(f"s{i}.png" for i in range(N)), "in memory",
                       normalization("none", channels=SHAPE[0]))


def _notes(result) -> list[str]:
    return [n for a in result.attacks for n in a.notes if "BatchNorm statistics term" in n]


def test_an_attack_with_buffers_in_the_update_uses_the_term_and_says_so():
    common = dict(attacks=("ig",), iterations=2, restarts=1, seed=0)
    with_buffers = audit(_loaded(), _batch(), update_buffers="yes", **common)
    assert with_buffers.conditioning.verdict == "stable"
    assert with_buffers.batchnorm_statistics is not None and with_buffers.batchnorm_statistics.status == "recovered"
    notes = _notes(with_buffers)
    assert len(notes) == 1 and notes[0].startswith(f"BatchNorm statistics term used: lambda {BN_WEIGHT:g} x")
    assert "2 layer(s)" in notes[0]
    assert _notes(audit(_loaded(), _batch(), **common)) == []


def _target(**kw) -> AttackTarget:
    net, x, y = _net(), _x(), torch.arange(N) % 5
    stats = tuple(RecoveredLayer(n, 0, m.double(), v.double()) for n, (m, v) in _true_statistics(net, x).items())
    return AttackTarget(module=net, gradients=_observed(net, x, y), input_shape=SHAPE, num_classes=5, labels=y,
                        num_samples=N, **{"batch_statistics": stats, **kw})


def _ig(target: AttackTarget, **extra):
    settings = AttackSettings(iterations=6, restarts=1, lr=0.1, tv=1e-4, extra=extra)
    return ATTACKS.get("ig").run(target, settings, device=torch.device("cpu"), seed=0, observer=NullObserver())


def test_the_term_changes_the_reconstruction_only_where_it_is_used():
    plain = _ig(_target(batch_statistics=()))
    assert not any("BatchNorm statistics term" in n for n in plain.notes)
    assert torch.equal(_ig(_target(), bn_weight=0.0).x, plain.x)  # off: the run as without buffers, bit for bit
    ill = _ig(_target(ill_conditioned=True))
    assert torch.equal(ill.x, plain.x)
    assert any(n.startswith("BatchNorm statistics term not used") and "ill-conditioned" in n for n in ill.notes)
    used = _ig(_target())
    assert not torch.equal(used.x, plain.x)


def test_bn_weight_is_an_attack_setting_checked_like_the_others():
    base = AttackSettings(iterations=6, restarts=1, lr=0.1, tv=1e-4)
    assert apply_overrides("ig", base, {"ig": {"bn_weight": 100}}).extra["bn_weight"] == 100.0
    with pytest.raises(ConfigError, match="bn_weight=-1.0 .* must be >= 0"):
        apply_overrides("ig", base, {"bn_weight": -1})
