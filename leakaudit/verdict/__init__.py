"""Rules (TOML profiles and user files), the pass/fail verdict over every attack's scores, and the outcome."""

from .evaluate import Observation, RuleResult, Verdict, evaluate, evaluate_rule
from .outcome import OVERALLS, Outcome, decide
from .rules import Rule, RuleSet, list_profiles, load_rules

__all__ = ["Rule", "RuleSet", "load_rules", "list_profiles", "RuleResult", "Verdict", "Observation",
           "evaluate", "evaluate_rule", "Outcome", "OVERALLS", "decide"]
