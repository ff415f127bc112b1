"""Which attacks fit the model, with which settings: budgets and the planner.

Budgets (per attack ``AttackSettings``):
- ``quick``: a smoke test -- strong enough to break an undefended small model at 32x32 in seconds;
- ``standard``: the default -- the bundled example (small model with dropout, 32x32, batch 1) runs every
  planned attack in well under two minutes on two CPU cores and DIA still reconstructs it;
- ``thorough``: the papers' settings (IG 24,000 iterations with step decay; DIA 20,000 with plateau decay
  x0.1 after 800 stalled iterations; several restarts) -- for a GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from torch import nn

from ..detect.interface import Findings
from ..errors import ConfigError
from ..registry import Registry, check_choice
from .interface import Attack, AttackSettings, PlannedAttack

BUDGET_NAMES = ("quick", "standard", "thorough")

_IG = {"quick": AttackSettings(300, 1, 0.1, 1e-4),
       "standard": AttackSettings(600, 2, 0.1, 1e-4),
       "thorough": AttackSettings(24000, 4, 0.1, 1e-4)}
_DIA_EXTRA = {"mask_reg": 1e-4}

# DLG's iterations count objective evaluations (L-BFGS line searches evaluate several times per step);
# thorough ~ the DLG paper's 300 L-BFGS steps of up to 20 evaluations each.
def _ig_family(ig: AttackSettings, dlg: AttackSettings) -> dict[str, AttackSettings]:
    """A budget where every IG-style attack runs IG's settings (the masks' regulariser added where used)."""
    masked = dataclasses.replace(ig, extra=dict(_DIA_EXTRA))
    closed_form = AttackSettings(1, 1, 0.0, 0.0)  # analytic and april: one exact step at every budget
    return {"analytic": closed_form, "april": closed_form, "dlg": dlg, "ig": ig, "dia": masked,
            "dia-informed": ig, "precode-aware": masked}


# feature-inversion: Adam iterations x restarts matching the recovered features (lr 0.3, TV 0.1), then `refine`
# IG iterations (TV 1e-2) from the best; chosen by benchmarks/bench_feature_inversion.py (docs/attacks.md).
_FEATURES = {"quick": AttackSettings(300, 1, 0.3, 0.1, {"refine": 200, "refine_tv": 1e-2}),
             "standard": AttackSettings(1000, 2, 0.3, 0.1, {"refine": 600, "refine_tv": 1e-2}),
             "thorough": AttackSettings(4000, 4, 0.3, 0.1, {"refine": 4000, "refine_tv": 1e-2})}

BUDGETS: dict[str, dict[str, AttackSettings]] = {
    "quick": {**_ig_family(_IG["quick"], AttackSettings(150, 1, 1.0, 0.0)), "feature-inversion": _FEATURES["quick"]},
    "standard": {**_ig_family(_IG["standard"], AttackSettings(300, 2, 1.0, 0.0)),
                 "feature-inversion": _FEATURES["standard"]},
    "thorough": {
        "feature-inversion": _FEATURES["thorough"],
        "analytic": AttackSettings(1, 1, 0.0, 0.0),
        "april": AttackSettings(1, 1, 0.0, 0.0),
        "dlg": AttackSettings(6000, 4, 1.0, 0.0),
        "ig": _IG["thorough"],
        "dia": AttackSettings(20000, 4, 0.1, 1e-5, {**_DIA_EXTRA, "decay": "plateau", "patience": 800}),
        "dia-informed": AttackSettings(20000, 4, 0.1, 1e-5, {"decay": "plateau", "patience": 800}),
        "precode-aware": _IG["thorough"],
    },
}

# Settings a user may override, and where they live.
_FIELDS = ("iterations", "restarts", "lr", "tv")
_EXTRA = ("mask_reg", "decay", "patience", "check_every", "tol", "refine", "refine_tv")
_TYPES: dict[str, type] = {"iterations": int, "restarts": int, "lr": float, "tv": float, "mask_reg": float,
                           "decay": str, "patience": int, "check_every": int, "tol": float, "refine": int,
                           "refine_tv": float}


def check_budget(budget: object, where: str = "--budget") -> str:
    """``budget`` when it names a budget: the one check of the setting, asked by the config file and flags
    (``config.coerce``), the pre-flight (Python callers) and ``budget_settings``."""
    return check_choice(budget, BUDGET_NAMES, where)


def budget_settings(attack: str, budget: str = "standard", module: nn.Module | None = None) -> AttackSettings:
    """The budget's settings for ``attack``; given the model, with the TV weight fitted to it (``image_prior``)."""
    table = BUDGETS[check_budget(budget)]
    settings = table.get(attack, table["ig"])  # a newly registered attack gets IG's budget until it declares its own
    return settings if module is None else _fit_prior(attack, settings, budget, module)


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
        if key in ("lr", "tv", "mask_reg", "tol", "refine", "refine_tv") and not value >= 0:
            raise ConfigError(f"attack setting {key}={value} ({attack}): must be >= 0; fix the value")
        if key == "decay" and value not in ("step", "plateau", "none"):
            raise ConfigError(f"attack setting decay={value} ({attack}): use step, plateau or none")
        (fields if key in _FIELDS else extra)[key] = value
    return dataclasses.replace(settings, **fields, extra=extra)


