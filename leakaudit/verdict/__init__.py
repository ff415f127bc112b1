"""Rules (TOML profiles and user files) and the pass/fail verdict over every attack's scores."""

from .evaluate import Observation, RuleResult, Verdict, evaluate, evaluate_rule
from .rules import Rule, RuleSet, list_profiles, load_rules

__all__ = ["Rule", "RuleSet", "load_rules", "list_profiles", "RuleResult", "Verdict", "Observation",
           "evaluate", "evaluate_rule"]
