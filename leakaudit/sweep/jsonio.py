"""sweep.json: writing it (schema ``reports/sweep.schema.json``) and reading it back for ``--resume``."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError, InputError, argument_ref
from ..resources import read_report_file
from ..userfiles import REPORT_LIMIT, parse_json, read_user_text
from .interface import (
    DONE,
    ERROR,
    INTERRUPTED,
    MetricSummary,
    Point,
    PointAttack,
    PointCost,
    PointRule,
    SweepResult,
)
from .knobs import Vary

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
RESUME = argument_ref("resume")
VARY = argument_ref("vary")

SCHEMA_ID = "leakaudit-sweep"
SCHEMA_VERSION = 1


def _tool() -> dict[str, str]:
    import numpy
    import torch

    return {"name": "leakaudit", "version": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__}


def canonical(obj: Any) -> Any:
    """JSON-normal form (tuples -> lists, keys sorted on dump): what resume compares settings in."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def to_dict(result: SweepResult, vary: Vary) -> dict[str, Any]:
    ctx = result.context
    k = vary.knob
    t = result.threshold
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "tool": _tool(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "incomplete": result.incomplete,
        "command": ctx.get("command", ""),
        "knob": {"name": k.name, "component": k.component, "param": k.param, "target": k.target,
                 "stronger": k.stronger, "meaning": k.meaning, "spec": vary.spec, "scale": vary.scale},
        "values": list(result.values),
        "model": canonical(ctx.get("model", {})),
        "data": canonical(ctx.get("data", {})),
        "settings": canonical(ctx.get("settings", {})),
        "threshold": {"stable": t.stable, "weakest_passing": t.weakest_passing, "monotone": t.monotone,
                      "message": t.message, "unknown": list(t.unknown)},
        "points": [_point(p) for p in result.points],
    }


def _point(p: Point) -> dict[str, Any]:
    return {
        "value": p.value, "status": p.status, "passed": p.passed, "seconds": p.seconds, "error": p.error,
        "error_kind": p.error_kind, "notes": list(p.notes),
        "attacks": [{
            "attack": a.attack, "attack_loss": a.attack_loss, "seconds": a.seconds,
            "iterations_run": a.iterations_run, "images": list(a.images),
            "metrics": [{"name": m.name, "per_sample": list(m.per_sample), "mean": m.mean, "worst": m.worst(),
                         "higher_is_better": m.higher_is_better, "unavailable": m.unavailable}
                        for m in a.metrics],
        } for a in p.attacks],
        "rules": [{"id": r.id, "metric": r.metric, "comparison": r.comparison, "threshold": r.threshold,
                   "severity": r.severity, "status": r.status, "observed": r.observed, "attack": r.attack,
                   "reason": r.reason} for r in p.rules],
        "cost": None if p.cost is None else {"cosine": p.cost.cosine, "relative_error": p.cost.relative_error,
                                             "kept": p.cost.kept, "summary": p.cost.summary},
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomic write: a Ctrl-C or crash mid-write never leaves a truncated sweep.json to resume from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def schema() -> dict[str, Any]:
    return json.loads(read_report_file("sweep.schema.json"))


def validate(doc: dict[str, Any], source: str) -> None:
    """Validate against the schema (jsonschema is a runtime dependency); one-line error."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(x) for x in e.path) or "(top level)"
        raise InputError(f"{source}: not a valid leakaudit sweep file at {where}: {e.message}; "
                         f"pass a sweep.json written by `leakaudit sweep`")


def read_json(path: Path) -> dict[str, Any]:
    unreadable = f"{path}: cannot read JSON ({{e}}); pass the sweep.json of the run to resume"
    text = read_user_text(path, InputError, unreadable=unreadable, limit=REPORT_LIMIT,
                          missing=f"{path}: file not found; pass the sweep.json of the run to resume")
    doc = parse_json(text, str(path), InputError, "pass the sweep.json of the run to resume")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        raise InputError(f"{path}: not a leakaudit sweep file (no \"schema\": \"{SCHEMA_ID}\"); "
                         f"pass the sweep.json written by `leakaudit sweep`")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path}: sweep file version {doc.get('schema_version')!r} is not {SCHEMA_VERSION}; "
                         f"rerun the sweep without {RESUME}")
    validate(doc, str(path))
    return doc


def previous_points(path: Path, doc: dict[str, Any], *, knob: str, sha256: str,
                    settings: dict[str, Any]) -> dict[float, Point]:
    """The points of a previous run that ``--resume`` may reuse, after checking it is the same sweep."""
    if doc["knob"]["name"] != knob:
        raise ConfigError(f"{RESUME} {path}: that sweep varied {doc['knob']['name']}, this one {knob}; "
                          f"use the same {VARY} knob or a new output directory")
    old_sha = doc.get("model", {}).get("sha256")
    if old_sha != sha256:
        raise ConfigError(f"{RESUME} {path}: model sha256 differs ({str(old_sha)[:12]}... in the file, "
                          f"{sha256[:12]}... now); resume with the same model file or start a new sweep")
    old, new = canonical(doc.get("settings", {})), canonical(settings)
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff[:3])
        raise ConfigError(f"{RESUME} {path}: settings differ from that run: {shown}; use the same options "
                          f"or start a new sweep without {RESUME}")
    return {p.value: p for p in (point_from_dict(d) for d in doc["points"])}


def point_from_dict(d: dict[str, Any]) -> Point:
    status = d["status"]
    if status not in (DONE, ERROR, INTERRUPTED):
        raise InputError(f"sweep point status {status!r} is unknown")
    return Point(
        value=float(d["value"]), status=status, passed=d.get("passed"), seconds=d.get("seconds"),
        error=d.get("error"), notes=tuple(d.get("notes", ())), error_kind=d.get("error_kind"),
        attacks=tuple(PointAttack(
            attack=a["attack"], attack_loss=a.get("attack_loss"), seconds=a.get("seconds"),
            iterations_run=a.get("iterations_run"), images=tuple(a.get("images", ())),
            metrics=tuple(MetricSummary(m["name"], tuple(m["per_sample"]), m.get("higher_is_better"),
                                        m.get("unavailable")) for m in a["metrics"]),
        ) for a in d.get("attacks", ())),
        rules=tuple(PointRule(r["id"], r["metric"], r["comparison"], float(r["threshold"]), r["severity"],
                                r["status"], r.get("observed"), r.get("attack"), r.get("reason"))
                    for r in d.get("rules", ())),
        cost=None if d.get("cost") is None else PointCost(d["cost"].get("cosine"), d["cost"].get("relative_error"),
                                                          d["cost"].get("kept"), d["cost"].get("summary", "")),
    )
