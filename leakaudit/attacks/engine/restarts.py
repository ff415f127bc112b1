"""How the restarts are computed: folded into one batch (``_fold_step``), one after another (``_loop_step``) or
with ``torch.func.vmap`` (``_vmap_step``); ``_choose_step`` picks one and says why."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from ...errors import ConfigError
from ...update.losses import client_loss
from .objective import _check_twice_differentiable, _client_gradient, _objective_fn, _penalised
from .problem import Objective, _Problem


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
