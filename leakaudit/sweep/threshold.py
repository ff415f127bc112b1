"""The weakest setting of a knob that passes the rules (the seed-004 "minimum threshold")."""

from __future__ import annotations

from typing import Iterable

from .interface import DONE, Point, Threshold
from .knobs import Knob


def find_threshold(knob: Knob, values: Iterable[float], points: Iterable[Point]) -> Threshold:
    """Search the tested values from the weakest to the strongest defense.

    A value without a verdict (error, interrupted, not run) is unknown: the stable threshold never
    extends across it, because nothing is known about whether that setting passes.
    """
    order = sorted(set(values), key=knob.strength_key)
    if not order:
        return Threshold(None, None, True, f"{knob.name}: no values to search")
    points = list(points)
    verdict = _verdicts(order, points)
    unknown = tuple(v for v in order if verdict[v] is None)
    weakest_passing = next((v for v in order if verdict[v] is True), None)
    stable = _stable(order, verdict)
    monotone = _monotone(order, verdict)
    message = _message(knob, order, verdict, stable, weakest_passing, monotone, unknown)
    cost = next((p.cost for p in points if p.value == stable and p.cost is not None), None)
    if cost is not None and stable is not None:  # protection and its price side by side
        message += f"; what it costs at {_fmt(knob, stable)}: {cost.summary}"
    return Threshold(stable, weakest_passing, monotone, message, unknown)


def _verdicts(order: list[float], points: list[Point]) -> dict[float, bool | None]:
    """Each value's pass (True) or fail (False); None: no verdict (error, interrupted, not run)."""
    verdict: dict[float, bool | None] = {v: None for v in order}
    for p in points:
        if p.status == DONE and p.value in verdict:
            verdict[p.value] = p.passed
    return verdict


def _stable(order: list[float], verdict: dict[float, bool | None]) -> float | None:
    """The weakest value from which every stronger one passes; None when the strongest does not."""
    stable = None
    for v in reversed(order):  # strongest first: extend the run of passes towards weaker settings
        if verdict[v] is not True:
            break
        stable = v
    return stable


def _monotone(order: list[float], verdict: dict[float, bool | None]) -> bool:
    """Whether, among the values with a verdict, every one stronger than the first pass passes too."""
    known = [verdict[v] for v in order if verdict[v] is not None]
    first_pass = next((i for i, ok in enumerate(known) if ok), len(known))
    return all(known[first_pass:])


def _fmt(knob: Knob, v: float) -> str:
    return f"{knob.name}={v:g}"


def _message(knob: Knob, order: list[float], verdict: dict[float, bool | None], stable: float | None,
             weakest_passing: float | None, monotone: bool, unknown: tuple[float, ...]) -> str:
    stronger = "larger" if knob.stronger == "higher" else "smaller"
    if weakest_passing is None:
        if len(unknown) == len(order):
            return f"{knob.name}: no value has a result yet; nothing to conclude"
        tail = f" ({len(unknown)} value(s) without a result)" if unknown else ""
        return (f"no tested value of {knob.name} passes the rules{tail}; the strongest tested was "
                f"{_fmt(knob, order[-1])}: try {stronger} values")
    if stable is None:
        strongest = order[-1]
        why = "has no result" if verdict[strongest] is None else "fails"
        return (f"{_fmt(knob, weakest_passing)} passes, but the strongest tested setting "
                f"{_fmt(knob, strongest)} {why}: no setting from which every stronger one passes")
    if stable == order[0]:
        return (f"every tested value passes; the weakest tested, {_fmt(knob, stable)}, is enough "
                f"(test weaker values to find the limit)")
    text = f"{_fmt(knob, stable)} is the weakest tested setting that passes the rules, and every stronger one passes"
    if not monotone:
        text += (f"; the curve is not monotone ({_fmt(knob, weakest_passing)} also passes, but some stronger "
                 f"settings fail): trust {_fmt(knob, stable)}")
    if any(order.index(u) < order.index(stable) for u in unknown):
        text += "; some weaker values have no result, so the limit may be weaker"
    return text
