"""The sweep loop: one audit per value, failures kept per value, Ctrl-C and resume handled.

The loop knows nothing about models or attacks: it calls ``run_one(value) -> Point`` (see
``pipeline.py`` for the real one), so tests can drive it with synthetic points.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from ..errors import LeakauditError
from ..progress import NullObserver, Observer
from .interface import DONE, ERROR, INTERRUPTED, Point, SweepResult
from .knobs import Vary
from .threshold import find_threshold

RunOne = Callable[[float], Point]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "(no message)"
    return f"{type(e).__name__}: {text}"


def run_sweep(vary: Vary, run_one: RunOne, *, previous: Mapping[float, Point] | None = None,
              observer: Observer | None = None, on_point: Callable[[SweepResult], object] | None = None,
              context: dict | None = None) -> SweepResult:
    """Run ``run_one`` for every value of ``vary`` not already done in ``previous``.

    - A value whose run raises is recorded as an ERROR point with a one-line reason; the sweep goes on.
    - ``observer.should_stop()`` is checked before every value; a point that comes back INTERRUPTED (the
      audit saw the stop request) or a KeyboardInterrupt ends the loop. The result is then ``incomplete``.
    - ``on_point`` receives the result so far after every value (the CLI checkpoints sweep.json there, so
      a killed run still leaves something to ``--resume``).
    """
    observer = observer or NullObserver()
    kept = {v: p for v, p in (previous or {}).items() if p.status == DONE and v in vary.values}
    points: dict[float, Point] = dict(kept)
    order = vary.by_strength()
    incomplete = False
    todo = [v for v in order if v not in kept]
    for i, value in enumerate(todo, 1):
        if observer.should_stop():
            incomplete = True
            break
        observer.stage("sweep", f"{vary.knob.name}={value:g} ({i}/{len(todo)})")
        point = _run_value(run_one, value)
        points[value] = point
        if point.status == INTERRUPTED:
            incomplete = True
        if on_point is not None:
            on_point(_result(vary, points, incomplete or len(points) < len(order), context))
        if incomplete:
            break
    incomplete = incomplete or any(v not in points for v in order)
    return _result(vary, points, incomplete, context)


def _run_value(run_one: RunOne, value: float) -> Point:
    start = time.perf_counter()
    try:
        point = run_one(value)
    except KeyboardInterrupt:
        return Point(value, INTERRUPTED, seconds=time.perf_counter() - start,
                     error="interrupted by the user before this value finished")
    except Exception as e:  # noqa: BLE001 -- one value's failure must not lose the other values' results
        kind = "input" if isinstance(e, LeakauditError) else "internal"
        return Point(value, ERROR, seconds=time.perf_counter() - start, error=_one_line(e), error_kind=kind)
    if point.value != value:
        raise ValueError(f"run_one({value!r}) returned a point for {point.value!r}")
    return point


def _result(vary: Vary, points: Mapping[float, Point], incomplete: bool, context: dict | None) -> SweepResult:
    ordered = tuple(points[v] for v in sorted(points))
    return SweepResult(
        knob=vary.knob.name,
        values=vary.values,
        points=ordered,
        threshold=find_threshold(vary.knob, vary.values, ordered),
        incomplete=incomplete,
        context=dict(context or {}),
    )

