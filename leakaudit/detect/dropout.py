"""Dropout layers: in the torch module, in the ONNX file, and those the user declared (``--dropout``).

A dropout layer draws a fresh Bernoulli mask in every client step, so the server's copy of the model is not
the realisation that produced the gradient; DIA (Scheliga et al., AAAI 2023) optimises those masks too.
Layers with rate 0 draw nothing and are left out.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.interface import LoadedModel
from ..models.layers import MaskableDropout
from .interface import DropoutLayer
from .trace import Trace, example_input, forward_or_fail

TORCH_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
NOT_CALLED_WARNING = (
    "dropout module {name!r} (rate {p:g}) is never called: its layer applies the rate itself (e.g. F.dropout "
    "or a fused attention kernel), so no attack can drive its masks (DIA models only dropout modules that "
    "run); the probe reports that layer as stochastic")
# onnx2torch's own converter for opset >= 12 Dropout: the ratio is a graph input, not an attribute.
_ONNX2TORCH_DYNAMIC = "OnnxDropoutDynamic"


def module_rate(module: nn.Module) -> float | None:
    """The dropout rate of a dropout module, None for anything else (or a dynamic one without a rate)."""
    if isinstance(module, (MaskableDropout, *TORCH_DROPOUT)):
        return float(module.p)
    return None


def is_dropout_module(module: nn.Module) -> bool:
    return module_rate(module) is not None or type(module).__name__ == _ONNX2TORCH_DYNAMIC


def onnx_module_names(node_name: str) -> tuple[str, ...]:
    """Names onnx2torch may give the module converted from an ONNX node: it strips a leading "/" (the
    dynamo exporter's "/3/Dropout" becomes "3/Dropout") and turns dots into slashes."""
    stripped = node_name.lstrip("/")
    return (node_name, stripped, node_name.replace(".", "/"), stripped.replace(".", "/"))


def find_dropout(model: LoadedModel, tr: Trace) -> tuple[tuple[DropoutLayer, ...], tuple[str, ...]]:
    """(dropout layers in forward order, warnings)."""
    modules = dict(model.module.named_modules())
    warnings: list[str] = []
    unmatched = sorted((n for n, m in modules.items() if is_dropout_module(m)), key=tr.position_of)
    found = _onnx_dropout(model, tr, modules, unmatched, warnings)
    found.update(_module_dropout(model, tr, modules, unmatched, warnings))
    for layer, rate in model.declared_dropout.items():
        found.update(_declared(layer, float(rate), modules, tr, found))

    layers = sorted((d for d in found.values() if d.p > 0), key=lambda d: (d.position, d.name))
    return tuple(layers), tuple(warnings)


def _onnx_dropout(model: LoadedModel, tr: Trace, modules: dict[str, nn.Module], unmatched: list[str],
                  warnings: list[str]) -> dict[str, DropoutLayer]:
    """The dropout modules of the file's ONNX Dropout nodes, taken out of ``unmatched``."""
    found: dict[str, DropoutLayer] = {}
    if model.onnx is None:
        return found
    for node_name, ratio in model.onnx.dropout_nodes:
        renamed = model.onnx.module_name(node_name)
        name = next((c for c in (renamed, *onnx_module_names(node_name)) if c and c in modules), None)
        if name is None or name not in unmatched:
            # The loader renamed the module: take the next dropout module in execution order (not one the
            # user declared, which has no node in the file).
            name = next((n for n in unmatched if not hasattr(modules[n], "after")), None)
        if name is None:
            warnings.append(f"ONNX Dropout node {node_name!r} (ratio {ratio:g}) has no dropout module in the "
                            "converted model; its masks are not simulated")
            continue
        unmatched.remove(name)
        rate = module_rate(modules[name])
        found[name] = DropoutLayer(name, rate if rate is not None else float(ratio), tr.position_of(name), "onnx")
    return found


def _module_dropout(model: LoadedModel, tr: Trace, modules: dict[str, nn.Module], unmatched: list[str],
                    warnings: list[str]) -> dict[str, DropoutLayer]:
    """The dropout modules no ONNX node named, by their own rate."""
    found: dict[str, DropoutLayer] = {}
    # Dropout modules the eval-mode trace did not see: a forward may call one only in train mode.
    unseen = {n for n in unmatched if n not in tr.module_position and not hasattr(modules[n], "after")}
    never_called = unseen - _called_in_train_mode(model, unseen) if unseen else set()
    for name in unmatched:
        rate = module_rate(modules[name])
        if name in never_called:
            if rate:  # a layer that passes the rate to a function (F.dropout, a fused attention kernel)
                warnings.append(NOT_CALLED_WARNING.format(name=name, p=rate))
            continue
        if rate is None:
            warnings.append(f"dropout module {name!r} has no readable rate; declare it with --dropout {name}=P")
            continue
        found[name] = DropoutLayer(name, rate, tr.position_of(name), "module")
    return found


def _called_in_train_mode(model: LoadedModel, names: set[str]) -> set[str]:
    """Which of ``names`` a train-mode forward calls. The model is left as it was (train-mode BatchNorm
    updates running statistics: buffers restored; the caller's random stream forked)."""
    module = model.module
    targets = {m: n for n, m in module.named_modules() if n in names}
    called: set[str] = set()
    handles = [m.register_forward_pre_hook(lambda mod, _args: called.add(targets[mod])) for m in targets]
    modes = {m: m.training for m in module.modules()}
    saved = {n: b.detach().clone() for n, b in module.named_buffers()}
    try:
        module.train()
        x = example_input(model, 2, random=True)  # batch 2: train-mode BatchNorm1d needs more than one sample
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            forward_or_fail(model, x)
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for n, b in module.named_buffers():
                if n in saved:
                    b.copy_(saved[n])
        for m, mode in modes.items():
            m.training = mode
    return called


def _declared(layer: str, rate: float, modules: dict[str, nn.Module], tr: Trace,
              found: dict[str, DropoutLayer]) -> dict[str, DropoutLayer]:
    """A rate the user declared for ``layer`` (the export removed the dropout after it).

    The loader adds a MaskableDropout that runs on ``layer``'s output and names the layer in its ``after``
    attribute; that module is re-labelled "declared" rather than listed twice. Without one (a loader that
    did not insert it) the declaration is still reported, at the layer's position.
    """
    for name, d in found.items():
        if getattr(modules.get(name), "after", None) == layer:
            return {name: DropoutLayer(name, d.p, d.position, "declared")}
    position = tr.position_of(layer) if layer in modules else len(tr.leaves)
    return {layer: DropoutLayer(layer, rate, position, "declared")}
