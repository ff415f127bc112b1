"""What attack power a scan actually ran, in words and as data.

A budget's name stops being true once ``--iterations`` / ``--restarts`` override it: a scan at
``--iterations 1`` did not run "the standard budget", and a PASS it earns means far less. Every place a report
names the budget (JSON ``budget``, the HTML settings card, the terminal summary, the pass-scope
recommendation) says it through ``describe`` so they cannot disagree. It reads the report document only,
so ``leakaudit render`` of a saved report says the same.
"""

from __future__ import annotations

from typing import Any

OVERRIDABLE = ("iterations", "restarts")  # the scan settings that override every attack's budget


def describe(doc: dict[str, Any]) -> dict[str, Any]:
    """{"name", "overrides", "max_time", "attacks": [{"name", "iterations", "restarts"[, "planned", "seconds"]} |
    {"name", "closed_form"}], "text"}. An attack whose iterations were fitted to its time share (schema 1.8) has
    ``planned`` (the budget's) and ``seconds`` (its share); ``max_time``: the scan's cap in seconds (None before
    1.8)."""
    settings = doc.get("settings") or {}
    name = settings.get("budget") or "unknown"
    overrides = {k: settings[k] for k in (*OVERRIDABLE, "attack_iterations") if settings.get(k)}
    ran = [_attack(a) for a in doc.get("attacks", []) if a.get("status") == "ran"]
    cap = settings.get("max_time")
    return {"name": name, "overrides": overrides, "max_time": cap, "attacks": ran,
            "text": _text(name, overrides, ran, cap)}


def _attack(a: dict[str, Any]) -> dict[str, Any]:
    s = a.get("settings") or {}
    # a closed-form attack (analytic, APRIL) solves once: its nominal 1 iteration is no measure of effort
    if a.get("iterations_run") == 0:
        return {"name": a["name"], "closed_form": True}
    run, planned = a.get("iterations_run"), s.get("iterations")
    if "seconds" in s and not a.get("stopped_early") and run and planned and run < planned:
        return {"name": a["name"], "iterations": run, "restarts": s.get("restarts"), "planned": planned,
                "seconds": s["seconds"]}
    return {"name": a["name"], "iterations": planned, "restarts": s.get("restarts")}


def _text(name: str, overrides: dict[str, Any], ran: list[dict[str, Any]], cap: float | None = None) -> str:
    head = f"{name} budget"
    if overrides:
        head += " with overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    head += f"; {cap:g} s cap" if cap else ""
    parts = [f"{a['name']} closed form" if a.get("closed_form")
             else f"{a['name']} {a['iterations']} iteration(s) x {a['restarts']} restart(s)"
             + (f" (of {a['planned']} planned, fitted to its {a['seconds']:g} s share)" if "planned" in a else "")
             for a in ran]
    return head + (f" (ran: {'; '.join(parts)})" if parts else "")
