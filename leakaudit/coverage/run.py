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
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Sequence

from ..config import ScanSettings
from ..progress import AttackProgress, NullObserver, Observer
from ..result import AuditResult, BatchCoverage, SampleCoverage
from . import combine as c

if TYPE_CHECKING:  # torch-backed types: coverage/ imports torch only when a batch runs
    from ..attacks.clock import Clock
    from ..data.interface import SampleBatch
    from ..detect.interface import Findings
    from ..metrics.references import ScanReferences
    from ..models.interface import LoadedModel
    from ..verdict.rules import Rule, RuleSet
    from .executors import Done, Job, ModelSource


@dataclass(frozen=True)
class Plan:
    """What the coverage scan covers (``audit.prepare`` builds it)."""

    batches: tuple[SampleBatch, ...]  # per client batch, in order
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
NothingAudited = Callable[["LoadedModel", "Findings", Plan, ScanSettings, "RuleSet", str, datetime | None],
                          AuditResult]


def eta(done_seconds: Sequence[float], remaining: int) -> str:
    if not done_seconds or not remaining:
        return ""
    left = sum(done_seconds) / len(done_seconds) * remaining
    return f", ETA {int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f", ETA {left:.0f}s"


@dataclass(frozen=True)
class Scan:
    """What ``run_batches`` audits: the model and its findings, the plan, the settings and rules, and the
    pipeline's per-batch audit handed down (coverage/ never imports the pipeline above it)."""

    model: LoadedModel
    findings: Findings
    plan: Plan
    settings: ScanSettings
    ruleset: RuleSet
    # audits one batch (``audit.audit_loaded``, a module-level function: workers receive it by name)
    audit_batch: Callable[..., AuditResult]
    nothing_audited: NothingAudited
    # how workers load the model again; None sends them ``model`` itself (given in memory: no file)
    source: ModelSource | None = None
    references: ScanReferences | None = None  # the reference set and every sample of the scan
    clock: Clock | None = None  # the scan's time cap (``attacks.clock``)
    command: str = ""
    started: datetime | None = None
    notes: tuple[str, ...] = ()  # what the preparation chose, for the report


def run_batches(scan: Scan, *, observer: Observer | None = None,
                restored: tuple[Sequence[BatchCoverage], Sequence[SampleCoverage]] = ((), ()),
                on_batch: OnBatch | None = None) -> AuditResult:
    """Audit every batch of ``scan.plan`` not in ``restored`` on the settings' executor (``coverage.executors``)
    and combine them. Batches may finish in any order: each is recorded (and checkpointed: ``on_batch``) as it
    arrives, and the combined result is the same as batch by batch."""
    import torch  # lazily, as the package's other heavy imports: the CLI starts without torch

    from .executors import Context, Job, audit_job, run_jobs

    model, findings, plan, settings, ruleset = scan.model, scan.findings, scan.plan, scan.settings, scan.ruleset
    observer = observer or NullObserver()
    rules = c.criterion(ruleset, plan.batches[0].modality)
    per_batch = c.batch_ruleset(ruleset)
    tally = _Tally({b.index: b for b in restored[0]}, list(restored[1]), rules, c.ranking_metric(rules))
    resumed = len(tally.batches)
    total = len(plan.batches)
    if settings.threads is not None:  # a Python caller's explicit count (the CLI has set its choice already)
        torch.set_num_threads(settings.threads)
    context = Context(scan.audit_batch, scan.source if scan.source is not None else model, findings, settings,
                      per_batch, scan.command, scan.started, torch.get_num_threads(), scan.references, scan.clock)
    jobs = [Job(i, plan.batches[i]) for i in range(total) if i not in tally.batches]
    progress = _Progress(observer, settings.executor, total, len(tally.batches))
    progress.starting(jobs)
    ran_where: list[str] = []  # e.g. a local Ray instance started instead of joining a cluster
    offsets = [0, *accumulate(len(b) for b in plan.batches)][:total]  # index of each batch's first sample
    for done in run_jobs(jobs, context, model=model, observer=progress, on_start=progress.job_starts,
                         notes=ran_where):
        record = tally.add(done, settings.seed, offsets[done.index])
        progress.finished(replace(done, result=None))
        if record is None:
            continue
        if record.incomplete:  # stopped inside the batch: reported, but not checkpointed (resume reruns it)
            tally.interrupted = True
            break
        if on_batch is not None:
            on_batch(tally.records(), tally.samples)
    interrupted = tally.interrupted or (len(tally.batches) + len(tally.lost) < total)

    def again(worst: int) -> AuditResult:
        # the detail sections show the batch of the worst sample; restored from a checkpoint, it runs again
        observer.stage(f"batch {worst + 1}/{total}", "audited again for the report's detail (restored from the "
                       "checkpoint; same seed, same result)")
        return _audited(audit_job(context, Job(worst, plan.batches[worst]), model, observer))

    index, result = tally.shown_result(
        interrupted, again,
        lambda: scan.nothing_audited(model, findings, plan, settings, per_batch, scan.command, scan.started))
    finished = c.Finished(list(tally.batches.values()), tally.samples, index, resumed, interrupted,
                          tuple(tally.lost))
    return c.combine(replace(result, notes=(*result.notes, *scan.notes, *ran_where)), ruleset=ruleset, plan=plan,
                     finished=finished, strict=settings.strict)


