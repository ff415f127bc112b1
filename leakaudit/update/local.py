"""A FedAvg client's local SGD steps, in one place for the client simulation and the attacks' unrolled
objective, so that what an attack simulates cannot drift from what the client did."""

from __future__ import annotations

from typing import Callable

import torch

from .interface import LocalTraining


def local_sgd(loss_at: Callable[[int, dict[str, torch.Tensor]], torch.Tensor], weights: dict[str, torch.Tensor],
              local: LocalTraining, *, create_graph: bool) -> dict[str, torch.Tensor]:
    """Take ``local.steps`` SGD steps from ``weights``; return the mean step gradient, which is the weight
    delta over ``-local.lr * local.steps`` (summed directly: subtracting the weights would lose digits).

    ``loss_at(k, weights)`` is the client's loss in step ``k`` at the current weights (it sets that step's
    dropout masks). ``create_graph=False`` (the client): each step starts from detached weights.
    ``create_graph=True`` (an attack): the graph runs through every step, so the result can be differentiated
    with respect to the input. A weight the loss does not use keeps a zero gradient."""
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    for k in range(local.steps):
        grads = torch.autograd.grad(loss_at(k, weights), list(weights.values()), allow_unused=True,
                                    create_graph=create_graph)
        stepped: dict[str, torch.Tensor] = {}
        for (n, w), g in zip(weights.items(), grads, strict=True):
            if g is None:
                stepped[n] = w
                continue
            total[n] = total[n] + g
            stepped[n] = w - local.lr * g if create_graph else (w - local.lr * g).detach().requires_grad_(True)
        weights = stepped
    return {n: t / local.steps for n, t in total.items()}