def plan(findings: Findings | None, model: Any, budget: str = "standard", attacks: Sequence[str] | None = None,
         overrides: Mapping[str, Any] | None = None, *, registry: Registry | None = None) -> list[PlannedAttack]:
    """The attacks to run, in order, each with its settings -- and the ones not run, each with its reason.

    ``attacks=None``: every registered ``auto`` attack that fits the findings. A list: exactly those, in
    that order (an unknown name is an error listing the available ones; one that does not fit is skipped
    with its reason).

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
    from . import ATTACKS  # the registry is filled by the package's __init__

    registry = registry or ATTACKS
    module: nn.Module | None = getattr(model, "module", model) if model is not None else None
    overrides = dict(overrides or {})
    asked = list(attacks) if attacks else None
    for name in asked or ():
        registry.get(name)
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            registry.get(key)
    names = asked if asked is not None else [n for n, _ in _ordered(registry)]
    out: list[PlannedAttack] = []
    for name in names:
        attack = _instance(registry.get(name))
        settings = apply_overrides(name, budget_settings(name, budget, module), overrides)
        if asked is None and not attack.auto:
            out.append(PlannedAttack(name, settings, False, "not planned automatically (needs the client's true "
                                                            "masks); ask for it with --attacks"))
            continue
        if asked is None and name in _NOT_AUTO_AT.get(budget, {}):
            out.append(PlannedAttack(name, settings, False, _NOT_AUTO_AT[budget][name]))
            continue
        reason = attack.skip_reason(findings, module)
        if reason is not None:
            out.append(PlannedAttack(name, settings, False, reason))
        else:
            out.append(PlannedAttack(name, settings, True, attack.summary))
    return out


# The TV weight of the IG-family attacks at quick/standard, by the model's first layer. Measured at the standard
# budget (600 iterations; docs/attacks.md, "IG settings on conv nets"): TV 0.1 against the papers' 1e-4 lifts
# IG's brightness-adjusted SSIM on the tutorial CIFAR ConvNet from 0.32-0.49 to 0.64-0.86 over four photos, and
# DIA's on the bundled CNN from 0.17-0.26 to 0.39-0.59; on the bundled MLP, 1e-2 beats both 1e-4 (IG 0.40-0.55
# -> 0.40-0.88, DIA unchanged at 0.97-1.0) and 0.1 (DIA 0.88-0.94). `thorough` keeps the papers' settings.
_PRIOR_TV = {"conv": 0.1, "dense": 1e-2}
_PRIOR_ATTACKS = ("ig", "dia", "dia-informed", "precode-aware")


def image_prior(module: nn.Module) -> str:
    """``conv`` when the model's first weighted layer (in definition order) is a convolution, else ``dense``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return "conv"
        if isinstance(m, nn.Linear):
            return "dense"
    return "dense"


def _fit_prior(name: str, settings: AttackSettings, budget: str, module: nn.Module) -> AttackSettings:
    if name not in _PRIOR_ATTACKS or budget == "thorough":
        return settings
    return dataclasses.replace(settings, tv=_PRIOR_TV[image_prior(module)])


_ORDER = ("analytic", "april", "feature-inversion", "dlg", "ig", "dia", "precode-aware", "dia-informed")

# Attacks left out of the automatic plan at a budget, with the reason shown in the report. DLG's L2
# objective is dominated by IG's cosine objective (Geiping et al. 2020), and its L-BFGS line searches cost
# as much as the rest of a standard scan together: it runs at `thorough` or when asked for by name.
_NOT_AUTO_AT: dict[str, dict[str, str]] = {
    budget: {"dlg": f"not planned at the {budget} budget: IG's cosine objective is the stronger of the two "
                    "(Geiping et al. 2020); ask for it with --attacks dlg or use --budget thorough"}
    for budget in ("quick", "standard")
}


def _ordered(registry: Registry) -> list[tuple[str, Any]]:
    """Cheap, exact attacks first; then by strength; unknown (plug-in) attacks last, alphabetically."""
    rank = {n: i for i, n in enumerate(_ORDER)}
    return sorted(registry.items(), key=lambda kv: (rank.get(kv[0], len(_ORDER)), kv[0]))


def _instance(obj: Any) -> Attack:
    return obj() if isinstance(obj, type) else obj
