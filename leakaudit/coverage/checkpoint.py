"""The checkpoint of a multi-batch scan: ``scan-checkpoint.json`` in the output folder, replaced atomically after
every batch, read by ``scan --resume``, deleted when the scan completes.

It holds the records of the batches done (their verdicts, rules and per-sample scores; reconstruction images
of the worst cases only), plus what must match for a resume to continue the same scan: the model's sha256, the
settings that change results, and the names of the samples in batch order. Anything else is refused with one
line (exit 2): a resumed scan never mixes two scans' batches.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from ..config import EXECUTION
from ..errors import InputError
from ..result import BatchCoverage, RuleOutcome, SampleCoverage

NAME = "scan-checkpoint.json"
KIND = "leakaudit-scan-checkpoint"
VERSION = 1
# Settings that do not change any batch's result: a resumed scan may differ in them (e.g. resume on Ray a scan
# that started in-process).
PRESENTATION = ("output_dir", "formats", "quiet", "exit_zero", "embed_data", *EXECUTION)


def identity(prepared: Any, settings: Any) -> dict[str, Any]:
    """What a resumed scan must share with the first run."""
    from ..report.document import _jsonable

    chosen = {k: v for k, v in dataclasses.asdict(settings).items() if k not in PRESENTATION}
    plan = prepared.plan
    batches = plan.batches if plan is not None else (prepared.batch,)
    return {"model_sha256": prepared.model.sha256, "settings": json.loads(json.dumps(_jsonable(chosen),
                                                                                     sort_keys=True)),
            "samples": [list(b.names) for b in batches]}


def dumps(ident: dict[str, Any], batches: Sequence[BatchCoverage], samples: Sequence[SampleCoverage]) -> str:
    return json.dumps({"kind": KIND, "version": VERSION, **ident,
                       "batches": [dataclasses.asdict(b) for b in batches],
                       "records": [dataclasses.asdict(s) for s in samples]}, indent=1) + "\n"


def read(path: Path, ident: dict[str, Any]) -> tuple[list[BatchCoverage], list[SampleCoverage]]:
    """The records of ``path`` after checking it is this scan's; InputError (exit 2) naming the mismatch."""
    fix = "run the scan again without --resume (it starts over)"
    if not path.is_file():
        raise InputError(f"--resume: no checkpoint {path}; a multi-batch scan writes it after every batch to its "
                         f"--output-dir; {fix}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--resume {path}: cannot read the checkpoint ({e}); {fix}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("version") != VERSION:
        raise InputError(f"--resume {path}: not a leakaudit scan checkpoint of version {VERSION}; {fix}")
    if doc.get("model_sha256") != ident["model_sha256"]:
        raise InputError(f"--resume {path}: the checkpoint is of another model (sha256 "
                         f"{str(doc.get('model_sha256'))[:12]}..., now {ident['model_sha256'][:12]}...); {fix}")
    old, new = doc.get("settings", {}), ident["settings"]
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff[:3])
        raise InputError(f"--resume {path}: settings differ from the checkpointed scan: {shown}; use the same "
                         f"options, or {fix}")
    if doc.get("samples") != ident["samples"]:
        raise InputError(f"--resume {path}: the samples or their batches differ from the checkpointed scan; "
                         f"use the same --data, --samples and --batch-size, or {fix}")
    try:
        batches = [BatchCoverage(**{**b, "rules": tuple(RuleOutcome(**r) for r in b["rules"]),
                                    "crashed": tuple(b["crashed"])}) for b in doc["batches"]]
        samples = [SampleCoverage(**{**s, "rules": tuple(s["rules"])}) for s in doc["records"]]
    except (KeyError, TypeError) as e:
        raise InputError(f"--resume {path}: the checkpoint is damaged ({e}); {fix}") from None
    return batches, samples
