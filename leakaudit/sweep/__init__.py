"""``leakaudit sweep``: how strong must a defense be? One audit per value of a knob, the leakage curve,
and the weakest setting that passes the rules."""

from .interface import (
           DONE,
           ERROR,
           INTERRUPTED,
           MetricSummary,
           Point,
           PointAttack,
           PointRule,
           SweepResult,
           Threshold,
)
from .knobs import KNOBS, Knob, Vary, parse_values, parse_vary
from .runner import run_sweep
from .threshold import find_threshold

__all__ = ["DONE", "ERROR", "INTERRUPTED", "KNOBS", "PointAttack", "Knob", "MetricSummary", "Point",
           "PointRule", "SweepResult", "Threshold", "Vary", "find_threshold", "parse_values", "parse_vary",
           "run_sweep"]
