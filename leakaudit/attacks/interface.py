"""The contract between the planner, the attacks and scoring.

An attack sees only what the threat model exposes (the observed update, the model, the input shape,
and labels only when the threat model says they are known) -- never the true samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from ..progress import Observer


@dataclass(frozen=True)
class AttackSettings:
    iterations: int
    restarts: int = 1
    lr: float = 0.1
    tv: float = 1e-4
    extra: dict[str, Any] = field(default_factory=dict)  # attack-specific (e.g. mask_reg for DIA)


@dataclass(frozen=True)
class Reconstruction:
    attack: str
    x: torch.Tensor  # (N, *input_shape) in model space, best restart, detached, on CPU
    labels: torch.Tensor | None  # labels the attack used or recovered
    attack_loss: float  # the attack's own objective of the returned restart (what it chose by)
    settings: AttackSettings
    seconds: float
    iterations_run: int
    stopped_early: bool = False  # True when interrupted or converged
    notes: tuple[str, ...] = ()
