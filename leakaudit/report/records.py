"""The HTML views of tabular records: a record beside its reconstruction, and which columns leak most.

Every value comes from the user's CSV and schema (column names, categories): each is escaped with ``esc``.
"""

from __future__ import annotations

from typing import Any, Callable

Text = Callable[[Any], str]


def record_pair(attack: dict[str, Any], sample: dict[str, Any], esc: Text, fmt: Text, caption: str) -> str:
    """One record side by side with its reconstruction, column by column; recovered cells highlighted."""
    spread = any(c.get("spread") is not None for c in sample["record"])
    head = "<tr><th>column</th><th>true</th><th>recovered</th>" + ("<th>restart spread</th>" if spread else "") \
        + "</tr>"
    rows = []
    for c in sample["record"]:
        mark = ' class="recovered"' if c["match"] else ""
        true = fmt(c["true"]) if c["true"] is not None else '<span class="muted">not embedded</span>'
        cells = (f'<td class="mono">{esc(c["column"])}</td><td>{true}</td>'
                 f'<td{mark}>{fmt(c["recovered"])}{" ✓" if c["match"] else ""}</td>')
        if spread:
            cells += f'<td>{fmt(c.get("spread"))}</td>'
        rows.append(f"<tr>{cells}</tr>")
    return (f'<figure class="pair record"><table class="record" aria-label="record {esc(sample["name"])} by '
            f'{esc(attack["name"])}">{head}{"".join(rows)}</table><figcaption>{caption}</figcaption></figure>')


def columns_section(doc: dict[str, Any], esc: Text, fmt: Text) -> str:
    """Which columns leak most: per column the fraction of audited records whose best attack recovered it."""
    records = doc.get("records")
    if not records:
        return ""
    rows = [[f'<span class="mono">{esc(c["column"])}</span>', esc(c["kind"]), fmt(c["recovered"]),
             fmt(c["audited"]), fmt(c["fraction"])] for c in records["columns"]]
    head = ("<h2>Columns</h2><p>Which columns leak most: the fraction of records whose column the best attack "
            f"recovered, over {esc(records['columns_over'])}. A categorical column counts when its category is "
            f"right, a continuous one within {fmt(records['tolerance'])} of the column's standard deviation.</p>")
    body = "".join(f"<tr>{''.join(f'<td>{c}</td>' for c in r)}</tr>" for r in rows)
    table = ('<table><tr><th>Column</th><th>Kind</th><th>Recovered</th><th>Audited</th><th>Fraction</th></tr>'
             f"{body}</table>")
    schema = records["schema"]
    said = "inferred by leakaudit (no schema given)" if schema.get("inferred") else "as given"
    return head + table + f'<p class="muted">Schema {esc(said)}; statistics from {esc(schema.get("stats_from"))}.</p>'
