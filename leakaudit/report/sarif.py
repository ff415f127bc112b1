"""SARIF 2.1.0: the findings for code-scanning views (GitHub code scanning, Azure DevOps, SARIF viewers).

One run, the tool ``leakaudit`` with the rule profile's rules as ``tool.driver.rules`` (id, a one-line test,
the description, the rationale and reference as help, level error/warning by severity) plus one rule,
``sample-recognised``, for the per-sample results. Results:

- one per rule that failed or warned (level error/warning), and, under --strict, one per fail-severity rule
  that could not be evaluated (level error, counted as failed as the verdict does);
- one per recognised sample (``coverage.samples``, else the attacks' samples), its recognition test in words;
- one per suppression that was applied (the rule's result, carrying SARIF's own ``suppressions`` with the
  reason), and one error per expired suppression (``expired-suppression``), see ``leakaudit.suppress``.

Each result points at the model file (its path as the report gives it) and has ``partialFingerprints`` from the
model's sha256, the rule id and the sample name, so the same finding on the same model matches across runs.
The invocation carries the process's exit code and the verdict's summary; a scan that crashed or was
interrupted is ``executionSuccessful: false``. Rendered from the report document alone, so ``leakaudit render
report.json --format sarif`` gives the same file; user text is JSON-escaped (``safetext.json_text``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from ..safetext import json_text
from .json import strict

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SAMPLE_RULE = "sample-recognised"
EXPIRED_RULE = "expired-suppression"
FINGERPRINT = "leakauditFinding/v1"
_LEVEL = {"fail": "error", "warn": "warning"}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def model_uri(path: str) -> str:
    """The model's path as a URI reference: relative paths stay relative (as the report gives them), with
    forward slashes and percent-escapes; an absolute path becomes a file: URI."""
    if not path:
        return "model"
    windows = PureWindowsPath(path)
    if windows.drive:  # C:\models\m.onnx
        return "file:///" + quote(windows.as_posix())
    posix = PurePosixPath(path.replace("\\", "/"))
    if posix.is_absolute():
        return "file://" + quote(posix.as_posix())
    return quote(posix.as_posix())


def _fingerprint(*parts: str) -> dict[str, str]:
    return {FINGERPRINT: hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()}


def _location(uri: str) -> list[dict[str, Any]]:
    return [{"physicalLocation": {"artifactLocation": {"uri": uri, "index": 0}}}]


def _test(r: dict[str, Any]) -> str:
    attributed = f" and match_p <= {r['max_p']:g}" if isinstance(r.get("max_p"), (int, float)) else ""
    return f"{r['metric']} {r['comparison']} {r['threshold']}{attributed}"


def _rule(r: dict[str, Any]) -> dict[str, Any]:
    description = _text(r.get("description")) or _test(r)
    help_text = "\n".join(x for x in (_text(r.get("rationale")),
                                      f"Reference: {r['reference']}" if r.get("reference") else "") if x)
    return {
        "id": r["id"],
        "name": r["id"],
        "shortDescription": {"text": f"{r['id']}: {_test(r)} ({r.get('scope', 'any')})"},
        "fullDescription": {"text": description},
        "help": {"text": help_text or description},
        "defaultConfiguration": {"level": _LEVEL.get(r.get("severity", "fail"), "error")},
        "properties": {"metric": r["metric"], "comparison": r["comparison"], "threshold": r["threshold"],
                       "severity": r.get("severity", "fail"), "scope": r.get("scope")},
    }


def _sample_rule(doc: dict[str, Any]) -> dict[str, Any]:
    recognition = doc.get("recognition") or {}
    criterion = ", ".join(c["id"] for c in recognition.get("criterion") or [])
    definition = _text(recognition.get("definition")) or "a per-sample fail-severity rule fired on the sample"
    return {
        "id": SAMPLE_RULE, "name": SAMPLE_RULE,
        "shortDescription": {"text": "A sample of the scan was recognisably reconstructed from the client update"},
        "fullDescription": {"text": f"Recognised: {definition}" + (f" (rules: {criterion})" if criterion else "")},
        "help": {"text": "An attacker who receives this client update can reconstruct the sample. "
                         + _text(recognition.get("text"))},
        "defaultConfiguration": {"level": "error"},
    }


def _expired_rule() -> dict[str, Any]:
    return {
        "id": EXPIRED_RULE, "name": EXPIRED_RULE,
        "shortDescription": {"text": "A suppression in the ignore file has expired"},
        "fullDescription": {"text": "An [[ignore]] entry matched a rule that failed or warned, but its expiry date "
                                    "has passed: the finding is not suppressed and the scan fails."},
        "help": {"text": "Fix the leak, or renew the entry with a new reason and expiry date after review."},
        "defaultConfiguration": {"level": "error"},
    }


def _observed(r: dict[str, Any]) -> str:
    where = ", ".join(x for x in (f"attack {r['attack']}" if r.get("attack") else "",
                                  f"sample {r['sample']}" if r.get("sample") else "") if x)
    value = r.get("observed")
    shown = f"{value:.4g}" if isinstance(value, float) else _text(value) or "nothing"
    return f"observed {shown}" + (f" ({where})" if where else "")


def _suppressed_status(r: dict[str, Any]) -> str:
    """What a suppressed rule had been before its suppression (fail or warn)."""
    return "fail" if r.get("severity", "fail") == "fail" else "warn"


def _suppression(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"kind": "external", "status": "accepted",
             "justification": f"{_text(entry.get('reason'))} (expires {_text(entry.get('expires'))}; "
                              f"{_text(entry.get('file'))})"}]


def _rule_results(doc: dict[str, Any], index: dict[str, int], sha: str, uri: str) -> list[dict[str, Any]]:
    strict_gate = bool(doc["rules"].get("strict"))
    suppressions = {s.get("rule"): s for s in doc.get("suppressions") or [] if s.get("status") == "active"}
    out = []
    for r in doc["rules"]["results"]:
        status = r["status"]
        severity = r.get("severity", "fail")
        if status in ("fail", "warn"):
            level = _LEVEL[status]
            text = f"{r['id']} {'failed' if status == 'fail' else 'warns'}: {_observed(r)}; {_text(r.get('reason'))}"
        elif status == "not_evaluated" and strict_gate and severity == "fail":
            level = "error"
            text = (f"{r['id']} could not be evaluated, which --strict counts as failed (no leak was found by this "
                    f"rule): {_text(r.get('reason'))}")
        elif status == "suppressed":
            level = _LEVEL.get(_suppressed_status(r), "error")
            text = f"{r['id']} {'failed' if level == 'error' else 'warns'} (suppressed): {_observed(r)}; " \
                   f"{_text(r.get('reason'))}"
        else:
            continue
        result: dict[str, Any] = {
            "ruleId": r["id"], "ruleIndex": index[r["id"]], "level": level, "kind": "fail",
            "message": {"text": text}, "locations": _location(uri),
            "partialFingerprints": _fingerprint(sha, r["id"]),
            "properties": {"status": status, "observed": r.get("observed"), "attack": r.get("attack"),
                           "sample": r.get("sample")},
        }
        if status == "suppressed":
            result["suppressions"] = _suppression(suppressions.get(r["id"]) or {})
        out.append(result)
    return out


def _recognised_samples(doc: dict[str, Any]) -> list[dict[str, Any]]:
    coverage = doc.get("coverage") or {}
    if coverage.get("samples") is not None:
        return [s for s in coverage["samples"] if s.get("recognised")]
    seen: dict[str, dict[str, Any]] = {}  # a result without coverage: the attacks' samples, each name once
    for a in doc.get("attacks") or []:
        for s in a.get("samples") or []:
            if s.get("recognised") and s.get("name") not in seen:
                seen[s["name"]] = {**s, "attack": a["name"], "rules": s.get("recognised_by") or []}
    return list(seen.values())


def _sample_results(doc: dict[str, Any], index: dict[str, int], sha: str, uri: str) -> list[dict[str, Any]]:
    """A sample recognised only by suppressed rules is still recognised (a suppression changes no measurement),
    but as the same accepted finding it carries that suppression."""
    suppressed = {r["id"] for r in doc["rules"]["results"] if r["status"] == "suppressed"}
    entries = {s.get("rule"): s for s in doc.get("suppressions") or [] if s.get("status") == "active"}
    out = []
    for s in _recognised_samples(doc):
        name = _text(s.get("name"))
        explanation = _text(s.get("explanation")) or "recognised"
        rules = ", ".join(s.get("rules") or [])
        attack = f" by {s['attack']}" if s.get("attack") else ""
        out.append({
            "ruleId": SAMPLE_RULE, "ruleIndex": index[SAMPLE_RULE], "level": "error", "kind": "fail",
            "message": {"text": f"sample {name} reconstructed{attack}: {explanation}"
                                + (f" (rules: {rules})" if rules else "")},
            "locations": _location(uri),
            "partialFingerprints": _fingerprint(sha, SAMPLE_RULE, name),
            "properties": {"sample": name, "attack": s.get("attack"), "rules": list(s.get("rules") or []),
                           "batch": s.get("batch")},
        })
        if s.get("rules") and set(s["rules"]) <= suppressed:
            out[-1]["suppressions"] = _suppression(entries.get(s["rules"][0]) or {})
    return out


def _expired_results(doc: dict[str, Any], index: dict[str, int], sha: str, uri: str) -> list[dict[str, Any]]:
    out = []
    for s in doc.get("suppressions") or []:
        if s.get("status") != "expired":
            continue
        out.append({
            "ruleId": EXPIRED_RULE, "ruleIndex": index[EXPIRED_RULE], "level": "error", "kind": "fail",
            "message": {"text": f"suppression of {s.get('rule')} expired on {s.get('expires')} "
                                f"({s.get('file')}): {s.get('reason')}; the finding is not suppressed"},
            "locations": _location(uri),
            "partialFingerprints": _fingerprint(sha, EXPIRED_RULE, _text(s.get("rule"))),
        })
    return out


def _invocation(doc: dict[str, Any]) -> dict[str, Any]:
    verdict = doc["verdict"]
    overall = verdict["overall"]
    invocation: dict[str, Any] = {
        "executionSuccessful": overall not in ("error", "incomplete"),
        "exitCode": int(verdict["exit_code"]),
        "exitCodeDescription": _text(verdict["summary"]),
        "startTimeUtc": _text(doc.get("started_at")),
        "endTimeUtc": _text(doc.get("finished_at")),
    }
    notes = []
    if overall in ("error", "inconclusive", "incomplete"):
        notes.append({"level": "error" if overall != "inconclusive" else "warning",
                      "message": {"text": _text(verdict["summary"])}})
    for a in doc.get("attacks") or []:
        if a.get("status") == "failed":
            notes.append({"level": "error", "message": {"text": f"attack {a['name']} crashed: {a.get('reason')}"}})
    if notes:
        invocation["toolExecutionNotifications"] = notes
    if doc.get("command"):
        invocation["commandLine"] = _text(doc["command"])
    for key in ("startTimeUtc", "endTimeUtc"):
        if not invocation[key]:
            del invocation[key]
    return invocation


def build_sarif(doc: dict[str, Any]) -> dict[str, Any]:
    """The SARIF log of a report document (a dict; ``render_sarif`` writes it)."""
    model = doc.get("model") or {}
    sha = _text(model.get("sha256"))
    uri = model_uri(_text(model.get("path")))
    rules = [_rule(r) for r in doc["rules"]["results"]]
    ids = {r["id"] for r in rules}
    rules.append(_sample_rule(doc))
    if any(s.get("status") == "expired" for s in doc.get("suppressions") or []) and EXPIRED_RULE not in ids:
        rules.append(_expired_rule())
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = (_rule_results(doc, index, sha, uri) + _sample_results(doc, index, sha, uri)
               + _expired_results(doc, index, sha, uri))
    artifact: dict[str, Any] = {"location": {"uri": uri}, "roles": ["analysisTarget"]}
    if len(sha) == 64:
        artifact["hashes"] = {"sha-256": sha}
    tool = doc.get("tool") or {}
    verdict = doc["verdict"]
    run = {
        "tool": {"driver": {"name": _text(tool.get("name")) or "leakaudit",
                            "version": _text(tool.get("version")) or "unknown",
                            "rules": rules}},
        "invocations": [_invocation(doc)],
        "artifacts": [artifact],
        "results": results,
        "properties": {"leakaudit": {"overall": verdict["overall"], "exit_code": verdict["exit_code"],
                                     "summary": verdict["summary"], "profile": doc["rules"].get("profile"),
                                     "strict": doc["rules"].get("strict"),
                                     "schema_version": doc.get("schema_version")}},
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def render_sarif(doc: dict[str, Any]) -> str:
    return json_text(json.dumps(strict(build_sarif(doc)), indent=2, ensure_ascii=False, allow_nan=False)) + "\n"
