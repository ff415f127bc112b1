"""sweep.html: one self-contained page (template ``reports/sweep.html``) rendered from the sweep.json dict.

Plots are matplotlib PNGs embedded as data URIs; every string that comes from the user's files or
options (model path, data source, attack and rule names, errors) goes through the report layer's ``esc``,
and image sources are used only when they are PNG data URIs (a hand-edited sweep.json given to --resume
cannot smuggle a URL or ``javascript:`` into the page).
"""

from __future__ import annotations

import base64
import io
import json
import math
from string import Template
from typing import Any

from ..report.html import esc as _e
from ..report.html import fmt as _num
from ..report.images import is_png_data_uri
from ..resources import read_report_file
from ..safetext import visible


def _png_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_COLORS = ("#1a73e8", "#e8710a", "#9334e6", "#12b5cb", "#d01884", "#5f6368")


def _plain(text: object) -> str:
    """A plot label as typed: matplotlib reads text between two ``$`` as mathtext, and a rule id such as
    ``$\\x$`` from a user rule file would fail to parse and lose the whole page."""
    return visible(text).replace("$", r"\$")


def curves(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, PNG data URI): one leakage curve per attack on each metric's plot (mean solid, worst sample
    dashed), the rules' thresholds as horizontal lines, the verdict at each value as a green/red strip along
    the bottom and the recommended threshold as a vertical line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    done = [p for p in doc["points"] if p["status"] == "done"]
    series = _series(done)
    verdicts = sorted((p["value"], p["passed"]) for p in done)
    rules = _rules_by_metric(doc)
    log_x = _log_axis(doc)
    stable = doc["threshold"]["stable"]
    out = []
    for metric in sorted(series):
        fig, ax = plt.subplots(figsize=(5.4, 3.5))
        _plot_attacks(ax, series[metric])
        for rid, thr in rules.get(metric, []):
            ax.axhline(thr, color="#f9ab00", linestyle=":", linewidth=1.5, label=_plain(f"rule {rid}: {thr:g}"))
        if stable is not None:
            ax.axvline(stable, color="#137333", linewidth=1, alpha=0.7, label=f"threshold {stable:g}")
        strip = ax.get_xaxis_transform()  # x in data units, y in axes units: a strip along the bottom
        for x, ok in verdicts:
            ax.plot([x], [0.03], "s", color="#137333" if ok else "#b3261e", markersize=6, transform=strip,
                    clip_on=False)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(f"{doc['knob']['name']}  (squares: rules pass / fail)")
        ax.set_ylabel(metric)
        ax.set_title(metric, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        out.append((metric, _png_uri(fig)))
        plt.close(fig)
    return out


# metric -> attack -> (value, mean, worst sample) at every value with a verdict
_Series = dict[str, dict[str, list[tuple[float, float, float | None]]]]


def _series(done: list[dict[str, Any]]) -> _Series:
    series: _Series = {}
    for p in done:
        for a in p["attacks"]:
            for m in a["metrics"]:
                if m["mean"] is not None:
                    series.setdefault(m["name"], {}).setdefault(a["attack"], []).append(
                        (p["value"], m["mean"], m["worst"]))
    return series


def _plot_attacks(ax: Any, by_attack: dict[str, list[tuple[float, float, float | None]]]) -> None:
    """One metric's curves: per attack the mean (solid) and, where it differs, the worst sample (dashed).
    ``ax``: a matplotlib Axes (matplotlib is optional and not type-checked here)."""
    for i, (attack, pts) in enumerate(sorted(by_attack.items())):
        pts.sort()
        color = _COLORS[i % len(_COLORS)]
        xs = [x for x, _, _ in pts]
        ax.plot(xs, [m for _, m, _ in pts], "-o", color=color, markersize=4, label=_plain(f"{attack} (mean)"))
        if any(w is not None and w != m for _, m, w in pts):
            worst = [math.nan if w is None else w for _, _, w in pts]  # NaN: a gap in the line, as None was
            ax.plot(xs, worst, "--", color=color, alpha=0.6, label=_plain(f"{attack} (worst)"))


def _log_axis(doc: dict[str, Any]) -> bool:
    values = doc["values"]
    if doc["knob"]["scale"] == "log":
        return True
    return min(values) > 0 and max(values) / min(values) >= 100


def _rules_by_metric(doc: dict[str, Any]) -> dict[str, list[tuple[str, float]]]:
    found: dict[str, dict[str, float]] = {}
    for p in doc["points"]:
        for r in p["rules"]:
            found.setdefault(r["metric"], {})[r["id"]] = r["threshold"]
    return {m: sorted(d.items()) for m, d in found.items()}


def _common_notes(doc: dict[str, Any]) -> list[str]:
    """Notes every point shares (e.g. an attack skipped for the model's structure): said once, not per row."""
    sets = [set(p["notes"]) for p in doc["points"]]
    if len(sets) < 2:
        return []
    common = set.intersection(*sets)
    return [n for n in doc["points"][0]["notes"] if n in common]


def _points_table(doc: dict[str, Any]) -> str:
    common = _common_notes(doc)
    rule_ids = sorted({r["id"] for p in doc["points"] for r in p["rules"]})
    head = "".join(f"<th>{_e(r)}</th>" for r in rule_ids)
    rows = []
    by_value = {p["value"]: p for p in doc["points"]}
    for v in doc["values"]:
        p = by_value.get(v)
        if p is None:
            rows.append(f"<tr><td>{_e(f'{v:.4g}')}</td><td class='not_evaluated'>not run</td><td></td>"
                        + "<td></td>" * len(rule_ids) + "<td></td><td></td></tr>")
            continue
        verdict = {True: ("pass", "pass"), False: ("fail", "fail")}.get(p["passed"], (p["status"], p["status"]))
        cells = []
        rules = {r["id"]: r for r in p["rules"]}
        for rid in rule_ids:
            r = rules.get(rid)
            if r is None:
                cells.append("<td></td>")
            else:
                obs = "" if r.get("observed") is None else f" ({_num(r['observed'])})"
                cells.append(f"<td class='{_e(r['status'])}'>{_e(r['status'])}{_e(obs)}</td>")
        detail = p["error"] or "; ".join(n for n in p["notes"] if n not in common)
        cost = (p.get("cost") or {}).get("summary", "")
        secs = "" if p["seconds"] is None else f"{p['seconds']:.1f} s"
        rows.append(f"<tr><td>{_e(f'{v:.4g}')}</td><td class='{_e(verdict[0])}'>{_e(verdict[1])}</td>"
                    f"<td>{_e(secs)}</td>{''.join(cells)}<td>{_e(cost)}</td><td>{_e(detail)}</td></tr>")
    shared = "".join(f"<li>{_e(n)}</li>" for n in common)
    intro = f"<p class='muted'>At every value:</p><ul class='muted'>{shared}</ul>" if shared else ""
    return (intro + f"{SCROLL}<table><tr><th>{_e(doc['knob']['name'])}</th><th>verdict</th><th>time</th>{head}"
            f"<th>defense cost</th><th>notes</th></tr>" + "".join(rows) + "</table></div>")


def _recon_table(doc: dict[str, Any], originals: list[str] | None) -> str:
    attacks = sorted({a["attack"] for p in doc["points"] for a in p["attacks"] if a["images"]})
    if not attacks:
        return "<p class='muted'>No reconstructions recorded.</p>"
    rows = []
    if originals:
        imgs = "".join(f"<img class='thumb' alt='original' src='{u}'>" for u in originals if is_png_data_uri(u))
        rows.append(f"<tr><td>originals</td><td colspan='{len(attacks)}'>{imgs}</td></tr>")
    for p in doc["points"]:
        by_attack = {a["attack"]: a for a in p["attacks"]}
        cells = []
        for name in attacks:
            a = by_attack.get(name)
            imgs = "".join(f"<img class='thumb' alt='{_e(name)} reconstruction' src='{u}'>"
                           for u in (a["images"] if a else []) if is_png_data_uri(u))
            cells.append(f"<td>{imgs}</td>")
        value = f"{p['value']:.4g}"
        rows.append(f"<tr><td>{_e(value)}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>{_e(a)}</th>" for a in attacks)
    return f"{SCROLL}<table><tr><th>{_e(doc['knob']['name'])}</th>{head}</tr>{''.join(rows)}</table></div>"


# A wide table scrolls in its own box (the page keeps the phone's width); tabindex lets a keyboard scroll it.
SCROLL = "<div class='table-scroll' tabindex='0'>"


def render_html(doc: dict[str, Any], originals: list[str] | None = None) -> str:
    """The page for a sweep.json dict; ``originals`` (PNG data URIs) are shown above the reconstructions
    when the caller has the samples at hand (they are not stored in sweep.json)."""
    t = doc["threshold"]
    if t["stable"] is not None:
        banner = "found"
    elif t["weakest_passing"] is None and any(p["status"] == "done" for p in doc["points"]):
        banner = "none"
    else:
        banner = "unknown"
    plots = "\n".join(
        f"<figure><img alt='{_e(m)} against {_e(doc['knob']['name'])}' src='{u}'>"
        f"<figcaption>{_e(m)}</figcaption></figure>" for m, u in curves(doc)
    ) or "<p class='muted'>No measured values to plot.</p>"
    incomplete = ("<p class='incomplete'><strong>Incomplete:</strong> the sweep was stopped before every value "
                  "had a result; continue it with <code>--resume sweep.json</code>.</p>") if doc["incomplete"] else ""
    values = doc["values"]
    knob = doc["knob"]
    model, data = doc.get("model", {}), doc.get("data", {})
    return Template(read_report_file("sweep.html")).substitute(
        knob=_e(knob["name"]),
        knob_component=_e(knob["component"]),
        knob_meaning=_e(knob.get("meaning", "")),
        stronger=_e("larger" if knob["stronger"] == "higher" else "smaller"),
        values_text=_e(f"{len(values)} values ({knob['spec']}): " + ", ".join(f"{v:g}" for v in values)),
        model_path=_e(model.get("path", "?")),
        model_sha=_e(model.get("sha256", "?")),
        data_source=_e(data.get("source", "?")),
        tool_version=_e(doc["tool"]["version"]),
        created=_e(doc["created"]),
        incomplete_block=incomplete,
        banner_class=banner,
        threshold_message=_e(t["message"]),
        points_table=_points_table(doc),
        plots=plots,
        recon_table=_recon_table(doc, originals),
        settings=_e(json.dumps(doc["settings"], indent=2, sort_keys=True)),
        command=_e(doc["command"]),
    )
