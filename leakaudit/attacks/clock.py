"""Budgets in time: how long a scan may attack, and how that time is shared between the attacks.

A budget names a wall-clock cap for the whole scan (``BUDGET_SECONDS``, or ``--max-time``). Inside it, each
optimisation attack gets a share of what is left of its batch's time, and the engine fits the attack's iteration
count to that share from the measured cost of its first iterations (``fitted_iterations``): a small CNN at ~2 ms
an iteration runs its budget's full schedule, where a large network runs the iterations that fit, with its
learning-rate schedule intact. The budget's iteration table stays the ceiling. When the cap itself is reached,
attacks stop where they are (``TimedObserver``) and the ones not started are skipped; the verdict then cannot
be a pass (``audit``): the time the defended attacks got is not the time they were planned to have.

Times are wall-clock epoch seconds (``time.time()``), so a deadline means the same in a worker process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..progress import AttackProgress, Observer

# Whole-scan caps in seconds, loading and scoring included. quick: a smoke test that ends within two minutes on
# two CPU cores, whatever the model; standard: the default CI gate; thorough: the papers' schedules, for a GPU.
BUDGET_SECONDS = {"quick": 120.0, "standard": 900.0, "thorough": 3600.0}

# Scoring the reconstructions and writing the reports follow the attacks: they keep this part of the cap.
_AFTER_ATTACKS = 0.1
_AFTER_ATTACKS_MAX = 20.0


def max_time(budget: str, given: float | None) -> float:
    """The scan's cap in seconds: ``--max-time`` when given, else the budget's default."""
    return float(given) if given is not None else BUDGET_SECONDS[budget]


@dataclass(frozen=True)
class Clock:
    """The time a batch's attacks may use: ``end`` (attacks stop there; the scan's cap less the time its scoring
    keeps) and ``batch_seconds`` (this batch's share of the scan, when batches run one after another)."""

    end: float  # epoch seconds
    batch_seconds: float
    cap: float  # the scan's cap in seconds, for messages

    @classmethod
    def start(cls, started: float, cap: float, waves: int = 1) -> Clock:
        """A scan that started at ``started`` (epoch seconds) with ``cap`` seconds, its batches run in ``waves``
        rounds (1 when they all run at once; the batch count when one after another)."""
        end = started + cap - min(_AFTER_ATTACKS * cap, _AFTER_ATTACKS_MAX)
        return cls(end, max(0.0, end - time.time()) / max(1, waves), cap)

    def batch_end(self, batch_started: float) -> float:
        return min(self.end, batch_started + self.batch_seconds)

    def over(self) -> bool:
        return time.time() >= self.end

    def share(self, batch_end: float, runs_left: int) -> float:
        """Seconds for the next attack of a batch when ``runs_left`` optimisation runs (this one included) still
        share what is left of it."""
        return max(0.0, batch_end - time.time()) / max(1, runs_left)


def fitted_iterations(done: int, elapsed: float, planned: int, seconds: float, rate: float | None = None) -> int:
    """The iterations that fit ``seconds`` when ``done`` took ``elapsed`` and each further one takes ``rate``
    seconds (default: the mean so far), never more than ``planned`` and never fewer than ``done``."""
    rate = elapsed / done if rate is None and done > 0 else rate
    if done < 1 or not rate or rate <= 0 or not math.isfinite(seconds):
        return planned
    return max(done, min(planned, done + int(max(0.0, seconds - elapsed) / rate)))


class TimedObserver:
    """An observer that also asks a loop to stop at ``end`` (epoch seconds), and remembers that it did."""

    def __init__(self, inner: Observer, end: float) -> None:
        self.inner, self.end, self.timed_out = inner, end, False

    def stage(self, name: str, detail: str = "") -> None:
        self.inner.stage(name, detail)

    def attack_progress(self, event: AttackProgress) -> None:
        self.inner.attack_progress(event)

    def should_stop(self) -> bool:
        if self.inner.should_stop():
            return True
        self.timed_out = self.timed_out or time.time() >= self.end
        return self.timed_out
