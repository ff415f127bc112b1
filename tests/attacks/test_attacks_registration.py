"""Each attack declares its settings at every budget next to its class; the planner reads them from the attack.
An attack -- built-in or plug-in -- that declares none is refused when it is registered, never run with another
attack's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leakaudit.attacks import ATTACKS, BUDGET_NAMES, BUDGETS, budget_settings, plan
from leakaudit.attacks.interface import Attack, AttackSettings, Reconstruction
from leakaudit.attacks.registry import AttackRegistry
from leakaudit.detect import detect
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.registry import Registry


class _Echo(Attack):
    """A plug-in: returns zeros; what matters is the settings it is planned with."""

    name = "echo"
    summary = "returns zeros"
    budgets = {"quick": AttackSettings(iterations=7, restarts=1, lr=0.5, tv=0.0),
               "standard": AttackSettings(iterations=70, restarts=2, lr=0.5, tv=0.0),
               "thorough": AttackSettings(iterations=700, restarts=3, lr=0.5, tv=0.0, extra={"decay": "none"})}

    def run(self, target, settings, *, device, seed, observer):
        x = torch.zeros((target.num_samples, *target.input_shape))
        return Reconstruction(self.name, x, None, 0.0, settings, 0.0, settings.iterations)


class _Undeclared(_Echo):
    name = "undeclared"
    budgets = {}


class _NoThorough(_Echo):
    name = "no-thorough"
    budgets = {k: v for k, v in _Echo.budgets.items() if k != "thorough"}


def _loaded() -> LoadedModel:
    module = create_model("mlp", num_classes=10, input_shape=(3, 8, 8), hidden=(16,))
    return LoadedModel(module, (3, 8, 8), 10, Path("model.safetensors"), "0" * 64, "safetensors", arch="mlp")


def test_every_built_in_attack_declares_every_budget_and_the_table_is_read_from_them():
    for name, attack in ATTACKS.items():
        assert set(attack.budgets) == set(BUDGET_NAMES), name
        for budget in BUDGET_NAMES:
            assert BUDGETS[budget][name] is attack.budgets[budget]
            assert budget_settings(name, budget) == attack.budgets[budget]


def test_a_plug_in_attack_is_planned_with_its_own_budgets():
    registry = AttackRegistry("attack")
    registry.register()(_Echo())
    model = _loaded()
    for budget in BUDGET_NAMES:
        [planned] = plan(detect(model), model, budget=budget, registry=registry)
        assert planned.run and planned.settings == _Echo.budgets[budget]  # not IG's 300/600/24000
    assert budget_settings("echo", "thorough", registry=registry).extra == {"decay": "none"}


@pytest.mark.parametrize("attack, missing", [(_Undeclared(), "quick, standard, thorough"),
                                             (_NoThorough(), "thorough")])
def test_an_attack_without_budgets_is_refused_when_registered(attack, missing):
    registry = AttackRegistry("attack")
    with pytest.raises(ValueError, match=f"attack '{attack.name}' declares no AttackSettings for budget\\(s\\) "
                                         f"{missing}: give its class budgets = "):
        registry.register()(attack)
    assert attack.name not in registry


def test_an_unchecked_registry_cannot_fall_back_to_another_attacks_budget():
    registry: Registry[Attack] = Registry("attack")  # a plain registry does not check on register
    registry.register()(_Undeclared())
    model = _loaded()
    with pytest.raises(ValueError, match="attack 'undeclared' declares no AttackSettings"):
        plan(detect(model), model, registry=registry)
