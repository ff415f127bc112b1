"""The attack registry, filled where each attack is declared (``@register_attack`` on its class, as timm
registers its models), so an attack's name, budgets and code sit in one place."""

from __future__ import annotations

from typing import Callable, TypeVar

from ..registry import Registry
from .interface import Attack, check_attack

A = TypeVar("A", bound=type[Attack])


class AttackRegistry(Registry[Attack]):
    """A ``Registry`` that refuses an attack it could not plan (``interface.check_attack``): built-in or plug-in,
    every attack declares its settings at every budget."""

    def register(self, name: str | None = None) -> Callable[[Attack], Attack]:
        add = super().register(name)

        def decorator(obj: Attack) -> Attack:
            return add(check_attack(obj))

        return decorator


ATTACKS = AttackRegistry("attack")


def register_attack(cls: A) -> A:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    ATTACKS.register(cls.name)(cls())
    return cls
