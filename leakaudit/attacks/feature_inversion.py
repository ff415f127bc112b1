"""Feature inversion through a Linear layer with bias: its input recovered exactly, then the layers before it
inverted.

For a ``Linear`` that maps each sample's feature vector h (the flattened conv maps, the pooled features)
to z = W h + b, the update holds ``dW = sum_n delta_n h_nᵀ`` and ``db = sum_n delta_n``. For one sample
every row with ``db_i != 0`` gives ``h = dW_i / db_i``: the features are read off the update exactly
(least squares over those rows, as the ``analytic`` attack does for a first layer; the gradient's scale --
mean loss, learning rate, clipping -- cancels). For a batch, units active for one sample only give that
sample's features exactly, and grouping the repeated row estimates separates the samples; the others are
the mixture of the batch.

Then the image is found by inverting the sub-network before the layer: optimise x inside the valid box so
that the sub-network's output matches the recovered features (1 - cosine per sample, plus a TV prior),
with Adam. Matching thousands of exact feature values is a much better-conditioned problem than matching
the whole gradient.

The layer is not taken from names. A probe runs the attacker's copy of the model once (forward and
backward on a random input) and keeps the earliest ``Linear`` with trainable weight and bias that is
called once, sees a per-sample vector that depends on the input, and whose parameter gradients equal
``delta_nᵀ h_n`` and ``sum_n delta_n`` read at its own output -- the identity the attack relies on. A
``Linear`` that sees the flattened input itself is the ``analytic`` attack's case and is left to it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, cast

import torch
from torch import nn

from ..detect.interface import Findings
from ..models.layers import MaskableDropout
from ..progress import AttackProgress, Observer
from .analytic import AnalyticAttack, least_squares_rows, separate_rows
from .engine import Objective, Schedule, attacker_copy, match_gradients, total_variation
from ..update.interface import LocalTraining
from .interface import Attack, AttackSettings, AttackTarget, Reconstruction
from .registry import register_attack

_MATCH = 1e-4  # relative misfit below which the probe's two gradients are the same (float32 round-off)
_ANALYTIC = " (the analytic attack's case)"
_REL_EPS = 1e-7  # rows whose |db_i| is below this fraction of the largest carry no usable signal


@dataclass(frozen=True)
class FeatureLayer:
    """Where the attack reads the update: a Linear whose weight gradient is its bias gradient times its input."""

    name: str | None  # module path of the Linear; None with ``reason``
    features: int = 0  # its input width
    dropout_before: bool = False  # a dropout layer runs before it (the client's features carry its mask)
    reason: str = ""


@dataclass(frozen=True)
class FeatureRecovery:
    z: torch.Tensor | None  # (N, features) recovered inputs of the layer, or None with ``reason``
    reason: str = ""
    rows_used: int = 0
    separated: int = 0  # samples whose features come from rows of one sample only
    residual: float = math.nan  # ||dW - db hᵀ|| / ||dW|| over the rows used: 0 means an exact fit


class _Reached(Exception):
    """Raised by a forward hook to stop the forward pass once the layer's input is known."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__("reached")
        self.value = value


