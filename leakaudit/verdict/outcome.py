"""The outcome of a scan: the overall verdict, the exit code and the summary line, decided in one place.

Every consumer -- the JSON document, the HTML banner, the JUnit file, the terminal line, the process's exit
code and ``leakaudit sweep``'s per-value verdict -- reads :func:`decide`, so they cannot disagree.

The overall verdict, in order of precedence:

- ``incomplete`` (exit 130): the scan was interrupted; what ran is reported, but no verdict is final;
- ``fail`` (exit 1): a fail-severity rule fired (or, under --strict, could not be evaluated). A leak found
  by one attack is real even when another attack crashed;
- ``error`` (exit 3): a planned attack crashed and no leak was found by the others: without that attack a
  pass would be claimed on less evidence than planned, so none is;
- ``pass`` (exit 0).

``--exit-zero`` changes only the exit code of ``fail`` (to 0); the verdict stays ``fail`` and the document
records both (``exit_code`` is what the process returned, ``exit_zero`` says why it is 0). Errors and
interruptions keep their codes: a report-only run must still notice that it did not run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_LEAK, EXIT_OK

# A later verdict (e.g. "inconclusive": too little evidence for a pass) is one more entry in each table and
# one more branch in _overall.
Overall = Literal["pass", "fail", "error", "incomplete"]
OVERALLS: tuple[str, ...] = ("pass", "fail", "error", "incomplete")
EXIT_CODES: dict[str, int] = {"pass": EXIT_OK, "fail": EXIT_LEAK, "error": EXIT_INTERNAL,
                              "incomplete": EXIT_INTERRUPTED}
WORDS: dict[str, str] = {"pass": "PASS", "fail": "LEAK", "error": "ERROR", "incomplete": "INCOMPLETE"}
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
           incomplete: bool = False, exit_zero: bool = False) -> Outcome:
    """The outcome of a scan from its rule results ``(id, status)``, the attacks that crashed, and whether
    it was interrupted. ``exit_zero`` maps a fail to exit 0 and nothing else."""
    statuses = [status for _, status in rules]
    leaked = rules_fail(statuses, strict=strict)
    overall = _overall(leaked=leaked, crashed=bool(crashed), incomplete=incomplete)
    code = EXIT_OK if exit_zero and overall == "fail" else EXIT_CODES[overall]
    summary = _summary(rules, strict=strict, leaked=leaked, crashed=tuple(crashed), incomplete=incomplete)
    if exit_zero and overall == "fail":
        summary += " (--exit-zero: exit 0)"
    return Outcome(overall=overall, exit_code=code, summary=summary, rules_overall="fail" if leaked else "pass",
                   exit_zero=exit_zero, crashed=tuple(crashed))


def _overall(*, leaked: bool, crashed: bool, incomplete: bool) -> Overall:
    if incomplete:
        return "incomplete"
    if leaked:
        return "fail"
    if crashed:
        return "error"
    return "pass"


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
