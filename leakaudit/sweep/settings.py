"""Applying one value of a knob: to the defense list (defense knobs) or to the model (``dropout.p``)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import ConfigError, argument_ref, setting_ref
from ..models.interface import LoadedModel
from ..models.layers import VariationalBottleneck
from ..models.zoo import ARCHITECTURES, create_model
from .knobs import Knob

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
DEFENSE_SETTING = setting_ref("defenses")
VARY = argument_ref("vary")


def defenses_with(defenses: tuple[str, ...], knob: Knob, value: float) -> tuple[str, ...]:
    """The ``--defense`` list with the knob's defense set to ``value``.

    A defense of the same kind already in the list is replaced in place (its order matters: clip then
    noise is DP-SGD, noise then clip is not); otherwise the varied defense is applied last.
    """
    varied = f"{knob.component}:{knob.param}={value!r}"
    out, replaced = [], False
    for spec in defenses:
        if spec.partition(":")[0].strip() == knob.component:
            if replaced:
                raise ConfigError(f"{DEFENSE_SETTING} {spec}: {knob.component} is given twice while {VARY} {knob.name} "
                                  f"varies it; give it at most once")
            out.append(varied)
            replaced = True
        else:
            out.append(spec)
    if not replaced:
        out.append(varied)
    return tuple(out)


def check_rebuildable(model: LoadedModel) -> str:
    """The built-in architecture name ``dropout.p`` can rebuild, or a one-line ConfigError."""
    arch = model.arch
    if model.format != "safetensors" or not arch or arch not in ARCHITECTURES:
        what = "an ONNX graph" if model.format == "onnx" else f"architecture {arch!r}"
        raise ConfigError(f"{VARY} dropout.p: {model.path} is {what}, but dropout.p can only rebuild built-in "
                          f"architectures ({', '.join(ARCHITECTURES.names())}) from safetensors weights; "
                          f"export one model per dropout rate and scan each, or vary a defense knob")
    return arch


def _precode(module: nn.Module) -> tuple[bool, int]:
    for m in module.modules():
        if isinstance(m, VariationalBottleneck):
            return True, m.latent_dim
    return False, 256


def _file_arch_kwargs(model: LoadedModel) -> dict:
    """Factory arguments stored in the weights file's metadata (e.g. ``width``), the rate left out."""
    try:
        from ..models.safetensors_loader import read_metadata

        meta = read_metadata(model.path)
    except Exception:  # noqa: BLE001 -- no readable metadata: the zoo defaults, checked against the weights below
        return {}
    kwargs = dict(meta.get("arch_kwargs") or {})
    kwargs.pop("dropout", None)
    return kwargs


def rebuild_with_dropout(model: LoadedModel, p: float) -> LoadedModel:
    """The same built-in architecture and weights with every dropout rate set to ``p``.

    Dropout layers hold no weights, so every trainable tensor must find a tensor of the same name and shape
    in the loaded model; if one does not (the file was built with other architecture arguments), refuse
    rather than audit a model that differs from the user's.
    """
    arch = check_rebuildable(model)
    precode, latent_dim = _precode(model.module)
    kwargs = {**_file_arch_kwargs(model), "precode": precode, "latent_dim": latent_dim}
    try:
        fresh = create_model(arch, num_classes=model.num_classes, input_shape=model.input_shape, dropout=p, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{VARY} dropout.p={p:g}: cannot rebuild {arch} for {model.path} ({e}); "
                          f"vary a defense knob instead") from e
    old = model.module.state_dict()
    new = fresh.state_dict()
    missing = [k for k, t in new.items() if k not in old or old[k].shape != t.shape]
    if missing:
        raise ConfigError(f"{VARY} dropout.p: rebuilding {arch} does not reproduce the weights of {model.path} "
                          f"({len(missing)} tensor(s) differ, e.g. {missing[0]!r}); the file was built with "
                          f"other architecture arguments: vary a defense knob instead")
    with torch.no_grad():
        fresh.load_state_dict({k: old[k] for k in new}, strict=True)
    device = next((t.device for t in old.values()), torch.device("cpu"))
    fresh.to(device)
    fresh.train(model.module.training)
    frozen = {n for n, t in model.module.named_parameters() if not t.requires_grad}
    for name, param in fresh.named_parameters():  # keep the user's frozen layers frozen
        param.requires_grad_(name not in frozen)
    return dataclasses.replace(model, module=fresh)
