"""The smallest client batch a model's train-mode BatchNorm layers can run at.

A client trains in train mode, where BatchNorm normalises with the batch's own statistics and torch refuses
a channel with one value (``Expected more than 1 value per channel when training``). A layer sees
``batch x spatial`` values per channel (spatial: the elements per channel of one sample, 1 after global
pooling, e.g. torchvision resnet18's last block at 32x32, or a BatchNorm1d on features), so a layer with one
spatial element needs a batch of 2. ``train_batch_floor`` finds that layer with one eval-mode forward (no
statistics updated) and hooks on the BatchNorm modules; ``resolve_batch_size`` turns it into the batch the
audit uses: the user's ``--batch-size`` when it works (else an input error naming the layer), or, when the
user set none, the smallest that works, with a note for the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from .interface import LoadedModel


@dataclass(frozen=True)
class BatchFloor:
    batch: int  # smallest batch every BatchNorm layer can train at (1: no constraint)
    layer: str = ""  # the layer that needs it
    per_sample: int = 0  # values per channel that layer gets from one sample


def train_batch_floor(model: LoadedModel) -> BatchFloor:
    layers: dict[nn.Module, str] = {m: n for n, m in model.module.named_modules() if isinstance(m, _BatchNorm)}
    if not layers:
        return BatchFloor(1)
    fixed = model.onnx.batch_size if model.onnx is not None else None
    probe = fixed or 2
    seen: dict[str, int] = {}

    def record(module: nn.Module, inputs: tuple) -> None:
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] and x.shape[1]:
            seen.setdefault(layers[module], x.numel() // (x.shape[0] * x.shape[1]))

    handles = [m.register_forward_pre_hook(record) for m in layers]
    try:
        _eval_forward(model, probe)
    except Exception:  # noqa: BLE001 -- the load already ran the model; the client step reports real errors
        return BatchFloor(1)
    finally:
        for h in handles:
            h.remove()
    tight = [(name, n) for name, n in seen.items() if n <= 1]
    if not tight:
        return BatchFloor(1)
    name, per_sample = tight[0]
    return BatchFloor(2, name, per_sample)


def resolve_batch_size(model: LoadedModel, requested: int | None) -> tuple[int, str]:
    """(batch size the audit uses, a note for the report when leakaudit chose it)."""
    fixed = fixed_batch(model, requested or 1)
    if requested is None and fixed:
        return fixed, (f"batch size {fixed} chosen (no --batch-size given): the file fixes batch {fixed} in its "
                       "graph input (exported without dynamic axes)")
    if requested is not None and fixed:
        raise ConfigError(f"--batch-size {requested}: {model.path} was exported with a fixed batch size of {fixed} "
                          f"and cannot run at {requested}; give --batch-size {fixed}, or re-export with "
                          'dynamic_axes={"input": {0: "batch"}}')
    floor = train_batch_floor(model)
    if requested is None:
        if floor.batch == 1:
            return 1, ""
        return floor.batch, (f"batch size {floor.batch} chosen (no --batch-size given): the smallest at which "
                             f"BatchNorm layer {floor.layer!r} can run in train mode")
    if requested < floor.batch:
        raise ConfigError(f"--batch-size {requested}: BatchNorm layer {floor.layer!r} of {model.path} gets "
                          f"{requested * floor.per_sample} value(s) per channel at that batch and cannot run in "
                          f"train mode, as a client trains (torch needs more than 1); give --batch-size "
                          f"{floor.batch} or more, or leave it out to use the smallest that works")
    return requested, ""


def fixed_batch(model: LoadedModel, batch: int) -> int | None:
    """The batch size an ONNX file fixes in its graph input when the model cannot run at ``batch`` (exporters
    bake it into Reshape targets without dynamic axes), else None: a fixed input that the graph never reshapes
    by (e.g. Flatten) runs at any batch, so only a failed forward makes it binding."""
    fixed = model.onnx.batch_size if model.onnx is not None else None
    if not fixed or fixed == batch:
        return None
    try:
        _eval_forward(model, batch)
    except Exception:  # noqa: BLE001 -- any failure at another batch than the file's: the fixed batch binds
        return fixed
    return None


def _eval_forward(model: LoadedModel, batch: int) -> None:
    """One quiet eval-mode forward of zeros at ``batch`` (raises what the model raises); the mode restored."""
    was_training = model.module.training
    device = next((p.device for p in model.module.parameters()), torch.device("cpu"))
    try:
        model.module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.module(torch.zeros(batch, *model.input_shape, device=device))
    finally:
        model.module.train(was_training)
