"""The checkpoint of a multi-batch scan: ``scan-checkpoint.json`` in the output folder, replaced atomically after
every batch, read by ``scan --resume``, deleted when the scan completes.

It holds the records of the batches done (their verdicts, rules and per-sample scores; reconstruction images
of the worst cases only), plus what must match for a resume to continue the same scan -- the content, not the
names: the model's sha256 (and the ``--arch`` file's), the sha256 of every batch's samples (the model's input,
the pixels and the labels), the sha256 of the rules as loaded (a rule file edited between Ctrl-C and
``--resume`` is another rule set), the settings that change results and leakaudit's version. A checkpoint is
data a user (or anyone who can write the folder) may have edited: it carries the sha256 of its own records,
and a restored batch must agree with itself (a batch whose verdict was a leak keeps a fired fail rule, so
combining batches can never turn a fail into a pass). Anything else is refused with one line (exit 2): a
resumed scan never mixes two scans' batches, nor trusts records it cannot check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..config import ScanSettings, settings_in_roles
from ..errors import InputError, argument_ref, setting_ref
from ..result import BatchCoverage, RuleOutcome, SampleCoverage

if TYPE_CHECKING:  # annotations only: Prepared is the pipeline's, above coverage/ (which never imports it)
    import torch

    from ..audit import Prepared
    from ..data.interface import SampleBatch
    from ..metrics.references import ScanReferences

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
ARCH = setting_ref("arch")
BATCH_SIZE = setting_ref("batch_size")
DATA = argument_ref("data")
OUTPUT_DIR = setting_ref("output_dir")
REFERENCE_DATA = setting_ref("reference_data")
RESUME = argument_ref("resume")
RULES = setting_ref("rules")
SAMPLES = setting_ref("samples")
UTILITY_DATA = setting_ref("utility_data")

NAME = "scan-checkpoint.json"
KIND = "leakaudit-scan-checkpoint"
VERSION = 3  # 3: the held-out utility data's content is part of the identity
LIMIT = 256 << 20  # bytes: records and a dozen small PNGs are far less; a larger file is not ours
_OVERALLS = ("pass", "fail", "error", "inconclusive", "incomplete")
_STATUSES = ("pass", "fail", "warn", "not_evaluated", "not_applicable", "suppressed")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     allow_nan=True).encode("utf-8")).hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return bytes(t.detach().cpu().contiguous().numpy().tobytes())


def samples_sha256(batch: SampleBatch) -> str:
    """The content of one batch: what the model sees, the [0,1] pixels scored against, and the labels."""
    h = hashlib.sha256()
    for t in (batch.x, batch.pixels, batch.y):
        h.update(f"{t.dtype}{tuple(t.shape)}".encode("ascii"))
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _arch_file_sha256(arch: str | None) -> str | None:
    """An ``--arch file.py:factory`` runs that file: its content is part of the model."""
    path = (arch or "").rpartition(":")[0]
    if not path.endswith(".py"):
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def identity(prepared: Prepared, settings: ScanSettings) -> dict[str, Any]:
    """What a resumed scan must share with the first run."""
    from .. import __version__
    from ..report.document import _jsonable

    # only the settings that change a batch's result: a resumed scan may differ in the others (e.g. resume on
    # Ray a scan that started in-process, or write another format)
    chosen = settings_in_roles(settings, "result")
    plan = prepared.plan
    batches = plan.batches if plan is not None else (prepared.batch,)
    ruleset = prepared.ruleset
    if ruleset is None:
        from ..verdict.rules import load_rules

        ruleset = load_rules(settings.rules)
    rules = {k: v for k, v in dataclasses.asdict(ruleset).items() if k != "source"}  # the content, not the path
    return {"leakaudit": __version__, "model_sha256": prepared.model.sha256,
            "arch_sha256": _arch_file_sha256(settings.arch),
            "settings": json.loads(json.dumps(_jsonable(chosen), sort_keys=True)),
            "rules_sha256": _digest(_jsonable(rules)),
            "samples": [list(b.names) for b in batches],
            "samples_sha256": [samples_sha256(b) for b in batches],
            # what the recognition test compared with: another --reference-data folder is another criterion
            "references_sha256": _references_sha256(prepared.references),
            # the held-out samples each batch's defense cost is measured on: other ones give other figures
            "utility_sha256": _files_sha256(settings.utility_data)}


def _files_sha256(path: str | None) -> str | None:
    """The content of a file, or of a folder's regular files (relative names and bytes, in name order)."""
    if not path:
        return None
    root = Path(path)
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root) if f != root else f.name).encode("utf-8") + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _references_sha256(references: ScanReferences | None) -> str | None:
    if references is None:
        return None
    pixels = references.pixels.detach().cpu().contiguous().float().numpy()
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def _records(batches: Sequence[BatchCoverage], samples: Sequence[SampleCoverage]) -> dict[str, Any]:
    return {"batches": [dataclasses.asdict(b) for b in batches], "records": [dataclasses.asdict(s) for s in samples]}


