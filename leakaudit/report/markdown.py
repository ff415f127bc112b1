"""Markdown: a short summary for a CI job page (GitHub's job summary, a merge-request comment).

The verdict line, the rules as a table, the coverage line with the worst sample's recognition test in words and
the chance level, and the attacks as a table -- what the terminal summary shows, for a reader who has only the
CI page. The HTML report keeps the images and the detail. Every string from the user's files (rule ids, sample
and layer names, reasons) goes through ``safetext.markdown_text``: shown as typed, never a link, an image,
inline HTML or a new table cell.
"""

from __future__ import annotations

from typing import Any

from ..modality import words
from ..safetext import markdown_text as md

_MARK = {"pass": "pass", "fail": "**FAIL**", "warn": "warn", "not_evaluated": "not evaluated",
         "suppressed": "suppressed", "not_applicable": "not applicable"}
_HEADLINE = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "inconclusive": "INCONCLUSIVE",
             "incomplete": "INCOMPLETE"}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else md(value)


def _rule_rows(doc: dict[str, Any]) -> list[str]:
    rows = ["| status | rule | test | observed | attack |", "|---|---|---|---|---|"]
    for r in doc["rules"]["results"]:
        attributed = f" and match_p <= {r['max_p']:g}" if r.get("max_p") is not None else ""
        test = f"{md(r['metric'])} {md(r['comparison'])} {_number(r['threshold'])}{attributed}"
        if r["status"] == "not_evaluated":
            observed = f"not evaluated: {md(r.get('reason') or 'no value')}"
        elif r["status"] == "not_applicable":
            observed = md(r.get("reason") or "another modality's rule")
        elif r.get("observed") is None and r.get("max_p") is not None:
            observed = "no reconstruction attributable to its sample"
        else:
            observed = _number(r.get("observed"))
        rows.append(f"| {_MARK.get(r['status'], md(r['status']))} | {md(r['id'])} | {test} | {observed} | "
                    f"{md(r.get('attack') or '-')} |")
    return rows


def _attack_rows(doc: dict[str, Any]) -> list[str]:
    control = doc.get("control") or {}
    modality = str((doc.get("data") or {}).get("modality") or "image")
    first, second, heads = {
        "text": ("token_recall", "rougeL", "token recall | ROUGE-L"),
        "tabular": ("record_match", "record_skill", "features recovered | record score"),
    }.get(modality, ("ssim", "psnr", "SSIM | PSNR (dB)"))
    rows = [f"| attack | status | {heads} | seconds | reason |", "|---|---|---|---|---|---|"]
    for prefix, a in [("", a) for a in doc["attacks"]] + [("control ", a) for a in control.get("attacks", [])]:
        means = a.get("means") or {}
        seconds = a.get("seconds")
        rows.append(f"| {md(prefix + a['name'])} | {md(a['status'])} | {_number(means.get(first))} | "
                    f"{_number(means.get(second))} | "
                    f"{f'{seconds:.1f}' if isinstance(seconds, (int, float)) else '-'} | "
                    f"{md(a.get('reason') or '')} |")
    return rows


def _sentences(doc: dict[str, Any]) -> list[str]:
    """A text scan's recovered sentences per attack (the true line only where the report embeds it)."""
    rows = []
    for a in doc["attacks"]:
        for s in a.get("samples") or []:
            view = s.get("sentence")
            if isinstance(view, dict):
                true = f" (true: {md(view['true'])})" if view.get("true") is not None else ""
                mark = "recognised" if s.get("recognised") else "not recognised"
                recovered = md(view.get("recovered", ""))
                rows.append(f"- {md(a['name'])} {md(s['name'])}: sentence \"{recovered}\"{true}, {mark}")
    return (["**Recovered sentences:**", "", *rows, ""]) if rows else []


def _coverage(doc: dict[str, Any]) -> list[str]:
    coverage = doc.get("coverage")
    if not coverage or not coverage.get("audited"):
        return []
    interval = coverage["interval"]
    worst = coverage.get("worst") or {}
    what = words(str((doc.get("data") or {}).get("modality") or "image")).counted
    lines = [f"**Coverage:** {coverage['recognised']} of {coverage['audited']} {what}(s) recognised "
             f"({coverage['fraction'] * 100:.3g}%, 95% interval {interval['lower'] * 100:.3g}-"
             f"{interval['upper'] * 100:.3g}% Clopper-Pearson) in {coverage['batches_run']} batch(es) of "
             f"{coverage['batch_size']}; worst {md(worst.get('name', '-'))}", ""]
    if worst.get("explanation"):
        lines += [f"- worst {what} {md(worst['name'])}: {md(worst['explanation'])}"]
    text = (doc.get("recognition") or {}).get("text")
    if text:
        lines += [f"- chance: {md(text)}"]
    return lines + ([""] if lines[-1] else [])


def _suppressions(doc: dict[str, Any]) -> list[str]:
    entries = doc.get("suppressions") or []
    if not entries:
        return []
    rows = ["### Suppressions", "", "| status | rule | rule's own status | model | expires | reason | file |",
            "|---|---|---|---|---|---|---|"]
    for s in entries:
        status = "**EXPIRED** (fails the scan)" if s["status"] == "expired" else (
            "suppressed" if s["applied"] else "active (nothing to suppress)")
        rows.append(f"| {status} | {md(s['rule'])} | {md(s['rule_status'])} | {md(s['model'])} "
                    f"({md(s['matched_by'])}) | {md(s['expires'])} | {md(s['reason'])} | {md(s['file'])} |")
    return rows + [""]


def _columns(doc: dict[str, Any]) -> list[str]:
    """Tabular scans: which columns leak most."""
    records = doc.get("records") or {}
    if not records.get("columns"):
        return []
    rows = ["| column | kind | recovered | fraction |", "|---|---|---|---|"]
    rows += [f"| {md(c['column'])} | {c['kind']} | {c['recovered']} of {c['audited']} | {_number(c['fraction'])} |"
             for c in records["columns"]]
    return [f"**Columns** (recovered over {md(records['columns_over'])}):", "", *rows, ""]


def render_markdown(doc: dict[str, Any]) -> str:
    verdict = doc["verdict"]
    model = doc.get("model") or {}
    headline = _HEADLINE.get(verdict["overall"], md(verdict["overall"]).upper())
    lines = [f"## leakaudit: {headline}", "",
             f"**{md(verdict['summary'])}** (exit code {verdict['exit_code']})", ""]
    if model.get("path"):
        lines += [f"Model {md(model['path'])} (sha256 {md(str(model.get('sha256', ''))[:12])}), "
                  f"{md((doc.get('budget') or {}).get('text', ''))}", ""]
    lines += ["### Rules", "", *_rule_rows(doc), ""]
    lines += _suppressions(doc)
    lines += _coverage(doc)
    lines += _columns(doc)
    if doc.get("defense_cost"):
        lines += [f"**Defense cost:** {md(doc['defense_cost']['summary'])}", ""]
    lines += ["### Attacks", "", *_attack_rows(doc), ""]
    lines += _sentences(doc)
    notes = list(doc.get("notes") or []) + list((doc.get("findings") or {}).get("warnings") or [])
    if notes:
        lines += ["### Notes", "", *[f"- {md(n)}" for n in notes], ""]
    lines += ["The HTML report (report.html in the scan's output folder) has the reconstructions, the threat "
              "model, the recommendations and the command that reproduces the scan.", ""]
    return "\n".join(lines)
