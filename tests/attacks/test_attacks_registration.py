"""Each attack declares its settings at every budget next to its class; the planner reads them from the attack.
An attack -- built-in or plug-in -- that declares none is refused when it is registered, never run with another
attack's numbers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from leakaudit.attacks import ATTACKS, BUDGET_NAMES, BUDGETS, budget_settings, plan
from leakaudit.attacks.interface import (Attack, AttackSettings, AttackTarget, GroundTruth, Reconstruction,
                                        run_with_truth)
from leakaudit.attacks.registry import AttackRegistry
from leakaudit.detect import detect
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.progress import NullObserver
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


class _Spy(_Echo):
    name = "spy"
    seen: dict[str, dict] = {}

    def run(self, target, settings, *, device, seed, observer, **given):
        _Spy.seen[self.name] = given
        return super().run(target, settings, device=device, seed=seed, observer=observer)


class _Reference(_Spy):
    name = "reference"
    needs_ground_truth = True


def test_the_clients_ground_truth_reaches_only_an_attack_that_declares_it_needs_it():
    assert "true_masks" not in {f.name for f in dataclasses.fields(AttackTarget)}  # not on what every attack sees
    model = _loaded()
    target = AttackTarget(model.module, {}, (3, 8, 8), 10)
    truth = GroundTruth({"drop": torch.ones(1, 16)})
    for attack in (_Spy(), _Reference()):
        run_with_truth(attack, target, _Echo.budgets["quick"], truth, device=torch.device("cpu"), seed=0,
                       observer=NullObserver())
    assert _Spy.seen == {"spy": {}, "reference": {"truth": truth}}
    assert [n for n, a in ATTACKS.items() if a.needs_ground_truth] == ["dia-informed"]
