"""The gradient-matching engine every optimisation attack (DLG, IG, DIA, PRECODE-aware) shares.

One attack = find inputs (and, depending on the attack, soft labels and continuous dropout masks) whose
gradient, computed the way the client computes it, matches the observed update. Each restart's objective
contains the model gradient and is differentiated again (a double backward). The restarts are computed
folded into one batch where the matched layers are all ``nn.Linear`` / ``nn.Conv2d`` (``_fold_step``), else one after
another (``_loop_step``); ``_choose_step`` says why, ``torch.func.vmap`` remains as an option.
The optimiser (Adam with per-restart learning rates, or L-BFGS) works on the stacked ``(R, ...)`` tensors.
The host reads losses only every ``check_every`` iterations (progress, stop requests, plateau decay), so a
GPU run is not synchronised on every step.

Choices that follow the reference code of the DIA paper (dAI-SY-Group/DropoutInversionAttack):
- the attacker's copy of the model runs with dropout switched off (``attacker_train_mode: false`` there):
  plain attacks do not know the client's masks, and DIA substitutes its own continuous masks;
- the image is initialised ``randn`` in model space and clipped to the valid box after every step;
- Adam updates the image with the sign of its gradient, the masks with their raw gradient.
BatchNorm layers use train-mode batch statistics (as the client did) without running-stat updates; PRECODE
bottlenecks and any other random module sample fresh noise per restart and step (the attacker cannot know
the client's draw).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

from ..errors import ConfigError, ModelError
from ..models.differentiable import fast_double_backward, twice_differentiable
from ..models.layers import MaskableDropout
from ..progress import AttackProgress, NullObserver, Observer
from ..update.interface import LocalTraining
from ..update.local import local_sgd
from ..update.losses import client_loss

DISTANCES = ("cosine", "l2")


@dataclass(frozen=True)
class MaskVariable:
    """A continuous dropout mask the attack optimises for one ``MaskableDropout`` layer."""

    layer: str  # module path
    p: float
    shape: tuple[int, ...]  # the layer's activation shape, batch dimension included


@dataclass(frozen=True)
class Objective:
    """What is matched and how: the attack-specific part of a gradient-matching problem."""

    distance: str = "cosine"  # "cosine": 1 - cos over all matched layers jointly (IG); "l2": squared L2 (DLG)
    match: tuple[str, ...] | None = None  # parameter names whose gradients are matched (None: all observed)
    tv: float = 0.0
    mask_layers: tuple[str, ...] = ()  # MaskableDropout layers whose masks are optimised (DIA)
    mask_reg: float = 0.0  # lambda of |(1 - mean(m)) - p| per optimised mask
    fixed_masks: Mapping[str, torch.Tensor] = field(default_factory=dict)  # known masks (well-informed)
    soft_labels: bool = False  # optimise label logits jointly (DLG without known labels)


@dataclass(frozen=True)
class Schedule:
    iterations: int
    restarts: int = 1
    lr: float = 0.1
    optimizer: str = "adam"  # "adam" (signed image gradient) or "lbfgs"
    decay: str = "step"  # "step": x0.1 at 3/8, 5/8, 7/8; "plateau": x0.1 after `patience` stalled its; "none"
    patience: int = 800
    check_every: int = 25
    tol: float = 0.0  # stop once every live restart's objective is below this
    batching: str = "auto"  # how restarts are computed: "auto", "loop" or "vmap" (see ``_batching``)
    # The attack's share of the scan's time (``attacks.clock``): Adam's iterations are fitted to it from the cost
    # of the first ones, the step decay kept in proportion. None: run every iteration.
    seconds: float | None = None


@dataclass(frozen=True)
class EngineResult:
    x: torch.Tensor  # (N, *input_shape), best restart, CPU
    labels: torch.Tensor | None  # (N,) the labels used, or argmax of the optimised soft labels
    loss: float
    restart_losses: tuple[float, ...]
    best_restart: int
    iterations_run: int
    stopped_early: bool
    notes: tuple[str, ...]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # optimised masks of the best restart


@dataclass
class _Problem:
    module: nn.Module
    params: dict[str, torch.Tensor]  # matched parameters (differentiated)
    constants: dict[str, torch.Tensor]  # other parameters and buffers
    observed: dict[str, torch.Tensor]
    observed_norm: torch.Tensor
    sample_shape: tuple[int, ...]  # (N, *input_shape)
    num_classes: int
    labels: torch.Tensor | None
    loss: str
    masks: tuple[MaskVariable, ...]
    bounds: tuple[torch.Tensor, torch.Tensor] | None
    # FedAvg with several local steps, simulated in the objective (None: the update is matched as one gradient)
    local: LocalTraining | None = None
    trained: tuple[str, ...] = ()  # every parameter the client stepped (the observed update's), matched or not


# ---------------------------------------------------------------------------------------------- setup


def attacker_copy(module: nn.Module, device: torch.device) -> nn.Module:
    """The attacker's own model: a deep copy in train mode, BatchNorm on batch statistics without running
    stats, dropout off (plain attacks do not know the masks; DIA substitutes its own), and activations torch
    cannot differentiate twice replaced by equal ones it can, grouped convolutions by equal ones with a cheap
    double backward (``models.differentiable``)."""
    model = copy.deepcopy(module).to(device)
    model.train()
    replace_all_batch_norm_modules_(model)
    twice_differentiable(model)
    fast_double_backward(model)
    for m in model.modules():
        if isinstance(m, MaskableDropout):
            m.eval()
            m.mask = None
            m.record = False
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def activation_shapes(model: nn.Module, layers: tuple[str, ...], sample_shape: tuple[int, ...],
                      device: torch.device) -> dict[str, tuple[int, ...]]:
    """Shapes of the inputs of the named layers, found with a hooked probe forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    named = dict(model.named_modules())

    def hook(name: str):
        def record(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape))  # returning a value would replace the output

        return record

    hooks = [named[n].register_forward_hook(hook(n)) for n in layers]
    try:
        with torch.no_grad():
            model(torch.zeros(sample_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    missing = [n for n in layers if n not in shapes]
    if missing:
        raise ModelError(f"dropout layer(s) {', '.join(missing)} are never called in the forward pass; "
                         "declare only dropout layers the model uses")
    return shapes


def _build(module: nn.Module, observed: Mapping[str, torch.Tensor], objective: Objective,
           sample_shape: tuple[int, ...], num_classes: int, labels: torch.Tensor | None, loss: str,
           bounds: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device,
           local: LocalTraining | None = None) -> _Problem:
    if objective.distance not in DISTANCES:
        raise ConfigError(f"distance {objective.distance!r}: unknown; use one of {', '.join(DISTANCES)}")
    model = attacker_copy(module, device)
    all_params = dict(model.named_parameters())
    names = objective.match if objective.match is not None else tuple(n for n in observed if n in all_params)
    unknown = [n for n in names if n not in all_params or n not in observed]
    if unknown:
        raise ModelError(f"observed update has gradients for {', '.join(unknown[:3])} that the model has no "
                         "trainable parameter for (or none at all); compute the update with this model")
    if not names:
        raise ModelError("no observed gradient to match: the update is empty for this model's parameters; "
                         "compute the update with this model")
    obs = {n: observed[n].detach().to(device, torch.float32) for n in names}
    for n, g in obs.items():
        if not torch.isfinite(g).all():
            raise ModelError(f"observed gradient of {n} holds NaN/Inf; the client update is corrupt -- "
                             "recompute it (check the model's weights and the sample normalisation)")
    params = {n: all_params[n].detach() for n in names}
    constants = {n: p.detach() for n, p in all_params.items() if n not in params}
    constants.update({n: b for n, b in model.named_buffers()})
    named = dict(model.named_modules())
    for layer in (*objective.mask_layers, *objective.fixed_masks):
        if not isinstance(named.get(layer), MaskableDropout):
            raise ModelError(f"{layer}: not a MaskableDropout layer of the model, so its mask cannot be "
                             "optimised; check the detection findings")
    shapes = activation_shapes(model, objective.mask_layers, sample_shape, device) if objective.mask_layers else {}
    unroll = local if local is not None and local.steps > 1 else None
    # unrolled: one mask per local step, stacked in front as the client's true masks are (update.interface)
    steps = (unroll.steps,) if unroll is not None else ()
    masks = tuple(MaskVariable(n, named[n].p, (*steps, *shapes[n])) for n in objective.mask_layers)
    _check_fixed_masks(objective, unroll)
    norm = torch.stack([(g * g).sum() for g in obs.values()]).sum().sqrt()
    lab = labels.to(device) if labels is not None and not objective.soft_labels else None
    box = (bounds[0].to(device), bounds[1].to(device)) if bounds is not None else None
    trained = tuple(n for n in observed if n in all_params)
    return _Problem(model, params, constants, obs, norm, sample_shape, num_classes, lab, loss, masks, box,
                    unroll, trained)


def _check_fixed_masks(objective: Objective, unroll: LocalTraining | None) -> None:
    """Known masks of an unrolled objective are one per local step, stacked in front."""
    if unroll is None:
        return
    for n, m in objective.fixed_masks.items():
        if m.dim() < 2 or m.shape[0] != unroll.steps:
            raise ConfigError(f"{n}: the known dropout masks have shape {tuple(m.shape)}, but {unroll.steps} local "
                              f"steps are unrolled: give one mask per step, shape ({unroll.steps}, *activation)")


# ------------------------------------------------------------------------------------------ objective


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV as in IG/DIA: mean absolute difference of neighbouring pixels (images only)."""
    if x.dim() < 4:
        return x.new_zeros(())
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


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


def _vmap_step(pb: _Problem, objective: Objective) -> Callable:
    """Restarts mapped with ``torch.func.vmap`` over a ``torch.func.grad`` of the per-restart objective."""
    f = _objective_fn(pb, objective)
    per_restart = grad(lambda x, y, m: f(x, y, m), argnums=(0, 1, 2), has_aux=True)
    return vmap(per_restart, randomness="different")


def _loop_step(pb: _Problem, objective: Objective) -> Callable:
    """Restarts one after the other, each a plain double backward: ``torch.autograd.grad(create_graph=True)``
    of the client's loss on the attacker's own module (its matched parameters require grad; masks are set on
    the ``MaskableDropout`` modules), then the gradient of the objective with respect to the restart's
    variables. Random modules draw fresh noise per restart and step from the seeded global generator.
    With ``pb.local`` the client's gradient is the unrolled local steps' mean (``_client_gradient``)."""
    module = pb.module
    own = dict(module.named_parameters())
    params = [own[n] for n in (pb.trained if pb.local is not None else pb.params)]
    named = dict(module.named_modules())
    client_gradient = _client_gradient(pb, objective)
    checked: list[bool] = []

    def step(x: torch.Tensor, y: dict[str, torch.Tensor], m: dict[str, torch.Tensor]):
        for p in params:
            p.requires_grad_(True)
        for n, fm in objective.fixed_masks.items():
            named[n].mask = fm.to(x.device)
        gx: list[torch.Tensor] = []
        gy: list[torch.Tensor] = []
        losses: list[torch.Tensor] = []
        gm: dict[str, list[torch.Tensor]] = {n: [] for n in m}
        for r in range(x.shape[0]):
            xr = x[r].detach().requires_grad_(True)
            yr = y["y"][r].detach().requires_grad_(True) if "y" in y else None
            mr = {n: v[r].detach().requires_grad_(True) for n, v in m.items()}
            targets = F.softmax(yr, dim=-1) if yr is not None else pb.labels
            assert targets is not None
            with torch.enable_grad():
                total = _penalised(pb, objective, client_gradient(xr, targets, mr), xr, mr)
                if not checked:
                    _check_twice_differentiable(total)
                    checked.append(True)
                wrt = [xr, *([yr] if yr is not None else []), *mr.values()]
                grads = torch.autograd.grad(total, wrt, allow_unused=True)
            grads = tuple(torch.zeros_like(w) if d is None else d for d, w in zip(grads, wrt, strict=True))
            gx.append(grads[0])
            if yr is not None:
                gy.append(grads[1])
            for n, d in zip(mr, grads[len(grads) - len(mr):], strict=True):
                gm[n].append(d)
            losses.append(total.detach())
        y_out = {"y": torch.stack(gy)} if gy else {}
        loss = torch.stack(losses)
        return (torch.stack(gx), y_out, {n: torch.stack(v) for n, v in gm.items()}), loss

    return step


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


# ------------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the RNG the model's own random modules draw from, without touching the caller's state."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _init(pb: _Problem, objective: Objective, restarts: int, seed: int,
          device: torch.device) -> dict[str, torch.Tensor]:
    """Restart r draws from its own generator seeded ``seed + r``: a batch of R restarts starts exactly where
    R single-restart runs with seeds seed..seed+R-1 start."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    ms: dict[str, list[torch.Tensor]] = {mv.layer: [] for mv in pb.masks}
    for r in range(restarts):
        gen = torch.Generator().manual_seed(seed + r)
        xs.append(torch.randn(pb.sample_shape, generator=gen))
        if objective.soft_labels:
            ys.append(torch.randn((pb.sample_shape[0], pb.num_classes), generator=gen))
        for mv in pb.masks:
            ms[mv.layer].append(torch.bernoulli(torch.full(mv.shape, 1.0 - mv.p), generator=gen))
    vars_ = {"x": torch.stack(xs)}
    if ys:
        vars_["y"] = torch.stack(ys)
    for n, m in ms.items():
        vars_[f"mask:{n}"] = torch.stack(m)
    return {k: v.to(device) for k, v in vars_.items()}


def _split(vars_: dict[str, torch.Tensor]):
    y = {"y": vars_["y"]} if "y" in vars_ else {}
    masks = {k[5:]: v for k, v in vars_.items() if k.startswith("mask:")}
    return vars_["x"], y, masks


def _join(x, y: dict, masks: dict) -> dict[str, torch.Tensor]:
    out = {"x": x}
    if "y" in y:
        out["y"] = y["y"]
    out.update({f"mask:{n}": m for n, m in masks.items()})
    return out


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


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


_BATCH_MEAN_LOSSES = ("cross_entropy", "mse")  # means over the batch: R x loss(folded) = sum of restarts' losses


def _foldable(pb: _Problem) -> str | None:
    """Why the restarts of this problem cannot be folded into the batch dimension (None: they can)."""
    modules = dict(pb.module.named_modules())
    if pb.loss not in _BATCH_MEAN_LOSSES:
        return f"loss {pb.loss!r} is not known to be a mean over the batch"
    for n in pb.params:
        owner, _, kind = n.rpartition(".")
        layer = modules.get(owner)
        if not (isinstance(layer, nn.Linear) or _foldable_conv(layer)) or kind not in ("weight", "bias"):
            return f"matched parameter {n} does not belong to an nn.Linear or a one-group, zero-padded nn.Conv2d"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values()):
        return "BatchNorm couples the samples of a batch"
    return None


def _foldable_conv(layer: nn.Module | None) -> bool:
    """A ``Conv2d`` whose restarts' weight gradients ``_conv_terms`` computes: one group, zero padding by numbers
    (another padding mode pads the input before the convolution, which the hooked input would not show)."""
    return (isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str))


