"""How the restarts are computed: folded into one batch (``_fold_step``), one after another (``_loop_step``) or
with ``torch.func.vmap`` (``_vmap_step``); ``_choose_step`` picks one and says why."""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from ...errors import ConfigError
from ...update.losses import client_loss
from .objective import (_check_twice_differentiable, _client_gradient, _objective_fn, _penalised, batch_norm_inputs,
                        batch_norm_term)
from .problem import Objective, _Problem

_BatchNorm = nn.modules.batchnorm._BatchNorm


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
            with torch.enable_grad(), batch_norm_inputs(pb) as seen_bn:
                total = _penalised(pb, objective, client_gradient(xr, targets, mr), xr, mr)
                if pb.batch_statistics:
                    total = total + batch_norm_term(pb, objective.bn_weight, seen_bn)[0]
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
        if not (isinstance(layer, (nn.Linear, _BatchNorm)) or _foldable_conv(layer)) or kind not in ("weight", "bias"):
            return (f"matched parameter {n} does not belong to an nn.Linear, a zero-padded nn.Conv2d or a "
                    "BatchNorm layer")
    return None


def _per_restart_batch_norm(bn: _BatchNorm, r_count: int, normalised: dict[str, torch.Tensor],
                            name: str, inputs: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward for a BatchNorm layer of the attacker's copy (batch statistics, no running ones) over the folded
    batch ``(R*N, C, ...)``: each restart normalised with its own N samples' statistics, as R separate runs.
    The normalised input is kept in ``normalised[name]``: the layer's weight gradient is its product with the
    output gradient; the input in ``inputs[name]`` (the BatchNorm prior's statistics)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        inputs.setdefault(name, x)  # the first call, as the loop's hooks record it
        if r_count == 1:
            xh = F.batch_norm(x, None, None, training=True, eps=bn.eps)
        else:  # restarts as channels: (N, R*C, ...), torch's own kernel and its double backward
            xr = x.reshape(r_count, -1, *x.shape[1:]).transpose(0, 1)
            xh = F.batch_norm(xr.reshape(xr.shape[0], -1, *x.shape[2:]), None, None, training=True, eps=bn.eps)
            xh = xh.reshape(xr.shape).transpose(0, 1).reshape(x.shape)
        normalised[name] = xh
        shape = (1, -1, *([1] * (x.dim() - 2)))
        out = xh if bn.weight is None else xh * bn.weight.view(shape)
        return out if bn.bias is None else out + bn.bias.view(shape)

    return forward


def _norm_terms(xh: torch.Tensor, d: torch.Tensor, obs: Mapping[str, torch.Tensor],
                r_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each restart's ``<G_r, O>`` and ``||G_r||^2`` for a BatchNorm layer's weight and bias: per channel the sum
    over the restart's samples and positions of the output gradient ``d`` times the normalised input ``xh``
    (weight), of ``d`` alone (bias)."""
    d = d.reshape(r_count, -1, d.shape[1], d[0, 0].numel())
    dot = d.new_zeros(r_count)
    sq = d.new_zeros(r_count)
    if "weight" in obs:
        g = (d * xh.reshape(d.shape)).sum((1, 3))
        dot = dot + g @ obs["weight"]
        sq = sq + (g * g).sum(1)
    if "bias" in obs:
        gb = d.sum((1, 3))
        dot = dot + gb @ obs["bias"]
        sq = sq + (gb * gb).sum(1)
    return dot, sq


def _one_restart(pb: _Problem) -> str | None:
    """Why one restart of this model runs on the loop (None: it is folded too). With nothing to fold, the fold's
    own work (a hook and a copy per matched layer, BatchNorm's normalised input kept, the depthwise layers'
    patches) cost more than it saved on BatchNorm models and grouped convolutions: mobilenet_v3_small 0.87-0.98x
    the loop, the zoo resnet20 0.69-0.71x (the fold forced, CPU, 1 thread, batch 2); at 4 restarts it was 1.9x
    and 1.2-1.3x faster. (ResNet-18 was 1.4-1.7x faster folded even at one restart.)"""
    for m in pb.module.modules():
        if isinstance(m, _BatchNorm) or (isinstance(m, nn.Conv2d) and m.groups > 1):
            return "one restart of a model with BatchNorm or grouped convolutions: the loop is cheaper"
    return None


def _foldable_conv(layer: nn.Module | None) -> bool:
    """A ``Conv2d`` whose restarts' weight gradients the fold computes: zero padding by numbers (another padding
    mode pads the input before the convolution, which the hooked input would not show)."""
    return isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)


def _padding(conv: nn.Conv2d) -> tuple[int, ...]:
    return tuple(int(p) for p in conv.padding)  # numbers: _foldable_conv leaves "same"/"valid" to the loop


def _grouped_terms(conv: nn.Conv2d, h: torch.Tensor, d: torch.Tensor, obs: Mapping[str, torch.Tensor],
                   r_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each restart's ``<G_r, O>`` and ``||G_r||^2`` for a grouped Conv2d (MobileNet's depthwise layers): the
    restarts' weight gradients from the input patches and the output gradients, group by group, as the attacker's
    ``UnfoldConv2d`` computes the layer (one ``unfold`` and one ``einsum``, with a cheap double backward; a grouped
    ``convolution_backward`` would be split into a piece per group and restart)."""
    n_count, g = h.shape[0] // r_count, conv.groups
    dot = h.new_zeros(r_count)
    sq = h.new_zeros(r_count)
    if "weight" in obs:
        cols = F.unfold(h, conv.kernel_size, dilation=conv.dilation, padding=_padding(conv), stride=conv.stride)
        cols = cols.reshape(r_count, n_count, g, -1, cols.shape[-1])  # (R, N, groups, C/g*kh*kw, positions)
        dg = d.reshape(r_count, n_count, g, conv.out_channels // g, -1)  # (R, N, groups, O/g, positions)
        gw = torch.einsum("rngkl,rngol->rgok", cols, dg).reshape(r_count, -1)  # the weight's (O, C/g, kh, kw) order
        dot = dot + gw @ obs["weight"].reshape(-1)
        sq = sq + (gw * gw).sum(1)
    if "bias" in obs:
        gb = d.reshape(r_count, n_count, d.shape[1], -1).sum((1, 3))
        dot = dot + gb @ obs["bias"]
        sq = sq + (gb * gb).sum(1)
    return dot, sq


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


def _gram_cheaper(conv: nn.Conv2d, d: torch.Tensor, r_count: int) -> bool:
    """Whether a restart's ``||G_r||^2`` costs less from the Gram products of its patches and output gradients
    (rows x rows, rows = its samples x output positions) than from its weight gradient (out x in x kh x kw)."""
    rows = d.shape[0] // r_count * d[0, 0].numel()
    width = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    return rows * (width + conv.out_channels) < width * conv.out_channels


def _fold_step(pb: _Problem, objective: Objective) -> Callable:
    """All restarts as one batch of R x N samples, for models whose matched parameters all belong to
    ``nn.Linear``, zero-padded ``nn.Conv2d`` or BatchNorm layers and whose samples do not interact otherwise.
    A Conv2d's per-restart terms come from its restarts' weight gradients (``_conv_terms``; grouped ones:
    ``_grouped_terms``), or on small maps from Gram products as for a Linear layer over its input patches
    (``_gram_cheaper``). Every BatchNorm layer normalises each restart with its own samples' statistics
    (``_per_restart_batch_norm``), so a restart sees exactly the batch it would see alone; its weight and bias
    terms come from the normalised input (``_norm_terms``).

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
    norms = {n: m for n, m in named.items() if isinstance(m, _BatchNorm)}
    overwritten: set[str] = set()  # matched layers whose output an in-place op overwrites (found by the first step)
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
        normalised: dict[str, torch.Tensor] = {}
        bn_inputs: dict[str, torch.Tensor] = {}
        versions: dict[str, int] = {}
        for n, bn in norms.items():
            bn.forward = _per_restart_batch_norm(bn, r_count, normalised, n, bn_inputs)  # type: ignore[method-assign,assignment]

        def hook(name: str):
            def record(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
                seen[name].append((inputs[0], output))
                versions[name] = output._version
                return output.clone() if name in overwritten else None

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
            for bn in norms.values():
                del bn.forward  # the class's forward again
        if any(len(v) != 1 for v in seen.values()):
            raise _NotFoldable("a matched layer is called more than once per forward pass")
        changed = {n for n in layers if seen[n][0][1]._version != versions[n]}
        if changed:
            # An in-place op after the layer (torchvision's ReLU(inplace=True) after every BatchNorm) made the
            # recorded output its own result, and the output gradient below would be the one after that op:
            # from now on the next layers get a copy of these layers' outputs.
            overwritten.update(changed)
            return step(x, y, m)
        with torch.enable_grad():
            deltas = torch.autograd.grad(loss, [seen[n][0][1] for n in layers], create_graph=True)
            dot = x.new_zeros(r_count)
            sq = x.new_zeros(r_count)
            for n, d in zip(layers, deltas, strict=True):
                h = seen[n][0][0]
                if isinstance(named[n], _BatchNorm):
                    norm_dot, norm_sq = _norm_terms(normalised[n], d, by_layer[n], r_count)
                    dot, sq = dot + norm_dot, sq + norm_sq
                    continue
                layer = named[n]
                if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                    conv_dot, conv_sq = _grouped_terms(layer, h, d, by_layer[n], r_count)
                    dot, sq = dot + conv_dot, sq + conv_sq
                    continue
                if isinstance(layer, nn.Conv2d):
                    if not _gram_cheaper(layer, d, r_count):
                        conv_dot, conv_sq = _conv_terms(layer, h, d, by_layer[n], r_count)
                        dot, sq = dot + conv_dot, sq + conv_sq
                        continue
                    # few output positions (deep layers of a ResNet, 1x1 to 4x4 maps): the convolution as the
                    # Linear layer it is over its input patches, whose Gram products cost less than the restarts'
                    # weight gradients (resnet18's last layers: 2.4M numbers per restart and layer)
                    h = F.unfold(h, layer.kernel_size, dilation=layer.dilation, padding=_padding(layer),
                                 stride=layer.stride).transpose(1, 2)
                    d = d.flatten(2).transpose(1, 2)
                h = h.reshape(r_count, -1, h.shape[-1])  # (R, N*tokens, in)
                d = d.reshape(r_count, -1, d.shape[-1])  # (R, N*tokens, out)
                obs = by_layer[n]
                if "weight" in obs:
                    w = obs["weight"].reshape(d.shape[-1], -1)
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
            if pb.batch_statistics:  # each restart's own batch statistics, as it normalised with them
                total = total + batch_norm_term(pb, objective.bn_weight, bn_inputs, r_count)
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

    ``auto``: ``fold`` where it applies (matched layers Linear, Conv2d or BatchNorm; one restart of a model with
    BatchNorm or grouped convolutions stays on the loop, ``_one_restart``) and a check at the start agrees with
    ``loop`` on the initial iterate (losses and gradients within 1e-3, for BatchNorm models in float64 if not in
    float32, ``_same_in_double``: catches models whose samples interact or whose forward is random in ways the
    rule cannot see); otherwise ``loop``.
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
        if pb.batch_statistics:
            raise ConfigError("batching 'vmap' does not compute the BatchNorm statistics term; use auto or loop")
        return "vmap", _vmap_step(pb, objective), "restarts: vmap"
    loop = _loop_step(pb, objective)
    if batching == "loop":
        return "loop", loop, "restarts: loop (one double backward per restart)"
    why = _foldable(pb)
    if why is None and batching == "auto" and probe()[0].shape[0] == 1:
        why = _one_restart(pb)
    if why is None:
        fold = _fold_step(pb, objective)
        device = pb.observed_norm.device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            reference = probe_step(loop, probe)  # the loop's own errors are the attack's errors
            try:
                agree = _same_step(probe_step(fold, probe), reference)
                if not agree and any(isinstance(m, _BatchNorm) for m in pb.module.modules()):
                    agree = _same_in_double(pb, objective, probe)
            except Exception as e:  # noqa: BLE001 -- e.g. a reshape to a fixed batch: the loop still works
                agree, why = False, f"{type(e).__name__}: {str(e)[:120]}"
        if agree:
            return "fold", fold, ("restarts: folded into the batch (Linear/Conv2d/BatchNorm layers, per-restart "
                                  "gradients)")
        why = why or "a check at the start disagreed with the per-restart computation"
    if batching == "fold":
        raise ConfigError(f"batching 'fold' does not apply: {why}; use auto or loop")
    return "loop", loop, f"restarts: loop (one double backward per restart; not folded: {why})"


def _same_in_double(pb: _Problem, objective: Objective, probe: Callable[[], tuple]) -> bool:
    """The check at the start once more in float64, on a float64 copy of the attacker's model. Train-mode
    BatchNorm over few values per channel (resnet18 at batch 2: one per sample on its 1x1 maps) is so
    ill-conditioned that any other order of the float32 sums moves the image gradient by 10 % (the loop's own
    gradient is that far from the float64 one); in float64 the fold and the loop agree to 1e-13 where they
    compute the same function, and still disagree where they do not (samples that interact, random modules)."""
    module = copy.deepcopy(pb.module).double()
    labels = pb.labels.double() if pb.labels is not None and pb.labels.is_floating_point() else pb.labels
    exact = dataclasses.replace(pb, module=module, observed={n: o.double() for n, o in pb.observed.items()},
                                observed_norm=pb.observed_norm.double(), labels=labels)
    x, y, m = probe()
    args = (x.double(), {k: v.double() for k, v in y.items()}, {k: v.double() for k, v in m.items()})
    reference = _loop_step(exact, objective)(*args)
    return _same_step(_fold_step(exact, objective)(*args), reference)


def probe_step(step: Callable, args: Callable[[], tuple]) -> tuple:
    return step(*args())