def _linear_candidates(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Linear layers whose weight and bias are both trainable."""
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, nn.Linear) and m.bias is not None and m.weight.requires_grad and m.bias.requires_grad]


def find_feature_layer(module: nn.Module, input_shape: tuple[int, ...]) -> FeatureLayer:
    """Probe the model for the earliest Linear whose gradient is rank one per sample (see the module doc)."""
    candidates = _linear_candidates(module)
    if not candidates:
        return FeatureLayer(None, reason="not applicable: no Linear layer with a trainable bias")
    error: Exception | None = None
    for batch in (2, 1):  # an ONNX export without dynamic axes runs at its fixed batch size only
        try:
            return _probe(module, tuple(input_shape), [n for n, _ in candidates], batch)
        except Exception as e:  # noqa: BLE001 -- any failure means we cannot check the wiring; say why
            error = e
    return FeatureLayer(None, reason=f"not applicable: a forward and backward pass on input shape "
                                     f"{tuple(input_shape)} failed ({type(error).__name__})")


def _probe(module: nn.Module, input_shape: tuple[int, ...], names: list[str], batch: int) -> FeatureLayer:
    model = attacker_copy(module, torch.device("cpu"))
    named = dict(model.named_modules())
    run = _forward_backward(model, named, input_shape, names, batch)
    dropouts = {n for n, m in named.items() if isinstance(m, (MaskableDropout, nn.Dropout)) and
                getattr(m, "p", 0.0) > 0}
    first_seen = {n: run.order.index(n) for n in names if n in run.order}
    reasons: list[str] = []
    for name in sorted(first_seen, key=first_seen.__getitem__):
        why = _check(name, run.calls[name], run.out_grads.get(name), run.param_grads, run.depends.get(name, False),
                     run.x)
        if why is None:
            before = run.order[:first_seen[name]]
            h = run.calls[name][0][0]
            return FeatureLayer(name, int(h.shape[1]), any(n in dropouts for n in before))
        if why.endswith(_ANALYTIC):  # the input itself is exact from that layer: nothing to invert
            return FeatureLayer(None, reason=f"not applicable: {why}; it inverts the input exactly")
        reasons.append(why)
    return FeatureLayer(None, reason="not applicable: " + ("; ".join(reasons) or "no Linear with a bias runs in "
                                                                                "the forward pass"))


@dataclass(frozen=True)
class _ProbeRun:
    """One forward and backward pass of the attacker's copy on a random batch, as the candidate Linears saw it."""

    x: torch.Tensor  # the random input
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]  # per candidate: (input, output) of each call
    order: list[str]  # every leaf module in the order it ran
    out_grads: Mapping[str, torch.Tensor | None]  # per candidate called once: the loss's gradient at its output
    param_grads: Mapping[str, torch.Tensor | None]  # "name.weight" / "name.bias" -> the loss's gradient
    depends: dict[str, bool]  # per candidate called once: whether its input depends on x


def _forward_backward(model: nn.Module, named: dict[str, nn.Module], input_shape: tuple[int, ...], names: list[str],
                      batch: int) -> _ProbeRun:
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
    order: list[str] = []
    leaves = {m: n for n, m in model.named_modules() if not any(True for _ in m.children())}

    def record(name: str):
        def hook(_mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                calls[name].append((args[0], out))
        return hook

    def ran(mod: nn.Module, _args: tuple) -> None:
        order.append(leaves[mod])

    handles = [named[n].register_forward_hook(record(n)) for n in names]
    handles += [m.register_forward_pre_hook(ran) for m in leaves]
    # the candidates are Linears with a bias (``_linear_candidates``): both are tensors
    params = [cast(torch.Tensor, p) for n in names for p in (named[n].weight, named[n].bias)]
    for p in params:
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *input_shape), generator=gen).requires_grad_(True)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            out = model(x)
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                raise TypeError("the model's output is not a float tensor")
            loss = (out * torch.randn(out.shape, generator=gen)).sum()  # every output direction contributes
            used = [n for n in names if len(calls[n]) == 1]
            outs = [calls[n][0][1] for n in used]
            grads = torch.autograd.grad(loss, outs + params, allow_unused=True, retain_graph=True)
            depends = {n: torch.autograd.grad(calls[n][0][0].sum(), x, allow_unused=True, retain_graph=True)[0]
                       is not None if calls[n][0][0].requires_grad else False for n in used}
    finally:
        for h in handles:
            h.remove()
    out_grads = dict(zip(used, grads[:len(used)], strict=True))
    pgrads = dict(zip([f"{n}.{k}" for n in names for k in ("weight", "bias")], grads[len(used):], strict=True))
    return _ProbeRun(x, calls, order, out_grads, pgrads, depends)


def _check(name: str, calls: list[tuple[torch.Tensor, torch.Tensor]], delta: torch.Tensor | None,
           pgrads: Mapping[str, torch.Tensor | None], depends: bool, x: torch.Tensor) -> str | None:
    """Why this Linear's gradient does not give its input (None: it does)."""
    if len(calls) != 1:
        return f"'{name}' runs {len(calls)} times in one forward pass"
    h = calls[0][0].detach()
    if h.dim() != 2 or h.shape[0] != x.shape[0]:
        return f"'{name}' sees a {h.dim()}-d input {tuple(h.shape)}, not one vector per sample"
    if not depends:
        return f"the input of '{name}' does not depend on the sample"
    flat = x.detach().flatten(1)
    if h.shape == flat.shape and torch.allclose(h, flat, rtol=1e-5, atol=1e-6):
        return f"'{name}' sees the flattened input itself{_ANALYTIC}"
    dw, db = pgrads.get(f"{name}.weight"), pgrads.get(f"{name}.bias")
    if delta is None or dw is None or db is None:
        return f"the output of '{name}' does not reach the loss"
    d = delta.detach()
    scale = float(dw.norm()) + float(db.norm())
    if not scale > 0:
        return f"the gradient of '{name}' is zero on the probe"
    misfit = float((dw - d.T @ h).norm()) + float((db - d.sum(0)).norm())
    if misfit > _MATCH * scale:
        return f"the weight gradient of '{name}' is not its output gradient times its input (shared weights?)"
    return None


