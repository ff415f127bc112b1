"""LPIPS (Zhang et al., CVPR 2018) through the ``lpips`` package, strictly offline.

``lpips`` ships its small linear calibration layers, but its AlexNet/VGG backbone comes from torchvision's
ImageNet checkpoint, which torchvision downloads on first use. leakaudit never downloads: the network is
built with a random backbone (``pnet_rand=True``, no download path is taken) and the backbone weights are
loaded from a local torchvision checkpoint, looked up in this order:

1. the file the caller passes (``score(..., lpips_weights=)`` / ``MetricOptions.lpips_weights``);
2. the file named by the environment variable ``LEAKAUDIT_LPIPS_WEIGHTS``;
3. torchvision's own cache: ``torch.hub.get_dir()/checkpoints/<file name torchvision expects>``
   (e.g. ``alexnet-owt-7be5be79.pth``), where an earlier online ``torchvision`` run leaves it.

Without any of them LPIPS is :class:`Unavailable` with the reason and the fix. A file the user names
explicitly (1 or 2) that is missing or is not the right checkpoint is an input error: the user asked for
it, so failing loudly beats a silent "unavailable".

Images smaller than 64 px (CIFAR-10 is 32 px) are upsampled bilinearly so the shorter side is 64 px
before LPIPS: AlexNet's stride-4 stem and three poolings leave almost no spatial extent on 32 px inputs,
and 64 px is the patch size LPIPS was calibrated on. Grayscale images are repeated to three channels.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import typing
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..paths import shown_path
from .functional import _check_pair
from .interface import MetricOptions, MetricValue, Unavailable

ENV_VAR = "LEAKAUDIT_LPIPS_WEIGHTS"
NETS = ("alex", "vgg")
MIN_SIDE = 64


# The checkpoint files torchvision downloads for LPIPS's backbones (``AlexNet_Weights.IMAGENET1K_V1`` and
# ``VGG16_Weights.IMAGENET1K_V1``). Written out because importing torchvision to ask costs a scan ~1.5 s (it
# imports torch._dynamo) when LPIPS cannot run anyway; a test checks them against torchvision's own.
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def backbone_file_name(net: str) -> str:
    """The checkpoint file name torchvision downloads for LPIPS's backbone ``net``."""
    if net not in BACKBONE_FILES:
        # MetricOptions.lpips_net, a Python caller's choice: no command has a flag for it
        raise InputError(f"lpips_net={net!r}: unknown LPIPS backbone; use one of {', '.join(NETS)}")
    return BACKBONE_FILES[net]


def find_backbone_weights(net: str = "alex", weights: str | Path | None = None) -> Path | Unavailable:
    """The local backbone checkpoint to use, or why there is none. Raises InputError for a bad user file."""
    expected = backbone_file_name(net)
    for given, origin in ((weights, ""), (os.environ.get(ENV_VAR) or None, f"{ENV_VAR}=")):
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_file():
                raise InputError(
                    f"{origin}{given}: LPIPS weights file not found; point it at a local copy of torchvision's "
                    f"{expected}{' or unset it' if origin else ''}"
                )
            return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / expected
    if cached.is_file():
        return cached
    return Unavailable(
        f"LPIPS needs torchvision's {net} backbone weights ({expected}): not in {shown_path(cached.parent)} and "
        f"{ENV_VAR} is not set; copy the file there or set {ENV_VAR} to it (leakaudit never downloads)"
    )


def _load_backbone(model: torch.nn.Module, path: Path) -> None:
    """Copy torchvision's ``features.<i>.*`` tensors into lpips's ``slice<k>.<i>.*`` modules."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any unreadable file is the same user error
        raise InputError(f"{path}: cannot read as a torch checkpoint ({e}); give torchvision's backbone .pth") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a state dict; give torchvision's backbone .pth")
    net = typing.cast(torch.nn.Module, model.net)  # lpips.LPIPS.net: the backbone module
    target = net.state_dict()
    mapped = {}
    for key, tensor in target.items():
        _, index, param = key.split(".", 2)  # "slice1.0.weight" -> features.0.weight
        source = state.get(f"features.{index}.{param}")
        if source is None or tuple(source.shape) != tuple(tensor.shape):
            found = "missing" if source is None else f"shape {tuple(source.shape)}"
            raise InputError(
                f"{path}: not a torchvision {model.pnet_type} checkpoint (features.{index}.{param} {found}, "
                f"expected shape {tuple(tensor.shape)}); give the file torchvision uses for this backbone"
            )
        mapped[key] = source
    net.load_state_dict(mapped)


@functools.lru_cache(maxsize=2)
def _model(net: str, path: str) -> torch.nn.Module:
    import lpips

    # lpips prints its set-up and torchvision warns about the deprecated `pretrained` flag: the core is silent.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    _load_backbone(model, Path(path))
    return model.eval().requires_grad_(False)


def _prepare(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    short = min(x.shape[-2:])
    if short < MIN_SIDE:
        scale = MIN_SIDE / short
        size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def lpips_distance(preds: torch.Tensor, target: torch.Tensor, options: MetricOptions | None = None) -> MetricValue:
    """Per-sample LPIPS distance of [0, 1] images, shape (N,), or :class:`Unavailable`. Lower = more leakage."""
    options = options or MetricOptions()
    preds, target = _check_pair(preds, target)
    if preds.ndim != 4:
        return Unavailable(f"LPIPS compares images; these samples are shaped {tuple(preds.shape[1:])}")
    if preds.shape[1] not in (1, 3):
        return Unavailable(f"LPIPS needs 1- or 3-channel images, got {preds.shape[1]} channels")
    found = find_backbone_weights(options.lpips_net, options.lpips_weights)
    if isinstance(found, Unavailable):
        return found
    model = _model(options.lpips_net, str(found)).to(preds.device)
    with torch.no_grad():
        # normalize=True: lpips maps [0, 1] inputs to the [-1, 1] it expects.
        d = model(_prepare(preds.float()), _prepare(target.float().to(preds.device)), normalize=True)
    return d.flatten().to(preds.dtype)
