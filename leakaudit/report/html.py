"""The HTML report: one self-contained file rendered from the report document alone.

No external URL, no script; CSS inline; images as PNG data URIs; a Content-Security-Policy meta tag
(``default-src 'none'; img-src data:; style-src 'unsafe-inline'``) so a browser blocks anything else.
Every value taken from the document is escaped with ``esc`` (layer names, file names and labels come
from the user's files): markup and quotes escaped, control, bidi and zero-width characters shown as ``\\x1b``
etc. (leakaudit.safetext); image sources are accepted only when they are PNG data URIs.
"""

from __future__ import annotations

from string import Template
from typing import Any, Iterable

from .. import __version__
from ..modality import words
from ..resources import read_report_file
from ..safetext import html_text
from .budget import describe as describe_budget
from .images import is_png_data_uri
from .recommendations import rules_broken_by
from .sentences import sentence_html


def esc(value: Any) -> str:
    """Text or a quoted attribute value (either quote) for the page."""
    return html_text("" if value is None else value)


def fmt(value: Any) -> str:
    """Numbers for people: 4 significant digits; "inf" as the symbol; missing as an em dash."""
    if value is None:
        return "—"
    if value == "inf":
        return "∞"
    if value == "-inf":
        return "−∞"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


def _badge(status: Any) -> str:
    label = str(status).replace("_", " ")
    return f'<span class="badge {esc(status)}">{esc(label)}</span>'


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: Iterable[int] = ()) -> str:
    """``rows`` hold already-escaped cell HTML."""
    nums = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows)
    # tabindex: a box that scrolls must be reachable by keyboard (axe-core's scrollable-region-focusable)
    return (f'<div class="table-scroll" tabindex="0"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            '</table></div>')


def _card(items: Iterable[tuple[str, str]]) -> str:
    """``items``: (label, already-escaped HTML)."""
    return '<dl class="card">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _long(text: Any, keep: int = 200) -> str:
    """Escaped text; beyond ``keep`` characters the rest folds away (reasons can repeat per attack)."""
    text = "" if text is None else str(text)
    if len(text) <= keep:
        return esc(text)
    return f"{esc(text[:keep])}… <details><summary>more</summary>{esc(text)}</details>"


def _img(uri: Any, alt: str) -> str | None:
    return f'<img src="{uri}" alt="{esc(alt)}">' if is_png_data_uri(uri) else None


# --------------------------------------------------------------------------------------------------


def _banner(doc: dict[str, Any]) -> str:
    verdict = doc["verdict"]
    # overall is leakaudit.verdict.outcome's; a schema-1.0 report said "pass" when interrupted, hence incomplete
    kind = "incomplete" if doc.get("incomplete") else str(verdict["overall"])
    # LEAK only when a rule fired; a --strict fail on rules that could not be evaluated found no leak
    rules_failed = verdict.get("rules_overall", verdict["overall"]) == "fail"
    fired = rules_failed and (verdict.get("counts") or {}).get("fail", 1) > 0
    word = {"fail": "LEAK" if fired else "FAIL (strict)", "pass": "PASS", "error": "ERROR",
            "incomplete": "INCOMPLETE", "inconclusive": "INCONCLUSIVE"}.get(kind, kind.upper())
    if kind == "incomplete":
        word += f" ({'LEAK' if fired else 'no leak so far'})"
    summary = str(verdict["summary"])
    for prefix in ("INCOMPLETE: ", "LEAK: ", "FAIL (strict): ", "PASS: ", "ERROR: ",
                   "INCONCLUSIVE: "):  # the banner word says it
        summary = summary.removeprefix(prefix)
    return f'<div class="banner {esc(kind)}" id="verdict"><strong>{esc(word)}</strong>{esc(summary)}</div>'


def _control(doc: dict[str, Any]) -> str:
    """The positive control's evidence: what a pass was earned against, or why the scan is inconclusive
    (schema 1.2; older reports have none)."""
    c = doc.get("control")
    if not c:
        return ""
    if c["status"] == "not_needed":
        return f'<h2>Positive control</h2><p class="muted">Not needed: {esc(c["reason"])}.</p>'
    if c["status"] != "ran":
        return '<h2>Positive control</h2><p class="muted">Interrupted before it reconstructed.</p>'
    said = ("reconstructed the undefended case, so the attacks had the power to find a leak"
            if c["reconstructed"] else "did not reconstruct even the undefended case: the scan is no evidence "
            "either way (inconclusive)")
    ran = [*c["shared_attacks"], *(a["name"] for a in c["attacks"] if a["status"] in ("ran", "interrupted"))]
    skipped = [a["name"] for a in c["attacks"] if a["status"] == "skipped"]
    text = (f'The same attacks on the same samples without the defenses under evaluation ({esc(c["reason"])}) '
            f'{said}. {esc(c["evidence"])}. Control attacks: {esc(", ".join(ran) or "none ran")}'
            + (f'; not needed once it had reconstructed: {esc(", ".join(skipped))}' if skipped else "") + ".")
    return f'<h2>Positive control</h2><p id="control">{text}</p>'



def _model(doc: dict[str, Any]) -> str:
    m, f = doc["model"], doc["findings"]
    items = [("File", f'<span class="mono">{esc(m["path"])}</span>'),
             ("SHA-256", f'<span class="mono">{esc(m["sha256"])}</span>'),
             ("Format", esc(m["format"]) + (f' (opset {esc(m["onnx"]["opset"])})' if m.get("onnx") else "")),
             ("Architecture", esc(m.get("arch") or "from the file")),
             ("Input shape", esc(" × ".join(str(s) for s in m["input_shape"]))),
             ("Classes", esc(m["num_classes"])),
             ("Trainable elements", esc(f'{m["num_trainable"]:,}'))]
    dropout = ", ".join(f'<span class="mono">{esc(d["name"])}</span> p={fmt(d["p"])} ({esc(d["source"])})'
                        for d in f["dropout"]) or "none found"
    bottlenecks = ", ".join(
        f'<span class="mono">{esc(b["name"])}</span> (latent {fmt(b.get("latent_dim"))}, {esc(b["source"])}, '
        f'{len(b["params_before"])} parameter tensors before it)' for b in f["bottlenecks"]) or "none found"
    items += [("Dropout", dropout), ("PRECODE / variational bottleneck", bottlenecks),
              ("BatchNorm", ", ".join(f'<span class="mono">{esc(n)}</span>' for n in f["batchnorm"]) or "none"),
              ("Unrecognized stochastic layers",
               ", ".join(f'<span class="mono">{esc(n)}</span>' for n in f["unrecognized_stochastic"]) or "none")]
    out = "<h2>Model</h2>" + _card(items)
    if f["warnings"]:
        out += "<h3>Detection warnings</h3><ul>" + "".join(f"<li>{esc(w)}</li>" for w in f["warnings"]) + "</ul>"
    if f["layers"]:
        rows = [[f'<span class="mono">{esc(layer["name"])}</span>', esc(layer["type"]), fmt(layer["trainable"])]
                for layer in f["layers"]]
        out += ("<details><summary>Layers in forward order (" + esc(len(rows)) + ")</summary>"
                + _table(["Layer", "Type", "Trainable elements"], rows, numeric=[2]) + "</details>")
    return out


def _encoding(modality: Any, norm: dict[str, Any]) -> tuple[str, str]:
    """How the samples became the model's input: an image's normalization is meaningless for records and token ids
    (their data normalization is the identity; the schema or the tokenizer encodes them)."""
    if modality == "tabular":
        return ("Encoding", "by the schema: continuous columns standardised, categorical ones one-hot (see Columns)")
    if modality == "text":
        return ("Encoding", "token ids from the tokenizer, cut or padded to the model's sequence length")
    return ("Normalization", f'{esc(norm["name"])} (mean {esc(norm["mean"])}, std {esc(norm["std"])})')


def _data_and_threat(doc: dict[str, Any]) -> str:
    d, t = doc["data"], doc["threat_model"]
    norm = d["normalization"]
    data = _card([
        ("Source", f'<span class="mono">{esc(d["source"])}</span>'),
        ("Samples", esc(d["count"]) + (f' (batch {esc(cov["shown_batch"] + 1)} of {esc(cov["batches_run"])}; '
                                       f'{esc(cov["audited"])} audited in all, see Coverage)'
                                       if (cov := doc.get("coverage")) and cov["batches_run"] > 1 else "")),
        ("Shape", esc(" × ".join(str(x) for x in d["shape"]))),
        _encoding(d.get("modality"), norm),
        ("Originals in this report", "embedded (--embed-data)" if d["originals_embedded"]
         else "not embedded (run with --embed-data to include them)"),
    ])
    defenses = ", ".join(f'<span class="mono">{esc(x["text"])}</span>' for x in doc["defenses"]) or "none"
    label = doc.get("label_recovery")
    if label is None:
        label_html = "not attempted"
    elif label["known"]:
        label_html = "labels given to the attacker (--labels-known)"
    else:
        label_html = f'recovered with {esc(label["strategy"])}, accuracy {fmt(label["accuracy"])}'
    threat = _card([
        ("Protocol", esc(t["protocol"])),
        ("Batch size", esc(t["batch_size"]) + (f' (the clients train at {esc(t["client_batch_size"])})'
                                               if t.get("client_batch_size") not in (None, t["batch_size"])
                                               else "")),
        *([("What the batch implies", esc(t["batch_statement"]))] if t.get("batch_statement") else []),
        ("BatchNorm buffers in the update", "yes (running statistics sent)" if t.get("buffers") else "no"),
        ("Local steps / lr", f'{esc(t["local_steps"])} / {fmt(t["local_lr"])}'),
        ("Labels", label_html),
        ("Client BatchNorm", esc(t.get("batchnorm", "train")) + (" (frozen running statistics)"
                                                                  if t.get("batchnorm") == "eval" else "")),
        ("Simulated defenses", defenses),
        ("Budget", esc(describe_budget(doc)["text"])),  # from the document: a report of any version says it
        ("Seed", esc(doc["seed"])),
        ("Device", esc(doc["device"])),
    ])
    return "<h2>Data</h2>" + data + "<h2>Threat model and settings</h2>" + threat


def _rules(doc: dict[str, Any]) -> str:
    r = doc["rules"]
    rows = []
    for x in r["results"]:
        where = esc(x.get("attack") or "—") + (f' / {esc(x["sample"])}' if x.get("sample") else "")
        rows.append([_badge(x["status"]), f'<span class="mono">{esc(x["id"])}</span>',
                     f'{esc(x["metric"])} {esc(x["comparison"])} {fmt(x["threshold"])} ({esc(x["scope"])})',
                     esc(x["severity"]), fmt(x["observed"]), where,
                     _long(x.get("reason") or x.get("description") or "")])
    strict = " (strict: a fail-severity rule not evaluated counts as failed)" if r["strict"] else ""
    return (f'<h2>Rules: profile {esc(r["profile"])}{esc(strict)}</h2>'
            + _table(["Status", "Rule", "Leaks when", "Severity", "Worst observed", "Attack / sample", "Reason"],
                     rows, numeric=[4]) + _suppressions(doc))


def _suppressions(doc: dict[str, Any]) -> str:
    """Every suppression that applies to the model (schema 1.7), so a compliance reader sees each accepted
    finding with its reason and expiry, and each expired one that failed the scan."""
    entries = doc.get("suppressions") or []
    if not entries:
        return ""
    rows = [[_badge("fail") if s["status"] == "expired" else _badge("suppressed"),
             f'<span class="mono">{esc(s["rule"])}</span>', esc(s["rule_status"]),
             f'<span class="mono">{esc(s["model"])}</span> ({esc(s["matched_by"])})', esc(s["expires"]),
             esc(s["reason"]), f'<span class="mono">{esc(s["file"])}</span>',
             "yes" if s["applied"] else "no"] for s in entries]
    return ("<h3>Suppressions</h3><p>Accepted findings from the suppression file: a suppressed rule does not count "
            "towards the verdict; an expired entry suppresses nothing and fails the scan.</p>"
            + _table(["Status", "Rule", "Rule's own status", "Model", "Expires", "Reason", "File", "Applied"],
                     rows))


def _pair(doc: dict[str, Any], attack: dict[str, Any], sample: dict[str, Any]) -> str:
    if isinstance(sample.get("sentence"), dict):  # a text sample: lines side by side, not images
        return _sentence_pair(attack, sample)
    originals = doc["data"]["samples"]
    oi = sample.get("original_index")
    original = originals[oi] if isinstance(oi, int) and 0 <= oi < len(originals) else None
    orig_html = _img(original.get("original"), f'original {sample["name"]}') if original else None
    if orig_html is None:
        orig_html = '<div class="missing">original not embedded</div>'
    rec_html = _img(sample.get("reconstruction"), f'reconstruction of {sample["name"]} by {attack["name"]}') \
        or '<div class="missing">no image</div>'
    metrics = "similarity (not the verdict): " + ", ".join(
        f"{esc(k)} {fmt(v)}" for k, v in sample["metrics"].items() if k not in RECOGNITION)
    verdict = ""
    if sample.get("explanation"):
        verdict = (("<strong>recognised</strong>: " if sample.get("recognised") else "not recognised: ")
                   + esc(sample["explanation"]) + "<br>")
    label = ""
    if sample.get("label_recovered") is not None or sample.get("label_true") is not None:
        label = f' · label {fmt(sample.get("label_recovered"))} (true {fmt(sample.get("label_true"))})'
    if sample.get("record"):  # tabular: the record column by column, not images
        from .records import record_pair

        caption = f'<span class="mono">{esc(sample["name"])}</span><br>{verdict}{metrics}{label}'
        return record_pair(attack, sample, esc, fmt, caption)
    return ('<figure class="pair"><div class="imgs">'
            f'<div class="cell">{orig_html}original</div><div class="cell">{rec_html}reconstruction</div></div>'
            f'<figcaption><span class="mono">{esc(sample["name"])}</span><br>{verdict}{metrics}{label}'
            '</figcaption></figure>')


def _sentence_pair(attack: dict[str, Any], sample: dict[str, Any]) -> str:
    verdict = ""
    if sample.get("explanation"):
        verdict = (("<strong>recognised</strong>: " if sample.get("recognised") else "not recognised: ")
                   + esc(sample["explanation"]) + "<br>")
    metrics = "similarity (not the verdict): " + ", ".join(
        f"{esc(k)} {fmt(v)}" for k, v in sample["metrics"].items() if k not in RECOGNITION)
    return (f'<figure class="pair sentence-pair">{sentence_html(sample["sentence"])}'
            f'<figcaption><span class="mono">{esc(sample["name"])}</span> by {esc(attack["name"])}<br>{verdict}'
            f'{metrics}</figcaption></figure>')


def _attacks(doc: dict[str, Any]) -> str:
    out = ["<h2>Attacks</h2>"]
    ran = [a for a in doc["attacks"] if a["status"] in ("ran", "interrupted")]
    other = [a for a in doc["attacks"] if a["status"] not in ("ran", "interrupted")]
    if ran:
        out.append(_attack_table(doc, ran))
    out += [_attack_detail(doc, a) for a in ran]
    if other:
        rows = [[f'<span class="mono">{esc(a["name"])}</span>', _badge(a["status"]), esc(a["reason"])] for a in other]
        out.append("<h3>Not run</h3>" + _table(["Attack", "Status", "Reason"], rows))
    if len(out) == 1:
        out.append('<p class="muted">No attack was run.</p>')
    return "".join(out)


def _attack_table(doc: dict[str, Any], ran: list[dict[str, Any]]) -> str:
    """One row per attack that ran: its mean metrics, label accuracy, loss, time and the fail rules it breaks."""
    metrics = [m for m in ("ssim", "ssim_adjusted", "psnr", "lpips") if any(m in a["means"] for a in ran)]
    broken = rules_broken_by(doc)
    rows = [[f'<a href="#attack-{esc(a["name"])}">{esc(a["name"])}</a>', _badge(a["status"]),
             *[fmt(a["means"].get(m)) for m in metrics], fmt(a["label_accuracy"]), fmt(a["attack_loss"]),
             fmt(a["seconds"]),
             (_badge("fail") + " " + esc(", ".join(broken[a["name"]]))) if a["name"] in broken else "none"]
            for a in ran]
    return _table(["Attack", "Status", *[f"mean {m}" for m in metrics], "label accuracy", "attack loss",
                   "seconds", "fail rules it breaks"], rows, numeric=range(2, 6 + len(metrics)))


def _attack_detail(doc: dict[str, Any], a: dict[str, Any]) -> str:
    """An attack's card (status, settings, iterations, time, metrics, notes) and its sample pairs."""
    settings = ", ".join(f"{esc(k)}={fmt(v) if not isinstance(v, (dict, list)) else esc(v)}"
                         for k, v in a["settings"].items())
    means = ", ".join(f"{esc(k)} {fmt(v)}" for k, v in a["means"].items()) or "—"
    items = [("Status", _badge(a["status"]) + (f' {esc(a["reason"])}' if a["reason"] else "")),
             ("Settings", f'<span class="mono">{settings}</span>'),
             ("Iterations run", f'{fmt(a["iterations_run"])} of {fmt(a.get("iterations_planned"))}'
              + (" (stopped early)" if a.get("stopped_early") else "")),
             ("Time / device", f'{fmt(a["seconds"])} s on {esc(a["device"])}'),
             ("Attack loss", fmt(a["attack_loss"])),
             ("Mean metrics", means)]
    if a.get("label_accuracy") is not None:
        items.append(("Label accuracy", fmt(a["label_accuracy"])))
    for metric, why in a["unavailable"].items():
        items.append((f"{metric}", f"unavailable: {_long(why)}"))
    for note in a.get("notes", []):
        items.append(("Note", esc(note)))
    grid = "".join(_pair(doc, a, s) for s in a["samples"])
    return (f'<h3 id="attack-{esc(a["name"])}">{esc(a["name"])}</h3>' + _card(items)
            + f'<div class="grid">{grid}</div>')


def _recommendations(doc: dict[str, Any]) -> str:
    recs = doc.get("recommendations") or []
    if not recs:
        return ""
    items = "".join(f'<li><strong>{esc(r["title"])}.</strong> {esc(r["text"])} '
                    f'<span class="muted">Because {esc(r["because"])}.</span></li>' for r in recs)
    return f'<h2>Recommendations</h2><ul class="recs">{items}</ul>'


def _reproduce(doc: dict[str, Any]) -> str:
    libs = ", ".join(f"{esc(k)} {esc(v)}" for k, v in doc["environment"]["libraries"].items() if v)
    command = doc.get("command")
    shown = (f"<pre>{esc(command)}</pre>" if command else
             f'<p class="muted">{esc(doc.get("command_reason") or "run through the Python API: no command line")}</p>')
    notes = "".join(f"<li>{esc(n)}</li>" for n in doc.get("notes", []))
    return ("<h2>Reproduce</h2>" + shown
            + (f"<ul>{notes}</ul>" if notes else "")
            + f'<footer>leakaudit {esc(doc["tool"]["version"])} · report schema {esc(doc["schema_version"])} · '
              f'Python {esc(doc["environment"]["python"])} · {libs}<br>'
              f'started {esc(doc["started_at"])} · finished {esc(doc["finished_at"])}</footer>')


def _defense_cost(doc: dict[str, Any]) -> str:
    """What the simulated defenses cost, beside what they protect (schema 1.3; absent without defenses)."""
    c = doc.get("defense_cost")
    if not c:
        return ""
    items = [("Update cosine to the clean one", fmt(c["cosine"])),
             ("Relative error ‖defended − clean‖ / ‖clean‖", fmt(c["relative_error"])),
             ("Loss on the samples before a server step", fmt(c["loss_before"])),
             (f"… after a step of {fmt(c['step'])} with the clean update", fmt(c["loss_after_clean"])),
             ("… with the defended update", fmt(c["loss_after_defended"])),
             ("Fraction of the clean step's loss reduction kept (on these samples, not held-out data)",
              fmt(c["kept"]) if c["kept"] is not None else esc(c["reason"]))]
    held = c.get("heldout")  # schema 1.8, --utility-data
    if held:
        items += [(f"Held-out accuracy ({held['samples']} samples): before the step",
                   fmt(held["accuracy_before"])),
                  ("… after the clean step", fmt(held["accuracy_after_clean"])),
                  ("… after the defended step", fmt(held["accuracy_after_defended"])),
                  ("Held-out loss: before / clean step / defended step",
                   " / ".join(fmt(held[k]) for k in ("loss_before", "loss_after_clean", "loss_after_defended")))]
    scope = ("the held-out figures are one step too" if held else "they do not show utility on held-out data")
    return ('<h2>Defense cost</h2><p class="muted">What the defenses leave of the update a server learns from: '
            + esc(c["summary"]) + ". The loss figures are one step on the samples the update was computed on; "
            f"{scope}, and none shows noise accumulating over rounds.</p>" + _card(items))


def _conditioning(doc: dict[str, Any]) -> str:
    """Whether gradient matching can work on the update at all (schema 1.6; absent in older reports)."""
    c = doc.get("conditioning")
    if not c:
        return ""
    layers = ", ".join(f'<span class="mono">{esc(d["name"])}</span> ({esc(d["values_per_channel"])})'
                       for d in c.get("layers", [])[:8]) or "none"
    more = len(c.get("layers", [])) - 8
    items = [("Verdict", _badge("fail") if c["verdict"] == "ill-conditioned" else esc(c["verdict"]))]
    if c.get("cosine") is not None:  # not measured (token ids, a failed update): the summary above says why
        items.append(("Update cosine, samples vs samples moved by " + words(_modality(doc)).move(c["epsilon"]),
                      fmt(c["cosine"]) + f' (stable at ≥ {fmt(c["threshold"])})'))
    items += [("BatchNorm layers with ≤ 4 values per channel (values)", layers + (f" and {more} more" if more > 0
                                                                              else ""))]
    if c.get("advice"):
        items.append(("What changes it", esc(c["advice"])))
    return ('<h2>Conditioning</h2><p class="muted">Whether gradient matching can work on this update at all: a '
            "candidate close to the samples must give a close update. " + esc(c["summary"]) + "</p>"
            + _card(items))


def _batchnorm_statistics(doc: dict[str, Any]) -> str:
    """What the BatchNorm running statistics in the update reveal (schema 1.7; absent in older reports)."""
    c = doc.get("batchnorm_statistics")
    if not c:
        return ""
    rows = [[f'<span class="mono">{esc(d["name"])}</span>', fmt(d["values_per_channel"]), fmt(d["mean_error"]),
             fmt(d["var_error"]), fmt(d["activation_error"]) if d.get("activation_error") is not None else "—"]
            for d in c.get("layers", [])]
    head = (f'<h2>BatchNorm statistics in the update</h2><p>{_badge("warn") if c.get("leaks") else ""} '
            f'<strong>{esc(c.get("title") or "")}</strong></p><p class="muted">{esc(c["summary"])}. A feature leak, '
            "not an image reconstruction: a warning that does not change the verdict.</p>")
    if not rows:
        return head
    return head + ("<details><summary>Per layer: relative error of the recovery, measured against the client's "
                   f"true batch statistics ({len(rows)})</summary>"
                   + _table(["Layer", "Values per channel", "Mean error", "Variance error",
                             "Activation error (up to a swap)"], rows, numeric=[1, 2, 3, 4]) + "</details>")


RECOGNITION = ("match_p", "ssim_skill", "psnr_gain")


def _histogram(values: list[float], bins: int = 20, lo: float = -0.2, hi: float = 1.0,
               label: str = "per-sample structure score") -> str:
    """An inline SVG bar chart of per-sample values (no script, no external resource; the CSP allows inline SVG
    markup). Drawn here rather than with matplotlib so ``leakaudit render`` stays free of numpy."""
    counts = [0] * bins
    for v in values:
        k = int((min(max(v, lo), hi) - lo) / (hi - lo) * bins)
        counts[min(k, bins - 1)] += 1
    top = max(counts) or 1
    width, height, pad = 420, 140, 24
    bar = (width - 2 * pad) / bins
    rects = "".join(
        f'<rect x="{pad + i * bar:.1f}" y="{height - pad - c / top * (height - 2 * pad):.1f}" width="{bar - 1:.1f}" '
        f'height="{c / top * (height - 2 * pad):.1f}" fill="#5470c6"><title>{lo + i * (hi - lo) / bins:.2f}–'
        f'{lo + (i + 1) * (hi - lo) / bins:.2f}: {c}</title></rect>' for i, c in enumerate(counts))
    ticks = "".join(f'<text x="{pad + (t - lo) / (hi - lo) * (width - 2 * pad):.1f}" y="{height - 6}" '
                    f'font-size="10" text-anchor="middle">{t:g}</text>' for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    return (f'<svg class="histogram" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="histogram of {esc(label)}"><line x1="{pad}" y1="{height - pad}" '
            f'x2="{width - pad}" y2="{height - pad}" stroke="#444"/>{rects}{ticks}'
            f'<text x="{pad}" y="12" font-size="10">samples (max {top} per bin)</text></svg>')


def _recognised_means(doc: dict[str, Any]) -> str:
    r = doc.get("recognition") or {}
    rules = "; ".join(f'{esc(x["metric"])} {esc(x["comparison"])} {fmt(x["threshold"])}'
                      + (f' and match p &lt;= {fmt(x["max_p"])}' if x.get("max_p") is not None else "")
                      for x in r.get("criterion", []))
    refs = r.get("references") or {}
    where = (f' References: {esc(refs.get("source", ""))} ({fmt(refs.get("reference_set"))} {_shown(doc)}) and the '
             f'scan\'s other samples.' if refs else "")
    return (esc(r.get("definition", "")) + (f" ({rules})." if rules else ".") + where
            + (f' {esc(r["text"])}.' if r.get("text") else ""))


def _modality(doc: dict[str, Any]) -> str:
    return str((doc.get("data") or {}).get("modality") or "image")


def _shown(doc: dict[str, Any]) -> str:
    return words(_modality(doc)).item + "s"


def _coverage(doc: dict[str, Any]) -> str:
    """Every batch of the scan (schema 1.4): the recognised fraction, the worst cases, the SSIM histogram and
    the rate per batch position and label."""
    c = doc.get("coverage")
    if not c:
        return ""
    return "".join(["<h2 id=\"coverage\">Coverage: every sample</h2>", _card(_coverage_items(doc, c)),
                    _coverage_skills(c), _coverage_gallery(c), _coverage_rates(c), _coverage_batches(c),
                    _coverage_samples(c, _modality(doc))])


def _coverage_items(doc: dict[str, Any], c: dict[str, Any]) -> list[tuple[str, str]]:
    i = c["interval"]
    fraction = c["fraction"]
    percent = fraction * 100 if isinstance(fraction, (int, float)) else fraction
    rate = (f'{esc(c["recognised"])} of {esc(c["audited"])} ({fmt(percent)}%), 95% interval '
            f'{fmt(i["lower"])}–{fmt(i["upper"])} ({esc(i["method"])})')
    resumed = f'; {esc(c["resumed_batches"])} restored from a checkpoint' if c.get("resumed_batches") else ""
    items = [("Samples audited", f'{esc(c["audited"])} of {esc(c["planned"])} planned ({esc(c["drawn"])}; '
              f'{esc(c["available"])} found)'),
             ("Client batches", f'{esc(c["batches_run"])} of {esc(c["batches_planned"])}, batch size '
              f'{esc(c["batch_size"])}' + resumed),
             ("Recognisably reconstructed", rate),
             ("Recognised means", _recognised_means(doc)),
             ("Worst sample", _worst_sample(c)),
             ("Detail below", f'attacks and {_shown(doc)} of batch {esc(c["shown_batch"] + 1)} (the worst sample\'s)')]
    if c.get("remainder"):
        items.append(("Remainder", esc(c["remainder"])))
    return items


def _worst_sample(c: dict[str, Any]) -> str:
    worst = c.get("worst")
    if not worst:
        return "—"
    return (f'<span class="mono">{esc(worst["name"])}</span> (batch {esc(worst["batch"] + 1)}, '
            f'{esc(worst["attack"] or "no attack")}, {esc(c["ranking_metric"])} '
            f'{fmt(worst["metrics"].get(c["ranking_metric"]))})')


def _coverage_skills(c: dict[str, Any]) -> str:
    skills = [s["metrics"]["ssim_skill"] for s in c["samples"]
              if isinstance(s["metrics"].get("ssim_skill"), (int, float))]
    if not skills:
        return ""
    return ("<h3>Per-sample structure score (best attack)</h3><p class=\"muted\">What the rules judge: 0 is no "
            "better than a blank or heavily blurred copy of the sample, 1 an exact copy (after flip, shift "
            "and level registration). A sample counts as recognised only if it is also matched to its own "
            "original among the references.</p>" + _histogram([float(v) for v in skills], lo=-1.0))


def _coverage_gallery(c: dict[str, Any]) -> str:
    # Recognised samples first: they are the evidence of a leak a reviewer has to see.
    gallery = sorted((s for s in c["samples"] if s.get("reconstruction")),
                     key=lambda s: (not s["recognised"], s["index"]))
    if not gallery:
        return ""
    return f'<h3>Worst cases</h3><div class="grid">{"".join(_gallery_figure(s) for s in gallery)}</div>'


def _gallery_figure(s: dict[str, Any]) -> str:
    image = _img(s["reconstruction"], f'reconstruction of {s["name"]}') or '<div class="missing">no image</div>'
    explanation = esc(s["explanation"]) + "<br>" if s.get("explanation") else ""
    similarity = ", ".join(f"{esc(k)} {fmt(v)}" for k, v in s["metrics"].items() if k not in RECOGNITION)
    return ('<figure class="pair"><div class="imgs"><div class="cell">' + image
            + f'reconstruction</div></div><figcaption><span class="mono">{esc(s["name"])}</span>'
            + f'<br>{"recognised" if s["recognised"] else "not recognised"} · batch {esc(s["batch"] + 1)} · '
            + f'{esc(s["attack"] or "")}<br>' + explanation
            + "similarity: " + similarity + "</figcaption></figure>")


def _coverage_rates(c: dict[str, Any]) -> str:
    out = []
    for key, title in (("by_position", "position in batch"), ("by_label", "label")):
        field = key.removeprefix("by_")
        rows = [[esc(g[field] if g[field] is not None else "—"),
                 fmt(g["audited"]), fmt(g["recognised"]), fmt(g["fraction"])] for g in c[key]]
        if len(rows) > 1:  # one group has no rate to compare with
            out.append(f"<h3>Leak rate by {esc(title)}</h3>"
                       + _table([title, "audited", "recognised", "fraction"], rows, numeric=[1, 2, 3]))
    return "".join(out)


def _coverage_batches(c: dict[str, Any]) -> str:
    if len(c["batches"]) <= 1:
        return ""
    rows = [[fmt(b["index"] + 1), _badge(b["overall"]), fmt(b["size"]), fmt(b["seed"]),
             fmt(b["control_reconstructed"]), _batch_conditioning(b.get("conditioning")),
             esc(", ".join(b["crashed_attacks"]) or "—"), fmt(b["seconds"])]
            for b in c["batches"]]
    return (f'<details><summary>Batches ({len(rows)})</summary>'
            + _table(["Batch", "Verdict", "Size", "Seed", "Control reconstructed", "Conditioning (cosine)",
                      "Crashed", "Seconds"], rows, numeric=[0, 2, 3, 7]) + "</details>")


# The per-sample columns of the coverage table: (metric, heading) per modality.
_SAMPLE_COLUMNS = {
    "image": (("match_p", "match p"), ("ssim_skill", "structure score"), ("psnr_gain", "PSNR gain (dB)"),
              ("ssim", "ssim (similarity)"), ("psnr", "psnr (similarity)")),
    "tabular": (("match_p", "match p"), ("record_skill", "record score"), ("record_match", "features recovered"),
                ("categorical_match", "categorical"), ("continuous_match", "continuous")),
    "text": (("match_p", "match p"), ("text_skill", "word score"), ("token_f1", "token F1"),
             ("rougeL", "ROUGE-L"), ("exact_match", "exact")),
}


def _coverage_samples(c: dict[str, Any], modality: str = "image") -> str:
    columns = _SAMPLE_COLUMNS.get(modality, _SAMPLE_COLUMNS["image"])
    rows = [[fmt(s["index"]), f'<span class="mono">{esc(s["name"])}</span>', fmt(s["batch"] + 1),
             esc(s["attack"] or "—"), *[fmt(s["metrics"].get(m)) for m, _ in columns],
             _badge("fail") if s["recognised"] else "no"] for s in c["samples"]]
    what = words(modality).counted
    return (f'<details><summary>Every {what} ({len(rows)})</summary>'
            + _table(["#", what.capitalize(), "Batch", "Best attack", *[h for _, h in columns], "Recognised"], rows,
                     numeric=[0, 2, 4, 5, 6, 7, 8]) + "</details>")


def _batch_conditioning(c: dict[str, Any] | None) -> str:
    if not c:
        return "—"
    return f'{esc(c["verdict"])} ({fmt(c["cosine"])})'


def _columns(doc: dict[str, Any]) -> str:
    from .records import columns_section

    return columns_section(doc, esc, fmt)


def render_html(doc: dict[str, Any]) -> str:
    body = "".join([
        # the verdict in the banner landmark: assistive technology lists it, and axe-core's "region" rule wants
        # all content inside landmarks
        "<header>", _banner(doc), "</header>", "<main>",
        f'<h1>leakaudit report: <span class="mono">{esc(doc["model"]["path"])}</span></h1>',
        '<p class="muted">Can an honest-but-curious federated-learning server reconstruct these training samples '
        'from the client update?</p>',
        _recommendations(doc), _rules(doc), _control(doc), _conditioning(doc), _batchnorm_statistics(doc),
        _coverage(doc), _columns(doc), _defense_cost(doc), _attacks(doc),
        _model(doc), _data_and_threat(doc), _reproduce(doc),
        "</main>",
    ])
    template = Template(read_report_file("report.html"))
    return template.substitute(
        title=esc(f'leakaudit: {doc["verdict"]["overall"].upper()} {doc["model"]["path"]}'),
        generator=esc(f"leakaudit {__version__}"),
        style=read_report_file("report.css"),
        body=body,
    )