def _conv_terms(conv: nn.Conv2d, h: torch.Tensor, d: torch.Tensor, obs: Mapping[str, torch.Tensor],
                r_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each restart's ``<G_r, O>`` and ``||G_r||^2`` for a Conv2d, from its input ``h`` and output gradient ``d``
    (``R*N`` samples): the restarts' weight gradients by one ``convolution_backward`` with the restarts as groups
    (input ``(N, R*C, H, W)``, output gradient ``(N, R*O, H', W')``, the weight repeated R times), the bias
    gradient summed over samples and positions. Measured against the loop on the tutorial ConvNet
    (``benchmarks/bench_engine_candidates.py --fold-bound``): 3x cheaper per restart at R = 4 and 8, CPU."""
    n_count = h.shape[0] // r_count
    dot = h.new_zeros(r_count)
    sq = h.new_zeros(r_count)
    if "weight" in obs:
        hg = h.reshape(r_count, n_count, *h.shape[1:]).transpose(0, 1).reshape(n_count, -1, *h.shape[2:])
        dg = d.reshape(r_count, n_count, *d.shape[1:]).transpose(0, 1).reshape(n_count, -1, *d.shape[2:])
        g = torch.ops.aten.convolution_backward(
            dg, hg, conv.weight.repeat(r_count, 1, 1, 1), None, list(conv.stride), list(conv.padding),
            list(conv.dilation), False, [0, 0], r_count, [False, True, False])[1].reshape(r_count, -1)
        dot = dot + g @ obs["weight"].reshape(-1)
        sq = sq + (g * g).sum(1)
    if "bias" in obs:
        gb = d.reshape(r_count, n_count, d.shape[1], -1).sum((1, 3))
        dot = dot + gb @ obs["bias"]
        sq = sq + (gb * gb).sum(1)
    return dot, sq


def _fold_step(pb: _Problem, objective: Objective) -> Callable:
    """All restarts as one batch of R x N samples, for models whose matched parameters all belong to
    ``nn.Linear`` layers or one-group zero-padded ``nn.Conv2d`` layers and whose samples do not interact (no
    BatchNorm). A Conv2d's per-restart terms come from its restarts' weight gradients (``_conv_terms``).

    The client's gradient is a mean over *its* batch, so folding needs each restart's gradient separately.
    For a Linear layer with inputs h_i and output gradients d_i (i over restart r's samples and tokens) the
    weight gradient is G_r = sum_i d_i h_i^T, so without forming any G_r:
    <G_r, O> = sum_i d_i . (O h_i) and ||G_r||^2 = sum_ij (d_i . d_j)(h_i . h_j)
    (or G_r itself by one batched matmul, whichever is cheaper); the bias gradient is sum_i d_i. The output
    gradients of every sample come from one backward of R x the folded loss (= the sum of the restarts'
    losses: the loss is a mean over the batch and the restarts do not interact). Only activation gradients
    are computed in the first backward, never weight gradients."""
    module = pb.module
    named = dict(module.named_modules())
    own = dict(module.named_parameters())
    by_layer: dict[str, dict[str, torch.Tensor]] = {}
    for n, o in pb.observed.items():
        owner, _, kind = n.rpartition(".")
        by_layer.setdefault(owner, {})[kind] = o
    layers = list(by_layer)
    obs_sq = pb.observed_norm ** 2
    mask_p = {mv.layer: mv.p for mv in pb.masks}

    def step(x: torch.Tensor, y: dict[str, torch.Tensor], m: dict[str, torch.Tensor]):
        r_count, n_count = x.shape[0], x.shape[1]
        for p in own.values():
            p.requires_grad_(False)
        xl = x.detach().requires_grad_(True)
        yl = y["y"].detach().requires_grad_(True) if "y" in y else None
        ml = {n: v.detach().requires_grad_(True) for n, v in m.items()}
        for n, v in ml.items():
            named[n].mask = v.reshape(r_count * n_count, *v.shape[2:])
        for n, fm in objective.fixed_masks.items():
            named[n].mask = fm.to(x.device).repeat(r_count, *([1] * (fm.dim() - 1)))
        seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in layers}

        def hook(name: str):
            def record(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                seen[name].append((inputs[0], output))

            return record

        hooks = [named[n].register_forward_hook(hook(n)) for n in layers]
        try:
            with torch.enable_grad():
                if yl is None:
                    assert pb.labels is not None
                    targets = pb.labels.repeat(r_count, *([1] * (pb.labels.dim() - 1)))
                else:
                    targets = F.softmax(yl, dim=-1).reshape(r_count * n_count, -1)
                out = module(xl.reshape(r_count * n_count, *x.shape[2:]))
                loss = client_loss(module, out, targets, pb.loss) * r_count
        finally:
            for h in hooks:
                h.remove()
        if any(len(v) != 1 for v in seen.values()):
            raise _NotFoldable("a matched layer is called more than once per forward pass")
        with torch.enable_grad():
            deltas = torch.autograd.grad(loss, [seen[n][0][1] for n in layers], create_graph=True)
            dot = x.new_zeros(r_count)
            sq = x.new_zeros(r_count)
            for n, d in zip(layers, deltas, strict=True):
                h = seen[n][0][0]
                if isinstance(named[n], nn.Conv2d):
                    conv_dot, conv_sq = _conv_terms(named[n], h, d, by_layer[n], r_count)
                    dot, sq = dot + conv_dot, sq + conv_sq
                    continue
                h = h.reshape(r_count, -1, h.shape[-1])  # (R, N*tokens, in)
                d = d.reshape(r_count, -1, d.shape[-1])  # (R, N*tokens, out)
                obs = by_layer[n]
                if "weight" in obs:
                    w = obs["weight"]
                    dot = dot + (d * (h @ w.T)).sum((1, 2))
                    rows = h.shape[1]
                    if rows * (h.shape[2] + d.shape[2]) < h.shape[2] * d.shape[2]:
                        sq = sq + ((d @ d.transpose(1, 2)) * (h @ h.transpose(1, 2))).sum((1, 2))
                    else:
                        g = d.transpose(1, 2) @ h
                        sq = sq + (g * g).sum((1, 2))
                if "bias" in obs:
                    gb = d.sum(1)
                    dot = dot + gb @ obs["bias"]
                    sq = sq + (gb * gb).sum(1)
            if objective.distance == "cosine":
                total = 1.0 - dot / (torch.sqrt(sq) * pb.observed_norm + 1e-8)
            else:
                total = sq - 2 * dot + obs_sq
            if objective.tv and x.dim() >= 5:
                total = total + objective.tv * (
                    (xl[..., :, 1:] - xl[..., :, :-1]).abs().flatten(1).mean(1)
                    + (xl[..., 1:, :] - xl[..., :-1, :]).abs().flatten(1).mean(1))
            for n, v in ml.items():
                total = total + objective.mask_reg * ((1.0 - v.flatten(1).mean(1)) - mask_p[n]).abs()
            wrt = [xl, *([yl] if yl is not None else []), *ml.values()]
            grads = torch.autograd.grad(total.sum(), wrt, allow_unused=True)
        grads = tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True))
        y_out = {"y": grads[1]} if yl is not None else {}
        gm = dict(zip(ml, grads[len(grads) - len(ml):], strict=True))
        return (grads[0], y_out, gm), total.detach()

    return step


class _NotFoldable(Exception):
    """The folded computation does not apply to this model (found while running it)."""


def _same_step(a: tuple, b: tuple) -> bool:
    """Two evaluations of the same restarts agree (losses and every gradient, NaN where the other is NaN)."""
    (ga, la), (gb, lb) = a, b
    if not torch.allclose(la, lb, rtol=1e-3, atol=1e-5, equal_nan=True):
        return False
    flat_a = [ga[0], *ga[1].values(), *ga[2].values()]
    flat_b = [gb[0], *gb[1].values(), *gb[2].values()]
    for u, v in zip(flat_a, flat_b, strict=True):
        scale = float(v.abs().nan_to_num(0.0).max()) if v.numel() else 0.0
        if not torch.allclose(u, v, rtol=1e-3, atol=1e-4 * scale + 1e-7, equal_nan=True):
            return False
    return True


BATCHINGS = ("auto", "loop", "vmap", "fold")


def _choose_step(pb: _Problem, objective: Objective, batching: str,
                 probe: Callable[[], tuple]) -> tuple[str, Callable, str]:
    """The restart computation: ``(name, step, note)``.

    ``auto``: ``fold`` where it applies (Linear-only matched layers, no BatchNorm) and a check at the start
    agrees with ``loop`` on the initial iterate (losses and gradients within 1e-3: catches models whose
    samples interact or whose forward is random in ways the rule cannot see); otherwise ``loop``.
    Measured by ``benchmarks/bench_engine.py`` (docs/attacks.md, "The engine"): ``vmap`` was slower than
    ``loop`` on every model tried on CPU; it is kept for comparison only."""
    if batching not in BATCHINGS:
        raise ConfigError(f"batching {batching!r}: unknown; use one of {', '.join(BATCHINGS)}")
    if pb.local is not None:
        # Unrolled local steps run on the loop only. The fold rests on every restart sharing one set of
        # weights (a Linear layer's per-restart gradient from activations at those weights), which is false
        # after the first step: each restart's trajectory has weights of its own. vmap over K nested
        # double-differentiated steps was not built: it was slower than the loop on every model measured even
        # for one step (docs/attacks.md, "The engine").
        return "loop", _loop_step(pb, objective), (f"restarts: loop (one unrolled double backward per restart; "
                                                    f"{pb.local.steps} local steps cannot be folded or vmapped)")
    if batching == "vmap":
        return "vmap", _vmap_step(pb, objective), "restarts: vmap"
    loop = _loop_step(pb, objective)
    if batching == "loop":
        return "loop", loop, "restarts: loop (one double backward per restart)"
    why = _foldable(pb)
    if why is None:
        fold = _fold_step(pb, objective)
        device = pb.observed_norm.device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            reference = probe_step(loop, probe)  # the loop's own errors are the attack's errors
            try:
                agree = _same_step(probe_step(fold, probe), reference)
            except Exception as e:  # noqa: BLE001 -- e.g. a reshape to a fixed batch: the loop still works
                agree, why = False, f"{type(e).__name__}: {str(e)[:120]}"
        if agree:
            return "fold", fold, "restarts: folded into the batch (Linear/Conv2d layers, per-restart gradients)"
        why = why or "a check at the start disagreed with the per-restart computation"
    if batching == "fold":
        raise ConfigError(f"batching 'fold' does not apply: {why}; use auto or loop")
    return "loop", loop, f"restarts: loop (one double backward per restart; not folded: {why})"


def probe_step(step: Callable, args: Callable[[], tuple]) -> tuple:
    return step(*args())


class _Runner:
    """State of one batched optimisation: variables, best-so-far snapshots, live restarts."""

    def __init__(self, pb: _Problem, objective: Objective, sched: Schedule, seed: int, device: torch.device,
                 attack: str, observer: Observer) -> None:
        self.pb, self.objective, self.sched, self.attack, self.observer = pb, objective, sched, attack, observer
        self.vars = _init(pb, objective, sched.restarts, seed, device)
        r = sched.restarts
        self.alive = torch.ones(r, dtype=torch.bool, device=device)
        self.best = dict(self.vars)
        self.constrain()  # start inside the box
        self.best_loss = torch.full((r,), math.inf, device=device)
        self.best = {k: v.clone() for k, v in self.vars.items()}
        self.died_at = torch.full((r,), -1, dtype=torch.long, device=device)
        self.fitted_from: int | None = None  # the planned iterations, once fitted to the time share (``_fit``)
        self.batching, self._step, self.batching_note = _choose_step(
            pb, objective, sched.batching, lambda: _split(self.vars))

    def evaluate(self, it: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Gradients of every restart's objective at the current variables; updates the snapshots on device."""
        x, y, m = _split(self.vars)
        (gx, gy, gm), loss = self._step(x, y, m)
        finite = torch.isfinite(loss)
        newly_dead = self.alive & ~finite
        self.died_at = torch.where(newly_dead, torch.full_like(self.died_at, it), self.died_at)
        self.alive = self.alive & finite
        better = self.alive & (loss < self.best_loss)
        self.best_loss = torch.where(better, loss, self.best_loss)
        for k, v in self.vars.items():
            self.best[k] = torch.where(_bcast(better, v), v, self.best[k])
        grads = _join(gx, gy, gm)
        grads = {k: torch.where(_bcast(self.alive, g), g, torch.zeros_like(g)) for k, g in grads.items()}
        return grads, loss

    def constrain(self) -> None:
        """Box constraint on the input, masks within [0, 1]; dead restarts frozen at their best iterate."""
        with torch.no_grad():
            if self.pb.bounds is not None:
                lo, hi = self.pb.bounds
                self.vars["x"] = torch.maximum(torch.minimum(self.vars["x"], hi), lo)
            for k in self.vars:
                if k.startswith("mask:"):
                    self.vars[k] = self.vars[k].clamp(0.0, 1.0)
            for k, v in self.vars.items():
                self.vars[k] = torch.where(_bcast(self.alive, v), v, self.best[k])

    def check(self, it: int) -> bool:
        """Host-side look every ``check_every`` iterations (and at the first few, ``_early``): progress, stop
        request, convergence."""
        best = self.best_loss[self.alive]
        value = float(best.min()) if best.numel() else math.nan
        self.observer.attack_progress(AttackProgress(self.attack, it, self.sched.iterations, value))
        if self.observer.should_stop():
            return True
        if not bool(self.alive.any()):
            return True
        return self.sched.tol > 0 and bool((self.best_loss[self.alive] < self.sched.tol).all())


def _adam(runner: _Runner, sched: Schedule) -> tuple[int, bool]:
    """Adam with one learning rate per restart (plateau decay acts per restart); elementwise, so a batch of
    restarts evolves exactly as separate runs would. The image moves along the sign of its gradient."""
    device = runner.best_loss.device
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = {k: torch.zeros_like(v) for k, v in runner.vars.items()}
    v2 = {k: torch.zeros_like(v) for k, v in runner.vars.items()}
    lr = torch.full((sched.restarts,), sched.lr, device=device)
    milestones = _milestones(sched.iterations)
    plateau_best = [math.inf] * sched.restarts
    plateau_since = [0] * sched.restarts
    it = 0
    started = time.perf_counter()
    warm: tuple[int, float] | None = None  # (iteration, time) at the first look: the first iterations' one-off
    # costs (autograd's first graph, allocations) are no measure of the rate; measured: 0.3 s, then 1 ms each
    while it < sched.iterations:
        grads, _ = runner.evaluate(it)
        grads["x"] = grads["x"].sign()
        it += 1
        scale = 0.1 ** sum(it > s for s in milestones) if sched.decay == "step" else 1.0
        with torch.no_grad():
            for k, g in grads.items():
                m[k].mul_(b1).add_(g, alpha=1 - b1)
                v2[k].mul_(b2).addcmul_(g, g, value=1 - b2)
                step = (m[k] / (1 - b1 ** it)) / ((v2[k] / (1 - b2 ** it)).sqrt() + eps)
                runner.vars[k] = runner.vars[k] - _bcast(lr * scale, step) * step
        runner.constrain()
        if it % sched.check_every == 0 or it == sched.iterations or (sched.seconds is not None and _early(it)):
            if sched.seconds is not None:
                now = time.perf_counter()
                if warm is None:
                    warm = (it, now)
                elif it - warm[0] >= 3:  # a rate from one or two iterations is noise, and a fit only ever lowers
                    sched = _fit(runner, sched, it, now - started, (now - warm[1]) / (it - warm[0]))
                    milestones = _milestones(sched.iterations)
            if sched.decay == "plateau":
                _plateau(runner, lr, plateau_best, plateau_since, it, sched.patience)
            if runner.check(it):
                return it, it < sched.iterations
    return it, False


def _milestones(iterations: int) -> list[int]:
    return [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]


def _early(it: int) -> bool:
    """With a time share, the first iterations are looked at too: on a large model 25 iterations can take a
    minute, and the share (``Schedule.seconds``) and the scan's cap must be acted on before that."""
    return it < 25 and it & (it - 1) == 0  # 1, 2, 4, 8, 16


def _fit(runner: _Runner, sched: Schedule, it: int, elapsed: float, rate: float) -> Schedule:
    """The schedule with its iterations fitted to the time share at the mean rate since the first look, never
    above the plan. Before the first decay the fit may also rise again: on a busy machine a few iterations can
    take a hundred times the others (two torch threads waiting for a core: 1 ms, then 300 ms), and the mean
    over more iterations corrects an early, too pessimistic fit. After it, the fit only ever lowers."""
    from .clock import fitted_iterations

    assert sched.seconds is not None
    planned = runner.fitted_from or sched.iterations
    total = fitted_iterations(it, elapsed, planned, sched.seconds, rate)
    if total > sched.iterations and it >= _milestones(sched.iterations)[0]:
        return sched
    if total != sched.iterations:
        runner.fitted_from = planned if total < planned else None
        sched = dataclasses.replace(sched, iterations=total)
        runner.sched = sched
    return sched


def _plateau(runner: _Runner, lr: torch.Tensor, best: list[float], since: list[int], it: int,
             patience: int) -> None:
    """ReduceLROnPlateau per restart (relative threshold 1e-4, as torch's default), checked at host checks."""
    losses = runner.best_loss.tolist()
    for r, loss in enumerate(losses):
        if loss < best[r] * (1 - 1e-4):
            best[r], since[r] = loss, it
        elif it - since[r] >= patience:
            lr[r] *= 0.1
            since[r] = it


def _lbfgs(runner: _Runner, sched: Schedule) -> tuple[int, bool]:
    """L-BFGS (DLG) on the stacked variables. The objective is a sum of independent per-restart terms, so
    this is one joint L-BFGS over a separable problem: restarts share the curvature history and the line
    search, which is why DLG's restarts do not reproduce separate runs bit for bit (Adam's do).

    ``iterations`` counts objective evaluations, not L-BFGS steps: a strong-Wolfe line search may evaluate
    up to 25 times in one step, and the budget has to bound the cost (one step may overshoot it by that)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in runner.vars.items()}
    opt = torch.optim.LBFGS(list(leaves.values()), lr=sched.lr, max_iter=1, history_size=100,
                            line_search_fn="strong_wolfe")
    state = {"evals": 0}

    def closure() -> torch.Tensor:
        runner.vars = {k: v.detach() for k, v in leaves.items()}
        grads, loss = runner.evaluate(state["evals"])
        state["evals"] += 1
        for k, v in leaves.items():
            v.grad = grads[k]
        return torch.where(runner.alive, loss, torch.zeros_like(loss)).sum()

    next_check = sched.check_every
    while state["evals"] < sched.iterations:
        opt.step(closure)
        with torch.no_grad():
            runner.vars = {k: v.detach().clone() for k, v in leaves.items()}
            runner.constrain()
            for k, v in leaves.items():
                v.copy_(runner.vars[k])
        if state["evals"] >= next_check or state["evals"] >= sched.iterations:
            next_check = state["evals"] + sched.check_every
            if runner.check(state["evals"]):
                return state["evals"], state["evals"] < sched.iterations
    runner.evaluate(state["evals"])  # the last step's iterate has not been evaluated yet
    return state["evals"], False


def match_gradients(module: nn.Module, observed: Mapping[str, torch.Tensor], objective: Objective,
                    schedule: Schedule, *, input_shape: tuple[int, ...], num_samples: int, num_classes: int,
                    labels: torch.Tensor | None = None, loss: str = "cross_entropy",
                    bounds: tuple[torch.Tensor, torch.Tensor] | None = None, device: torch.device | None = None,
                    seed: int | None = None, observer: Observer | None = None,
                    attack: str = "attack", init: torch.Tensor | None = None,
                    local: LocalTraining | None = None) -> EngineResult:
    """Run one gradient-matching attack with ``schedule.restarts`` batched restarts; return the restart
    with the lowest objective (the attacker has no ground truth to choose by).

    ``init``: an input ``(num_samples, *input_shape)`` every restart starts from instead of a random draw
    (an attack refining another's reconstruction, e.g. feature-inversion); labels and masks start as usual.
    ``local``: the client's FedAvg local steps; with more than one they are unrolled in the objective (masks
    then have a leading step dimension), otherwise the update is matched as one gradient, as for FedSGD."""
    device = device or torch.device("cpu")
    observer = observer or NullObserver()
    if schedule.iterations < 1 or schedule.restarts < 1:
        raise ConfigError(f"{attack}: iterations and restarts must be at least 1, got "
                          f"{schedule.iterations} and {schedule.restarts}; raise them")
    if labels is None and not objective.soft_labels:
        raise ConfigError(f"{attack}: needs labels (known or recovered) unless it optimises soft labels; "
                          "recover labels first or use an attack that optimises them (dlg)")
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    sample_shape = (num_samples, *input_shape)
    pb = _build(module, observed, objective, sample_shape, num_classes, labels, loss, bounds, device, local)
    with _seeded(seed, device):
        runner = _Runner(pb, objective, schedule, seed, device, attack, observer)
        if init is not None:
            _start_from(runner, init, sample_shape, attack)
        if schedule.optimizer == "adam":
            iterations, stopped = _adam(runner, schedule)
        elif schedule.optimizer == "lbfgs":
            iterations, stopped = _lbfgs(runner, schedule)
        else:
            raise ConfigError(f"{attack}: optimizer {schedule.optimizer!r} is unknown; use adam or lbfgs")
    return _result(runner, iterations, stopped, seed, attack)


def _start_from(runner: _Runner, init: torch.Tensor, sample_shape: tuple[int, ...], attack: str) -> None:
    """Every restart starts at ``init`` (clipped to the box) rather than at its random draw."""
    if tuple(init.shape) != tuple(sample_shape):
        raise ConfigError(f"{attack}: the starting input has shape {tuple(init.shape)}, expected "
                          f"{tuple(sample_shape)}; pass one input per sample")
    x = runner.vars["x"]
    runner.vars["x"] = init.detach().to(x.device, x.dtype).expand_as(x).clone()
    runner.constrain()


def _result(runner: _Runner, iterations: int, stopped: bool, seed: int, attack: str) -> EngineResult:
    losses = runner.best_loss.cpu()
    died = runner.died_at.cpu().tolist()
    notes = [f"seed {seed} (restart r starts from seed {seed}+r)", runner.batching_note]
    if runner.fitted_from is not None:
        notes.append(f"iterations fitted to the attack's time share ({runner.sched.seconds:.0f} s): "
                     f"{runner.sched.iterations} of {runner.fitted_from} planned, the step decay kept in proportion")
    if runner.pb.local is not None:
        notes.append(f"unrolled {runner.pb.local.steps} local steps: the objective simulates the client's "
                     f"{runner.pb.local} and matches the mean step gradient (weight delta / (-lr x "
                     f"{runner.pb.local.steps})) with the update")
    for r, at in enumerate(died):
        if at >= 0:
            notes.append(f"restart {r} dropped at iteration {at}: non-finite attack loss "
                         f"(its best finite iterate {'is kept' if math.isfinite(losses[r]) else 'does not exist'})")
    finite = torch.isfinite(losses)
    if not finite.any():
        raise ModelError(f"{attack}: every restart's objective was non-finite from the start; the model's "
                         "gradients overflow on the attack's inputs -- lower the attack's lr or check the weights")
    best = int(torch.where(finite, losses, torch.full_like(losses, math.inf)).argmin())
    x = runner.best["x"][best].detach().cpu()
    if runner.pb.labels is not None:
        labels = runner.pb.labels.detach().cpu()
    elif "y" in runner.best:
        labels = runner.best["y"][best].argmax(-1).detach().cpu()
    else:
        labels = None
    masks = {k[5:]: v[best].detach().cpu() for k, v in runner.best.items() if k.startswith("mask:")}
    return EngineResult(x=x, labels=labels, loss=float(losses[best]),
                        restart_losses=tuple(float(v) if math.isfinite(v) else math.nan for v in losses.tolist()),
                        best_restart=best, iterations_run=iterations, stopped_early=stopped, notes=tuple(notes),
                        masks=masks)
