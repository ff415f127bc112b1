"""The empirical probe: which modules are random in train mode, whatever their structure.

Two train-mode forward passes on the same input, with different seeds, seen two ways:

- outputs: a module whose output differs between the passes although its input was the same draws random
  numbers itself. Containers are blamed only when none of their sub-modules was (functional randomness such
  as ``F.dropout`` or ``torch.randn_like`` written in the container's ``forward``). This also catches
  randomness torch does not see (numpy or Python ``random`` inside a forward).
- random ops: every ATen op torch tags ``nondeterministic_seeded`` (bernoulli, normal, rand*, randperm...)
  is charged to the innermost module running at that moment. This finds a container's own randomness even
  when a random sub-module already makes its output differ, which the output comparison cannot tell apart.

The model is left as it was: train-mode BatchNorm updates running statistics, so every buffer is restored,
and the global RNG state is forked so the caller's random stream does not move.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode  # the documented way to observe ATen ops

from ..models.interface import LoadedModel
from .trace import example_input, forward_or_fail

ROOT = "<model>"  # how the top-level module is named in findings (its module path is "")


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


_SAMPLE = 4096


def _fingerprint(t: torch.Tensor) -> tuple[tuple[int, ...], torch.Tensor]:
    """Shape and a compact summary: small tensors whole, large ones as an even sample of their elements
    plus their sum and absolute sum (float64). Keeping every activation of two passes would cost gigabytes
    on an ImageNet-size model; a random layer changes many elements, which the sample and sums catch."""
    flat = t.detach().flatten().double()
    if flat.numel() <= _SAMPLE:
        return tuple(t.shape), flat.clone()
    sample = flat[:: flat.numel() // _SAMPLE][:_SAMPLE]
    return tuple(t.shape), torch.cat([sample, flat.sum().view(1), flat.abs().sum().view(1)]).cpu()


def _same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for (shape_a, x), (shape_b, y) in zip(a, b, strict=True):
        # Tight tolerance: GPU kernels may differ in the last bits between identical calls.
        if shape_a != shape_b or not torch.allclose(x, y, rtol=1e-6, atol=1e-7, equal_nan=True):
            return False
    return True


class _RandomOps(TorchDispatchMode):
    """Charges every seeded-random ATen op to the innermost module on ``stack``."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.sources: set[str] = set()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in its lazy dynamo-disable, which imports torch._dynamo (1.5 s
        # of a scan's start-up) on the first op. This mode never runs under torch.compile: nothing to disable.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 -- torch's protocol
        if torch.Tag.nondeterministic_seeded in getattr(func, "tags", ()) and _draws(func, args, kwargs or {}):
            self.sources.add(self.stack[-1] if self.stack else "")
        return func(*args, **(kwargs or {}))


def _draws(func, args: tuple, kwargs: dict) -> bool:  # noqa: ANN001 -- an ATen OpOverload
    """False for a seeded op called with its dropout probability at 0, which draws nothing that reaches its
    output: timm's fused attention in train mode calls the CPU flash-attention kernel, tagged seeded for its
    ``dropout_p``, with ``dropout_p=0`` when attention dropout is off."""
    for i, arg in enumerate(getattr(getattr(func, "_schema", None), "arguments", ())):
        if arg.name in ("dropout_p", "p"):
            value = kwargs.get(arg.name, args[i] if i < len(args) else arg.default_value)
            return not (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)
    return True


def _record_pass(module: nn.Module, x: torch.Tensor, seed: int, model: LoadedModel
                 ) -> tuple[dict[str, list[tuple[list, list]]], set[str]]:
    """(module name -> fingerprints of (inputs, outputs) per call, modules that ran random ops)."""
    calls: dict[str, list] = defaultdict(list)
    names = {m: n for n, m in module.named_modules()}
    stack: list[str] = []

    def pre_hook(mod: nn.Module, args: tuple) -> None:
        stack.append(names[mod])

    def hook(mod: nn.Module, args: tuple, out: object) -> None:
        if stack and stack[-1] == names[mod]:
            stack.pop()
        calls[names[mod]].append(([_fingerprint(t) for t in _tensors(args)],
                                  [_fingerprint(t) for t in _tensors(out)]))

    handles = [m.register_forward_pre_hook(pre_hook) for m in names]
    # Registered after any hook the loader put on a module (a declared dropout runs in one), so a module's
    # name stays on the stack while its earlier hooks run.
    handles += [m.register_forward_hook(hook) for m in names]
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    random_ops = _RandomOps(stack)
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), random_ops:
            torch.manual_seed(seed)
            forward_or_fail(model, x)
    finally:
        for h in handles:
            h.remove()
    return calls, random_ops.sources


def stochastic_modules(model: LoadedModel, *, seeds: tuple[int, int] = (0, 1)) -> tuple[str, ...]:
    """Names of the modules that are a source of randomness in train mode (``ROOT`` for the model itself)."""
    module = model.module
    modes = {m: m.training for m in module.modules()}
    saved = {n: b.detach().clone() for n, b in module.named_buffers()}
    x = example_input(model, 2, random=True)  # batch 2: train-mode BatchNorm1d needs more than one sample
    try:
        module.train()
        first, random_ops = _record_pass(module, x, seeds[0], model)
        second, _ = _record_pass(module, x, seeds[1], model)
    finally:
        with torch.no_grad():
            for n, b in module.named_buffers():
                if n in saved:
                    b.copy_(saved[n])
        for m, mode in modes.items():
            m.training = mode

    random_calls = {name for name, calls in first.items()
                    if any(_same(i1, i2) and not _same(o1, o2)
                           for (i1, o1), (i2, o2) in zip(calls, second.get(name, []), strict=False))}
    sources = {n for n in random_calls
               if not any(other != n and (n == "" or other.startswith(f"{n}.")) for other in random_calls)}
    sources |= random_ops
    order = {n: i for i, (n, _) in enumerate(module.named_modules())}
    return tuple(ROOT if n == "" else n for n in sorted(sources, key=order.__getitem__))
