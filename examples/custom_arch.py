"""A user-written architecture with a random layer leakaudit does not know: for ``--arch`` and the probe.

``GaussianNoise`` adds fresh noise to an activation in train mode -- randomness that is neither dropout nor a
PRECODE bottleneck. Detection's structural rules do not recognise it; its train-mode probe does, and
``leakaudit inspect`` reports it as an unrecognized stochastic layer:

    leakaudit inspect examples/models/noisy_mlp.safetensors --arch examples/custom_arch.py:noisy_mlp
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianNoise(nn.Module):
    """x + N(0, sigma^2) in train mode, identity in eval mode."""

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.sigma == 0:
            return x
        return x + self.sigma * torch.randn_like(x)


def noisy_mlp(num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), hidden: int = 64,
              sigma: float = 0.1) -> nn.Module:
    """Flatten -> Linear -> ReLU -> GaussianNoise -> Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        GaussianNoise(sigma),
        nn.Linear(hidden, num_classes),
    )
