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

from ..errors import ConfigError, setting_ref
from .interface import LoadedModel

BATCH_SIZE = setting_ref("batch_size")  # named in errors: the CLI shows --batch-size, a Python caller batch_size


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
    """(batch size the audit uses, a note for the report when leakaudit chose it). A model whose client runs
    BatchNorm in eval mode (``client_model``) has no floor: its layers use running statistics."""
    fixed = fixed_batch(model, requested or 1)
    if requested is None and fixed:
        return fixed, (f"batch size {fixed} chosen (no --batch-size given): the file fixes batch {fixed} in its "
                       "graph input (exported without dynamic axes)")
    if requested is not None and fixed:
        raise ConfigError(f"{BATCH_SIZE} {requested}: {model.path} was exported with a fixed batch size of "
                          f"{fixed} and cannot run at {requested}; give {BATCH_SIZE} {fixed}, or re-export with "
                          'dynamic_axes={"input": {0: "batch"}}')
    floor = train_batch_floor(model)
    if requested is None:
        if floor.batch == 1:
            return 1, ""
        return floor.batch, (f"batch size {floor.batch} chosen (no --batch-size given): the smallest at which "
                             f"BatchNorm layer {floor.layer!r} can run in train mode")
    if requested < floor.batch:
        raise ConfigError(f"{BATCH_SIZE} {requested}: BatchNorm layer {floor.layer!r} of {model.path} gets "
                          f"{requested * floor.per_sample} value(s) per channel at that batch and cannot run in "
                          f"train mode, as a client trains (torch needs more than 1); give {BATCH_SIZE} "
                          f"{floor.batch} or more, leave it out to use the smallest that works, or give "
                          f"{setting_ref('client_batchnorm')} eval if your clients train with frozen BatchNorm "
                          "statistics")
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


# ---------------------------------------------------------------------------------------------------
# The client's BatchNorm mode (--client-batchnorm)
# ---------------------------------------------------------------------------------------------------

CLIENT_BATCHNORM = ("train", "eval")


def check_client_batchnorm(value: object, where: str = setting_ref("client_batchnorm")) -> str:
    """``value`` when it is a BatchNorm mode a client can train in: the one check of the setting."""
    if value not in CLIENT_BATCHNORM:
        raise ConfigError(f"{where} {value}: unknown BatchNorm mode; use train (batch statistics, torch's "
                          "default in training) or eval (frozen running statistics)")
    return str(value)


class FrozenBatchNorm(nn.Module):
    """A BatchNorm layer of a client that trains with it in eval mode: it normalises with the running statistics
    it was given, whatever the module's train flag, and its ``weight``/``bias`` stay trainable parameters of the
    same names. The attacker's copy (``attacks.engine.attacker_copy``) switches models to train mode and puts
    ``_BatchNorm`` layers on batch statistics; this layer is not one, so the attacker computes what the client
    did."""

    def __init__(self, source: _BatchNorm) -> None:
        super().__init__()
        self.eps = source.eps
        self.num_features = source.num_features
        self.weight = source.weight
        self.bias = source.bias
        assert source.running_mean is not None and source.running_var is not None
        self.register_buffer("running_mean", source.running_mean.detach().clone())
        self.register_buffer("running_var", source.running_var.detach().clone())
        tracked = getattr(source, "num_batches_tracked", None)
        if isinstance(tracked, torch.Tensor):
            self.register_buffer("num_batches_tracked", tracked.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.running_mean, self.running_var
        assert isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor)
        return nn.functional.batch_norm(x, mean, var, self.weight, self.bias, training=False, momentum=0.0,
                                        eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, frozen running statistics"


def client_model(model: LoadedModel, mode: str) -> LoadedModel:
    """The model as the client trains it: ``model`` itself for train-mode BatchNorm (or a model without
    BatchNorm), else a copy whose BatchNorm layers use their running statistics (``FrozenBatchNorm``). The copy
    has the same parameter and buffer names, so updates, findings and reports name layers alike; a layer
    without running statistics (``track_running_stats=False``) normalises with the batch in eval mode too and
    is left as it is. Idempotent: a frozen model is returned unchanged."""
    check_client_batchnorm(mode)
    if mode == "train":
        return model
    targets = [n for n, m in model.module.named_modules()
               if n and isinstance(m, _BatchNorm) and m.running_mean is not None and m.running_var is not None]
    if not targets:
        return model
    import copy
    import dataclasses

    module = copy.deepcopy(model.module)
    for name in targets:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        source = module.get_submodule(name)
        frozen = FrozenBatchNorm(source)  # type: ignore[arg-type]
        # hooks on the layer (a declared dropout runs in one) keep running
        frozen._forward_hooks, frozen._forward_pre_hooks = source._forward_hooks, source._forward_pre_hooks
        parent._modules[leaf] = frozen
    return dataclasses.replace(model, module=module)
