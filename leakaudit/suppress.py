"""Suppressions: a reviewed, known finding accepted for one model until a date (``.leakaudit-ignore.toml``).

The file -- ``.leakaudit-ignore.toml`` in the model's folder, found by ``leakaudit scan``, or the one named by
``--ignore-file`` (config key ``ignore-file``) -- holds ``[[ignore]]`` entries::

    [[ignore]]
    rule = "recognised-structure"     # a rule id of the profile
    model = "models/*.onnx"           # the model's sha256 (64 hex digits) or a glob on its path
    reason = "accepted by the privacy review, ticket PRIV-12"   # mandatory
    expires = 2026-06-30              # YYYY-MM-DD (a TOML date or a string); the last day it holds

This module reads and checks the file (one-line ``ConfigError`` naming the file, the entry and the key: exit 2)
and finds the entries that apply to a model. What they do to the verdict is decided in
``leakaudit.verdict.outcome`` (``suppressed_statuses``, ``decide(expired=...)``): an entry that applies and
has not expired turns its rule's ``fail``/``warn`` into ``suppressed`` (never a leak); an expired one
suppresses nothing and fails the scan. The positive control and the recognition of samples are never
suppressed: a suppression is a reporting decision about a known finding, not evidence.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Sequence

from .errors import ConfigError, setting_ref
from .userfiles import parse_toml, read_user_text

if TYPE_CHECKING:
    from .result import AuditResult, RuleOutcome

IGNORE_NAME = ".leakaudit-ignore.toml"
ENTRY_KEYS = ("rule", "model", "reason", "expires")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Entry:
    rule: str
    model: str  # sha256 (lower-case hex) or a glob on the model's path
    reason: str
    expires: _dt.date
    file: str  # the file as given or found, for the report
    index: int  # 1-based position in the file

    @property
    def by_sha256(self) -> bool:
        return bool(_SHA256.fullmatch(self.model))

    def expired(self, today: _dt.date) -> bool:
        return today > self.expires


@dataclass(frozen=True)
class SuppressionOutcome:
    """One entry that applies to the scanned model, as the report records it."""

    rule: str
    model: str
    matched_by: str  # "sha256" | "path glob"
    reason: str
    expires: str  # YYYY-MM-DD
    file: str
    status: str  # "active" | "expired"
    applied: bool  # it turned a failed or warned rule into "suppressed"
    rule_status: str  # the rule's status without suppression: fail, warn, pass, not_evaluated, or absent

    def line(self) -> str:
        """One line for the terminal and the notes."""
        what = {"active": "suppressed" if self.applied else "suppression (nothing to suppress)",
                "expired": "EXPIRED suppression"}[self.status]
        return (f"{what} {self.rule} ({self.rule_status}) for {self.model} ({self.matched_by}) until "
                f"{self.expires}: {self.reason} [{self.file}]")


def today() -> _dt.date:
    """The day expiry dates are compared with (UTC, so a CI fleet agrees)."""
    return _dt.datetime.now(_dt.timezone.utc).date()


def find_ignore_file(model_path: str | Path) -> Path | None:
    """``.leakaudit-ignore.toml`` in the model's folder, when there is one."""
    candidate = Path(model_path).parent / IGNORE_NAME
    return candidate if candidate.is_file() else None


