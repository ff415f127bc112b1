"""Analytic inversion of a first fully connected layer: no optimisation, exact in one step.

If the first trainable layer is ``Linear`` with bias and sees the (flattened) input, each output unit i
has ``dW_i = mean_n(delta_ni * x_n)`` and ``db_i = mean_n(delta_ni)``. For one sample every row with
``db_i != 0`` gives ``x = dW_i / db_i``; we solve the least-squares fit over all such rows
(``x = sum_i db_i dW_i / sum_i db_i^2``), which is exact without noise and the maximum-likelihood estimate
under Gaussian gradient noise; entries zeroed by pruning/masking defenses are left out of the fit.
For a batch a row mixes the samples whose unit i was active; but after a
ReLU (or dropout) many units are active for exactly one sample, so their rows give that sample exactly and
identical estimates repeat across rows. Grouping the repeated row estimates separates the samples
(the observation behind Fowl et al.'s "Robbing the Fed" and Geiping et al.'s imprint analysis); samples
not separated are returned as the least-squares mixture, with a note.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ..detect.interface import Findings
from ..models.layers import MaskableDropout
from ..progress import Observer
from .interface import BUDGET_NAMES, Attack, AttackSettings, AttackTarget, Reconstruction
from .registry import register_attack

_REL_EPS = 1e-7  # rows whose |db_i| is below this fraction of the largest carry no usable signal
_SAME = 1e-4  # two row estimates closer than this (relative) come from the same single sample
_MAX_ROWS = 4096  # rows considered when separating a batch (largest |db_i| first)
# Layer types (lower-case substrings) that pass the input's values on unchanged, in order: torch and onnx2torch.
_KEEPS_VALUES = ("flatten", "reshape", "identity", "dropout", "squeeze", "view", "constant")


@dataclass(frozen=True)
class FirstLayer:
    name: str | None  # module path of the first Linear, None when not applicable
    reason: str = ""  # why not applicable ("" when it is)
    input_dropout: float = 0.0  # rate of a dropout applied to the input before the layer (train mode)


@dataclass(frozen=True)
class LinearInversion:
    x: torch.Tensor | None  # (N, *input_shape) in model space, or None with ``reason``
    reason: str = ""
    layer: str | None = None
    rows_used: int = 0
    separated: int = 0  # samples recovered from rows of a single sample (batch > 1)
    residual: float = math.nan  # ||dW - db x^T|| / ||dW|| over the rows used: 0 means an exact fit
    notes: tuple[str, ...] = ()


def _leaf_modules(module: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in module.named_modules() if not any(True for _ in m.children())}


def find_first_layer(module: nn.Module, input_shape: tuple[int, ...]) -> FirstLayer:
    """Run one eval-mode forward pass on a random input and check that the first trainable layer is a
    Linear with bias whose input is the flattened model input."""
    leaves = _leaf_modules(module)
    order: list[tuple[str, nn.Module]] = []
    seen: dict[str, torch.Tensor] = {}

    def pre_hook(mod: nn.Module, args: tuple) -> None:
        name = leaves[mod]
        if all(name != n for n, _ in order):
            order.append((name, mod))
            if isinstance(mod, nn.Linear) and args and isinstance(args[0], torch.Tensor):
                seen[name] = args[0].detach()

    params = next(iter(module.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    dtype = params.dtype if params is not None and params.is_floating_point() else torch.float32
    handles = [m.register_forward_pre_hook(pre_hook) for m in leaves]
    modes = [(m, m.training) for m in module.modules()]
    error: Exception | None = None
    try:
        module.eval()
        for batch in (2, 1):  # an ONNX export without dynamic axes runs at its fixed batch size only
            order.clear()
            seen.clear()
            x = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
            x = x.to(device)
            try:
                with torch.no_grad(), torch.random.fork_rng(
                        devices=[device.index or 0] if device.type == "cuda" else []):
                    module(x)
                return _judge_first(order, seen, x)
            except Exception as e:  # noqa: BLE001 -- any failure means we cannot check the layer; say why
                error = e
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return FirstLayer(None, f"not applicable: a forward pass on input shape {tuple(input_shape)} failed "
                            f"({type(error).__name__})")


def _judge_first(order: list[tuple[str, nn.Module]], seen: dict[str, torch.Tensor], x: torch.Tensor) -> FirstLayer:
    before: list[tuple[str, nn.Module]] = []
    for name, mod in order:
        if any(p.requires_grad for p in mod.parameters(recurse=False)):
            break
        before.append((name, mod))
    else:
        return FirstLayer(None, "not applicable: the model has no trainable layer")
    kind = type(mod).__name__
    if not isinstance(mod, nn.Linear):
        return FirstLayer(None, f"not applicable: the first trainable layer '{name}' is {kind}, not Linear")
    if mod.bias is None or not mod.bias.requires_grad:
        return FirstLayer(None, f"not applicable: the first Linear '{name}' has no trainable bias")
    inp = seen.get(name)
    flat = x.flatten(1)
    if inp is None or inp.shape != flat.shape or not torch.allclose(inp, flat, rtol=1e-5, atol=1e-6):
        ops = ", ".join(type(m).__name__ for _, m in before) or "none"
        return FirstLayer(None, f"not applicable: the first Linear '{name}' does not see the flattened input "
                                f"(layers before it: {ops})")
    p = sum(m.p for _, m in before if isinstance(m, MaskableDropout))
    return FirstLayer(name, "", p)


def invert_first_linear(gradients: Mapping[str, torch.Tensor], module: nn.Module, input_shape: tuple[int, ...],
                        num_samples: int = 1) -> LinearInversion:
    """Recover the input(s) from the first Linear layer's weight and bias gradients (see module doc)."""
    first = find_first_layer(module, input_shape)
    if first.name is None:
        return LinearInversion(None, first.reason)
    wname, bname = f"{first.name}.weight", f"{first.name}.bias"
    if wname not in gradients or bname not in gradients:
        return LinearInversion(None, f"not applicable: the update holds no gradient for {wname} / {bname}",
                               first.name)
    dw = gradients[wname].detach().to("cpu", torch.float64)
    db = gradients[bname].detach().to("cpu", torch.float64)
    scale = float(db.abs().max())
    if not scale > 0 or not math.isfinite(scale):
        return LinearInversion(None, f"not applicable: the bias gradient of '{first.name}' is zero or not "
                                     "finite", first.name)
    rows = (db.abs() > _REL_EPS * scale).nonzero().view(-1)
    dw, db = dw[rows], db[rows]
    notes: list[str] = []
    if num_samples == 1:
        x, residual = least_squares_rows(dw, db)
        xs, separated = x[None], 1
    else:
        xs, separated, residual = separate_rows(dw, db, num_samples)
        if separated < num_samples:
            notes.append(f"separated {separated} of {num_samples} samples; the other "
                         f"{num_samples - separated} are a mixture of the batch (least squares over all rows)")
    if first.input_dropout > 0:
        # Train-mode dropout on the input: surviving pixels were scaled by 1/(1-p), dropped ones are lost.
        xs = xs * (1.0 - first.input_dropout)
        notes.append(f"dropout p={first.input_dropout:g} acts on the input: dropped entries come back as 0")
    out = xs.to(torch.float32).view(len(xs), *input_shape)
    return LinearInversion(out, "", first.name, int(rows.numel()), separated, residual, tuple(notes))


