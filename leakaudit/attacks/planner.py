"""Which attacks fit the model, with which settings: the planner.

Budgets (each attack declares its ``AttackSettings`` per budget next to its class, ``Attack.budgets``):
- ``quick``: a smoke test -- strong enough to break an undefended small model at 32x32 in seconds;
- ``standard``: the default -- the bundled example (small model with dropout, 32x32, batch 1) runs every
  planned attack in well under two minutes on two CPU cores and DIA still reconstructs it;
- ``thorough``: the papers' settings (IG 24,000 iterations with step decay; DIA 20,000 with plateau decay
  x0.1 after 800 stalled iterations; several restarts) -- for a GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

from torch import nn

from ..detect.interface import Findings
from ..errors import ConfigError, setting_ref
from ..registry import Registry, check_choice
from .interface import BUDGET_NAMES, Attack, AttackSettings, PlannedAttack, check_attack
from .registry import ATTACKS

class _Budgets(Mapping[str, dict[str, AttackSettings]]):
    """``BUDGETS[budget][attack]``: every registered attack's settings at a budget, read from the attacks'
    own ``budgets`` (declared next to each class) -- a view for readers of the whole table, never a second copy."""

    def __getitem__(self, budget: str) -> dict[str, AttackSettings]:
        if budget not in BUDGET_NAMES:
            raise KeyError(budget)
        return {name: _instance(attack).budgets[budget] for name, attack in _ordered(ATTACKS)}

    def __iter__(self) -> Iterator[str]:
        return iter(BUDGET_NAMES)

    def __len__(self) -> int:
        return len(BUDGET_NAMES)

    def __repr__(self) -> str:
        return repr(dict(self))


BUDGETS: Mapping[str, dict[str, AttackSettings]] = _Budgets()

# Settings a user may override, and where they live.
_FIELDS = ("iterations", "restarts", "lr", "tv")
_EXTRA = ("mask_reg", "bn_weight", "decay", "patience", "check_every", "tol", "refine", "refine_tv")
_TYPES: dict[str, type] = {"iterations": int, "restarts": int, "lr": float, "tv": float, "mask_reg": float,
                           "bn_weight": float,
                           "decay": str, "patience": int, "check_every": int, "tol": float, "refine": int,
                           "refine_tv": float}


def check_budget(budget: object, where: str = setting_ref("budget")) -> str:
    """``budget`` when it names a budget: the one check of the setting, asked by the config file and flags
    (``config.coerce``), the pre-flight (Python callers) and ``budget_settings``."""
    return check_choice(budget, BUDGET_NAMES, where)


def budget_settings(attack: str | Attack, budget: str = "standard", module: nn.Module | None = None, *,
                    registry: Registry | None = None) -> AttackSettings:
    """The settings ``attack`` (a registered name, or the attack) declares for the budget; given the model, with
    the TV weight fitted to it (``image_prior``)."""
    found = _instance((registry or ATTACKS).get(attack) if isinstance(attack, str) else attack)
    # an attack put into a plain Registry was not checked when registered
    settings = check_attack(found).budgets[check_budget(budget)]
    return settings if module is None else _fit_prior(found, settings, budget, module)


def apply_overrides(attack: str, settings: AttackSettings, overrides: Mapping[str, Any]) -> AttackSettings:
    """``overrides`` holds setting -> value (every attack) and/or attack name -> {setting: value}."""
    flat = {k: v for k, v in overrides.items() if not isinstance(v, Mapping)}
    flat.update(overrides.get(attack, {}) if isinstance(overrides.get(attack), Mapping) else {})
    fields: dict[str, Any] = {}
    extra = dict(settings.extra)
    for key, value in flat.items():
        if key not in _TYPES:
            raise ConfigError(f"attack setting {key!r} ({attack}): unknown; use one of {', '.join(_TYPES)}")
        try:
            value = _TYPES[key](value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"attack setting {key}={value!r} ({attack}): expected {_TYPES[key].__name__}; "
                              "fix the value") from e
        if key in ("iterations", "restarts", "patience", "check_every") and value < 1:
            raise ConfigError(f"attack setting {key}={value} ({attack}): must be at least 1; raise it")
        if key in ("lr", "tv", "mask_reg", "bn_weight", "tol", "refine", "refine_tv") and not value >= 0:
            raise ConfigError(f"attack setting {key}={value} ({attack}): must be >= 0; fix the value")
        if key == "decay" and value not in ("step", "plateau", "none"):
            raise ConfigError(f"attack setting decay={value} ({attack}): use step, plateau or none")
        (fields if key in _FIELDS else extra)[key] = value
    return dataclasses.replace(settings, **fields, extra=extra)


def plan(findings: Findings | None, model: Any, budget: str = "standard", attacks: Sequence[str] | None = None,
         overrides: Mapping[str, Any] | None = None, *, registry: Registry | None = None,
         modality: str = "image") -> list[PlannedAttack]:
    """The attacks to run, in order, each with its settings -- and the ones not run, each with its reason.

    ``attacks=None``: every registered ``auto`` attack that fits the findings. A list: exactly those, in
    that order (an unknown name is an error listing the available ones; one that does not fit is skipped
    with its reason). Only attacks that reconstruct samples of ``modality`` (``Attack.modalities``) are planned:
    the others are left out of the automatic plan, and naming one is an error naming those that do.

    >>> from pathlib import Path
    >>> from leakaudit.detect import detect
    >>> from leakaudit.models import LoadedModel, create_model
    >>> net = create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,))
    >>> model = LoadedModel(net, (1, 8, 8), 4, Path("mlp.safetensors"), "0" * 64, "safetensors", arch="mlp")
    >>> planned = plan(detect(model), model, budget="quick", attacks=["analytic", "ig", "dia"])
    >>> [(p.name, p.run, p.settings.iterations) for p in planned]
    [('analytic', True, 1), ('ig', True, 300), ('dia', False, 300)]
    >>> planned[2].reason
    'no dropout layers found (if the export removed them, declare rates with --dropout NAME=P)'
    """
    registry = registry or ATTACKS
    module: nn.Module | None = getattr(model, "module", model) if model is not None else None
    overrides = dict(overrides or {})
    asked = list(attacks) if attacks else None
    for name in asked or ():
        registry.get(name)
    _check_modality(asked or (), modality, registry)
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            registry.get(key)
    names = asked if asked is not None else [n for n, a in _ordered(registry)
                                             if modality in _instance(a).modalities]
    out: list[PlannedAttack] = []
    for name in names:
        attack = _instance(registry.get(name))
        settings = apply_overrides(name, budget_settings(attack, budget, module), overrides)
        if asked is None and not attack.auto:
            out.append(PlannedAttack(name, settings, False, "not planned automatically (needs the client's true "
                                                            "masks); ask for it with --attacks"))
            continue
        if asked is None and budget in attack.not_auto_at:
            out.append(PlannedAttack(name, settings, False, attack.not_auto_at[budget]))
            continue
        reason = attack.skip_reason(findings, module)
        if reason is not None:
            out.append(PlannedAttack(name, settings, False, reason))
        else:
            out.append(PlannedAttack(name, settings, True, attack.summary))
    return out


def _check_modality(asked: Sequence[str], modality: str, registry: Registry) -> None:
    wrong = [n for n in asked if modality not in _instance(registry.get(n)).modalities]
    if wrong:
        able = [n for n, a in _ordered(registry) if modality in _instance(a).modalities]
        raise ConfigError(f"{setting_ref('attacks')} {','.join(wrong)}: {'it does' if len(wrong) == 1 else 'they do'} "
                          f"not reconstruct {modality} samples; use "
                          + (", ".join(able) if able else f"nothing: no attack reconstructs {modality} samples"))


# The TV weight of the IG-family attacks at quick/standard, by the model's first layer. Measured at the standard
# budget (600 iterations; docs/attacks.md, "IG settings on conv nets"): TV 0.1 against the papers' 1e-4 lifts
# IG's brightness-adjusted SSIM on the tutorial CIFAR ConvNet from 0.32-0.49 to 0.64-0.86 over four photos, and
# DIA's on the bundled CNN from 0.17-0.26 to 0.39-0.59; on the bundled MLP, 1e-2 beats both 1e-4 (IG 0.40-0.55
# -> 0.40-0.88, DIA unchanged at 0.97-1.0) and 0.1 (DIA 0.88-0.94). `thorough` keeps the papers' settings.
# Kept here, not in each attack: one measurement across the IG-style attacks (those with ``fits_image_prior``).
_PRIOR_TV = {"conv": 0.1, "dense": 1e-2}


def image_prior(module: nn.Module) -> str:
    """``conv`` when the model's first weighted layer (in definition order) is a convolution, else ``dense``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return "conv"
        if isinstance(m, nn.Linear):
            return "dense"
    return "dense"


def _fit_prior(attack: Attack, settings: AttackSettings, budget: str, module: nn.Module) -> AttackSettings:
    if not attack.fits_image_prior or budget == "thorough":
        return settings
    return dataclasses.replace(settings, tv=_PRIOR_TV[image_prior(module)])


_ORDER = ("analytic", "april", "feature-inversion", "tableak", "dlg", "ig", "dia", "precode-aware", "dia-informed",
          "lamp", "token-set")  # text: the order attack (it uses the token set itself) settles most leaks

def _ordered(registry: Registry) -> list[tuple[str, Any]]:
    """Cheap, exact attacks first; then by strength; unknown (plug-in) attacks last, alphabetically."""
    rank = {n: i for i, n in enumerate(_ORDER)}
    return sorted(registry.items(), key=lambda kv: (rank.get(kv[0], len(_ORDER)), kv[0]))


def _instance(obj: Any) -> Attack:
    return obj() if isinstance(obj, type) else obj
