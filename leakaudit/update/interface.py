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
class LocalTraining:
    """What a FedAvg client does before it sends its weight delta, as ``update.client`` simulates it, so an
    attack can simulate the same client: ``steps`` plain SGD steps with learning rate ``lr``, every step on
    the whole batch (no mini-batches, no shuffling), every forward pass drawing fresh dropout masks and PRECODE
    noise. The update sent is ``(w_steps - w_0) / (-lr * steps)``: the mean of the step gradients."""

    steps: int = 1
    lr: float = 0.1

    def __str__(self) -> str:
        return f"{self.steps} local SGD step(s) at lr {self.lr:g} on the whole batch"


@dataclass(frozen=True)
class ThreatModel:
    protocol: str = "fedsgd"  # "fedsgd" (gradient) or "fedavg" (weight delta after local steps)
    local_steps: int = 1
    local_lr: float = 0.1
    batch_size: int = 1
    labels_known: bool = False
    defenses: tuple[DefenseSpec, ...] = ()
    loss: str = "cross_entropy"  # name in leakaudit.update.losses.LOSSES (what the client minimises)
    # The client's BatchNorm layers: "train" (the batch's own statistics, torch's training default) or "eval"
    # (frozen running statistics; --client-batchnorm eval)
    batchnorm: str = "train"
    # Whether the update carries the BatchNorm running statistics (--update-buffers yes): FedAvg frameworks that
    # send the whole state_dict (Flower's default) do, and the server then recovers each layer's batch statistics
    buffers: bool = False

    def local_training(self) -> LocalTraining | None:
        """The client's local steps under FedAvg; None under FedSGD (one gradient, no step taken)."""
        if self.protocol != "fedavg":
            return None
        return LocalTraining(steps=self.local_steps, lr=self.local_lr)


@dataclass(frozen=True)
class ClientUpdate:
    """The observed update. ``gradients`` maps trainable parameter name -> tensor; for FedAvg it holds the
    weight delta divided by (-local_lr * local_steps), i.e. an averaged gradient, so attacks treat both
    protocols alike. For FedAvg with several local steps that is the *mean* of the per-step gradients, each
    taken at a different point of the trajectory: an attack that matches it against one gradient at the
    initial weights is an approximation; the optimisation attacks unroll the local steps instead
    (``LocalTraining``, Geiping et al. 2020, section 5).

    ``true_dropout_masks`` maps a ``MaskableDropout`` module name -> the realised 0/1 mask (shape of that
    layer's activation). For FedAvg with ``local_steps > 1`` the masks of all steps are stacked along a
    new leading step dimension: (local_steps, *activation shape)."""

    gradients: dict[str, torch.Tensor]
    threat: ThreatModel
    num_samples: int
    # Ground truth the server never sees: kept for the well-informed reference attack (dia-informed) and for tests only.
    true_dropout_masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    # With ``threat.buffers``: the BatchNorm buffers the client sends after training (running_mean, running_var,
    # num_batches_tracked by their state_dict names), what the server sees besides ``gradients``.
    buffers: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    # Ground truth for scoring that recovery only (never for an attack): per train-mode BatchNorm layer its input's
    # batch statistics in the first local step (``update.client.BatchStatistics``).
    true_batch_statistics: dict[str, "BatchStatistics"] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class BatchStatistics:
    """What a train-mode BatchNorm layer computed from its input in the client's first forward pass: the batch
    mean and the unbiased variance per channel (what torch folds into running_var), the values per channel
    ``n`` (N*H*W), and, where ``n`` is 2, the two values themselves, shape (2, C) in batch order."""

    mean: torch.Tensor
    var: torch.Tensor
    n: int
    values: torch.Tensor | None = None