def least_squares_rows(dw: torch.Tensor, db: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per input entry j, fit dW_ij = db_i x_j over the rows where dW_ij was observed. An entry that is
    exactly 0 is treated as missing: genuine gradients are never exactly 0 where db_i is not, while pruning
    and random masking defenses zero entries -- skipping them keeps the recovery exact on what is left."""
    seen = dw != 0
    weight = (db[:, None] ** 2 * seen).sum(0)
    x = torch.where(weight > 0, (db @ dw) / weight.clamp_min(1e-300), torch.zeros_like(weight))
    misfit = (dw - db[:, None] * x[None]) * seen
    residual = float(misfit.norm() / dw.norm().clamp_min(1e-300))
    return x, residual


def separate_rows(dw: torch.Tensor, db: torch.Tensor, n: int) -> tuple[torch.Tensor, int, float]:
    """Group rows whose estimates dW_i/db_i coincide (units active for one sample only); the n largest
    groups of two or more rows are the separated samples; the rest is filled with the mixture."""
    order = db.abs().argsort(descending=True)[:_MAX_ROWS]
    est = dw[order] / db[order, None]
    norms = est.norm(dim=1).clamp_min(1e-300)
    reps: list[int] = []  # index (into order) of each group's first row
    members: list[list[int]] = []
    for i in range(len(order)):
        if reps:
            dist = (est[reps] - est[i]).norm(dim=1) / torch.maximum(norms[reps], norms[i])
            j = int(dist.argmin())
            if float(dist[j]) < _SAME:
                members[j].append(i)
                continue
        reps.append(i)
        members.append([i])
    groups = sorted((g for g in members if len(g) >= 2), key=len, reverse=True)[:n]
    xs, residuals = [], []
    for g in groups:
        rows = order[g]
        x, r = least_squares_rows(dw[rows], db[rows])
        xs.append(x)
        residuals.append(r)
    mixture, r_all = least_squares_rows(dw, db)
    separated = len(xs)
    xs += [mixture] * (n - separated)
    residual = max(residuals) if residuals else r_all
    return torch.stack(xs), separated, residual


@register_attack
class AnalyticAttack(Attack):
    """Exact input recovery from a first Linear layer with bias (batch 1), separation for small batches."""

    name = "analytic"
    summary = "closed-form inversion of a first fully connected layer with bias"
    modalities = ("image", "tabular")  # exact on any input a first Linear sees value for value
    budgets = {budget: AttackSettings(iterations=1, restarts=1, lr=0.0, tv=0.0)  # one exact step at every budget
               for budget in BUDGET_NAMES}

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        if module is None:
            return "not applicable: no model"
        layers = findings.layers if findings is not None else ()
        modules = dict(module.named_modules())
        index = next((i for i, (_, _, k) in enumerate(layers) if k > 0), None)
        if index is None:
            return None  # no layer order known: the exact check runs with the input shape in run()
        name = layers[index][0]
        first = modules.get(name)
        kind = type(first).__name__ if first is not None else layers[index][1]
        if not isinstance(first, nn.Linear):
            return f"not applicable: the first trainable layer '{name}' is {kind}, not Linear"
        if first.bias is None or not first.bias.requires_grad:
            return f"not applicable: the first Linear '{name}' has no trainable bias"
        changing = [t for _, t, _ in layers[:index] if not any(k in t.lower() for k in _KEEPS_VALUES)]
        if changing:
            return (f"not applicable: the first Linear '{name}' does not see the flattened input "
                    f"(layers before it: {', '.join(changing)})")
        return None  # the exact check (does it see the input, value for value?) runs in run()

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction:
        start = time.perf_counter()
        result = invert_first_linear(target.gradients, target.module, tuple(target.input_shape),
                                     target.num_samples)
        notes = list(result.notes)
        if result.x is None:
            x = torch.empty((0, *target.input_shape))
            notes.insert(0, result.reason)
        else:
            x = result.x
            if target.bounds is not None:
                lo, hi = (b.detach().to("cpu", x.dtype) for b in target.bounds)
                x = torch.maximum(torch.minimum(x, hi), lo)
            notes.append(f"layer {result.layer}: {result.rows_used} rows with a non-zero bias gradient, "
                         f"relative fit residual {result.residual:.2e}")
        return Reconstruction(attack=self.name, x=x, labels=target.labels, attack_loss=result.residual,
                              settings=settings, seconds=time.perf_counter() - start, iterations_run=0,
                              notes=tuple(notes), device="cpu")
