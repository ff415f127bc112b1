"""The well-informed DIA bound (``dia-informed``) really attacks with the client's true masks.

On ReLU models ``dia-informed`` can score below ``dia`` (docs/attacks.md explains why: an optimisation
property, not a wiring bug). These tests pin the part that must hold regardless: the recorded true masks
reach the attacker's vmapped ``functional_call``, so at the true input the informed objective is ~0 and
with any other masks it is not. The box is pinned to the true input (lower = upper bound), so the engine
evaluates its objective exactly there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from leakaudit.attacks.engine import Objective, Schedule, match_gradients
from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.models.interface import LoadedModel
from leakaudit.models.layers import MaskableDropout
from leakaudit.update import client_update
from leakaudit.update.interface import ThreatModel

SHAPE = (3, 8, 8)


def _relu_mlp() -> nn.Module:
    """Like the zoo MLP: Linear(bias) -> ReLU -> dropout, twice, then the classifier."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), MaskableDropout(0.5),
                         nn.Linear(32, 32), nn.ReLU(), MaskableDropout(0.5), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def case():
    module = _relu_mlp()
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3, 7])
    batch = SampleBatch(x, y, x, ("a", "b"), "random", Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    loaded = LoadedModel(module, SHAPE, 10, Path("model.safetensors"), "0" * 64, "safetensors")
    update = client_update(loaded, batch, ThreatModel(), seed=0)
    return module, update, x, y


def _loss_at_truth(module, update, x, y, masks) -> float:
    res = match_gradients(module, update.gradients, Objective(distance="cosine", fixed_masks=masks),
                          Schedule(iterations=2, check_every=1), input_shape=SHAPE, num_samples=2,
                          num_classes=10, labels=y, bounds=(x, x), seed=0)
    assert torch.equal(res.x, x)  # the pinned box kept the attack at the true input
    return res.loss


def test_true_masks_are_recorded_for_every_dropout_layer(case):
    _, update, _, _ = case
    assert set(update.true_dropout_masks) == {"3", "6"}
    for m in update.true_dropout_masks.values():
        assert m.shape == (2, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
        assert 0 < float(m.mean()) < 1  # a real Bernoulli(0.5) draw, not all kept or all dropped


def test_informed_objective_vanishes_at_the_truth_with_the_true_masks(case):
    module, update, x, y = case
    assert _loss_at_truth(module, update, x, y, update.true_dropout_masks) < 1e-5


@pytest.mark.parametrize("wrong", ["flipped", "all kept", "no masks"])
def test_other_masks_do_not_explain_the_update(case, wrong):
    module, update, x, y = case
    true = update.true_dropout_masks
    masks = {"flipped": {n: 1 - m for n, m in true.items()},
             "all kept": {n: torch.ones_like(m) for n, m in true.items()},
             "no masks": {}}[wrong]
    assert _loss_at_truth(module, update, x, y, masks) > 1e-2
