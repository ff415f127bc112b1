"""The coverage loop: one client update, attack plan and control per batch; records kept, tensors not.

Batch ``i`` is audited with the seed ``seed + i`` (another client's step: its own dropout masks and noise
draws), so the first batch of a scan is exactly the single-batch scan of earlier versions. The loop keeps the
full ``AuditResult`` of one batch only, the one holding the worst sample so far; a batch restored from a
checkpoint that turns out to hold the worst sample is audited again at the end (same seed: same result) so
the report can show its attacks and images.
"""

from __future__ import annotations

import time
from itertools import accumulate
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Sequence

from ..config import MAX_SEED, ScanSettings
from ..progress import NullObserver, Observer
from ..result import AuditResult, BatchCoverage, SampleCoverage
from . import combine as c


@dataclass(frozen=True)
class Plan:
    """What the coverage scan covers (``audit.prepare`` builds it)."""

    batches: tuple[Any, ...]  # SampleBatch per client batch, in order
    available: int  # samples found in --data
    drawn: str = "all"
    remainder: str = ""

    @property
    def planned(self) -> int:
        return sum(len(b) for b in self.batches)


# (batch records, sample records so far) -> None: the CLI writes the checkpoint there
OnBatch = Callable[[Sequence[BatchCoverage], Sequence[SampleCoverage]], None]


def batch_seed(seed: int, index: int) -> int:
    return (seed + index) % (MAX_SEED + 1)


def eta(done_seconds: Sequence[float], remaining: int) -> str:
    if not done_seconds or not remaining:
        return ""
    left = sum(done_seconds) / len(done_seconds) * remaining
    return f", ETA {int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f", ETA {left:.0f}s"


def run_batches(model: Any, findings: Any, plan: Plan, settings: ScanSettings, ruleset: Any, *,
                observer: Observer | None = None, command: str = "", started: datetime | None = None,
                notes: tuple[str, ...] = (), restored: tuple[Sequence[BatchCoverage], Sequence[SampleCoverage]]
                = ((), ()), on_batch: OnBatch | None = None) -> AuditResult:
    from ..audit import audit_loaded

    observer = observer or NullObserver()
    rules = c.criterion(ruleset)
    metric = c.ranking_metric(rules)
    per_batch = c.batch_ruleset(ruleset)
    batches: dict[int, BatchCoverage] = {b.index: b for b in restored[0]}
    samples: list[SampleCoverage] = list(restored[1])
    resumed = len(batches)
    total = len(plan.batches)
    offsets = [0, *accumulate(len(b) for b in plan.batches)][:total]  # index of each batch's first sample
    shown: tuple[int, AuditResult] | None = None
    times: list[float] = []
    interrupted = False

    def audit_one(i: int) -> tuple[AuditResult, float]:
        t0 = time.perf_counter()
        result = audit_loaded(model, plan.batches[i], findings, replace(settings, seed=batch_seed(settings.seed, i)),
                              observer, command=command, started=started, ruleset=per_batch)
        return result, time.perf_counter() - t0

    for i in range(total):
        if i in batches:
            continue
        if observer.should_stop():
            interrupted = True
            break
        if total > 1:
            observer.stage(f"batch {i + 1}/{total}", f"{len(batches)} of {total} batches done, {len(plan.batches[i])} "
                           f"sample(s){eta(times, total - len(batches))}")
        result, seconds = audit_one(i)
        times.append(seconds)
        record, new = c.batch_record(result, index=i, seed=batch_seed(settings.seed, i), offset=offsets[i],
                                     rules=rules, metric=metric, seconds=seconds)
        batches[i] = record
        samples = c.prune([*samples, *new], metric)
        worst = c.worst_batch(samples, metric)
        if shown is None or worst == i:
            shown = (i, result)
        del result
        if record.incomplete:  # stopped inside the batch: reported, but not checkpointed (resume reruns it)
            interrupted = True
            break
        if on_batch is not None:
            on_batch([batches[k] for k in sorted(batches)], samples)
    worst = c.worst_batch(samples, metric) if samples else 0
    if shown is None or (shown[0] != worst and worst in batches and not interrupted):
        # the detail sections show the batch of the worst sample; restored from a checkpoint, it runs again
        observer.stage(f"batch {worst + 1}/{total}", "audited again for the report's detail (restored from the "
                       "checkpoint; same seed, same result)")
        shown = (worst, audit_one(worst)[0])
    index, result = shown
    return c.combine(replace(result, notes=(*result.notes, *notes)), ruleset=ruleset,
                     batches=list(batches.values()), samples=samples, shown_batch=index, available=plan.available,
                     planned=plan.planned, batch_size=len(plan.batches[0]) if plan.batches else 0,
                     batches_planned=total, drawn=plan.drawn, remainder=plan.remainder, resumed=resumed,
                     interrupted=interrupted, strict=settings.strict)
