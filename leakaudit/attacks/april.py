"""APRIL (Lu et al., CVPR 2022): closed-form recovery of a ViT's input from its positional embedding.

In a ViT the patch embedding is a ``Conv2d`` whose kernel equals its stride (a Linear applied to each
flattened patch x_p), and a learnable positional embedding is added to its output: z_p = W x_p + b + pos_p.
For one sample the gradients then satisfy

    dL/dpos_p = dL/dz_p =: G_p          dW = sum_p G_p x_pᵀ = Gᵀ X          db = sum_p G_p

so the unknown patches X (P x C·k·k) solve the linear system Gᵀ X = dW, read off the update by least
squares (pseudo-inverse of Gᵀ). It is exact when Gᵀ (D x P) has rank P, which needs D >= P; with fewer
embedding dimensions than patches the minimum-norm solution is returned and the rank says so. The
gradient scale (mean loss, learning rate, norm clipping) cancels.

The structure is not taken from names: a probe runs the model once and checks that, for a candidate
parameter and Conv2d, the parameter's gradient equals the gradient at the convolution's output token for
token -- the identity the attack relies on -- and that the convolution sees the model's input and its
patches tile it. A class token's position (no patch) is skipped by finding the patch tokens' offset.

For a batch the update holds sums over samples of both sides and the system has no closed form: the
attack then does not apply, and says so, rather than return a mixture.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ..detect.interface import Findings
from ..progress import Observer
from .interface import BUDGET_NAMES, Attack, AttackSettings, AttackTarget, Reconstruction
from .registry import register_attack

_MATCH = 1e-4  # relative misfit below which the probe's two gradients are the same (float32 round-off)


@dataclass(frozen=True)
class PatchEmbedding:
    """Where the attack reads the update: the patch convolution and the positional embedding."""

    conv: str | None  # module path of the patch-embedding Conv2d; None with ``reason``
    pos: str | None = None  # parameter name of the learnable positional embedding
    offset: int = 0  # index of the first patch token in the embedding (tokens before it: class/prefix tokens)
    grid: tuple[int, int] = (0, 0)  # patches down and across
    patch: tuple[int, int] = (0, 0)  # kernel = stride
    reason: str = ""

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class PatchInversion:
    x: torch.Tensor | None  # (1, *input_shape) in model space, or None with ``reason``
    reason: str = ""
    embedding: PatchEmbedding | None = None
    residual: float = math.nan  # ||Gᵀ X - dW|| / ||dW||: 0 means an exact fit
    rank: int = 0  # rank of Gᵀ; P (the number of patches) means every patch is determined
    notes: tuple[str, ...] = ()


def patch_convs(module: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Trainable Conv2d layers that cut their input into non-overlapping patches (kernel == stride)."""
    out = []
    for name, m in module.named_modules():
        if (isinstance(m, nn.Conv2d) and m.weight.requires_grad and tuple(m.kernel_size) == tuple(m.stride)
                and m.padding in ((0, 0), "valid") and tuple(m.dilation) == (1, 1) and m.groups == 1):
            out.append((name, m))
    return out


# torch layers whose parameters are weights of a computation, never an embedding added to tokens
_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def position_candidates(module: nn.Module, dims: set[int]) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters shaped like a positional embedding, (1, T, D) or (T, D), for a D in ``dims``
    (a Linear's (out, in) weight has that shape too: torch layers' own parameters are left out)."""
    out = []
    for prefix, owner in module.named_modules():
        if isinstance(owner, _LAYERS):
            continue
        for n, p in owner.named_parameters(recurse=False):
            if (p.requires_grad and p.is_floating_point() and p.dim() in (2, 3) and p.shape[-1] in dims
                    and (p.dim() == 2 or p.shape[0] == 1)):
                out.append((f"{prefix}.{n}" if prefix else n, p))
    return out


def _first_tensor(obj: object) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        return next((t for t in map(_first_tensor, obj) if t is not None), None)
    if isinstance(obj, dict):
        return next((t for t in map(_first_tensor, obj.values()) if t is not None), None)
    return None


def find_patch_embedding(module: nn.Module, input_shape: tuple[int, ...]) -> PatchEmbedding:
    """Probe the model (train mode, one forward and backward on a random input) for a positional embedding
    whose gradient equals a patch convolution's output gradient (see the module doc)."""
    if len(input_shape) != 3:
        return PatchEmbedding(None, reason=f"not applicable: the input shape {tuple(input_shape)} is not an "
                                           "image (C, H, W)")
    convs = patch_convs(module)
    if not convs:
        return PatchEmbedding(None, reason="not applicable: no patch embedding (a Conv2d whose kernel equals "
                                           "its stride)")
    candidates = position_candidates(module, {c.out_channels for _, c in convs})
    if not candidates:
        return PatchEmbedding(None, reason="not applicable: no learnable positional embedding (a trainable "
                                           "(1, T, D) parameter, D the patch embedding's channels)")
    error: Exception | None = None
    for batch in (1, 2):  # an ONNX export without dynamic axes runs at its fixed batch size only
        try:
            return _probe(module, tuple(input_shape), convs, candidates, batch)
        except Exception as e:  # noqa: BLE001 -- any failure means we cannot check the wiring; say why
            error = e
    return PatchEmbedding(None, reason=f"not applicable: a forward and backward pass on input shape "
                                       f"{tuple(input_shape)} failed ({type(error).__name__})")