def load_entries(path: str | Path) -> tuple[Entry, ...]:
    """Every ``[[ignore]]`` entry of the file, checked; one-line ConfigError (exit 2) on the first problem."""
    label = str(path)
    text = read_user_text(Path(path), ConfigError,
                          missing=f"{label}: ignore file not found; pass an existing file to "
                                  f"{setting_ref('ignore_file')}",
                          unreadable=f"{label}: cannot read the ignore file ({{e}}); give a readable UTF-8 .toml "
                                     "file")
    doc = parse_toml(text, label, ConfigError, "fix the syntax at that line")
    for key in doc:
        if key != "ignore":
            raise ConfigError(f"{label}: unknown top-level key {key!r}; the file holds [[ignore]] tables only")
    raw = doc.get("ignore", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ConfigError(f"{label}: ignore must be [[ignore]] tables; write each entry as [[ignore]] with "
                          "rule, model, reason and expires")
    return tuple(_entry(r, label, i) for i, r in enumerate(raw, start=1))


def _entry(raw: dict[str, Any], label: str, index: int) -> Entry:
    where = f"{label}: ignore {index}"
    for key in raw:
        if key not in ENTRY_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(ENTRY_KEYS)}")
    for key in ENTRY_KEYS:
        if key not in raw:
            fix = {"reason": "say why the finding is accepted, e.g. reason = \"reviewed in PRIV-12\"",
                   "expires": "add an expiry date, e.g. expires = 2026-06-30"}.get(key, f"add `{key} = ...`")
            raise ConfigError(f"{where}: missing {key}; {fix}")
    for key in ("rule", "model", "reason"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise ConfigError(f"{where}: {key} must be a non-empty string; quote it")
    model = raw["model"].strip()
    return Entry(rule=raw["rule"].strip(), model=model.lower() if _SHA256.fullmatch(model) else model,
                 reason=raw["reason"].strip(), expires=_date(raw["expires"], where), file=label, index=index)


def _date(value: Any, where: str) -> _dt.date:
    if isinstance(value, _dt.datetime) or not isinstance(value, (str, _dt.date)):
        raise ConfigError(f"{where}: expires must be a date YYYY-MM-DD, got {value!r}; e.g. expires = 2026-06-30")
    if isinstance(value, _dt.date):
        return value
    try:
        if not _DATE.fullmatch(value.strip()):
            raise ValueError(value)
        return _dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{where}: expires must be a date YYYY-MM-DD, got {value!r}; "
                          "e.g. expires = 2026-06-30") from None


def applies(entry: Entry, model_path: str, sha256: str) -> bool:
    """The entry names this model: its full sha256, or a glob on its path (also matched against the path's
    trailing parts, so ``*.onnx`` or ``models/*.onnx`` match ``/srv/x/models/m.onnx``)."""
    if entry.by_sha256:
        return entry.model == sha256.lower()
    path = PurePath(model_path).as_posix()
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[i:]), entry.model) for i in range(len(parts)))


def entries_for(ignore_file: str | None, model_path: str, sha256: str) -> tuple[Entry, ...]:
    """The entries of ``ignore_file`` (None: none) that apply to the model."""
    if not ignore_file:
        return ()
    return tuple(e for e in load_entries(ignore_file) if applies(e, model_path, sha256))


def _records(entries: Sequence[Entry], before: dict[str, str], after: dict[str, str],
             on: _dt.date) -> tuple[SuppressionOutcome, ...]:
    return tuple(SuppressionOutcome(
        rule=e.rule, model=e.model, matched_by="sha256" if e.by_sha256 else "path glob", reason=e.reason,
        expires=e.expires.isoformat(), file=e.file, status="expired" if e.expired(on) else "active",
        applied=not e.expired(on) and after.get(e.rule) == "suppressed", rule_status=before.get(e.rule, "absent"))
        for e in entries)


def apply_rules(rules: Sequence[RuleOutcome], entries: Sequence[Entry], on: _dt.date | None = None,
                ) -> tuple[tuple[RuleOutcome, ...], tuple[SuppressionOutcome, ...]]:
    """The rules with the suppressions ``outcome`` decides, and the record of every entry. Idempotent: a
    rule already suppressed is taken back to its finding first, so a changed file (--resume) is re-applied."""
    from .verdict.outcome import suppressed_statuses, unsuppressed

    on = on or today()
    plain = [replace(r, status=unsuppressed(r.status, r.severity)) for r in rules]
    statuses = suppressed_statuses([(r.id, r.status, r.severity) for r in plain],
                                   [e.rule for e in entries if not e.expired(on)])
    after = [replace(r, status=s) for r, s in zip(plain, statuses, strict=True)]
    return tuple(after), _records(entries, {r.id: r.status for r in plain}, {r.id: r.status for r in after}, on)


def apply_to_result(result: AuditResult, on: _dt.date | None = None) -> AuditResult:
    """``result`` with the suppressions of its settings' ignore file applied to its (combined) rules."""
    from .verdict.outcome import rules_fail

    ignore_file = result.settings.ignore_file if result.settings is not None else None
    entries = entries_for(ignore_file, result.model.path, result.model.sha256)
    if not entries and not any(r.status == "suppressed" for r in result.rules):
        return result
    rules, records = apply_rules(result.rules, entries, on)
    failing = rules_fail(((r.id, r.status, r.severity) for r in rules), strict=result.strict)
    return replace(result, rules=rules, rules_overall="fail" if failing else "pass", suppressions=records)