def _audited(done: Done) -> AuditResult:
    """The result of a job run here: only an executor's lost job has none."""
    assert done.result is not None, f"batch {done.index + 1}: {done.lost}"
    return done.result


@dataclass
class _Tally:
    """The records of the batches so far (restored ones included), and the batch whose full result the report
    shows: the one holding the worst sample."""

    batches: dict[int, BatchCoverage]
    samples: list[SampleCoverage]
    rules: tuple[Rule, ...]  # what recognises a sample
    metric: str  # what ranks the samples
    shown: tuple[int, AuditResult] | None = None
    lost: list[str] = field(default_factory=list)  # why each lost batch has no result
    interrupted: bool = False

    def add(self, done: Done, seed: int, offset: int) -> BatchCoverage | None:
        """Record a finished job; None when it was lost."""
        from .executors import batch_seed

        if done.result is None:
            self.lost.append(done.lost)
            return None
        i = done.index
        record, new = c.batch_record(done.result, index=i, seed=batch_seed(seed, i), offset=offset, rules=self.rules,
                                     metric=self.metric, seconds=done.seconds)
        self.batches[i] = record
        self.samples = c.prune([*self.samples, *new], self.metric)
        # the worst sample's batch keeps its full result; whatever the arrival order, the batch of the final
        # worst sample was the worst so far when it arrived (ties go to the lower index, as worst_batch's do)
        if self.shown is None or c.worst_batch(self.samples, self.metric) == i:
            self.shown = (i, done.result)
        return record

    def records(self) -> list[BatchCoverage]:
        return [self.batches[k] for k in sorted(self.batches)]

    def shown_result(self, interrupted: bool, again: Callable[[int], AuditResult],
                     nothing: Callable[[], AuditResult]) -> tuple[int, AuditResult]:
        """The batch the report shows in detail and its result: the worst sample's (``again`` audits it when it
        was restored from a checkpoint), or ``nothing`` when every batch was lost."""
        shown = self.shown
        if shown is None and self.lost and not self.batches:
            # Every batch's worker died twice: nothing was audited, but the scan is incomplete (exit 130), not an
            # internal error: the report says which batches were lost, and --resume runs them again.
            shown = (0, nothing())
        worst = c.worst_batch(self.samples, self.metric) if self.samples else 0
        if shown is None or (shown[0] != worst and worst in self.batches and not interrupted):
            shown = (worst, again(worst))
        return shown


class _Progress:
    """The observer the executors see: "batch k/total" with an ETA as batches start (in-process) or finish
    (workers: they run at once, so the ETA is the wall time per finished batch times those left)."""

    def __init__(self, observer: Observer, executor: str, total: int, done: int) -> None:
        self.observer, self.executor, self.total, self.done = observer, executor, total, done
        self.times: list[float] = []  # in-process: each batch's seconds; workers: wall seconds between arrivals
        self.last = time.perf_counter()

    def starting(self, jobs: Sequence[Job]) -> None:
        if self.executor != "inprocess" and jobs and self.total > 1:
            self.observer.stage(f"{len(jobs)} batch(es)", f"on --executor {self.executor}; {self.done} of "
                                f"{self.total} batches done")

    def job_starts(self, job: Job) -> None:
        """In-process: a batch starts (one after another), as the scan showed before executors."""
        if self.total > 1:
            self.observer.stage(f"batch {job.index + 1}/{self.total}", f"{self.done} of {self.total} batches done, "
                                f"{len(job.batch)} sample(s){eta(self.times, self.total - self.done)}")

    def stage(self, name: str, detail: str = "") -> None:
        self.observer.stage(name, detail)

    def finished(self, done: Done) -> None:
        self.done += 1
        now = time.perf_counter()
        self.times.append(done.seconds if self.executor == "inprocess" else now - self.last)
        self.last = now
        if self.executor != "inprocess" and self.total > 1:
            what = f"lost: {done.lost}" if done.lost else f"audited in {done.seconds:.1f} s"
            self.observer.stage(f"batch {self.done}/{self.total}", f"batch {done.index + 1} {what}"
                                f"{eta(self.times, self.total - self.done)}")

    def attack_progress(self, event: AttackProgress) -> None:
        self.observer.attack_progress(event)

    def should_stop(self) -> bool:
        return self.observer.should_stop()
