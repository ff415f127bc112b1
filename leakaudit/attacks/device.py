"""``--device auto|cpu|cuda[:N]`` -> a torch device, with errors a user can act on.

The one place that knows which device texts are valid: the config/flag validation calls ``device_spec`` and
the engine calls ``resolve_device``, so the two cannot disagree (e.g. on ``cuda:0``).
"""

from __future__ import annotations

import re

import torch

from ..errors import ConfigError, setting_ref

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N (GPU N)"
DEVICE_SETTING = setting_ref("device")  # the CLI shows it as --device, a Python caller reads device
_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_spec(value: object, where: str = DEVICE_SETTING) -> str:
    """``value`` as a normalized device text (``auto``, ``cpu``, ``cuda``, ``cuda:N``), refused when it is none."""
    spec = value.strip().lower() if isinstance(value, str) else None
    if spec is None or not _SPEC.fullmatch(spec):
        raise ConfigError(f"{where} {value}: not a device; use {DEVICE_CHOICES}")
    return spec


def resolve_device(spec: str | torch.device | None = "auto", where: str = DEVICE_SETTING) -> torch.device:
    """``auto`` picks the first CUDA device when one is usable, else the CPU."""
    if isinstance(spec, torch.device):
        return spec
    spec = device_spec(spec or "auto", where)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where} {spec}: no CUDA GPU is usable here; use {DEVICE_SETTING} cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{where} {spec}: only {torch.cuda.device_count()} CUDA device(s) found; "
                              f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device
