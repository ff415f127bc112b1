"""The server's closed form on BatchNorm running statistics sent with an update.

FedAvg frameworks that send the client's whole ``state_dict`` (Flower's default) send each BatchNorm layer's
``running_mean`` and ``running_var`` after local training. In train mode torch updates them once per forward
pass with momentum ``m``::

    running_mean <- (1 - m) * running_mean + m * batch_mean
    running_var  <- (1 - m) * running_var  + m * batch_var_unbiased      (unbiased: / (n - 1), n = N*H*W)

The old values are the global model's, which the server sent, so after one forward pass it solves for the batch
statistics of every layer exactly (up to float rounding). Where a layer sees exactly two values per channel
(``n == 2``: batch 2 at a 1x1 map, e.g. torchvision resnet18's last stage at 32x32) the mean and the biased
variance give the two values themselves: ``mean +- sqrt(var_biased)``, i.e. each sample's pre-BatchNorm
activation in that channel, up to which sample holds which (a swap per channel). No optimisation, milliseconds.

This module sees only what a server sees: the model (architecture and the global weights and buffers), the
buffers received, the batch size and the number of local forward passes. Scoring against the truth happens
elsewhere (``update.buffers``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class RecoveredLayer:
    """One BatchNorm layer's batch statistics as the server recovers them (float64, per channel)."""

    name: str
    n: int  # values per channel the layer normalised (N*H*W of its input)
    mean: torch.Tensor
    var: torch.Tensor  # unbiased, as torch folds it into running_var
    values: torch.Tensor | None = None  # (2, C) where n == 2: mean -+ sqrt(biased var), lower value first


def recover(module: nn.Module, old: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor], num_samples: int,
            input_shape: tuple[int, ...]) -> list[RecoveredLayer]:
    """Every BatchNorm layer whose running statistics changed from ``old`` (the global model's buffers) to ``new``
    (the client's), after one train-mode forward pass on ``num_samples`` inputs of ``input_shape``. A layer whose
    buffers did not change (frozen, eval mode) or are missing is left out."""
    counts = values_per_channel(module, num_samples, input_shape)
    out = []
    for name, layer in module.named_modules():
        if not isinstance(layer, _BatchNorm):
            continue
        keys = [f"{name}.running_mean" if name else "running_mean", f"{name}.running_var" if name else "running_var"]
        if any(k not in old or k not in new for k in keys):
            continue
        mean_old, var_old = (old[k].detach().double() for k in keys)
        mean_new, var_new = (new[k].detach().double().to(mean_old.device) for k in keys)
        if torch.equal(mean_old, mean_new) and torch.equal(var_old, var_new):
            continue
        m = _momentum(layer, name, new)
        if m is None or name not in counts:
            continue
        mean = (mean_new - (1 - m) * mean_old) / m
        var = (var_new - (1 - m) * var_old) / m
        n = counts[name]
        values = None
        if n == 2:  # biased variance = unbiased * (n - 1) / n
            spread = (var.clamp_min(0) / 2).sqrt()
            values = torch.stack([mean - spread, mean + spread])
        out.append(RecoveredLayer(name, n, mean, var, values))
    return out


def _momentum(layer: _BatchNorm, name: str, new: Mapping[str, torch.Tensor]) -> float | None:
    """The factor of the batch statistics in this update: ``momentum``, or for a cumulative average
    (``momentum=None``) 1 / num_batches_tracked after the step."""
    if layer.momentum is not None:
        return float(layer.momentum) if layer.momentum > 0 else None
    tracked = new.get(f"{name}.num_batches_tracked" if name else "num_batches_tracked")
    if tracked is None or int(tracked) < 1:
        return None
    return 1.0 / int(tracked)


def values_per_channel(module: nn.Module, num_samples: int, input_shape: tuple[int, ...]) -> dict[str, int]:
    """N*H*W of every BatchNorm layer's input at ``num_samples`` inputs: one quiet eval-mode forward of zeros
    (the server knows the architecture and the input shape); modes and buffers left as they were."""
    layers: dict[nn.Module, str] = {m: n for n, m in module.named_modules() if isinstance(m, _BatchNorm)}
    seen: dict[str, int] = {}

    def record(layer: nn.Module, inputs: tuple) -> None:
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[1]:
            seen.setdefault(layers[layer], x.numel() // x.shape[1])

    modes = [(m, m.training) for m in module.modules()]
    handles = [m.register_forward_pre_hook(record) for m in layers]
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module(torch.zeros(num_samples, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return seen
