"""The outcome of a scan: the overall verdict, the exit code and the summary line, decided in one place.

Every consumer -- the JSON document, the HTML banner, the JUnit file, the terminal line, the process's exit
code and ``leakaudit sweep``'s per-value verdict -- reads :func:`decide`, so they cannot disagree.

The overall verdict, in order of precedence:

- ``incomplete`` (exit 130): the scan was interrupted; what ran is reported, but no verdict is final;
- ``fail`` (exit 1): a fail-severity rule fired (or, under --strict, could not be evaluated). A leak found
  by one attack is real even when another attack crashed, and whatever the positive control says;
- ``error`` (exit 3): a planned attack crashed and no leak was found by the others: without that attack a
  pass would be claimed on less evidence than planned, so none is. It outranks ``inconclusive``: a crash is
  the more specific thing to fix, and it may be why the control did not reconstruct;
- ``inconclusive`` (exit 4): no leak was found, but the positive control -- the same attacks on the same
  samples without the defenses under evaluation -- did not reach the fail rules' thresholds either: the
  attacks could not reconstruct even the undefended case, so the scan is no evidence either way;
- ``pass`` (exit 0): no leak, and the control reconstructed (or there was no control to earn it: a rule set
  without fail-severity rules, or results from before the control existed).

``--exit-zero`` changes only the exit code of ``fail`` (to 0); the verdict stays ``fail`` and the document
records both (``exit_code`` is what the process returned, ``exit_zero`` says why it is 0). Errors,
interruptions and ``inconclusive`` keep their codes: a report-only run must still notice that it did not run,
or that it proved nothing. ``--strict`` makes ``inconclusive`` exit 1 like a leak (the verdict stays
``inconclusive``, the summary says so): a strict gate lets nothing through that was not earned, while the
default exit 4 lets a pipeline tell "no evidence" from "leak" (``examples/ci/`` shows both).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from ..errors import EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_LEAK, EXIT_OK

Overall = Literal["pass", "fail", "error", "inconclusive", "incomplete"]
OVERALLS: tuple[str, ...] = ("pass", "fail", "error", "inconclusive", "incomplete")
EXIT_CODES: dict[str, int] = {"pass": EXIT_OK, "fail": EXIT_LEAK, "error": EXIT_INTERNAL,
                              "inconclusive": EXIT_INCONCLUSIVE, "incomplete": EXIT_INTERRUPTED}
WORDS: dict[str, str] = {"pass": "PASS", "fail": "LEAK", "error": "ERROR", "inconclusive": "INCONCLUSIVE",
                         "incomplete": "INCOMPLETE"}
INCONCLUSIVE_REASON = "the attacks could not reconstruct even without the defenses: no evidence either way"
RULE_STATUSES = ("pass", "fail", "warn", "not_evaluated")


@dataclass(frozen=True)
class Outcome:
    overall: Overall
    exit_code: int  # what the process returns (after --exit-zero)
    summary: str  # one line, starting with WORDS[overall]
    rules_overall: Literal["pass", "fail"]  # what the rules alone say, before crashes and interruptions
    exit_zero: bool = False
    crashed: tuple[str, ...] = ()  # attacks that raised

    @property
    def word(self) -> str:
        return WORDS[self.overall]


def rules_fail(statuses: Iterable[str], *, strict: bool) -> bool:
    """Whether rule results make the verdict fail: a fail-severity rule fired, or under strict one was not
    evaluated (rule results carry "fail" only for fail-severity rules; warn-severity ones say "warn")."""
    return any(s == "fail" or (strict and s == "not_evaluated") for s in statuses)


def decide(rules: Sequence[tuple[str, str]], *, strict: bool = False, crashed: Sequence[str] = (),
           incomplete: bool = False, exit_zero: bool = False, control: bool | None = None,
           control_evidence: str = "") -> Outcome:
    """The outcome of a scan from its rule results ``(id, status)``, the attacks that crashed, whether it was
    interrupted, and whether the positive control reconstructed (``control``; None: no control to weigh).
    ``exit_zero`` maps a fail to exit 0 and nothing else; ``control_evidence`` (e.g. the control's best
    score) is appended to an inconclusive summary."""
    statuses = [status for _, status in rules]
    leaked = rules_fail(statuses, strict=strict)
    overall = _overall(leaked=leaked, crashed=bool(crashed), incomplete=incomplete, unearned=control is False)
    code = EXIT_CODES[overall]
    if exit_zero and overall == "fail":
        code = EXIT_OK
    if strict and overall == "inconclusive":
        code = EXIT_LEAK
    summary = _summary(rules, strict=strict, leaked=leaked, crashed=tuple(crashed), incomplete=incomplete)
    if overall == "inconclusive":
        summary = _inconclusive(summary, control_evidence, strict=strict)
    elif overall == "pass" and control and control_evidence:  # what the pass was earned against
        summary += f"; {control_evidence}"
    if exit_zero and overall == "fail":
        summary += " (--exit-zero: exit 0)"
    return Outcome(overall=overall, exit_code=code, summary=summary, rules_overall="fail" if leaked else "pass",
                   exit_zero=exit_zero, crashed=tuple(crashed))


def _overall(*, leaked: bool, crashed: bool, incomplete: bool, unearned: bool) -> Overall:
    if incomplete:
        return "incomplete"
    if leaked:
        return "fail"
    if crashed:
        return "error"
    if unearned:
        return "inconclusive"
    return "pass"


def _inconclusive(summary: str, evidence: str, *, strict: bool) -> str:
    """The pass summary's rule counts kept, its claim replaced by why there is none."""
    rest = summary.removeprefix("PASS: no fail-severity rule failed")
    text = f"INCONCLUSIVE: {INCONCLUSIVE_REASON}" + (f" ({evidence})" if evidence else "") + rest
    return text + (" (--strict: exit 1)" if strict else "")


def counts(rules: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Rule results per status, every status present (0 when none)."""
    found = Counter(status for _, status in rules)
    return {s: found.get(s, 0) for s in RULE_STATUSES} | {s: n for s, n in found.items() if s not in RULE_STATUSES}


def _summary(rules: Sequence[tuple[str, str]], *, strict: bool, leaked: bool, crashed: tuple[str, ...],
             incomplete: bool) -> str:
    n = counts(rules)
    failing = [rid for rid, s in rules if s == "fail"]
    unevaluated = [rid for rid, s in rules if s == "not_evaluated"]
    if leaked:
        parts = [f"{len(failing)} rule(s) failed ({', '.join(failing)})"] if failing else []
        if strict and unevaluated:
            parts.append(f"{len(unevaluated)} rule(s) not evaluated, which --strict counts as failed "
                         f"({', '.join(unevaluated)})")
        text = f"LEAK: {'; '.join(parts)}"
    elif crashed:
        text = (f"ERROR: {len(crashed)} attack(s) crashed ({', '.join(crashed)}) and no leak was found; "
                "no pass is claimed without them")
    else:  # an interrupted run claims no pass, not even in its summary
        text = ("no fail-severity rule failed so far" if incomplete else "PASS: no fail-severity rule failed") \
            + (f" ({n['warn']} warning(s))" if n["warn"] else "")
    if leaked and crashed:
        text += f"; {len(crashed)} attack(s) crashed ({', '.join(crashed)})"
    if unevaluated and not (leaked and strict):
        text += f"; {len(unevaluated)} rule(s) not evaluated"
    return f"INCOMPLETE: {text}" if incomplete else text
