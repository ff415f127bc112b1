"""The gradient-matching engine: batched restarts, restart choice, seeds, non-finite restarts, devices."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from leakaudit.attacks.device import resolve_device
from leakaudit.attacks.engine import Objective, Schedule, activation_shapes, attacker_copy, match_gradients
from leakaudit.errors import ConfigError, ModelError
from leakaudit.models.layers import MaskableDropout
from leakaudit.progress import NullObserver
from leakaudit.update.losses import client_loss

SHAPE = (3, 8, 8)


def _mlp(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(192, 32), nn.ReLU()]
    if dropout:
        layers.append(MaskableDropout(dropout))
    return nn.Sequential(*layers, nn.Linear(32, 5))


def _observed(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    loss = client_loss(model, model(x), y)
    names = [n for n, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))


@pytest.fixture()
def problem():
    model = _mlp()
    x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = torch.tensor([2])
    return model, _observed(model, x, y), y


def _run(model, grads, y, *, restarts=1, seed=0, iterations=20, objective=None, **kw):
    return match_gradients(model, grads, objective or Objective(tv=1e-4),
                           Schedule(iterations=iterations, restarts=restarts, check_every=5, **kw),
                           input_shape=SHAPE, num_samples=1, num_classes=5, labels=y, seed=seed)


def test_batched_restarts_equal_separate_single_runs(problem):
    model, grads, y = problem
    batched = _run(model, grads, y, restarts=3, seed=10)
    singles = [_run(model, grads, y, restarts=1, seed=10 + r) for r in range(3)]
    for r, single in enumerate(singles):
        assert batched.restart_losses[r] == pytest.approx(single.loss, rel=1e-4, abs=1e-6)
    best = batched.best_restart
    assert torch.allclose(batched.x, singles[best].x, atol=1e-4)


def test_returned_restart_has_the_lowest_attack_loss(problem):
    model, grads, y = problem
    res = _run(model, grads, y, restarts=4, seed=3)
    assert len(res.restart_losses) == 4
    assert res.loss == min(res.restart_losses)
    assert res.best_restart == res.restart_losses.index(res.loss)
    # the attacker's choice does not look at ground truth: different seeds give different losses to choose from
    assert len(set(res.restart_losses)) > 1


def test_seed_makes_a_cpu_run_repeatable(problem):
    model, grads, y = problem
    a = _run(model, grads, y, restarts=2, seed=7)
    b = _run(model, grads, y, restarts=2, seed=7)
    c = _run(model, grads, y, restarts=2, seed=100)
    assert torch.equal(a.x, b.x) and a.restart_losses == b.restart_losses
    assert not torch.equal(a.x, c.x)


def test_seed_does_not_change_the_callers_rng(problem):
    model, grads, y = problem
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _run(model, grads, y, seed=5, iterations=3)
    assert torch.equal(torch.rand(3), expected)


def test_the_loss_decreases_and_the_box_holds(problem):
    model, grads, y = problem
    lo, hi = torch.full((1, *SHAPE), -0.5), torch.full((1, *SHAPE), 0.5)
    first = match_gradients(model, grads, Objective(), Schedule(iterations=1), input_shape=SHAPE, num_samples=1,
                            num_classes=5, labels=y, bounds=(lo, hi), seed=0)
    later = match_gradients(model, grads, Objective(), Schedule(iterations=60), input_shape=SHAPE, num_samples=1,
                            num_classes=5, labels=y, bounds=(lo, hi), seed=0)
    assert later.loss < first.loss
    assert later.x.min() >= -0.5 and later.x.max() <= 0.5


class _NanWhenPositive(nn.Module):
    """Outputs NaN for inputs whose first pixel is positive: some restarts start there, some do not."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(192, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        bad = (x.flatten(1)[:, :1] > 0).to(out.dtype)
        return out + torch.log(1 - bad)  # log(0) = -inf -> non-finite loss


