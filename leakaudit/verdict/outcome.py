"""The outcome of a scan: the overall verdict, the exit code and the summary line, decided in one place.

Every consumer -- the JSON document, the HTML banner, the JUnit file, the terminal line, the process's exit
code and ``leakaudit sweep``'s per-value verdict -- reads :func:`decide`, so they cannot disagree.

The overall verdict, in order of precedence:

- ``incomplete`` (exit 130): the scan was interrupted; what ran is reported, but no verdict is final;
- ``fail`` (exit 1): a fail-severity rule fired -- a leak was found (summary ``LEAK:``) -- or, under
  --strict, a fail-severity rule could not be evaluated (summary ``FAIL (strict):`` when no rule fired; the
  word LEAK is kept for a rule that fired). A leak found by one attack is real even when another attack
  crashed, and whatever the positive control says;
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

A rule that cannot be evaluated (LPIPS without its weights, label accuracy when the labels were given to the
attacker, no attack ran) is ``not_evaluated`` with its reason, never a pass. What it weighs depends on its
severity. A *fail-severity* one counts as failed under ``--strict`` (a strict gate passes nothing it could
not check), but it is not a leak: the summary says ``FAIL (strict): N fail-severity rule(s) could not be
evaluated (ids)``, and ``LEAK`` appears only when a rule fired. A *warn-severity* one never fails a scan,
strict or not: a warning that could not be computed cannot be worse than a warning (so the default profile,
whose LPIPS rule is a warning, passes under ``--strict`` on a machine without the LPIPS weights). Rule
results are given as ``(id, status, severity)``; a pair ``(id, status)`` is read as a fail-severity rule.

Suppressions (``leakaudit.suppress``: ``[[ignore]]`` entries of ``.leakaudit-ignore.toml`` or
``--ignore-file``, each naming a rule and the model, with a reason and an expiry date) are decided here too.
An entry that applies to the model and has not expired turns its rule's ``fail`` or ``warn`` into
``suppressed`` (``suppressed_statuses``): it never counts towards a leak or a warning, and the summary names
it (``N rule(s) suppressed (ids)``). A rule that passed or was not evaluated is left as it is: a suppression
accepts a finding, it does not vouch for a rule that could not be checked. An entry that applies and has
expired suppresses nothing and fails the scan (``decide(expired=...)``, exit 1): the rule keeps its own
status, and the summary adds ``N suppression(s) expired (ids)``; when nothing else failed the summary starts
``FAIL (expired suppression):`` and says that no leak was found by a rule -- a CI gate must not keep passing
on an acceptance nobody renewed. Suppression is applied to the rules alone: the positive control and the
recognition of samples are never suppressed (a suppressed finding is no evidence that the attacks can
reconstruct; the control, which runs because a suppressed leak settles nothing, is).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence, Union

from ..errors import EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_LEAK, EXIT_OK

Overall = Literal["pass", "fail", "error", "inconclusive", "incomplete"]
OVERALLS: tuple[str, ...] = ("pass", "fail", "error", "inconclusive", "incomplete")
EXIT_CODES: dict[str, int] = {"pass": EXIT_OK, "fail": EXIT_LEAK, "error": EXIT_INTERNAL,
                              "inconclusive": EXIT_INCONCLUSIVE, "incomplete": EXIT_INTERRUPTED}
WORDS: dict[str, str] = {"pass": "PASS", "fail": "LEAK", "error": "ERROR", "inconclusive": "INCONCLUSIVE",
                         "incomplete": "INCOMPLETE"}
INCONCLUSIVE_REASON = "the attacks could not reconstruct even without the defenses: no evidence either way"
# not_applicable: the rule is about another modality's samples; it counts for nothing.
RULE_STATUSES = ("pass", "fail", "warn", "not_evaluated", "suppressed", "not_applicable")
STRICT_WORD = "FAIL (strict)"  # a strict fail where no rule fired: no leak was found, so never "LEAK"
EXPIRED_WORD = "FAIL (expired suppression)"  # an expired suppression failed the scan and no rule fired
# A rule's result: (id, status, severity); (id, status) is read as a fail-severity rule (the conservative side).
RuleItem = Union[tuple[str, str], tuple[str, str, str]]


@dataclass(frozen=True)
class Outcome:
    overall: Overall
    exit_code: int  # what the process returns (after --exit-zero)
    summary: str  # one line, starting with WORDS[overall]
    rules_overall: Literal["pass", "fail"]  # what the rules alone say, before crashes and interruptions
    exit_zero: bool = False
    crashed: tuple[str, ...] = ()  # attacks that raised
    leak: bool = False  # a fail-severity rule fired: a leak was found (a strict fail need not be one)
    expired: tuple[str, ...] = ()  # the suppressions that expired (they fail the scan)
    suppressed: tuple[str, ...] = ()  # the rules an active suppression accepted

    @property
    def word(self) -> str:
        if self.overall == "fail" and not self.leak:
            return self.summary.split(":", 1)[0]  # FAIL (strict) or FAIL (expired suppression)
        return WORDS[self.overall]


def _severity(item: RuleItem) -> str:
    return item[2] if len(item) == 3 else "fail"


def unsuppressed(status: str, severity: str) -> str:
    """The finding under a suppression: ``fail`` for a fail-severity rule, ``warn`` for a warn-severity one."""
    if status != "suppressed":
        return status
    return "fail" if severity == "fail" else "warn"


def suppressed_statuses(rules: Sequence[RuleItem], active: Iterable[str]) -> list[str]:
    """Each rule's status under the active (unexpired) suppressions that apply to the model, given as rule
    ids: a ``fail`` or ``warn`` becomes ``suppressed``; any other status stays (see the module's text)."""
    ids = set(active)
    return ["suppressed" if item[1] in ("fail", "warn") and item[0] in ids else item[1] for item in rules]


def strict_unevaluated(rules: Iterable[RuleItem]) -> list[str]:
    """The ids of the fail-severity rules that could not be evaluated: what --strict counts as failed."""
    return [item[0] for item in rules if item[1] == "not_evaluated" and _severity(item) == "fail"]


def rules_fail(rules: Iterable[RuleItem], *, strict: bool) -> bool:
    """Whether rule results ``(id, status, severity)`` make the verdict fail: a fail-severity rule fired (rule
    results carry "fail" only for fail-severity rules; warn-severity ones say "warn"), or under strict a
    fail-severity rule could not be evaluated. A warn-severity rule never fails a scan."""
    items = list(rules)
    return any(item[1] == "fail" for item in items) or (strict and bool(strict_unevaluated(items)))


def decide(rules: Sequence[RuleItem], *, strict: bool = False, crashed: Sequence[str] = (),
           incomplete: bool = False, exit_zero: bool = False, control: bool | None = None,
           control_evidence: str = "", expired: Sequence[str] = (), caveat: str = "") -> Outcome:
    """The outcome of a scan from its rule results ``(id, status)``, the attacks that crashed, whether it was
    interrupted, and whether the positive control reconstructed (``control``; None: no control to weigh).
    ``exit_zero`` maps a fail to exit 0 and nothing else; ``control_evidence`` (e.g. the control's best
    score) is appended to an inconclusive summary. ``expired``: the suppressions that apply to the model and
    have expired (e.g. "recognised-structure (expired 2026-01-31)"): each fails the scan. ``caveat``: what the
    verdict is about when that is not the client's model; it leads the summary, after the verdict word."""
    leaked = rules_fail(rules, strict=strict) or bool(expired)
    overall = _overall(leaked=leaked, crashed=bool(crashed), incomplete=incomplete, unearned=control is False)
    code = EXIT_CODES[overall]
    if exit_zero and overall == "fail":
        code = EXIT_OK
    if strict and overall == "inconclusive":
        code = EXIT_LEAK
    summary = _summary(rules, strict=strict, leaked=leaked, crashed=tuple(crashed), incomplete=incomplete,
                       expired=tuple(expired))
    if overall == "inconclusive":
        summary = _inconclusive(summary, control_evidence, strict=strict)
    elif overall == "pass" and control and control_evidence:  # what the pass was earned against
        summary += f"; {control_evidence}"
    if exit_zero and overall == "fail":
        summary += " (--exit-zero: exit 0)"
    if caveat:  # first, so that no reader of the verdict line misses it
        word, sep, rest = summary.partition(": ")
        summary = f"{word}: {caveat}; {rest}" if sep else f"{word}: {caveat}"
    return Outcome(overall=overall, exit_code=code, summary=summary, rules_overall="fail" if leaked else "pass",
                   exit_zero=exit_zero, crashed=tuple(crashed), leak=any(item[1] == "fail" for item in rules),
                   expired=tuple(expired), suppressed=tuple(item[0] for item in rules if item[1] == "suppressed"))


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


def counts(rules: Sequence[RuleItem]) -> dict[str, int]:
    """Rule results per status, every status present (0 when none)."""
    found = Counter(item[1] for item in rules)
    return {s: found.get(s, 0) for s in RULE_STATUSES} | {s: n for s, n in found.items() if s not in RULE_STATUSES}


def _summary(rules: Sequence[RuleItem], *, strict: bool, leaked: bool, crashed: tuple[str, ...],
             incomplete: bool, expired: tuple[str, ...] = ()) -> str:
    counted = strict_unevaluated(rules) if strict else []  # what --strict fails on: fail-severity ones only
    if leaked:
        text = _leak_summary(rules, counted, expired)
    elif crashed:
        text = (f"ERROR: {len(crashed)} attack(s) crashed ({', '.join(crashed)}) and no leak was found; "
                "no pass is claimed without them")
    else:  # an interrupted run claims no pass, not even in its summary
        warnings = counts(rules)["warn"]
        text = ("no fail-severity rule failed so far" if incomplete else "PASS: no fail-severity rule failed") \
            + (f" ({warnings} warning(s))" if warnings else "")
    if leaked and crashed:
        text += f"; {len(crashed)} attack(s) crashed ({', '.join(crashed)})"
    text += _summary_tail(rules, counted, strict=strict)
    return f"INCOMPLETE: {text}" if incomplete else text


def _leak_summary(rules: Sequence[RuleItem], counted: list[str], expired: tuple[str, ...]) -> str:
    """A failed scan's summary: the rules that fired, what --strict counted as failed, the expired suppressions."""
    failing = [item[0] for item in rules if item[1] == "fail"]
    parts = [f"{len(failing)} rule(s) failed ({', '.join(failing)})"] if failing else []
    if counted:
        parts.append(f"{len(counted)} fail-severity rule(s) could not be evaluated, which --strict counts as "
                     f"failed ({', '.join(counted)})")
    if expired:
        parts.append(f"{len(expired)} suppression(s) expired ({', '.join(expired)}): renew or remove them")
    # LEAK only when a rule fired; a strict fail on rules that could not be checked found no leak
    word = STRICT_WORD if counted else EXPIRED_WORD
    return f"LEAK: {'; '.join(parts)}" if failing else f"{word}: {'; '.join(parts)}; no leak was found"


def _summary_tail(rules: Sequence[RuleItem], counted: list[str], *, strict: bool) -> str:
    """What every summary ends with: the suppressed rules, and those not evaluated that --strict did not count."""
    text = ""
    suppressed = [item[0] for item in rules if item[1] == "suppressed"]
    if suppressed:
        text += f"; {len(suppressed)} rule(s) suppressed ({', '.join(suppressed)})"
    rest = [item[0] for item in rules if item[1] == "not_evaluated" and item[0] not in counted]
    if rest:
        text += f"; {len(rest)} rule(s) not evaluated" + (" (warn-severity: --strict does not fail on them)"
                                                          if strict else "")
    return text
