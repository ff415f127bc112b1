"""What ``--vary KNOB=VALUES`` can vary, and the parsing of VALUES.

A knob is one parameter of a simulated defense (``noise.sigma`` ...) or the dropout rate of a built-in
architecture (``dropout.p``). Each knob knows which direction makes the defense *stronger*, so the sweep
can name the weakest setting that still passes the rules (the seed-004 "minimum threshold").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, argument_ref
from ..registry import Registry

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
VARY = argument_ref("vary")


@dataclass(frozen=True)
class Knob:
    name: str  # what the user types: "noise.sigma"
    target: str  # "defense" (a parameter of a simulated defense) or "model" (rebuild the architecture)
    component: str  # defense registry name ("noise") or "dropout"
    param: str  # parameter of that component ("sigma")
    stronger: str  # "higher" or "lower": the direction in which the defense gets stronger
    low: float  # allowed interval for a value
    high: float
    low_inclusive: bool
    high_inclusive: bool
    meaning: str  # one line for --help and reports

    def check(self, value: float, option: str) -> None:
        lo_ok = value >= self.low if self.low_inclusive else value > self.low
        hi_ok = value <= self.high if self.high_inclusive else value < self.high
        if not (lo_ok and hi_ok):
            raise ConfigError(f"{option}: {self.name} value {value:g} is outside {self.interval()}; "
                              f"give values in that interval")

    def interval(self) -> str:
        lo = "[" if self.low_inclusive else "("
        hi = "]" if self.high_inclusive else ")"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    def strength_key(self, value: float) -> float:
        """Sort key that grows with the defense's strength."""
        return value if self.stronger == "higher" else -value


KNOBS: Registry[Knob] = Registry("knob")


def _knob(name: str, target: str, stronger: str, low: float, high: float, low_inc: bool, high_inc: bool,
          meaning: str) -> None:
    component, param = name.split(".")
    KNOBS.register(name)(Knob(name, target, component, param, stronger, low, high, low_inc, high_inc, meaning))


_INF = math.inf
_knob("noise.sigma", "defense", "higher", 0.0, _INF, True, False, "std of Gaussian noise added to the update")
_knob("clip.norm", "defense", "lower", 0.0, _INF, False, False, "L2 norm the update is clipped to")
_knob("prune.keep", "defense", "lower", 0.0, 1.0, False, True, "fraction of update entries kept (top-k)")
_knob("mask.fraction", "defense", "higher", 0.0, 1.0, True, False, "fraction of update entries masked at random")
_knob("ppp.sigma", "defense", "higher", 0.0, _INF, True, False,
      "std of noise on the gradients before the PRECODE bottleneck (PPP)")
_knob("dropout.p", "model", "higher", 0.0, 1.0, True, False,
      "rate of every dropout layer of a built-in architecture (the model is rebuilt, weights kept)")


@dataclass(frozen=True)
class Vary:
    """A parsed ``--vary``: the knob, its values (ascending) and how they were written."""

    knob: Knob
    values: tuple[float, ...]
    spec: str  # the VALUES text as given, for reports and resume
    scale: str  # "log", "lin" or "list": how plots draw the x axis

    def by_strength(self) -> tuple[float, ...]:
        """Values from the weakest to the strongest defense."""
        return tuple(sorted(self.values, key=self.knob.strength_key))


def _number(text: str, option: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option}: {what} {text.strip()!r} is not a number; write e.g. 0.01 or 1e-3") from None
    if not math.isfinite(value):
        raise ConfigError(f"{option}: {what} {text.strip()!r} is not finite; give a finite number")
    return value


def _tidy(value: float) -> float:
    # linspace/geomspace produce 0.30000000000000004-style values; 12 significant digits keep the reports
    # readable and make values from a resumed JSON compare equal to freshly parsed ones.
    return float(f"{value:.12g}")


def parse_values(spec: str, option: str = VARY) -> tuple[tuple[float, ...], str]:
    """``"0.1,0.2"`` or ``"START:STOP:log|lin:COUNT"`` -> (ascending values, scale)."""
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"{option}: no values after '='; give a list such as 0.01,0.1 or a range such as "
                          f"1e-4:1e-1:log:6")
    if ":" in spec:
        values = _parse_range(spec, option)
        scale = spec.split(":")[2].strip().lower()
    else:
        parts = spec.split(",")
        if any(not p.strip() for p in parts):
            raise ConfigError(f"{option}: empty item in the list {spec!r}; separate values with single commas")
        values = [_number(p, option, "value") for p in parts]
        scale = "list"
    values = [_tidy(v) for v in values]
    seen: set[float] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"{option}: value {v:g} is given twice; list each value once")
        seen.add(v)
    if len(values) < 2 and scale == "list":
        raise ConfigError(f"{option}: a sweep needs at least 2 values, got {spec!r}; use `leakaudit scan` for one "
                          f"setting or add values")
    return tuple(sorted(values)), scale


def _parse_range(spec: str, option: str) -> list[float]:
    parts = spec.split(":")
    if len(parts) != 4:
        raise ConfigError(f"{option}: range {spec!r} must have 4 parts START:STOP:log|lin:COUNT, "
                          f"e.g. 1e-4:1e-1:log:6")
    start = _number(parts[0], option, "range start")
    stop = _number(parts[1], option, "range stop")
    scale = parts[2].strip().lower()
    if scale not in ("log", "lin"):
        raise ConfigError(f"{option}: range scale {parts[2].strip()!r} is neither 'log' nor 'lin'; "
                          f"write e.g. 1e-4:1e-1:log:6 or 0:0.5:lin:6")
    try:
        count = int(parts[3].strip())
    except ValueError:
        raise ConfigError(f"{option}: range count {parts[3].strip()!r} is not a whole number; "
                          f"write e.g. 1e-4:1e-1:log:6") from None
    if count < 2:
        raise ConfigError(f"{option}: range count is {count}; a sweep needs at least 2 values")
    if count > 1000:
        raise ConfigError(f"{option}: range count {count} is too large (at most 1000); use fewer values")
    if start == stop:
        raise ConfigError(f"{option}: range start and stop are both {start:g}; give two different ends")
    if scale == "log":
        if start <= 0 or stop <= 0:
            raise ConfigError(f"{option}: a log range needs positive ends, got {start:g} and {stop:g}; "
                              f"use a lin range or positive ends such as 1e-4:1e-1:log:6")
        return list(np.geomspace(start, stop, count))
    return list(np.linspace(start, stop, count))


def parse_vary(text: str, option: str = VARY) -> Vary:
    """``"noise.sigma=1e-4:1e-1:log:6"`` -> Vary, with one-line ConfigErrors for every mistake."""
    where = f"{option} {text}"
    if "=" not in text:
        raise ConfigError(f"{where}: expected KNOB=VALUES, e.g. noise.sigma=1e-4:1e-1:log:6; "
                          f"knobs: {', '.join(KNOBS.names())}")
    name, spec = (s.strip() for s in text.split("=", 1))
    if name not in KNOBS:
        raise ConfigError(f"{where}: {KNOBS.unknown_message(name)}")
    knob = KNOBS.get(name)
    values, scale = parse_values(spec, where)
    for v in values:
        knob.check(v, where)
    return Vary(knob, values, spec, scale)