def dumps(ident: dict[str, Any], batches: Sequence[BatchCoverage], samples: Sequence[SampleCoverage]) -> str:
    records = json.loads(json.dumps(_records(batches, samples)))  # as read back: tuples are lists
    return json.dumps({"kind": KIND, "version": VERSION, **ident, **records,
                       "records_sha256": _digest({**ident, **records})}, indent=1) + "\n"


def _load(path: Path, fix: str) -> Any:
    """The JSON of ``path``: a regular file (not a link, FIFO or device), at most LIMIT bytes, nested and sized
    as json and Python parse without a crash; else one line naming the file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"{RESUME}: no checkpoint {path}; a multi-batch scan writes it after every batch to its "
                         f"{OUTPUT_DIR}; {fix}") from None
    except OSError as e:
        what = "a link" if os.path.islink(path) else (e.strerror or type(e).__name__)
        raise InputError(f"{RESUME} {path}: cannot read the checkpoint ({what}); {fix}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{RESUME} {path}: the checkpoint is not a regular file; {fix}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(LIMIT + 1)
    except OSError as e:
        raise InputError(f"{RESUME} {path}: cannot read the checkpoint ({e.strerror}); {fix}") from None
    finally:
        os.close(fd)
    if len(raw) > LIMIT:
        raise InputError(f"{RESUME} {path}: larger than {LIMIT >> 20} MiB, not a checkpoint leakaudit wrote; {fix}")
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise InputError(f"{RESUME} {path}: nested too deeply, not a checkpoint leakaudit wrote; {fix}") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, and an integer past Python's digit limit
        decode = isinstance(e, (json.JSONDecodeError, UnicodeDecodeError))
        reason = str(e).splitlines()[0] if decode else "a number too long to be one leakaudit wrote"
        raise InputError(f"{RESUME} {path}: cannot read the checkpoint ({reason[:120]}); {fix}") from None


def _check_batch(b: BatchCoverage, total: int, strict: bool) -> str:
    """Why a restored batch record cannot be one leakaudit wrote ("" when it can)."""
    from ..verdict.outcome import rules_fail

    if not (isinstance(b.index, int) and not isinstance(b.index, bool) and 0 <= b.index < total):
        return f"batch index {b.index!r} is not one of the scan's {total} batches"
    if b.overall not in _OVERALLS or any(r.status not in _STATUSES for r in b.rules):
        return f"batch {b.index + 1} holds an unknown verdict"
    if b.incomplete:
        return f"batch {b.index + 1} was interrupted, and an interrupted batch is never checkpointed"
    leaked = rules_fail(((r.id, r.status, r.severity) for r in b.rules), strict=strict)
    if (b.overall == "fail") != leaked:
        return f"batch {b.index + 1}'s verdict ({b.overall}) disagrees with its rules"
    return ""


def _conditioning(c: Any) -> dict[str, Any] | None:
    """A batch's conditioning record as written (``Conditioning.as_dict``), or TypeError: the report reads it."""
    if c is None:
        return None
    texts = ("verdict", "reason", "summary", "advice")
    if (not isinstance(c, dict) or c.get("verdict") not in ("stable", "ill-conditioned", "not_measured")
            or any(not isinstance(c.get(k), str) for k in texts)
            or not (c.get("cosine") is None or isinstance(c.get("cosine"), (int, float)))
            or not isinstance(c.get("layers"), list) or not isinstance(c.get("input_shape"), list)
            or any(not isinstance(d, dict) or not isinstance(d.get("name"), str)
                   or not isinstance(d.get("values_per_channel"), int) for d in c["layers"])):
        raise TypeError("a batch's conditioning record is malformed")
    return c


def _statistics(c: Any) -> dict[str, Any] | None:
    """A batch's BatchNorm-statistics record as written (``BufferLeak.as_dict``), or TypeError: the report reads
    it."""
    if c is None:
        return None
    if (not isinstance(c, dict) or c.get("status") not in ("recovered", "unchanged", "not_recovered")
            or any(not isinstance(c.get(k), str) for k in ("reason", "title", "summary"))
            or not isinstance(c.get("layers"), list)
            or any(not isinstance(d, dict) or not isinstance(d.get("name"), str) for d in c["layers"])):
        raise TypeError("a batch's BatchNorm-statistics record is malformed")
    return c


