"""Engine candidates not yet tried (issue 8): ``torch.compile`` and channels-last, against the plain loop.

One IG iteration (the client's cross-entropy gradient with ``create_graph=True``, 1 - cosine to the observed
gradient + TV, the gradient of that with respect to the image, a signed Adam step, the box clip), on the
benchmark models of ``bench_engine.py`` (random weights, 32x32, 10 classes; the attacker's copy of the model
as the engine makes it: train-mode BatchNorm without running statistics, dropout off). Variants:

- ``plain``: ``torch.autograd.grad(create_graph=True)`` and a second ``autograd.grad`` (the engine's loop);
- ``channels_last``: the same with the model's weights and the image in ``torch.channels_last``;
- ``compile``: ``torch.compile`` of the objective written as ``torch.func.grad`` of the cosine of
  ``torch.func.grad`` of the client loss (one graph for the double backward; autograd.grad inside a compiled
  function is a graph break). Its compile time is the first call's time minus one compiled iteration,
  and it is reported with the iterations it takes to earn that back;
- ``compile+cl``: both.

``torch.compile`` is timed with a fresh, empty Inductor cache (``TORCHINDUCTOR_CACHE_DIR`` set to a new
temporary folder: what a user's first scan pays) unless ``--warm-cache`` (the default cache folder, filled by
an earlier run: what later scans of the same model pay).

``--fold-bound 1,4,8``: for models without BatchNorm, per restart-iteration, R steps of the plain loop on N
samples (``loop``) against (a) ``stacked``: one plain step on R x N samples, the restarts stacked into the
batch -- a bound, not an attack: it sums the restarts' gradients, while the cosine needs each restart's own,
so no fold can win more than it shows; (b) ``conv fold``: the exact fold for conv nets (``_conv_fold``: each
restart's Conv2d weight gradient by one grouped ``convolution_backward``, Linear as the engine's fold) and
(c) ``conv fold (unfold)``: the same with those weight gradients by ``F.unfold`` and one einsum; both checked
against the loop's gradients.

Every variant's first call is a warm-up (for ``compile`` the compilation); then ``--iterations`` timed
iterations, fastest of ``--repeats`` rounds, the variants alternated within each round, so load bursts on a
shared machine hit them alike. The printed check compares each variant's objective gradient with the plain
loop's at the same image (max relative difference).

Usage: python benchmarks/bench_engine_candidates.py [--models cnn,resnet18] [--iterations 10] [--repeats 3]
       [--threads 1] [--device cpu] [--variants plain,channels_last,compile,compile+cl] [--warm-cache]
       [--fold-bound 1,4,8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import _model, _observed, _sync  # noqa: E402 -- the same models and client update

VARIANTS = ("plain", "channels_last", "compile", "compile+cl")


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def _setup(name: str, device: torch.device):
    from leakaudit.attacks.engine import attacker_copy

    model, batch = _model(name)
    model = model.to(device).train()
    shape = (batch, 3, 32, 32)
    torch.manual_seed(1)
    x_true = torch.rand(shape, device=device) * 2 - 1
    y = torch.arange(batch, device=device) % 10
    observed = _observed(model, x_true, y)
    net = attacker_copy(model, device)
    names = [n for n, _ in net.named_parameters() if n in observed]
    obs_flat = torch.cat([observed[n].reshape(-1) for n in names])
    return net, names, obs_flat, y, shape


def _variant(kind: str, net: nn.Module, names: list[str], obs_flat: torch.Tensor, y: torch.Tensor, tv: float):
    """``step(x) -> (loss, d loss / d x)`` for one variant."""
    cl = kind in ("channels_last", "compile+cl")
    if cl:
        net = net.to(memory_format=torch.channels_last)
    own = dict(net.named_parameters())
    obs_norm = obs_flat.norm()

    def cosine(flat: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.dot(flat, obs_flat) / (flat.norm() * obs_norm + 1e-8)

    if kind in ("plain", "channels_last"):
        params = [own[n] for n in names]

        def step(x: torch.Tensor):
            for p in params:
                p.requires_grad_(True)
            xr = x.detach().contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            xr.requires_grad_(True)
            with torch.enable_grad():
                g = torch.autograd.grad(F.cross_entropy(net(xr), y), params, create_graph=True)
                loss = cosine(torch.cat([t.reshape(-1) for t in g])) + tv * _tv(xr)
                dx, = torch.autograd.grad(loss, [xr])
            return loss.detach(), dx

        return step
    params = {n: own[n].detach() for n in names}
    state = {n: t.detach() for n, t in own.items() if n not in params}
    state.update(dict(net.named_buffers()))

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def client(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(functional_call(net, {**state, **p}, (x,)), y)

        g = grad(client)(params)
        loss = cosine(torch.cat([g[n].reshape(-1) for n in names])) + tv * _tv(x)
        return loss, loss

    compiled = torch.compile(grad(objective, has_aux=True))

    def step_compiled(x: torch.Tensor):
        xr = x.detach().contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        dx, loss = compiled(xr)
        return loss.detach(), dx

    return step_compiled


def _run(step, x0: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` IG iterations from ``x0``: signed Adam (lr 0.1), box clip."""
    x = x0.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    for it in range(1, iterations + 1):
        _, dx = step(x)
        g = dx.sign()
        m.mul_(0.9).add_(g, alpha=0.1)
        v.mul_(0.999).addcmul_(g, g, value=0.001)
        x = (x - 0.1 * (m / (1 - 0.9 ** it)) / ((v / (1 - 0.999 ** it)).sqrt() + 1e-8)).clamp(-1, 1)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cnn,resnet18")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--warm-cache", action="store_true", help="keep Inductor's default (possibly filled) cache")
    ap.add_argument("--fold-bound", default="", help="e.g. 1,4,8: restarts stacked into the batch (no BatchNorm)")
    args = ap.parse_args(argv)
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_cold_")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kinds = [k for k in args.variants.split(",") if k]
    bad = [k for k in kinds if k not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants {','.join(bad)}: unknown; use some of {', '.join(VARIANTS)}")
    print(f"torch {torch.__version__}, device {device}, {args.threads} thread(s); IG, {args.iterations} timed "
          f"iterations, fastest of {args.repeats} alternated rounds; Inductor cache "
          f"{'warm (default folder)' if args.warm_cache else 'cold (a new folder)'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    for name in args.models.split(","):
        net, names, obs_flat, y, shape = _setup(name, device)
        torch.manual_seed(2)
        x0 = torch.randn(shape, device=device).clamp(-1, 1)
        steps, first, check = {}, {}, {}
        _, reference = _variant("plain", net, names, obs_flat, y, 1e-4)(x0)
        _, again = _variant("plain", net, names, obs_flat, y, 1e-4)(x0)
        noise = float((again - reference).abs().max() / reference.abs().max())
        for k in kinds:
            steps[k] = _variant(k, net, names, obs_flat, y, 1e-4)
            _sync(device)
            t = time.perf_counter()
            try:
                _, dx = steps[k](x0)
            except Exception as e:  # noqa: BLE001 -- a variant that cannot run is a result, reported
                print(f"  {name} {k}: failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                steps.pop(k)
                continue
            _sync(device)
            first[k] = time.perf_counter() - t
            check[k] = float((dx - reference).abs().max() / reference.abs().max())
        best = {k: float("inf") for k in steps}
        for _ in range(args.repeats):
            for k, step in steps.items():
                _sync(device)
                t = time.perf_counter()
                _run(step, x0, args.iterations)
                _sync(device)
                best[k] = min(best[k], (time.perf_counter() - t) / args.iterations * 1000)
        plain = best.get("plain")
        print(f"{name} (batch {shape[0]}), load {os.getloadavg()[0]:.2f}; the plain loop against itself: "
              f"grad rel diff {noise:.1e}")
        print(f"  {'variant':<14} {'ms/it':>8} {'plain/this':>10} {'first call s':>12} {'compile s':>9} "
              f"{'break-even it':>13} {'grad rel diff':>13}")
        for k in steps:
            ms = best[k]
            compile_s = first[k] - ms / 1000 if k.startswith("compile") else 0.0
            ratio = plain / ms if plain else float("nan")
            gain = (plain - ms) / 1000 if plain else 0.0
            even = f"{compile_s / gain:13.0f}" if k.startswith("compile") and gain > 0 else f"{'-':>13}"
            print(f"  {k:<14} {ms:8.2f} {ratio:10.2f} {first[k]:12.2f} {compile_s:9.2f} {even} {check[k]:13.1e}",
                  flush=True)
        if args.fold_bound:
            _fold_bound(name, net, names, obs_flat, y, shape, [int(r) for r in args.fold_bound.split(",")], args,
                        device)
    return 0


def _conv_fold(net: nn.Module, names: list[str], obs_flat: torch.Tensor, y: torch.Tensor, how: str = "grouped"):
    """The restarts folded into the batch for a BatchNorm-free conv net, each restart's cosine exact: one
    forward and one activation backward on R x N samples, then per matched layer each restart's own weight
    gradient -- Linear: as the engine's fold (the dot product through the layer, the squared norm by the Gram
    matrices where that is cheaper than the batched weight gradient); Conv2d: one ``convolution_backward`` with
    the restarts as groups (input (N, R*C, H, W), output gradient (N, R*O, H', W'), weight repeated R times)
    -- and the second backward through all of it. ``how="unfold"``: the Conv2d weight gradients instead by
    ``F.unfold`` of the layer input and one einsum with the output gradient (torch's double backward of a
    grouped convolution runs group by group). ``step(xs (R, N, ...)) -> (losses (R,), d/dxs)``."""
    own = dict(net.named_parameters())
    named = dict(net.named_modules())
    layers = list(dict.fromkeys(n.rpartition(".")[0] for n in names))
    offsets, at = {}, 0
    for n in names:
        offsets[n] = (at, at + own[n].numel())
        at += own[n].numel()
    obs = {n: obs_flat[a:b].view_as(own[n]) for n, (a, b) in offsets.items()}
    obs_norm = obs_flat.norm()

    def step(xs: torch.Tensor):
        r_count, n_count = xs.shape[0], xs.shape[1]
        for p in own.values():
            p.requires_grad_(False)
        xl = xs.detach().requires_grad_(True)
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        hooks = [named[n].register_forward_hook(lambda _m, i, o, n=n: seen.__setitem__(n, (i[0], o)))
                 for n in layers]
        try:
            with torch.enable_grad():
                out = net(xl.reshape(r_count * n_count, *xs.shape[2:]))
                loss = F.cross_entropy(out, y.repeat(r_count)) * r_count
        finally:
            for h in hooks:
                h.remove()
        with torch.enable_grad():
            deltas = torch.autograd.grad(loss, [seen[n][1] for n in layers], create_graph=True)
            dot = xs.new_zeros(r_count)
            sq = xs.new_zeros(r_count)
            for n, d in zip(layers, deltas, strict=True):
                h, mod = seen[n][0], named[n]
                if isinstance(mod, nn.Linear):  # as the engine's fold: no weight gradient where the Gram is cheaper
                    h3, d3 = h.reshape(r_count, -1, h.shape[-1]), d.reshape(r_count, -1, d.shape[-1])
                    w = obs[n + ".weight"]
                    dot = dot + (d3 * (h3 @ w.T)).sum((1, 2))
                    if h3.shape[1] * (h3.shape[2] + d3.shape[2]) < h3.shape[2] * d3.shape[2]:
                        sq = sq + ((d3 @ d3.transpose(1, 2)) * (h3 @ h3.transpose(1, 2))).sum((1, 2))
                    else:
                        g = d3.transpose(1, 2) @ h3
                        sq = sq + (g * g).sum((1, 2))
                    gw = None
                elif how == "unfold":
                    cols = F.unfold(h, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # (RN, C*k*k, L)
                    cols = cols.reshape(r_count, n_count, cols.shape[1], cols.shape[2])
                    d4 = d.reshape(r_count, n_count, d.shape[1], -1)  # (R, N, O, L)
                    gw = torch.einsum("rnol,rnkl->rok", d4, cols).flatten(1)
                else:
                    c, o = h.shape[1], d.shape[1]
                    hg = h.reshape(r_count, n_count, *h.shape[1:]).transpose(0, 1).reshape(n_count, r_count * c,
                                                                                           *h.shape[2:])
                    dg = d.reshape(r_count, n_count, *d.shape[1:]).transpose(0, 1).reshape(n_count, r_count * o,
                                                                                           *d.shape[2:])
                    gw = torch.ops.aten.convolution_backward(
                        dg, hg, mod.weight.repeat(r_count, 1, 1, 1), None, list(mod.stride), list(mod.padding),
                        list(mod.dilation), False, [0, 0], r_count, [False, True, False])[1].reshape(r_count, -1)
                if gw is not None:
                    dot = dot + gw @ obs[n + ".weight"].reshape(-1)
                    sq = sq + (gw * gw).sum(1)
                if n + ".bias" in obs:
                    gb = d.reshape(r_count, n_count, d.shape[1], -1).sum((1, 3))
                    dot = dot + gb @ obs[n + ".bias"]
                    sq = sq + (gb * gb).sum(1)
            total = 1.0 - dot / (sq.sqrt() * obs_norm + 1e-8) + 1e-4 * torch.stack([_tv(v) for v in xl])
            dx, = torch.autograd.grad(total.sum(), [xl])
        return total.detach(), dx

    return step


def _fold_bound(name: str, net: nn.Module, names: list[str], obs_flat: torch.Tensor, y: torch.Tensor,
                shape: tuple[int, ...], restarts: list[int], args: argparse.Namespace, device: torch.device) -> None:
    """ms per restart-iteration (objective + its gradient): R separate plain steps (the loop), one plain step on
    R x N samples (``stacked``: the bound, restarts' gradients summed), and the exact conv fold."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        print(f"  fold: not applicable to {name} (BatchNorm couples the samples of a batch)")
        return
    named = dict(net.named_modules())
    convs_ok = all(isinstance(named[n.rpartition(".")[0]], (nn.Linear, nn.Conv2d)) for n in names) and all(
        m.groups == 1 and m.padding_mode == "zeros" for m in net.modules() if isinstance(m, nn.Conv2d))
    step = _variant("plain", net, names, obs_flat, y, 1e-4)
    folds = {"conv fold": _conv_fold(net, names, obs_flat, y), "conv fold (unfold)":
             _conv_fold(net, names, obs_flat, y, "unfold")} if convs_ok else {}
    torch.manual_seed(3)
    rows = []
    for r in restarts:
        xs = torch.randn((r, *shape), device=device).clamp(-1, 1)
        folded = _variant("plain", net, names, obs_flat, y.repeat(r), 1e-4)
        big = xs.reshape(r * shape[0], *shape[1:])
        cases = {"loop": lambda xs=xs, r=r: [step(xs[k]) for k in range(r)],
                 "stacked": lambda big=big, f=folded: f(big)}
        err = float("nan")
        if folds:
            ref = torch.stack([step(xs[k])[1] for k in range(r)])
            err = 0.0
        for k, fold in folds.items():
            cases[k] = lambda xs=xs, f=fold: f(xs)
            err = max(err, float((fold(xs)[1] - ref).abs().max() / ref.abs().max()))
        best = {k: float("inf") for k in cases}
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for k, fn in cases.items():
                _sync(device)
                t = time.perf_counter()
                for _ in range(args.iterations):
                    fn()
                _sync(device)
                best[k] = min(best[k], (time.perf_counter() - t) / args.iterations / r * 1000)
        cells = ", ".join(f"{k} {v:.2f} ({best['loop'] / v:.2f}x)" for k, v in best.items())
        rows.append(f"R={r}: {cells}; conv folds' grad rel diff {err:.1e}")
    print(f"  restarts folded, ms per restart-iteration (objective + gradient), load {os.getloadavg()[0]:.2f}:")
    for row in rows:
        print(f"    {row}", flush=True)

if __name__ == "__main__":
    sys.exit(main())
