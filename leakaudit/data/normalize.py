"""Normalization presets: how the model expects its [0, 1] pixels to be shifted and scaled."""

from __future__ import annotations

import difflib
import math
from typing import Sequence

from ..errors import ConfigError, UnknownNameError, setting_ref
from ..registry import Registry
from .interface import Normalization

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
MEAN = setting_ref("mean")
NORMALIZE = setting_ref("normalize")
STD = setting_ref("std")

# (mean, std) per channel of the datasets the presets are named after.
PRESETS: Registry[tuple[tuple[float, ...], tuple[float, ...]]] = Registry("normalization preset")
PRESETS.register("mnist")(((0.1307,), (0.3081,)))
PRESETS.register("cifar10")(((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)))
PRESETS.register("imagenet")(((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))


def check_preset(name: object, where: str = NORMALIZE) -> str:
    """``name`` when it is ``none`` or a registered preset: the one check of the ``normalize`` setting (config
    file, flags, ``normalization``). ``custom`` is not a setting: it is what ``--mean``/``--std`` give."""
    known = ["none", *PRESETS.names()]
    if not isinstance(name, str) or name not in known:
        close = difflib.get_close_matches(str(name), known, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UnknownNameError(f"{where} {name!r}: unknown preset; {hint}use one of {', '.join(known)}")
    return name


def normalization(name: str = "none", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  channels: int = 3) -> Normalization:
    """``none`` (identity), a dataset preset, or ``custom`` with ``mean``/``std`` (one value, or one per channel).

    A one-channel preset or value is repeated for every channel (mnist statistics on a 3-channel copy of a
    grey image); a 3-channel preset on a 1-channel model is an error rather than a silent average.
    """
    if channels < 1:
        raise ConfigError(f"channels={channels}: must be at least 1")
    given = mean is not None or std is not None
    if name in ("none", "custom") and given:
        if mean is None or std is None:
            raise ConfigError(f"{MEAN}/{STD}: give both (one value, or one per channel), e.g. {MEAN} 0.5 {STD} 0.25")
        return Normalization("custom", _per_channel(MEAN, mean, channels), _std(std, channels))
    if name == "custom":
        raise ConfigError(f"normalization custom: needs {MEAN} and {STD} (one value, or one per channel); give both")
    if given:
        raise ConfigError(f"{NORMALIZE} {name}: a preset fixes mean and std; drop {MEAN}/{STD}, or drop {NORMALIZE} "
                          f"to use your own {MEAN} and {STD}")
    if name == "none":
        return Normalization("none", (0.0,) * channels, (1.0,) * channels)
    pm, ps = PRESETS.get(check_preset(name))
    if len(pm) != 1 and len(pm) != channels:
        raise ConfigError(f"{NORMALIZE} {name}: the preset has {len(pm)} channels but the model takes "
                          f"{channels}; use a {channels}-channel preset or {MEAN}/{STD}")
    return Normalization(name, _per_channel("mean", pm, channels), _std(ps, channels))


def _per_channel(option: str, values: Sequence[float], channels: int) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in vals):  # before the one-value shortcut: "--std inf" is one value
        raise ConfigError(f"{option} {','.join(f'{v:g}' for v in vals)}: values must be finite numbers; "
                          "give e.g. 0.5")
    if len(vals) == 1:
        return vals * channels
    if len(vals) != channels:
        raise ConfigError(f"{option} {','.join(f'{v:g}' for v in vals)}: {len(vals)} values for a "
                          f"{channels}-channel input; give one value or {channels}")
    return vals


def _std(values: Sequence[float], channels: int) -> tuple[float, ...]:
    vals = _per_channel(STD, values, channels)
    if any(v <= 0 for v in vals):
        raise ConfigError(f"{STD} {','.join(f'{v:g}' for v in vals)}: standard deviations must be positive; "
                          "give values > 0, e.g. 0.25")
    return vals
