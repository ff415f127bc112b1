"""The client's training objective, pluggable by name.

A loss maps ``(outputs, targets)`` to the mean loss over the batch. ``client_loss`` adds what the model
itself contributes (the PRECODE KL term of every ``VariationalBottleneck``), so the simulated client and
an attacker that re-computes gradients use exactly the same objective.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import VariationalBottleneck
from ..registry import Registry

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Loss] = Registry("loss")


@LOSSES.register("cross_entropy")
def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Classification: ``targets`` are class indices (N,) or soft labels / probabilities (N, C)."""
    return F.cross_entropy(outputs, targets)


@LOSSES.register("mse")
def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Regression: ``targets`` have the outputs' shape; class indices are one-hot encoded first."""
    if targets.dtype in (torch.int64, torch.int32) and outputs.dim() == 2 and targets.dim() == 1:
        targets = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    return F.mse_loss(outputs, targets.to(outputs.dtype))


@LOSSES.register("next_token")
def next_token(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-word language modelling: ``outputs`` (N, T, vocab) logits, ``targets`` (N, T) the next token's id at
    each position, -100 where there is none (padding, the last position). The mean cross-entropy over the
    positions that have a target (``models.text.next_token_targets``). Soft targets (N, T, vocab) are accepted
    too, with a weight per position in their sum (an attack's relaxation: 0 for a position it takes as padding)."""
    if targets.dim() == 3:
        weight = targets.sum(-1)
        per = -(targets * torch.log_softmax(outputs, dim=-1)).sum(-1)
        return per.sum() / weight.sum().clamp_min(1e-6)
    return F.cross_entropy(outputs.transpose(1, 2), targets, ignore_index=-100)


def model_regularizer(module: nn.Module) -> torch.Tensor | float:
    """beta * KL of every PRECODE bottleneck, from its last forward pass (0 when the model has none)."""
    total: torch.Tensor | float = 0.0
    for m in module.modules():
        if isinstance(m, VariationalBottleneck) and m.kl is not None:
            total = total + m.beta * m.kl
    return total


def client_loss(module: nn.Module, outputs: torch.Tensor, targets: torch.Tensor,
                loss: str = "cross_entropy") -> torch.Tensor:
    """The loss a client differentiates: ``LOSSES[loss](outputs, targets)`` + the model's regularizers.
    Call it right after the forward pass that produced ``outputs`` (the KL term is read from the modules)."""
    return LOSSES.get(loss)(outputs, targets) + model_regularizer(module)
