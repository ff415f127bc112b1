"""Progress events from the core to whoever listens (the CLI's rich display, tests, nothing).

The core never prints; it calls an observer. Attacks report every ``check_every`` iterations only,
so a GPU run does not synchronise with the host on every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AttackProgress:
    attack: str
    iteration: int
    total: int
    loss: float  # best attack loss over restarts so far


class Observer(Protocol):
    def stage(self, name: str, detail: str = "") -> None: ...

    def attack_progress(self, event: AttackProgress) -> None: ...

    def should_stop(self) -> bool:
        """True once the user asked to stop (Ctrl-C): long loops end at their next check."""
        ...


class NullObserver:
    def stage(self, name: str, detail: str = "") -> None:
        pass

    def attack_progress(self, event: AttackProgress) -> None:
        pass

    def should_stop(self) -> bool:
        return False