def test_a_non_finite_restart_is_dropped_with_a_note_not_returned():
    torch.manual_seed(0)
    model = _NanWhenPositive()
    x = -torch.rand(1, *SHAPE)
    y = torch.tensor([1])
    grads = _observed(model, x, y)
    starts = [float(torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(s)).flatten()[0])
              for s in range(6)]
    assert any(v > 0 for v in starts) and any(v <= 0 for v in starts)  # the seeds cover both cases
    res = match_gradients(model, grads, Objective(), Schedule(iterations=1, restarts=6), input_shape=SHAPE,
                          num_samples=1, num_classes=5, labels=y, seed=0)
    for r, v in enumerate(starts):
        assert math.isnan(res.restart_losses[r]) == (v > 0)
    assert torch.isfinite(res.x).all()
    assert not math.isnan(res.loss)
    dropped = [n for n in res.notes if "dropped" in n]
    assert len(dropped) == sum(v > 0 for v in starts)


def test_every_restart_non_finite_is_an_error_not_zeros():
    torch.manual_seed(0)
    model = _NanWhenPositive()
    y = torch.tensor([1])
    grads = _observed(model, -torch.rand(1, *SHAPE), y)
    lo, hi = torch.full((1, *SHAPE), 0.5), torch.full((1, *SHAPE), 1.0)  # only positive inputs allowed
    with pytest.raises(ModelError, match="non-finite"):
        match_gradients(model, grads, Objective(), Schedule(iterations=3, restarts=2), input_shape=SHAPE,
                        num_samples=1, num_classes=5, labels=y, bounds=(lo, hi), seed=0)


def test_non_finite_observed_gradient_is_rejected(problem):
    model, grads, y = problem
    bad = dict(grads)
    bad["1.weight"] = bad["1.weight"].clone()
    bad["1.weight"][0, 0] = float("nan")
    with pytest.raises(ModelError, match="1.weight holds NaN"):
        _run(model, bad, y)


def test_dia_masks_have_the_activation_shape_and_stay_in_the_unit_interval():
    model = _mlp(dropout=0.5)
    x = torch.rand(2, *SHAPE) * 2 - 1
    y = torch.tensor([0, 3])
    grads = _observed(model, x, y)
    res = match_gradients(model, grads, Objective(mask_layers=("3",), mask_reg=1e-4),
                          Schedule(iterations=10, restarts=2), input_shape=SHAPE, num_samples=2, num_classes=5,
                          labels=y, seed=0)
    mask = res.masks["3"]
    assert mask.shape == (2, 32)
    assert mask.min() >= 0 and mask.max() <= 1
    assert res.x.shape == (2, *SHAPE)


def test_attacker_copy_leaves_the_users_model_untouched():
    model = _mlp(dropout=0.5)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = attacker_copy(model, torch.device("cpu"))
    assert not model.training and copy.training
    assert not copy[3].training  # the attacker's dropout is off
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert activation_shapes(copy, ("3",), (4, *SHAPE), torch.device("cpu")) == {"3": (4, 32)}


@pytest.mark.parametrize("drop", [nn.Dropout(0.5), nn.Dropout1d(0.5), nn.AlphaDropout(0.5)], ids=type)
def test_a_torch_dropout_handed_to_the_engine_is_off_and_restarts_still_fold(problem, drop):
    """A torch model passed to the engine directly keeps its own dropout class (the loaders' MaskableDropout
    swap is skipped): the attacker's copy switches it off as it does a MaskableDropout, so the attack is the
    one on the same model without dropout, and its restarts are folded."""
    model, grads, y = problem
    model = nn.Sequential(*model[:3], nn.Identity(), model[3])  # the same names as with the dropout
    grads = {f"4.{n[2:]}" if n.startswith("3.") else n: g for n, g in grads.items()}
    with_drop = nn.Sequential(*model[:3], drop, model[4])
    copy = attacker_copy(with_drop, torch.device("cpu"))
    x = torch.rand(4, *SHAPE)
    assert copy.training and torch.equal(copy(x), copy(x))
    dropped, plain = (_run(m, grads, y, restarts=3, seed=5) for m in (with_drop, model))
    assert "folded" in _how(dropped)
    assert dropped.restart_losses == pytest.approx(plain.restart_losses, rel=1e-5, abs=1e-7)
    assert torch.allclose(dropped.x, plain.x, atol=1e-6)


