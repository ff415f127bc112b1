"""Can gradient matching work on this update at all? The conditioning diagnostic of one client batch.

A gradient-matching attack descends from a candidate towards inputs whose update matches the observed one. That
needs the update to change smoothly with the input: a candidate close to the samples must give a close update.
Train-mode BatchNorm breaks this when a layer sees few values per channel (N*H*W of its input): torchvision
resnet18 at 32x32 and batch 2 normalises two values per channel in its last stage, and moving the input by 1e-4
turns the update into an unrelated one (docs/attacks.md, "Conditioning"). No attack converges there, on any
hardware; the honest verdict is INCONCLUSIVE, and the report should say why and what changes it.

``conditioning`` measures it with one extra client update: the client's undefended update at the samples
(already computed by the scan) against the update at the samples plus a seeded Gaussian ``delta`` whose
per-element standard deviation is ``epsilon`` times the pixel range in model space on images (``epsilon`` in
model space on records: a standardised column's standard deviation, a one-hot entry's 0-1), with the same seed (the
same dropout masks). Forward pre-hooks on the train-mode BatchNorm layers record the values per channel each
sees. Device-agnostic: everything runs where the model is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.interface import SampleBatch
from ..detect.interface import Findings
from ..errors import LeakauditError
from ..models.interface import LoadedModel
from ..result import Conditioning
from .client import client_update
from .interface import ThreatModel

EPSILON = 1e-4  # the input move, relative to the pixel range on images (per-element standard deviation)
# Cosine at or above which an update is "stable": between the two groups measured by
# benchmarks/bench_conditioning.py (docs/attacks.md, "Conditioning"). The zoo mlp/cnn give 1.000, train-mode
# resnet18 / mobilenet_v3_small at 32x32 and batch 8 0.92-0.99; the same at batch 2 0.47-0.65.
THRESHOLD = 0.8
FEW_VALUES = 4  # a train-mode BatchNorm layer with at most this many values per channel normalises almost nothing


def conditioning(model: LoadedModel, batch: SampleBatch, threat: ThreatModel, reference: Mapping[str, torch.Tensor],
                 findings: Findings | None = None, *, seed: int = 0,
                 bounds: tuple[torch.Tensor, torch.Tensor] | None = None, epsilon: float = EPSILON,
                 threshold: float = THRESHOLD) -> Conditioning:
    """The conditioning of the client's update at ``batch``. ``reference``: the undefended update at the samples
    under ``threat`` with ``seed`` (``client_update``); ``bounds``: the model-space images of pixel values 0 and
    1, shape (1, *input_shape) (None: a range of 1)."""
    threat = dataclasses.replace(threat, defenses=())
    shape = tuple(int(s) for s in batch.x.shape[1:])
    common = dict(epsilon=epsilon, threshold=threshold, batch_size=len(batch), input_shape=shape,
                  modality=batch.modality)
    if not batch.x.is_floating_point():  # token ids: there is no small move of a token
        return Conditioning("not_measured", None, reason="the samples are token ids: a token cannot move by a "
                            "small amount", **common)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(int(seed) + 7919)  # its own stream: the client's RNG is not touched
    noise = torch.randn(batch.x.shape, generator=generator, dtype=torch.float64)
    span = (bounds[1] - bounds[0]).abs().double() if bounds is not None else torch.ones(1, dtype=torch.float64)
    moved = batch.x + (epsilon * span * noise).to(batch.x.dtype)
    seen: dict[str, int] = {}
    handles = _hooks(model.module, seen, threat.batchnorm)
    try:
        other = client_update(model, dataclasses.replace(batch, x=moved), threat, findings, seed=seed,
                              record_masks=False)
    except (ValueError, RuntimeError, LeakauditError) as e:  # a diagnostic must not cost the scan its verdict
        return Conditioning("not_measured", None, reason=f"the update at the moved samples failed "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:160]})", **common)  # type: ignore[arg-type]
    finally:
        for h in handles:
            h.remove()
    cosine = _cosine(reference, other.gradients)
    if cosine is None:
        return Conditioning("not_measured", None, reason="the update at the samples is zero or not finite",
                            **common)  # type: ignore[arg-type]
    layers = tuple({"name": n, "values_per_channel": v} for n, v in seen.items() if v <= FEW_VALUES)
    verdict = "stable" if cosine >= threshold else "ill-conditioned"
    return Conditioning(verdict, cosine, layers=layers, **common)  # type: ignore[arg-type]


def _hooks(module: nn.Module, seen: dict[str, int], batchnorm: str) -> list[torch.utils.hooks.RemovableHandle]:
    """Record N*H*W of every BatchNorm layer's input that normalises with the batch's statistics."""
    if batchnorm == "eval":
        return []
    handles = []
    for name, m in module.named_modules():
        if not isinstance(m, _BatchNorm):
            continue

        def record(_m: nn.Module, inputs: tuple, name: str = name) -> None:
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[1]:
                seen.setdefault(name, x.numel() // x.shape[1])

        handles.append(m.register_forward_pre_hook(record))
    return handles


def _cosine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float | None:
    names = [n for n in a if n in b]
    if not names:
        return None
    u = torch.cat([a[n].detach().flatten().double() for n in names])
    v = torch.cat([b[n].detach().flatten().double().to(u.device) for n in names])
    nu, nv = u.norm().item(), v.norm().item()
    if not (nu > 0 and nv > 0 and math.isfinite(nu) and math.isfinite(nv)):
        return None
    return float(torch.dot(u, v) / (nu * nv))
