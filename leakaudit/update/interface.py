"""What the server receives from one client, and what only the simulation knows."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DefenseSpec:
    name: str  # registry name: "noise", "clip", "prune", "mask", "ppp"
    params: dict[str, float]

    def __str__(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}:{args}" if args else self.name


@dataclass(frozen=True)
class ThreatModel:
    protocol: str = "fedsgd"  # "fedsgd" (gradient) or "fedavg" (weight delta after local steps)
    local_steps: int = 1
    local_lr: float = 0.1
    batch_size: int = 1
    labels_known: bool = False
    defenses: tuple[DefenseSpec, ...] = ()
    loss: str = "cross_entropy"  # name in leakaudit.update.losses.LOSSES (what the client minimises)


@dataclass(frozen=True)
class ClientUpdate:
    """The observed update. ``gradients`` maps trainable parameter name -> tensor; for FedAvg it holds the
    weight delta divided by (-local_lr * local_steps), i.e. an averaged gradient, so attacks treat both
    protocols alike. For FedAvg with several local steps that is the *mean* of the per-step gradients, each
    taken at a different point of the trajectory: an attack that matches it against one gradient at the
    initial weights is an approximation (breaching unrolls the local steps instead).

    ``true_dropout_masks`` maps a ``MaskableDropout`` module name -> the realised 0/1 mask (shape of that
    layer's activation). For FedAvg with ``local_steps > 1`` the masks of all steps are stacked along a
    new leading step dimension: (local_steps, *activation shape)."""

    gradients: dict[str, torch.Tensor]
    threat: ThreatModel
    num_samples: int
    # Ground truth the server never sees: kept for the well-informed reference attack (dia-informed) and for tests only.
    true_dropout_masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