def test_batchnorm_model_uses_batch_statistics_without_touching_running_stats():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(256, 5))
    x = torch.rand(2, *SHAPE)
    y = torch.tensor([1, 2])
    grads = _observed(model, x, y)
    running = model[1].running_mean.clone()
    res = match_gradients(model, grads, Objective(), Schedule(iterations=3), input_shape=SHAPE, num_samples=2,
                          num_classes=5, labels=y, seed=0)
    assert torch.isfinite(torch.tensor(res.loss))
    assert torch.equal(model[1].running_mean, running)


def test_soft_labels_when_no_labels_are_given(problem):
    model, grads, _ = problem
    res = match_gradients(model, grads, Objective(distance="l2", soft_labels=True),
                          Schedule(iterations=5, optimizer="lbfgs", lr=1.0), input_shape=SHAPE, num_samples=1,
                          num_classes=5, labels=None, seed=0)
    assert res.labels is not None and res.labels.shape == (1,)


def test_labels_required_without_soft_labels(problem):
    model, grads, _ = problem
    with pytest.raises(ConfigError, match="needs labels"):
        match_gradients(model, grads, Objective(), Schedule(iterations=2), input_shape=SHAPE, num_samples=1,
                        num_classes=5, labels=None)


class _StopAfter(NullObserver):
    def __init__(self, checks: int) -> None:
        self.checks, self.events = checks, []

    def attack_progress(self, event) -> None:
        self.events.append(event)

    def should_stop(self) -> bool:
        return len(self.events) >= self.checks


def test_progress_only_every_check_and_stop_request_ends_early(problem):
    model, grads, y = problem
    obs = _StopAfter(2)
    res = match_gradients(model, grads, Objective(), Schedule(iterations=100, check_every=10), input_shape=SHAPE,
                          num_samples=1, num_classes=5, labels=y, seed=0, observer=obs)
    assert [e.iteration for e in obs.events] == [10, 20]
    assert res.iterations_run == 20 and res.stopped_early


def test_plateau_decay_runs(problem):
    model, grads, y = problem
    res = _run(model, grads, y, iterations=30, decay="plateau", patience=5)
    assert math.isfinite(res.loss)


def test_device_resolver():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="^device tpu: not a device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def _how(res) -> str:
    return next(n for n in res.notes if n.startswith("restarts:"))


def _auto_and_loop(model: nn.Module, mask_layer: str) -> dict:
    """The same DIA-style problem (2 samples, 3 restarts) run with the engine's choice and with the plain loop."""
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2)) * 2 - 1
    y = torch.tensor([0, 3])
    grads = _observed(model, x, y)
    objective = Objective(tv=1e-3, mask_layers=(mask_layer,), mask_reg=1e-2)
    return {b: match_gradients(model, grads, objective, Schedule(iterations=15, restarts=3, batching=b),
                               input_shape=SHAPE, num_samples=2, num_classes=5, labels=y, seed=4)
            for b in ("auto", "loop")}


def test_linear_models_fold_restarts_into_the_batch_and_match_the_per_restart_loop():
    runs = _auto_and_loop(_mlp(dropout=0.5), "3")
    assert "folded" in _how(runs["auto"]) and "loop" in _how(runs["loop"])
    assert runs["auto"].restart_losses == pytest.approx(runs["loop"].restart_losses, rel=1e-3, abs=1e-5)
    assert torch.allclose(runs["auto"].masks["3"], runs["loop"].masks["3"], atol=1e-3)


