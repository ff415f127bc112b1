"""A plain ``torch.nn.Module`` from a Python caller (a notebook, an FL framework's global model) as a ``LoadedModel``.

The caller keeps their module: leakaudit audits a deep copy, so swapping its dropout layers for
``MaskableDropout`` (which DIA drives, and the attacker's copy switches off) and putting it in train mode (as a
client trains it) never changes the caller's object. A model in memory has no file, so its identity in the
report is the sha256 of its state_dict (names, dtypes, shapes and bytes): two modules with the same weights and
buffers have the same identity, whatever object holds them.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .dropout_tools import replace_dropout
from .interface import LoadedModel
from .user_arch import describe_exception

FORMAT = "torch"


def state_sha256(module: nn.Module) -> str:
    """The sha256 of ``module.state_dict()``: each entry's name, dtype and shape, then its raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def display_name(module: nn.Module) -> str:
    """What the report calls a model that has no file: its class, marked as in memory."""
    return f"{type(module).__name__} (in memory)"


def wrap_module(module: nn.Module, *, input_shape: tuple[int, ...] | None, num_classes: int | None) -> LoadedModel:
    """A deep copy of ``module`` ready for the pipeline. ``input_shape`` (one sample) is required; ``num_classes``
    is read from a forward pass of zeros when not given, and checked against it when given."""
    if input_shape is None:
        raise ConfigError(f"input_shape: not given for the {type(module).__name__} passed in memory, and a module "
                          "does not record the shape it takes; pass input_shape=(C, H, W) (one sample, no batch "
                          "dimension), or pass the samples as tensors, whose shape gives it")
    shape = _shape(input_shape)
    sha256 = state_sha256(module)
    try:
        own = copy.deepcopy(module).to("cpu")
    except Exception as e:  # noqa: BLE001 -- whatever the user's module holds that cannot be copied
        raise ModelError(f"{display_name(module)}: copy.deepcopy failed ({describe_exception(e)}); leakaudit audits "
                         "a copy so your module is left as it is: make the module deep-copyable") from e
    replace_dropout(own)  # plain nn.Dropout -> MaskableDropout: DIA drives the masks, attackers switch them off
    classes = _classes(own, shape, num_classes)
    own.train()  # the client computes its update in train mode
    return LoadedModel(module=own, input_shape=shape, num_classes=classes, path=Path(display_name(module)),
                       sha256=sha256, format=FORMAT)


def _shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"input_shape: {input_shape!r} is not a tuple of integers; pass e.g. "
                          "input_shape=(3, 32, 32)") from e
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"input_shape: {input_shape!r} has a dimension below 1; pass one sample's shape, e.g. "
                          "input_shape=(3, 32, 32)")
    return dims


def _classes(module: nn.Module, shape: tuple[int, ...], given: int | None) -> int:
    module.eval()  # two zero samples through BatchNorm in train mode would still run, but would move its statistics
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *shape))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's forward: any error is theirs to fix
        raise ConfigError(f"input_shape: the {type(module).__name__} fails on input of shape {list(shape)} "
                          f"({describe_exception(e)}); pass the input_shape=(C, H, W) the model takes") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        kind = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{display_name(module)}: forward returns {kind}; leakaudit needs class logits of shape "
                         "(batch, classes): wrap the model so forward returns them")
    classes = int(out.shape[1])
    if given is not None and int(given) != classes:
        raise ConfigError(f"num_classes: {given} given but the {type(module).__name__} outputs {classes} logits; "
                          f"pass num_classes={classes} or leave it out")
    if classes < 2:
        raise ModelError(f"{display_name(module)}: the model has {classes} output; leakaudit audits classifiers "
                         "trained with cross-entropy, whose gradient over one class is zero; audit a model with 2 "
                         "or more class logits")
    return classes
