"""JUnit XML: one test case per rule, so CI systems (GitLab, Jenkins, GitHub test reporters) list each rule.

fail -> <failure>; not_evaluated -> <skipped> (or, for a fail-severity rule under --strict, <failure>, as the
verdict counts it: type "not_evaluated", never "leak");
warn -> a passing case with the warning in <system-out>; suppressed -> <skipped> with the suppression's reason; an
expired suppression adds a failing case (type "expired_suppression"). An interrupted scan adds an <error> case, and an
attack that crashed adds one too, so a green suite never hides an attack that did not run. An inconclusive
scan (the positive control did not reconstruct) adds a failing case "positive control reconstructs" with the
reason: CI views then show the suite red, as the exit code (4, or 1 under --strict) is not 0.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from ..safetext import xml_text


def _observed(rule: dict[str, Any]) -> str:
    where = " ".join(x for x in (rule.get("attack") or "", rule.get("sample") or "") if x)
    return f"observed {rule.get('observed')}" + (f" ({where})" if where else "")


def _recognition(doc: dict[str, Any], rule: dict[str, Any]) -> str:
    """For a rule that judges attribution: the worst sample's recognition test in words, and the chance level."""
    if rule.get("max_p") is None and rule.get("metric") != "match_p":
        return ""
    worst = (doc.get("coverage") or {}).get("worst") or {}
    chance = (doc.get("recognition") or {}).get("text", "")
    return "\n".join(x for x in (f"{worst['name']}: {worst['explanation']}" if worst.get("explanation") else "",
                                 chance) if x)


def _only_xml_characters(root: ET.Element) -> None:
    """Every text and attribute made of characters XML 1.0 allows: rule ids, sample names and reasons come from
    the user's files, and one control character (ElementTree writes it raw) makes the whole file ill-formed."""
    for element in root.iter():
        if element.text is not None:
            element.text = xml_text(element.text)
        if element.tail is not None:
            element.tail = xml_text(element.tail)
        for key, value in element.attrib.items():
            element.set(key, xml_text(value))


def render_junit(doc: dict[str, Any]) -> str:
    rules = doc["rules"]
    suites = ET.Element("testsuites", name="leakaudit")
    suite = ET.SubElement(suites, "testsuite", name=f"leakaudit rules ({rules['profile']})",
                          timestamp=str(doc["started_at"]))
    # The outcome (leakaudit.verdict.outcome) as the scan's exit code saw it, for CI views that read properties.
    props = ET.SubElement(suite, "properties")
    for key in ("overall", "exit_code"):
        ET.SubElement(props, "property", name=f"leakaudit.{key}", value=str(doc["verdict"][key]))
    counts = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
    for r in rules["results"]:
        counts["tests"] += 1
        outcome = _rule_case(suite, doc, r)
        if outcome:
            counts[outcome] += 1
    for outcome in (*_expired_cases(suite, doc), *_scan_cases(suite, doc)):
        counts["tests"] += 1
        counts[outcome] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
        suites.set(key, str(value))
    duration = doc.get("duration_seconds")
    if isinstance(duration, (int, float)):
        suite.set("time", f"{duration:.3f}")
    _only_xml_characters(suites)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _rule_case(suite: ET.Element, doc: dict[str, Any], r: dict[str, Any]) -> str:
    """One rule's test case; the count it adds to ("failures", "skipped", or "" for a passing case)."""
    rules = doc["rules"]
    attributed = f" and match_p <= {r['max_p']}" if r.get("max_p") is not None else ""
    case = ET.SubElement(suite, "testcase", classname=f"leakaudit.rules.{rules['profile']}",
                         name=f"{r['id']}: {r['metric']} {r['comparison']} {r['threshold']}{attributed} "
                              f"({r['scope']})")
    text = "\n".join(x for x in (r.get("description"), r.get("reason"), _observed(r), _recognition(doc, r),
                                 r.get("reference")) if x)
    if r["status"] == "fail":
        ET.SubElement(case, "failure", message=f"{r['id']}: leak, {_observed(r)}", type="leak").text = text
        return "failures"
    if r["status"] == "not_evaluated" and rules["strict"] and r.get("severity", "fail") == "fail":
        ET.SubElement(case, "failure", message=f"{r['id']}: could not be evaluated, which --strict counts as "
                      "failed (no leak was found by this rule)", type="not_evaluated").text = text
        return "failures"
    if r["status"] in ("not_evaluated", "not_applicable"):
        why = r.get("reason", "") if r["status"] == "not_applicable" else f"not evaluated: {r.get('reason', '')}"
        ET.SubElement(case, "skipped", message=f"{r['id']}: {why}")
        return "skipped"
    if r["status"] == "warn":
        ET.SubElement(case, "system-out").text = f"WARNING {r['id']}: {_observed(r)}\n{text}"
    elif r["status"] == "suppressed":
        why = next((f"{s['reason']} (until {s['expires']}, {s['file']})" for s in doc.get("suppressions") or []
                    if s["rule"] == r["id"] and s["status"] == "active"), "")
        ET.SubElement(case, "skipped", message=f"{r['id']}: suppressed: {why}; {_observed(r)}").text = text
        return "skipped"
    return ""


def _expired_cases(suite: ET.Element, doc: dict[str, Any]) -> list[str]:
    """An expired acceptance fails the scan: a failing case of its own per expired suppression."""
    added = []
    for s in doc.get("suppressions") or []:
        if s["status"] != "expired":
            continue
        case = ET.SubElement(suite, "testcase", classname="leakaudit.suppressions",
                             name=f"suppression of {s['rule']} for {s['model']} is current")
        ET.SubElement(case, "failure", message=f"suppression of {s['rule']} expired on {s['expires']} ({s['file']}): "
                      f"{s['reason']}; renew or remove it", type="expired_suppression").text = (
            f"the rule's own status: {s['rule_status']}")
        added.append("failures")
    return added


def _scan_cases(suite: ET.Element, doc: dict[str, Any]) -> list[str]:
    """The cases of the scan itself: each crashed attack, an inconclusive control, an interrupted scan."""
    added = []
    for a in doc["attacks"]:
        if a["status"] == "failed":
            case = ET.SubElement(suite, "testcase", classname="leakaudit.attacks", name=f"attack {a['name']} ran")
            ET.SubElement(case, "error", message=f"{a['name']}: {a['reason']}", type="attack_error").text = a["reason"]
            added.append("errors")
    control = doc.get("control") or {}
    if doc["verdict"]["overall"] == "inconclusive":
        case = ET.SubElement(suite, "testcase", classname="leakaudit.scan", name="positive control reconstructs")
        ET.SubElement(case, "failure", message=str(doc["verdict"]["summary"]), type="inconclusive").text = "\n".join(
            x for x in (control.get("reason"), control.get("evidence")) if x)
        added.append("failures")
    if doc.get("incomplete"):
        case = ET.SubElement(suite, "testcase", classname="leakaudit.scan", name="scan completed")
        ET.SubElement(case, "error", message=doc.get("incomplete_reason") or "interrupted", type="incomplete")
        added.append("errors")
    return added
