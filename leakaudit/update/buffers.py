"""What BatchNorm running statistics sent with an update reveal, measured (``--update-buffers yes``).

The server's closed form (``attacks.bnstats.recover``) runs on what a server sees: the global model's buffers
(``old``, the model as the scan loaded it), the buffers the client sent, the batch size and the input shape. This
module scores it against the client's true batch statistics (``ClientUpdate.true_batch_statistics``): the errors in
the report are measured, not assumed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping

import torch

from ..result import BufferLeak
from .interface import ClientUpdate

if TYPE_CHECKING:
    from ..attacks.bnstats import RecoveredLayer


def buffer_leak(module: torch.nn.Module, old: Mapping[str, torch.Tensor], update: ClientUpdate,
                input_shape: tuple[int, ...]) -> BufferLeak | None:
    """The finding for ``update`` (None when it carries no buffers: ``--update-buffers no``). ``old``: the global
    model's buffers, as the server sent them."""
    return recovered_statistics(module, old, update, input_shape)[0]


def recovered_statistics(module: torch.nn.Module, old: Mapping[str, torch.Tensor], update: ClientUpdate,
                         input_shape: tuple[int, ...]) -> tuple[BufferLeak | None, tuple[RecoveredLayer, ...]]:
    """The finding (``buffer_leak``) and what the server's closed form recovered, which the attacks may use (empty
    unless the finding is "recovered")."""
    threat = update.threat
    if not threat.buffers:
        return None, ()
    size = update.num_samples
    if threat.batchnorm == "eval":
        return BufferLeak("unchanged", size), ()
    local = threat.local_training()
    if local is not None and local.steps > 1:
        return BufferLeak("not_recovered", size, reason=(
            f"{local.steps} local steps fold {local.steps} forward passes, each at other weights, into the running "
            "statistics; the closed form needs one (--local-steps 1)")), ()
    from ..attacks.bnstats import recover

    started = time.perf_counter()
    try:
        recovered = recover(module, old, update.buffers, size, tuple(input_shape))
    except (RuntimeError, ValueError) as e:  # a diagnostic must not cost the scan its verdict
        return BufferLeak("not_recovered", size,
                          reason=f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"), ()
    seconds = time.perf_counter() - started
    layers = []
    for r in recovered:
        truth = update.true_batch_statistics.get(r.name)
        if truth is None or truth.n != r.n:
            continue
        activation = None
        if r.values is not None and truth.values is not None:
            activation = swap_error(r.values, truth.values.to(r.values.device))
        layers.append({"name": r.name, "values_per_channel": r.n,
                       "mean_error": relative(r.mean, truth.mean.to(r.mean.device)),
                       "var_error": relative(r.var, truth.var.to(r.var.device)), "activation_error": activation})
    return BufferLeak("recovered", size, layers=tuple(layers), seconds=seconds), tuple(recovered)


def relative(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """||estimate - truth|| / ||truth|| (the absolute error where the truth is zero)."""
    error = float((estimate.double() - truth.double()).norm())
    scale = float(truth.double().norm())
    return error / scale if scale > 0 else error


def swap_error(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """The relative error of two values per channel (shape (2, C)), each channel's pair in its better order:
    the statistics do not say which sample holds which value."""
    est, true = estimate.double(), truth.double()
    direct = (est - true).pow(2).sum(0)
    swapped = (est.flip(0) - true).pow(2).sum(0)
    error = float(torch.minimum(direct, swapped).sum().sqrt())
    scale = float(true.norm())
    return error / scale if scale > 0 else error
