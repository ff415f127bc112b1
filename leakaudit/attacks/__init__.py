"""Gradient-inversion attacks: the ATTACKS registry, the planner, budgets and a one-call runner.

Importable without the CLI. Attacks receive only what a server sees (``AttackTarget``); scoring against the
true samples happens elsewhere (``leakaudit.metrics``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..progress import NullObserver, Observer
# each attack module registers its attacks where it declares them (@register_attack): importing it is enough
from . import analytic, april, feature_inversion, matching, tableak, tokens  # noqa: F401
from .device import resolve_device
from .interface import (BUDGET_NAMES, Attack, AttackSettings, AttackTarget, GroundTruth, PlannedAttack,
                        Reconstruction, run_with_truth)
from .planner import BUDGETS, apply_overrides, budget_settings, plan
from .registry import ATTACKS, register_attack

budgets = BUDGETS  # the budget tables, by name: budgets["standard"]["ig"] -> AttackSettings (the attacks' own)


def run_attack(name: str, target: AttackTarget, settings: AttackSettings | None = None, *,
               budget: str = "standard", overrides: Mapping[str, Any] | None = None,
               device: str | torch.device = "auto", seed: int | None = None,
               observer: Observer | None = None, truth: GroundTruth | None = None) -> Reconstruction:
    """Run one registered attack on ``target``; settings default to the budget's, with ``overrides`` applied.
    ``truth`` (the client's ``GroundTruth``) reaches the attack only if it declares ``needs_ground_truth``."""
    attack = ATTACKS.get(name)
    base = settings if settings is not None else budget_settings(attack, budget, target.module)
    return run_with_truth(attack, target, apply_overrides(name, base, overrides or {}), truth,
                          device=resolve_device(device), seed=seed, observer=observer or NullObserver())


__all__ = ["ATTACKS", "Attack", "AttackSettings", "AttackTarget", "BUDGETS", "BUDGET_NAMES", "GroundTruth",
           "PlannedAttack", "Reconstruction", "budgets", "budget_settings", "plan", "register_attack", "resolve_device",
           "run_attack"]