def _probe(module: nn.Module, input_shape: tuple[int, ...], convs: list[tuple[str, nn.Conv2d]],
           candidates: list[tuple[str, nn.Parameter]], batch: int) -> PatchEmbedding:
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # conv name -> (its input, its output)

    def hook_for(name: str):
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if name not in seen and args and isinstance(args[0], torch.Tensor):
                seen[name] = (args[0].detach(), out)
        return hook

    param = candidates[0][1]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *input_shape), generator=gen, dtype=param.dtype).to(param.device)
    handles = [conv.register_forward_hook(hook_for(name)) for name, conv in convs]
    modes = [(m, m.training) for m in module.modules()]
    saved = {n: b.detach().clone() for n, b in module.named_buffers()}  # train-mode BatchNorm moves its stats
    devices = [param.device.index or 0] if param.device.type == "cuda" else []
    try:
        module.train()  # the mode the client computes its update in
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(0)
            out = _first_tensor(module(x))
            if out is None or not out.is_floating_point():
                raise TypeError("the model's output is not a float tensor")
            weight = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
            loss = (out * weight).sum()  # a generic loss: every output direction contributes
            used = [n for n, _ in convs if n in seen]
            grads = torch.autograd.grad(loss, [seen[n][1] for n in used] + [p for _, p in candidates],
                                        allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for n, b in module.named_buffers():
                if n in saved:
                    b.copy_(saved[n])
    conv_grads = dict(zip(used, grads[:len(used)], strict=True))
    pos_grads = dict(zip((n for n, _ in candidates), grads[len(used):], strict=True))
    reasons: list[str] = []
    for name, conv in convs:
        found = _match(name, conv, seen.get(name), conv_grads.get(name), pos_grads, x, reasons)
        if found is not None:
            return found
    return PatchEmbedding(None, reason="not applicable: " + ("; ".join(reasons) or "no positional embedding is "
                                                              "added to a patch convolution's output"))


def _match(name: str, conv: nn.Conv2d, io: tuple[torch.Tensor, torch.Tensor] | None, out_grad: torch.Tensor | None,
           pos_grads: Mapping[str, torch.Tensor | None], x: torch.Tensor, reasons: list[str]) -> PatchEmbedding | None:
    """The PatchEmbedding for this conv if it sees the whole input and some candidate's gradient matches."""
    if io is None or out_grad is None:
        return None  # did not run, or its output does not reach the loss
    inp, _ = io
    kh, kw = conv.kernel_size
    _, _, gh, gw = out_grad.shape
    if inp.shape != x.shape or not torch.equal(inp, x):
        reasons.append(f"the patch convolution '{name}' does not see the model's input")
        return None
    if gh * kh != x.shape[2] or gw * kw != x.shape[3]:
        reasons.append(f"the patches of '{name}' ({kh}x{kw}) do not tile the {x.shape[2]}x{x.shape[3]} input")
        return None
    g = out_grad.sum(0).flatten(1).T.double()  # (P, D): token p = row-major patch index, summed over the batch
    scale = float(g.norm())
    if not scale > 0:
        return None
    for pname, pg in pos_grads.items():
        if pg is None or pg.shape[-1] != g.shape[1]:
            continue
        pg = pg.reshape(-1, g.shape[1]).double()
        for offset in range(pg.shape[0] - g.shape[0] + 1):
            if float((pg[offset:offset + g.shape[0]] - g).norm()) <= _MATCH * scale:
                return PatchEmbedding(name, pname, offset, (gh, gw), (kh, kw))
    reasons.append(f"no trainable (1, T, {g.shape[1]}) parameter is added to the output of '{name}' token for "
                   "token (its gradient would equal that output's)")
    return None


def invert_patches(gradients: Mapping[str, torch.Tensor], module: nn.Module, input_shape: tuple[int, ...],
                   num_samples: int = 1) -> PatchInversion:
    """Solve Gᵀ X = dW for the patches of one sample (see the module doc)."""
    if num_samples != 1:
        return PatchInversion(None, f"not applicable: APRIL's closed form recovers one sample, and this update "
                                    f"sums {num_samples}; the other attacks run on the batch")
    emb = find_patch_embedding(module, input_shape)
    if emb.conv is None or emb.pos is None:
        return PatchInversion(None, emb.reason)
    wname = f"{emb.conv}.weight"
    if wname not in gradients or emb.pos not in gradients:
        return PatchInversion(None, f"not applicable: the update holds no gradient for {wname} / {emb.pos}", emb)
    dw = gradients[wname].detach().to("cpu", torch.float64)
    d = dw.shape[0]
    dw = dw.reshape(d, -1)  # (D, C·kh·kw): row i is sum_p G_pi x_p
    g = gradients[emb.pos].detach().to("cpu", torch.float64).reshape(-1, d)[emb.offset:emb.offset + emb.patches]
    gt = g.T  # (D, P)
    if not bool(torch.isfinite(gt).all() and torch.isfinite(dw).all()) or float(gt.abs().max()) == 0:
        return PatchInversion(None, f"not applicable: the gradient of {emb.pos} is zero or not finite", emb)
    # Singular values below the gradients' own round-off carry no information: inverting them would amplify
    # float32 noise into the image (numpy's matrix_rank tolerance, at the precision the client sent).
    rtol = max(gt.shape) * torch.finfo(gradients[emb.pos].dtype).eps
    singular = torch.linalg.svdvals(gt)
    rank = int((singular > rtol * singular[0]).sum())
    patches = torch.linalg.pinv(gt, rtol=rtol) @ dw  # (P, C·kh·kw), least squares / minimum norm
    residual = float((gt @ patches - dw).norm() / dw.norm().clamp_min(1e-300))
    notes = []
    if rank < emb.patches:
        # Typical when D <= P: patch tokens that reach the loss only through LayerNorms (class-token pooling)
        # get gradients orthogonal to the all-ones direction, so rank <= D - 1.
        notes.append(f"underdetermined: Gᵀ has rank {rank} for {emb.patches} patches ({d} embedding dimensions); "
                     "the minimum-norm solution is returned, not exact")
    bname = f"{emb.conv}.bias"
    if bname in gradients:  # db = sum_p G_p: the attacker's own check that G was read at the right tokens
        db = gradients[bname].detach().to("cpu", torch.float64)
        mismatch = float((g.sum(0) - db).norm() / db.norm().clamp_min(1e-300))
        notes.append(f"bias check ||sum_p G_p - db|| / ||db|| = {mismatch:.1e}")
    c = input_shape[0]
    (gh, gw), (kh, kw) = emb.grid, emb.patch
    image = patches.reshape(gh, gw, c, kh, kw).permute(2, 0, 3, 1, 4).reshape(c, gh * kh, gw * kw)
    return PatchInversion(image[None].to(torch.float32), "", emb, residual, rank, tuple(notes))


def _first_conv(findings: Findings | None, module: nn.Module) -> str | None:
    """The first Conv2d in forward order (detection's layer list), None when no order is known."""
    modules = dict(module.named_modules())
    layers = findings.layers if findings is not None else ()
    return next((n for n, _, _ in layers if isinstance(modules.get(n), nn.Conv2d)), None)


@register_attack
class AprilAttack(Attack):
    """Exact input recovery from a ViT's learnable positional embedding and patch embedding (batch 1)."""

    name = "april"
    summary = "closed-form inversion of a ViT's patch embedding through its learnable positional embedding"
    budgets = {budget: AttackSettings(iterations=1, restarts=1, lr=0.0, tv=0.0)  # one exact step at every budget
               for budget in BUDGET_NAMES}

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        if module is None:
            return "not applicable: no model"
        convs = patch_convs(module)
        if not convs:
            return "not applicable: no patch embedding (a Conv2d whose kernel equals its stride)"
        first = _first_conv(findings, module)
        if first is not None and first not in dict(convs):
            # a CNN's 1x1 convolutions have kernel == stride too, but the patch embedding sees the input first
            return (f"not applicable: the first convolution '{first}' is not a patch embedding (its kernel is not "
                    "its stride)")
        if not position_candidates(module, {c.out_channels for _, c in convs}):
            return ("not applicable: no learnable positional embedding (a trainable (1, T, D) parameter, D the "
                    "patch embedding's channels)")
        return None  # the wiring is checked with the input shape in run()

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction:
        start = time.perf_counter()
        result = invert_patches(target.gradients, target.module, tuple(target.input_shape), target.num_samples)
        notes = list(result.notes)
        emb = result.embedding
        if result.x is None or emb is None:
            x = torch.empty((0, *target.input_shape))
            notes.insert(0, result.reason)
        else:
            x = result.x
            if target.bounds is not None:
                lo, hi = (b.detach().to("cpu", x.dtype) for b in target.bounds)
                x = torch.maximum(torch.minimum(x, hi), lo)
            notes.insert(0, f"patch embedding {emb.conv} ({emb.patch[0]}x{emb.patch[1]} patches, "
                            f"{emb.grid[0]}x{emb.grid[1]} grid), positional embedding {emb.pos} from token "
                            f"{emb.offset}: rank {result.rank} of {emb.patches}, relative fit residual "
                            f"{result.residual:.2e}")
        return Reconstruction(attack=self.name, x=x, labels=target.labels, attack_loss=result.residual,
                              settings=settings, seconds=time.perf_counter() - start, iterations_run=0,
                              notes=tuple(notes), device="cpu")
