"""One restart's objective: the client's gradient at the candidate (one gradient, or the unrolled local steps),
its distance to the observed update, and the priors (TV, the masks' regulariser, the BatchNorm statistics term)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from ...update.local import local_sgd
from ...update.losses import client_loss
from .problem import Objective, _Problem


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV as in IG/DIA: mean absolute difference of neighbouring pixels (images only)."""
    if x.dim() < 4:
        return x.new_zeros(())
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def batch_norm_term(pb: _Problem, weight: float, inputs: Mapping[str, torch.Tensor],
                    r_count: int = 1) -> torch.Tensor:
    """GradInversion's BatchNorm prior, per restart (shape ``(R,)``): ``weight`` x the sum over the layers in
    ``pb.batch_statistics`` of the mean squared error of the candidate batch's per-channel input mean and unbiased
    variance (what train-mode BatchNorm folds into its running statistics) against the recovered ones. ``inputs``:
    each layer's input, ``(R*N, C, ...)``; each restart's N samples are its own batch, as the client's were."""
    total = None
    for name, (mean, var) in pb.batch_statistics.items():
        x = inputs[name]
        per = x.reshape(r_count, -1, x.shape[1], x[0, 0].numel()).transpose(1, 2).reshape(r_count, x.shape[1], -1)
        err = ((per.mean(2) - mean) ** 2).mean(1) + ((per.var(2, unbiased=True) - var) ** 2).mean(1)
        total = err if total is None else total + err
    assert total is not None
    return weight * total


@contextlib.contextmanager
def batch_norm_inputs(pb: _Problem) -> Iterator[dict[str, torch.Tensor]]:
    """The inputs of the BatchNorm prior's layers in the forward passes inside the block (forward pre-hooks,
    removed after it; each layer's first call only: unrolled local steps forward again at other weights, and the
    running statistics the server solved came from the first pass)."""
    inputs: dict[str, torch.Tensor] = {}
    named = dict(pb.module.named_modules())

    def hook(name: str) -> Callable:
        def record(_m: torch.nn.Module, args: tuple) -> None:
            inputs.setdefault(name, args[0])

        return record

    handles = [named[n].register_forward_pre_hook(hook(n)) for n in pb.batch_statistics]
    try:
        yield inputs
    finally:
        for h in handles:
            h.remove()


def _penalised(pb: _Problem, objective: Objective, g: Mapping[str, torch.Tensor], x: torch.Tensor,
               masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One restart's objective from its model gradient ``g``: the distance to the observed update plus the
    TV prior and the masks' regulariser."""
    # Dot products per tensor: elementwise products of every layer's gradient (and their backward) were a third
    # of an IG iteration on a small CNN, and concatenating the gradients into one vector instead cost a copy of
    # all of them per iteration, in the forward and again in the backward (resnet18: 0.6x the plain loop).
    pairs = [(g[n].reshape(-1), o.reshape(-1)) for n, o in pb.observed.items()]  # views, no copies
    if objective.distance == "cosine":
        dot = torch.stack([torch.dot(a, b) for a, b in pairs]).sum()
        gnorm = torch.sqrt(torch.stack([torch.dot(a, a) for a, _ in pairs]).sum())
        total = 1.0 - dot / (gnorm * pb.observed_norm + 1e-8)
    else:
        total = torch.stack([torch.dot(d, d) for d in (a - b for a, b in pairs)]).sum()
    if objective.tv:
        total = total + objective.tv * total_variation(x)
    mask_p = {mv.layer: mv.p for mv in pb.masks}
    for n, m in masks.items():
        total = total + objective.mask_reg * ((1.0 - m.mean()) - mask_p[n]).abs()
    return total


def _objective_fn(pb: _Problem, objective: Objective) -> Callable:
    """The per-restart objective ``f(x, y_logits, masks) -> (loss, loss)``, differentiable with torch.func."""
    fixed = {f"{n}.mask": m for n, m in objective.fixed_masks.items()}

    def f(x: torch.Tensor, y_logits: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        state = {**pb.constants, **fixed, **{f"{n}.mask": m for n, m in masks.items()}}
        targets = pb.labels if pb.labels is not None else F.softmax(y_logits["y"], dim=-1)

        def client(params: dict[str, torch.Tensor]) -> torch.Tensor:
            out = functional_call(pb.module, {**state, **params}, (x,), strict=False)
            return client_loss(pb.module, out, targets, pb.loss)

        total = _penalised(pb, objective, grad(client)(pb.params), x, masks)
        return total, total

    return f


def _client_gradient(pb: _Problem, objective: Objective) -> Callable:
    """``(x, targets, masks) -> {matched name: gradient}`` for one restart, as the client computed its update,
    with the graph kept for the second backward. ``masks`` are the restart's own (DIA), set on the
    ``MaskableDropout`` modules (each with a leading step dimension when unrolled).

    FedSGD (``pb.local`` None): one gradient at the model's weights. FedAvg with K > 1 local steps (Geiping et
    al. 2020, section 5): K differentiable SGD steps from those weights (``update.local.local_sgd``, the
    client's own code, with ``create_graph=True``), every trained parameter stepped even when only some are
    matched (precode-aware), step k with step k's masks; the mean step gradient, i.e. the weight delta over
    ``-lr * K``, is what is compared with the observed update, which is scaled the same way."""
    module, names = pb.module, list(pb.params)
    own = dict(module.named_parameters())
    named = dict(module.named_modules())
    if pb.local is None:
        params = [own[n] for n in names]

        def one_gradient(x: torch.Tensor, targets: torch.Tensor, masks: dict[str, torch.Tensor]):
            for n, v in masks.items():
                named[n].mask = v
            loss = client_loss(module, module(x), targets, pb.loss)
            return dict(zip(names, torch.autograd.grad(loss, params, create_graph=True), strict=True))

        return one_gradient
    local = pb.local
    start: dict[str, torch.Tensor] = {n: own[n] for n in pb.trained}

    def unrolled(x: torch.Tensor, targets: torch.Tensor, masks: dict[str, torch.Tensor]):
        def loss_at(k: int, weights: dict[str, torch.Tensor]) -> torch.Tensor:
            for n, v in masks.items():
                named[n].mask = v[k]
            for n, fm in objective.fixed_masks.items():
                named[n].mask = fm[k].to(x.device)
            out = functional_call(module, weights, (x,), strict=False)
            return client_loss(module, out, targets, pb.loss)

        mean = local_sgd(loss_at, start, local, create_graph=True)
        return {n: mean[n] for n in names}

    return unrolled


def _check_twice_differentiable(total: torch.Tensor) -> None:
    """Plain autograd does not fail on a function marked ``once_differentiable`` in a double backward: its
    second derivative would silently be left out. Its graph node says so; fail as ``vmap`` did."""
    seen: set = set()
    stack = [total.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in ("Error", "DelayedError"):  # once_differentiable's node
            raise RuntimeError("the model has a function torch cannot differentiate twice (an autograd.Function "
                               "marked once_differentiable); gradient matching needs a double backward")
        stack.extend(fn for fn, _ in node.next_functions)