def recover_features(gradients: Mapping[str, torch.Tensor], layer: str, num_samples: int = 1) -> FeatureRecovery:
    """The layer's input for each sample from its weight and bias gradients (see the module doc)."""
    wname, bname = f"{layer}.weight", f"{layer}.bias"
    if wname not in gradients or bname not in gradients:
        return FeatureRecovery(None, f"not applicable: the update holds no gradient for {wname} / {bname}")
    dw = gradients[wname].detach().to("cpu", torch.float64)
    db = gradients[bname].detach().to("cpu", torch.float64)
    scale = float(db.abs().max()) if db.numel() else 0.0
    if not scale > 0 or not math.isfinite(scale) or not bool(torch.isfinite(dw).all()):
        return FeatureRecovery(None, f"not applicable: the bias gradient of '{layer}' is zero or not finite")
    rows = (db.abs() > _REL_EPS * scale).nonzero().view(-1)
    dw, db = dw[rows], db[rows]
    if num_samples == 1:
        z, residual = least_squares_rows(dw, db)
        return FeatureRecovery(z[None].to(torch.float32), "", int(rows.numel()), 1, residual)
    zs, separated, residual = separate_rows(dw, db, num_samples)
    return FeatureRecovery(zs.to(torch.float32), "", int(rows.numel()), separated, residual)


