"""The coverage loop: one client update, attack plan and control per batch; records kept, tensors not.

Batch ``i`` is audited with the seed ``seed + i`` (another client's step: its own dropout masks and noise
draws), so the first batch of a scan is exactly the single-batch scan of earlier versions. The loop keeps the
full ``AuditResult`` of one batch only, the one holding the worst sample so far; a batch restored from a
checkpoint that turns out to hold the worst sample is audited again at the end (same seed: same result) so
the report can show its attacks and images. Batches run on the settings' executor (``coverage.executors``:
in this process, local worker processes or Ray) and are recorded in the order they finish; the result does
not depend on that order. The per-batch audit is handed in (``audit.run`` passes ``audit.audit_loaded``): the
pipeline imports coverage/, never the reverse.
"""

from __future__ import annotations

import time
from itertools import accumulate
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Sequence

from ..config import ScanSettings
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
# (model, findings, plan, settings, per-batch rules, command, started) -> the result of a scan none of whose
# batches could be audited (``audit.nothing_audited``)
NothingAudited = Callable[[Any, Any, Plan, ScanSettings, Any, str, datetime | None], AuditResult]


def eta(done_seconds: Sequence[float], remaining: int) -> str:
    if not done_seconds or not remaining:
        return ""
    left = sum(done_seconds) / len(done_seconds) * remaining
    return f", ETA {int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f", ETA {left:.0f}s"


def run_batches(model: Any, findings: Any, plan: Plan, settings: ScanSettings, ruleset: Any, *,
                audit_batch: Callable[..., AuditResult], nothing_audited: NothingAudited,
                observer: Observer | None = None, command: str = "", started: datetime | None = None,
                notes: tuple[str, ...] = (), restored: tuple[Sequence[BatchCoverage], Sequence[SampleCoverage]]
                = ((), ()), on_batch: OnBatch | None = None, source: Any = None, references: Any = None,
                clock: Any = None) -> AuditResult:
    """Audit every batch of ``plan`` not in ``restored`` on the settings' executor (``coverage.executors``) and
    combine them. Batches may finish in any order: each is recorded (and checkpointed) as it arrives, and the
    combined result is the same as batch by batch. ``audit_batch`` audits one batch (``audit.audit_loaded``, a
    module-level function: workers receive it by name). ``source`` says how workers load the model again (a
    ``ModelSource``); None sends them ``model`` itself. ``clock``: the scan's time cap
    (``attacks.clock``)."""
    import torch  # lazily, as the package's other heavy imports: the CLI starts without torch

    from .executors import Context, Job, audit_job, batch_seed, run_jobs

    observer = observer or NullObserver()
    rules = c.criterion(ruleset, plan.batches[0].modality)
    metric = c.ranking_metric(rules)
    per_batch = c.batch_ruleset(ruleset)
    batches: dict[int, BatchCoverage] = {b.index: b for b in restored[0]}
    samples: list[SampleCoverage] = list(restored[1])
    resumed = len(batches)
    total = len(plan.batches)
    offsets = [0, *accumulate(len(b) for b in plan.batches)][:total]  # index of each batch's first sample
    shown: tuple[int, AuditResult] | None = None
    lost: list[str] = []
    interrupted = False
    if settings.threads is not None:  # a Python caller's explicit count (the CLI has set its choice already)
        torch.set_num_threads(settings.threads)
    context = Context(audit_batch, source if source is not None else model, findings, settings, per_batch, command,
                      started, torch.get_num_threads(), references, clock)
    jobs = [Job(i, plan.batches[i]) for i in range(total) if i not in batches]
    progress = _Progress(observer, settings.executor, total, len(batches))
    progress.starting(jobs)
    ran_where: list[str] = []  # e.g. a local Ray instance started instead of joining a cluster
    for done in run_jobs(jobs, context, model=model, observer=progress, on_start=progress.job_starts,
                         notes=ran_where):
        if done.result is None:
            lost.append(done.lost)
            progress.finished(done)
            continue
        i = done.index
        record, new = c.batch_record(done.result, index=i, seed=batch_seed(settings.seed, i), offset=offsets[i],
                                     rules=rules, metric=metric, seconds=done.seconds)
        batches[i] = record
        samples = c.prune([*samples, *new], metric)
        # the worst sample's batch keeps its full result; whatever the arrival order, the batch of the final
        # worst sample was the worst so far when it arrived (ties go to the lower index, as worst_batch's do)
        if shown is None or c.worst_batch(samples, metric) == i:
            shown = (i, done.result)
        done = replace(done, result=None)
        progress.finished(done)
        if record.incomplete:  # stopped inside the batch: reported, but not checkpointed (resume reruns it)
            interrupted = True
            break
        if on_batch is not None:
            on_batch([batches[k] for k in sorted(batches)], samples)
    interrupted = interrupted or (len(batches) + len(lost) < total)
    if shown is None and lost and not batches:
        # Every batch's worker died twice: nothing was audited, but the scan is incomplete (exit 130), not an
        # internal error: the report says which batches were lost, and --resume runs them again.
        shown = (0, nothing_audited(model, findings, plan, settings, per_batch, command, started))
    worst = c.worst_batch(samples, metric) if samples else 0
    if shown is None or (shown[0] != worst and worst in batches and not interrupted):
        # the detail sections show the batch of the worst sample; restored from a checkpoint, it runs again
        observer.stage(f"batch {worst + 1}/{total}", "audited again for the report's detail (restored from the "
                       "checkpoint; same seed, same result)")
        shown = (worst, audit_job(context, Job(worst, plan.batches[worst]), model, observer).result)
    index, result = shown
    return c.combine(replace(result, notes=(*result.notes, *notes, *ran_where)), ruleset=ruleset,
                     batches=list(batches.values()), samples=samples, shown_batch=index, available=plan.available,
                     planned=plan.planned, batch_size=len(plan.batches[0]) if plan.batches else 0,
                     batches_planned=total, drawn=plan.drawn, remainder=plan.remainder, resumed=resumed,
                     interrupted=interrupted, strict=settings.strict, lost=tuple(lost))