def read(path: Path, ident: dict[str, Any]) -> tuple[list[BatchCoverage], list[SampleCoverage]]:
    """The records of ``path`` after checking it is this scan's; InputError (exit 2) naming the mismatch."""
    fix = f"run the scan again without {RESUME} (it starts over)"
    doc = _load(path, fix)
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("version") != VERSION:
        raise InputError(f"{RESUME} {path}: not a leakaudit scan checkpoint of version {VERSION}; {fix}")
    mismatch = _mismatch(doc, ident)
    if mismatch:
        raise InputError(f"{RESUME} {path}: {mismatch}{fix}")
    try:
        batches, samples = _restored(doc)
    except (KeyError, TypeError) as e:
        raise InputError(f"{RESUME} {path}: the checkpoint is damaged ({e}); {fix}") from None
    total, strict = len(ident["samples"]), bool(ident["settings"].get("strict"))
    problems = [p for p in (_check_batch(b, total, strict) for b in batches) if p]
    if not problems and len({b.index for b in batches}) != len(batches):
        problems.append("a batch is recorded twice")
    if problems:
        raise InputError(f"{RESUME} {path}: the checkpoint is inconsistent ({problems[0]}); {fix}")
    return batches, samples


def _mismatch(doc: dict[str, Any], ident: dict[str, Any]) -> str:
    """How the checkpoint ``doc`` differs from this scan's ``ident``, up to the fix ("" when it does not)."""
    if doc.get("leakaudit") != ident["leakaudit"]:
        return f"written by leakaudit {str(doc.get('leakaudit'))[:20]}, this is {ident['leakaudit']}; "
    if doc.get("model_sha256") != ident["model_sha256"] or doc.get("arch_sha256") != ident["arch_sha256"]:
        return (f"the checkpoint is of another model (sha256 {str(doc.get('model_sha256'))[:12]}..., now "
                f"{ident['model_sha256'][:12]}..., or another {ARCH} file); ")
    old, new = doc.get("settings", {}), ident["settings"]
    if old != new:
        old = old if isinstance(old, dict) else {}
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k} ({str(old.get(k))[:40]!r} -> {str(new.get(k))[:40]!r})" for k in diff[:3])
        return f"settings differ from the checkpointed scan: {shown}; use the same options, or "
    if doc.get("rules_sha256") != ident["rules_sha256"]:
        return (f"the rules differ from the checkpointed scan's (the {RULES} file was edited, or another profile); "
                "use the rules the scan started with, or ")
    if doc.get("samples") != ident["samples"] or doc.get("samples_sha256") != ident["samples_sha256"]:
        return ("the samples or their batches differ from the checkpointed scan (names, pixels or labels); use the "
                f"same {DATA}, {SAMPLES} and {BATCH_SIZE}, or ")
    if doc.get("references_sha256") != ident["references_sha256"]:
        return (f"the reference images differ from the checkpointed scan's (another {REFERENCE_DATA}, or its files "
                "changed); use the same references, or ")
    if doc.get("utility_sha256") != ident["utility_sha256"]:
        return (f"the held-out utility data differ from the checkpointed scan's (another {UTILITY_DATA}, or its "
                "files changed); use the same held-out samples, or ")
    records = {"batches": doc.get("batches"), "records": doc.get("records")}
    if doc.get("records_sha256") != _digest({**ident, **records}):
        return "the checkpoint's records do not match their sha256 (edited or damaged); "
    return ""


def _restored(doc: dict[str, Any]) -> tuple[list[BatchCoverage], list[SampleCoverage]]:
    """The records of a checkpoint whose identity matched; KeyError or TypeError when one is malformed."""
    batches = [BatchCoverage(**{**b, "rules": tuple(RuleOutcome(**r) for r in b["rules"]),
                                "crashed": tuple(b["crashed"]),
                                "conditioning": _conditioning(b.get("conditioning")),
                                "batchnorm_statistics": _statistics(b.get("batchnorm_statistics"))})
               for b in doc["batches"]]
    samples = [SampleCoverage(**{**s, "rules": tuple(s["rules"]), "recovered": tuple(s.get("recovered", ()))})
               for s in doc["records"]]
    return batches, samples
