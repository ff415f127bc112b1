"""Gradient-inversion attacks: the ATTACKS registry, the planner, budgets and a one-call runner.

Importable without the CLI. Attacks receive only what a server sees (``AttackTarget``); scoring against the
true samples happens elsewhere (``leakaudit.metrics``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..progress import NullObserver, Observer
from ..registry import Registry
from .analytic import AnalyticAttack
from .april import AprilAttack
from .feature_inversion import FeatureInversion
from .device import resolve_device
from .interface import Attack, AttackSettings, AttackTarget, PlannedAttack, Reconstruction
from .matching import DLG, DropoutInversion, InformedDropoutInversion, InvertingGradients, PrecodeAware
from .planner import BUDGET_NAMES, BUDGETS, apply_overrides, budget_settings, plan

ATTACKS: Registry[Attack] = Registry("attack")
for _cls in (AnalyticAttack, AprilAttack, FeatureInversion, DLG, InvertingGradients, DropoutInversion,
             InformedDropoutInversion, PrecodeAware):
    ATTACKS.register(_cls.name)(_cls())

budgets = BUDGETS  # the budget tables, by name: budgets["standard"]["ig"] -> AttackSettings


def run_attack(name: str, target: AttackTarget, settings: AttackSettings | None = None, *,
               budget: str = "standard", overrides: Mapping[str, Any] | None = None,
               device: str | torch.device = "auto", seed: int | None = None,
               observer: Observer | None = None) -> Reconstruction:
    """Run one registered attack on ``target``; settings default to the budget's, with ``overrides`` applied."""
    attack = ATTACKS.get(name)
    base = settings if settings is not None else budget_settings(name, budget, target.module)
    return attack.run(target, apply_overrides(name, base, overrides or {}), device=resolve_device(device),
                      seed=seed, observer=observer or NullObserver())


__all__ = ["ATTACKS", "Attack", "AttackSettings", "AttackTarget", "BUDGETS", "BUDGET_NAMES", "PlannedAttack",
           "Reconstruction", "budgets", "budget_settings", "plan", "resolve_device", "run_attack"]
