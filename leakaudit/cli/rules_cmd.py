"""``leakaudit rules``: list the built-in rule profiles, or validate a user rule file.

    leakaudit rules                    every built-in profile and its rules
    leakaudit rules --profile strict   one profile
    leakaudit rules --file my.toml     validate a file (exit 2 with one line per the first mistake)
    ... --json                         the same as JSON on stdout
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..metrics import METRICS
from ..safetext import terminal
from ..verdict import RuleSet, list_profiles, load_rules
from .app import app


def _ruleset_dict(rs: RuleSet) -> dict[str, Any]:
    return {
        "name": rs.name,
        "source": rs.source,
        "description": rs.description,
        "rules": [
            {"id": r.id, "metric": r.metric, "comparison": r.comparison, "threshold": r.threshold,
             "severity": r.severity, "scope": r.scope, "description": r.description, "rationale": r.rationale,
             "reference": r.reference, "max_p": r.max_p}
            for r in rs.rules
        ],
    }


def _metrics_dict() -> list[dict[str, Any]]:
    return [
        {"name": m.name, "leak_direction": m.leak_direction, "higher_is_better": m.higher_is_better,
         "range": [None if math.isinf(v) else v for v in m.range], "unit": m.unit, "per_sample": m.per_sample,
         "description": m.description}
        for _, m in METRICS.items()
    ]


def _table(rs: RuleSet) -> Table:
    """A user rule file's ids, descriptions and references are rich markup to the table: each is escaped."""
    table = Table(title=terminal(f"{rs.name} ({rs.source}): {rs.description}"), title_justify="left",
                  show_lines=False)
    for column in ("id", "rule", "severity", "reference"):
        table.add_column(column, overflow="fold")
    for r in rs.rules:
        style = "red" if r.severity == "fail" else "yellow"
        table.add_row(terminal(r.id), terminal(r.describe()), f"[{style}]{terminal(r.severity)}[/{style}]",
                      terminal(r.reference))
    return table


# The help as one string, not the docstring: rich --help keeps a docstring's line breaks, so its paragraphs
# would be wrapped twice on a narrow terminal.
_HELP = (
    "List the rule profiles and their rules, or validate a rule file (exit 2 on a mistake).\n\n"
    'A rule file is TOML: a top-level description and one "rule" table per rule (an array of tables) with id, '
    "metric, threshold and optionally comparison (must agree with the metric's leak direction, which it follows "
    "when left out), severity (fail or warn; default fail), scope (any sample or the batch mean; default any), "
    "max_p (count only samples whose reconstruction is attributable to them: match_p <= max_p), description, "
    "rationale and reference.\n\n"
    "Recognised (what the positive control and the recognised fraction use) is the profile's per-sample "
    "fail rules, or the default profile's when it has none; see docs/recognition.md.\n\n"
    "A rule whose metric has no value (e.g. LPIPS without local weights) is reported as not evaluated, never as "
    "passed; scan --strict counts a fail-severity one as a failure (a warn-severity one never fails a scan)."
)


@app.command("rules", help=_HELP)
def rules_command(
    profile: Optional[str] = typer.Option(None, "--profile", help="Show one built-in profile (e.g. default, strict)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Validate a rule file (TOML) and show its rules."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of tables."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> int:
    """List the rule profiles and their rules, or validate a rule file (``_HELP`` is the --help text)."""
    if profile is not None and file is not None:
        raise ConfigError("--profile/--file: give one of them, not both")
    if file is not None:
        rulesets = [load_rules(file)]
    elif profile is not None:
        rulesets = [load_rules(profile)]
    else:
        rulesets = [load_rules(name) for name in list_profiles()]

    if as_json:
        doc: dict[str, Any] = {"profiles": [_ruleset_dict(rs) for rs in rulesets], "metrics": _metrics_dict()}
        if file is not None:
            doc["valid"] = True
        typer.echo(json.dumps(doc, indent=2))
        return 0

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)
    for rs in rulesets:
        console.print(_table(rs))
    if file is not None:
        console.print(f"{terminal(file)}: valid, {len(rulesets[0].rules)} rule(s)")
    else:
        directions = ", ".join(f"{m.name} {'higher' if m.leak_direction == 'higher' else 'lower'}"
                               for _, m in METRICS.items())
        console.print(f"Leak direction (which way a value shows more leakage): {directions}.")
        console.print("Use --rules NAME or --rules FILE with scan; validate your own file with --file.")
    return 0