def features_of(model: nn.Module, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The sub-network before ``layer``: runs ``model`` until the layer is called and returns its input."""
    target = dict(model.named_modules())[layer]

    def stop(_mod: nn.Module, args: tuple) -> None:
        raise _Reached(args[0])

    def f(x: torch.Tensor) -> torch.Tensor:
        handle = target.register_forward_pre_hook(stop)
        try:
            model(x)
        except _Reached as reached:
            return reached.value.flatten(1)
        finally:
            handle.remove()
        raise RuntimeError(f"the layer '{layer}' was not called")

    return f


def feature_distance(h: torch.Tensor, z: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """1 - cosine similarity per sample (shape (N,)), over the entries in ``keep`` when given."""
    if keep is not None:
        h, z = h * keep, z * keep
    dot = (h * z).sum(1)
    return 1.0 - dot / (h.norm(dim=1) * z.norm(dim=1) + 1e-12)


@dataclass(frozen=True)
class FeatureFit:
    x: torch.Tensor  # (N, *input_shape), CPU
    loss: float  # mean feature distance (1 - cosine) of the returned restart, without the TV term
    restart_losses: tuple[float, ...]
    best_restart: int
    iterations_run: int
    stopped_early: bool


def invert_features(module: nn.Module, layer: str, z: torch.Tensor, input_shape: tuple[int, ...], *,
                    iterations: int, restarts: int = 1, lr: float = 0.1, tv: float = 0.0,
                    bounds: tuple[torch.Tensor, torch.Tensor] | None = None, keep_nonzero: bool = False,
                    device: torch.device | None = None, seed: int = 0, observer: Observer | None = None,
                    attack: str = "feature-inversion") -> FeatureFit:
    """Find inputs whose features at ``layer`` match ``z`` (1 - cosine per sample + TV prior, Adam, box)."""
    device = device or torch.device("cpu")
    model = attacker_copy(module, device)
    f = features_of(model, layer)
    z = z.to(device)
    keep = (z != 0).to(z.dtype) if keep_nonzero else None
    box = (bounds[0].to(device), bounds[1].to(device)) if bounds is not None else None
    n = z.shape[0]
    best_x, best_loss, losses = None, math.inf, []
    iterations_run, stopped = 0, False
    milestones = [int(iterations * q) for q in (3 / 8, 5 / 8, 7 / 8)]
    for r in range(restarts):
        gen = torch.Generator().manual_seed(seed + r)
        x = torch.randn((n, *input_shape), generator=gen).to(device)
        if box is not None:
            x = torch.maximum(torch.minimum(x, box[1]), box[0])
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
        run_best, run_x = math.inf, x.detach().clone()
        for it in range(1, iterations + 1):
            opt.zero_grad(set_to_none=True)
            dist = feature_distance(f(x), z, keep).mean()
            total = dist + tv * total_variation(x) if tv else dist
            total.backward()
            value = float(dist.detach())
            if value < run_best:
                run_best, run_x = value, x.detach().clone()
            opt.step()
            sched.step()
            with torch.no_grad():
                if box is not None:
                    x.copy_(torch.maximum(torch.minimum(x, box[1]), box[0]))
            iterations_run = max(iterations_run, it)
            if observer is not None and (it % 25 == 0 or it == iterations):
                observer.attack_progress(AttackProgress(attack, it, iterations, min(best_loss, run_best)))
            # every iteration (the loss above is already on the host): on a large model 25 iterations take a
            # minute, and the scan's time cap must stop the loop within one
            if observer is not None and observer.should_stop():
                stopped = True
                break
        with torch.no_grad():  # the last step's iterate
            value = float(feature_distance(f(x), z, keep).mean())
        if value < run_best:
            run_best, run_x = value, x.detach().clone()
        losses.append(run_best)
        if run_best < best_loss:
            best_loss, best_x = run_best, run_x
        if stopped:
            break
    assert best_x is not None
    best = losses.index(best_loss)
    return FeatureFit(best_x.cpu(), best_loss, tuple(losses), best, iterations_run, stopped)


def feature_mismatch(module: nn.Module, layer: str, z: torch.Tensor, x: torch.Tensor,
                     device: torch.device | None = None) -> float:
    """Mean 1 - cosine between ``x``'s features at ``layer`` and ``z``: the objective ``invert_features``
    reports, without its TV term, so two candidate images can be compared by what the attacker knows."""
    device = device or torch.device("cpu")
    f = features_of(attacker_copy(module, device), layer)
    with torch.no_grad():
        return float(feature_distance(f(x.to(device)), z.to(device)).mean())


def _first_trainable(findings: Findings | None) -> str | None:
    layers = findings.layers if findings is not None else ()
    return next((n for n, _, k in layers if k > 0), None)


@register_attack
class FeatureInversion(Attack):
    """A Linear layer's input recovered exactly from its gradient, then the layers before it inverted."""

    name = "feature-inversion"
    summary = ("exact features from a Linear layer's rank-one gradient, then the layers before it inverted "
               "(feature match + TV)")
    # Adam iterations x restarts matching the recovered features (lr 0.3, TV 0.1), then `refine` IG iterations
    # (TV 1e-2) from the best; chosen by benchmarks/bench_feature_inversion.py (docs/attacks.md).
    budgets = {"quick": AttackSettings(iterations=300, restarts=1, lr=0.3, tv=0.1,
                                       extra={"refine": 200, "refine_tv": 1e-2}),
               "standard": AttackSettings(iterations=1000, restarts=2, lr=0.3, tv=0.1,
                                          extra={"refine": 600, "refine_tv": 1e-2}),
               "thorough": AttackSettings(iterations=4000, restarts=4, lr=0.3, tv=0.1,
                                          extra={"refine": 4000, "refine_tv": 1e-2})}

    def reads_local_steps(self, local: LocalTraining) -> str:
        return (f"reads features off the FedAvg delta as one averaged gradient; its IG refinement unrolls the "
                f"{local.steps} local steps")

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        if module is None:
            return "not applicable: no model"
        candidates = [n for n, _ in _linear_candidates(module)]
        if not candidates:
            return "not applicable: no Linear layer with a trainable bias"
        first = _first_trainable(findings)
        if first is not None and first in candidates and AnalyticAttack().skip_reason(findings, module) is None:
            return (f"not applicable: the first trainable layer '{first}' is a Linear with a trainable bias: the "
                    "analytic attack inverts the input from it exactly")
        return None  # the wiring is probed with the input shape in run()

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction:
        start = time.perf_counter()
        shape = tuple(target.input_shape)

        def skipped(reason: str, notes: tuple[str, ...] = ()) -> Reconstruction:
            return Reconstruction(attack=self.name, x=torch.empty((0, *shape)), labels=target.labels,
                                  attack_loss=math.nan, settings=settings, seconds=time.perf_counter() - start,
                                  iterations_run=0, notes=(reason, *notes), device="cpu")

        layer = find_feature_layer(target.module, shape)
        if layer.name is None:
            return skipped(layer.reason)
        rec = recover_features(target.gradients, layer.name, target.num_samples)
        if rec.z is None:
            return skipped(rec.reason)
        notes = [f"layer {layer.name} ({layer.features} input features): {rec.rows_used} rows with a non-zero "
                 f"bias gradient, relative feature-fit residual {rec.residual:.2e}"]
        if target.num_samples > 1:
            mixed = target.num_samples - rec.separated
            notes.append(f"separated {rec.separated} of {target.num_samples} samples from rows of one sample only "
                         f"(reconstructions 0-{rec.separated - 1}); " if rec.separated else
                         f"separated 0 of {target.num_samples} samples; ")
            notes[-1] += (f"the other {mixed} are inverted from the batch's mixture" if mixed else "all exact")
        if layer.dropout_before:
            notes.append("a dropout layer runs before it: only the features the client's mask kept are matched")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        fit = invert_features(target.module, layer.name, rec.z, shape, iterations=int(settings.iterations),
                              restarts=int(settings.restarts), lr=float(settings.lr), tv=float(settings.tv),
                              bounds=target.bounds, keep_nonzero=layer.dropout_before, device=device, seed=seed,
                              observer=observer, attack=self.name)
        notes.append(f"features matched to 1 - cosine {fit.loss:.2e} ({fit.iterations_run} Adam iterations x "
                     f"{len(fit.restart_losses)} restart(s), TV {settings.tv:g}); seed {seed}")
        x, labels, loss, iterations, stopped = fit.x, target.labels, fit.loss, fit.iterations_run, fit.stopped_early
        # IG iterations from the feature-matched image, never more than `iterations` (an --iterations override
        # meant to make a scan fast caps both stages)
        refine = min(int(settings.extra.get("refine", 0)), int(settings.iterations))
        if refine > 0 and not stopped:
            if target.num_samples > 1:
                # IG cannot tell a batch's samples apart as the separated features do: measured to lower SSIM
                # on every batch of 2 (benchmarks/bench_feature_inversion.py, docs/attacks.md)
                notes.append("no IG refinement at batch > 1 (it lowers the separated samples' quality; the "
                             "ig attack runs on the batch on its own)")
            elif target.labels is None:
                notes.append("no IG refinement: labels neither known nor recovered")
            elif layer.dropout_before:
                # The features came through the client's dropout mask, which IG's copy (dropout off) does not
                # apply: refining lowered SSIM and PSNR on 4 of 4 photos with dropout before the layer (SSIM
                # 0.40-0.81 -> 0.26-0.44); with dropout after it the refinement is kept (PSNR +0.3 to +3.8 dB).
                # benchmarks/bench_feature_inversion.py --models ConvNet --batch-size 1 (docs/attacks.md).
                notes.append("no IG refinement: the features passed the client's dropout mask, which IG cannot "
                             "model (it lowered every score when measured); the dia attack models the masks")
            else:
                res = match_gradients(
                    target.module, target.gradients,
                    Objective(distance="cosine", tv=float(settings.extra.get("refine_tv", 1e-2))),
                    Schedule(iterations=refine, restarts=1, lr=float(settings.extra.get("refine_lr", 0.1))),
                    input_shape=shape, num_samples=target.num_samples, num_classes=target.num_classes,
                    labels=target.labels, loss=target.loss, bounds=target.bounds, device=device, seed=seed,
                    observer=observer, attack=self.name, init=fit.x, local=target.local_training)
                iterations, stopped = iterations + res.iterations_run, res.stopped_early
                # IG's copy runs without the client's dropout masks anywhere in the model, so a lower gradient
                # loss can mean a worse image (Flower CNN, dropout after fc1: SSIM 0.23 -> 0.03 while the
                # gradient loss fell). The recovered features are exact, so the attacker keeps whichever image
                # reproduces them better; never the ground truth.
                mismatch = feature_mismatch(target.module, layer.name, rec.z, res.x, device)
                head = (f"refined by IG from the feature-matched image: {res.iterations_run} iterations, TV "
                        f"{float(settings.extra.get('refine_tv', 1e-2)):g}, gradient 1 - cosine {res.loss:.3e}, "
                        f"features 1 - cosine {mismatch:.2e}")
                if mismatch < fit.loss:
                    x, labels, loss = res.x, res.labels, res.loss
                    notes.append(f"{head}, below the features-only image's {fit.loss:.2e}: the refined image is "
                                 "kept (its gradient loss is the attack loss reported)")
                else:
                    notes.append(f"{head}, not below the features-only image's {fit.loss:.2e}: the features-only "
                                 "image is kept (the refinement moved away from the exact features)")
        return Reconstruction(attack=self.name, x=x, labels=labels, attack_loss=loss,
                              settings=settings, seconds=time.perf_counter() - start,
                              iterations_run=iterations, stopped_early=stopped, notes=tuple(notes),
                              restart_losses=fit.restart_losses, best_restart=fit.best_restart, device=str(device))