def _convnet(padding_mode: str = "zeros") -> nn.Module:
    """Conv layers with and without bias, a stride and a dilation, dropout, no BatchNorm."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, bias=False), nn.ReLU(),
                         MaskableDropout(0.5), nn.Flatten(), nn.Linear(96, 5))


def test_conv_models_without_batchnorm_fold_and_match_the_per_restart_loop():
    runs = _auto_and_loop(_convnet(), "4")
    assert "folded" in _how(runs["auto"]) and "loop" in _how(runs["loop"])
    assert runs["auto"].restart_losses == pytest.approx(runs["loop"].restart_losses, rel=1e-3, abs=1e-5)
    assert torch.allclose(runs["auto"].x, runs["loop"].x, atol=1e-3)
    assert torch.allclose(runs["auto"].masks["4"], runs["loop"].masks["4"], atol=1e-3)


def test_a_conv_that_pads_its_input_itself_is_not_folded():
    model = _convnet("reflect")  # reflect padding happens before the convolution: not what the fold computes
    y = torch.tensor([1])
    grads = _observed(model, torch.rand(1, *SHAPE), y)
    res = match_gradients(model, grads, Objective(), Schedule(iterations=2, restarts=2), input_shape=SHAPE,
                          num_samples=1, num_classes=5, labels=y, seed=0)
    assert "not folded" in _how(res) and "Conv2d" in _how(res)


def test_l2_and_soft_labels_fold_like_the_loop(problem):
    model, grads, _ = problem
    runs = [match_gradients(model, grads, Objective(distance="l2", soft_labels=True),
                            Schedule(iterations=4, restarts=2, optimizer="lbfgs", lr=1.0, batching=b),
                            input_shape=SHAPE, num_samples=1, num_classes=5, labels=None, seed=0)
            for b in ("fold", "loop")]
    assert runs[0].restart_losses == pytest.approx(runs[1].restart_losses, rel=1e-3, abs=1e-6)


class _SamplesInteract(nn.Module):
    """Centres every sample on the batch mean: restarts folded into one batch would see each other."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(192, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return self.fc(h - h.mean(0, keepdim=True) + h)


class _FixedBatchReshape(nn.Module):
    """A reshape to a fixed batch of one, as some exported graphs have."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(192, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(1, 192))


@pytest.mark.parametrize("factory", [_SamplesInteract, _FixedBatchReshape])
def test_models_the_fold_rule_cannot_see_fall_back_to_the_loop(factory):
    torch.manual_seed(0)
    model = factory()
    y = torch.tensor([1])
    grads = _observed(model, torch.rand(1, *SHAPE), y)
    res = match_gradients(model, grads, Objective(), Schedule(iterations=3, restarts=3), input_shape=SHAPE,
                          num_samples=1, num_classes=5, labels=y, seed=0)
    assert "not folded" in _how(res)
    with pytest.raises(ConfigError, match="'fold' does not apply"):
        match_gradients(model, grads, Objective(), Schedule(iterations=3, restarts=3, batching="fold"),
                        input_shape=SHAPE, num_samples=1, num_classes=5, labels=y, seed=0)


def _bn_convnet() -> nn.Module:
    """BatchNorm after convolutions and a Linear layer, torchvision's in-place ReLU after it, a depthwise
    convolution (MobileNet's) and a convolution on a 2x2 map (its restarts' terms from the Gram products of its
    patches)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 5))


def test_batchnorm_models_fold_each_restart_on_its_own_batch_statistics_as_separate_runs():
    model = _bn_convnet()
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([1, 4])
    grads = _observed(model, x, y)
    running = model[1].running_mean.clone()

    def run(restarts: int, seed: int, batching: str = "auto"):
        return match_gradients(model, grads, Objective(tv=1e-4), Schedule(iterations=15, restarts=restarts,
                                                                          batching=batching),
                               input_shape=SHAPE, num_samples=2, num_classes=5, labels=y, seed=seed)

    batched = run(3, seed=7)
    assert "folded" in _how(batched)
    singles = [run(1, seed=7 + r, batching="loop") for r in range(3)]
    assert batched.restart_losses == pytest.approx([s.loss for s in singles], rel=1e-3, abs=1e-5)
    assert torch.allclose(batched.x, singles[batched.best_restart].x, atol=1e-3)
    assert torch.equal(model[1].running_mean, running)  # the user's model: untouched
    assert "loop" in _how(run(1, seed=7))  # one restart: nothing to fold, and the loop costs less


def test_batchnorm_models_fold_and_vmap_still_agrees():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(256, 5))
    x = torch.rand(2, *SHAPE)
    y = torch.tensor([1, 2])
    grads = _observed(model, x, y)
    runs = [match_gradients(model, grads, Objective(tv=1e-4), Schedule(iterations=5, restarts=2, batching=b),
                            input_shape=SHAPE, num_samples=2, num_classes=5, labels=y, seed=0)
            for b in ("auto", "vmap")]
    assert "folded" in _how(runs[0])
    assert runs[0].restart_losses == pytest.approx(runs[1].restart_losses, rel=1e-3, abs=1e-6)
