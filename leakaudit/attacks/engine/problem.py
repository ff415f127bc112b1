"""The problem an attack poses: what is matched (``Objective``), how long (``Schedule``), and the attacker's own
copy of the model with the observed update it is matched against (``_Problem``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_

from ...errors import ConfigError, ModelError
from ...models.differentiable import fast_double_backward, twice_differentiable
from ...models.layers import MaskableDropout
from ...update.interface import LocalTraining

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
    # GradInversion's BatchNorm prior: BatchNorm layer name -> the batch's (mean, unbiased variance) per channel, as
    # the server recovers them from the buffers sent with the update (``attacks.bnstats``); each restart's candidate
    # batch pays ``bn_weight`` x the sum over these layers of the mean squared error of its own statistics.
    batch_statistics: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    bn_weight: float = 0.0


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
    # the BatchNorm prior's targets on the device (empty: no term), from ``Objective.batch_statistics``
    batch_statistics: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


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
        elif _plain_dropout(m):
            # A torch model handed to the engine directly (not through the loaders, which make its dropout a
            # MaskableDropout) kept drawing masks here: every restart and step saw other noise, and the
            # restarts could not be folded (the check at the start disagreed with the loop).
            m.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _plain_dropout(m: nn.Module) -> bool:
    """torch's dropout layers (element- and channel-wise, alpha) and the stochastic depth of timm and
    torchvision: random in train mode, the identity in eval mode."""
    kind = f"{type(m).__module__}.{type(m).__qualname__}"
    return (isinstance(m, nn.modules.dropout._DropoutNd)
            or (kind.startswith("timm.") and type(m).__name__ == "DropPath")
            or kind == "torchvision.ops.stochastic_depth.StochasticDepth")


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
                    unroll, trained, _batch_statistics(objective, named, device))


def _batch_statistics(objective: Objective, named: Mapping[str, nn.Module],
                      device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The BatchNorm prior's targets, checked against the model's layers (empty when the term is off)."""
    if not objective.bn_weight or not objective.batch_statistics:
        return {}
    out = {}
    for name, (mean, var) in objective.batch_statistics.items():
        layer = named.get(name)
        if not isinstance(layer, nn.modules.batchnorm._BatchNorm) or mean.numel() != layer.num_features \
                or var.numel() != layer.num_features:
            raise ModelError(f"{name}: the BatchNorm statistics given do not fit a BatchNorm layer of the model; "
                             "recover them from this model's buffers")
        out[name] = (mean.detach().to(device, torch.float32).reshape(-1),
                     var.detach().to(device, torch.float32).reshape(-1))
    return out


def _check_fixed_masks(objective: Objective, unroll: LocalTraining | None) -> None:
    """Known masks of an unrolled objective are one per local step, stacked in front."""
    if unroll is None:
        return
    for n, m in objective.fixed_masks.items():
        if m.dim() < 2 or m.shape[0] != unroll.steps:
            raise ConfigError(f"{n}: the known dropout masks have shape {tuple(m.shape)}, but {unroll.steps} local "
                              f"steps are unrolled: give one mask per step, shape ({unroll.steps}, *activation)")