class _Progress:
    """The observer the executors see: "batch k/total" with an ETA as batches start (in-process) or finish
    (workers: they run at once, so the ETA is the wall time per finished batch times those left)."""

    def __init__(self, observer: Observer, executor: str, total: int, done: int) -> None:
        self.observer, self.executor, self.total, self.done = observer, executor, total, done
        self.times: list[float] = []  # in-process: each batch's seconds; workers: wall seconds between arrivals
        self.last = time.perf_counter()

    def starting(self, jobs: Sequence[Any]) -> None:
        if self.executor != "inprocess" and jobs and self.total > 1:
            self.observer.stage(f"{len(jobs)} batch(es)", f"on --executor {self.executor}; {self.done} of "
                                f"{self.total} batches done")

    def job_starts(self, job: Any) -> None:
        """In-process: a batch starts (one after another), as the scan showed before executors."""
        if self.total > 1:
            self.observer.stage(f"batch {job.index + 1}/{self.total}", f"{self.done} of {self.total} batches done, "
                                f"{len(job.batch)} sample(s){eta(self.times, self.total - self.done)}")

    def stage(self, name: str, detail: str = "") -> None:
        self.observer.stage(name, detail)

    def finished(self, done: Any) -> None:
        self.done += 1
        now = time.perf_counter()
        self.times.append(done.seconds if self.executor == "inprocess" else now - self.last)
        self.last = now
        if self.executor != "inprocess" and self.total > 1:
            what = f"lost: {done.lost}" if done.lost else f"audited in {done.seconds:.1f} s"
            self.observer.stage(f"batch {self.done}/{self.total}", f"batch {done.index + 1} {what}"
                                f"{eta(self.times, self.total - self.done)}")

    def attack_progress(self, event: Any) -> None:
        self.observer.attack_progress(event)

    def should_stop(self) -> bool:
        return self.observer.should_stop()
