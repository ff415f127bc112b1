"""Where a coverage scan's client batches run: in this process (the default), in local worker processes
(``concurrent.futures.ProcessPoolExecutor``, spawn context), or as Ray tasks (a local Ray instance, or a
cluster's with ``--ray-address``). Scheduling is the engine's own; this module only hands it jobs.

A job is one client batch: its samples (pickled) and its index (the seed is ``seed + index``, as in-process).
A worker loads the model itself from the file path with the scan's load settings -- a model file is data,
and a ``--arch`` module is imported the same way the parent imports it -- checks its sha256 against the
parent's, and runs ``audit_loaded`` on the batch. A model given to the Python API in memory (no file to
load again) is pickled to the workers instead. Each batch's result depends only on the model, the batch
and its seed, so the merged report is the in-process one whatever ran where; only wall-clock fields differ.

Results arrive in completion order. A worker that dies (killed, out of memory, a crash in native code) is
retried once: local processes by running the batches that were in flight again, each alone in a fresh
one-worker pool, so a second death is the batch's own; Ray by its task retries (``max_retries=1``). A batch
that still cannot run is ``lost``: the scan's report is marked incomplete -- never a pass -- and ``--resume``
runs it again.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from ..config import MAX_SEED, ScanSettings, check_executor
from ..errors import ConfigError, EnvironmentProblem, ModelError, setting_ref
from ..progress import Observer
from ..result import AuditResult

if TYPE_CHECKING:  # torch-backed types: coverage/ imports torch only when a batch runs
    from ..attacks.clock import Clock
    from ..data.interface import SampleBatch
    from ..detect.interface import Findings
    from ..metrics.references import ScanReferences
    from ..models.interface import LoadedModel
    from ..verdict.rules import RuleSet

RAY_INSTALL = "pip install 'leakaudit[ray]'"
POLL_SECONDS = 0.5  # how often a waiting parent looks at Ctrl-C
PROBE_SECONDS = 5.0  # a Ray address that does not accept a connection within this is refused
# the settings the errors below name: the CLI shows each as its flag (--executor), a Python caller as the field
EXECUTOR_SETTING = setting_ref("executor")
WORKERS_SETTING = setting_ref("workers")
RAY_ADDRESS_SETTING = setting_ref("ray_address")
DEVICE_SETTING = setting_ref("device")
THREADS_SETTING = setting_ref("threads")


# ------------------------------------------------------------------------------------------------ checks


def check_execution(settings: ScanSettings) -> None:
    """The settings' executor can run here (before any model loads): Ray installed, its address answering,
    and ``--workers`` / ``--ray-address`` only with the executor that uses them."""
    executor = check_executor(settings.executor)
    if settings.workers is not None and executor != "processes":
        raise ConfigError(f"{WORKERS_SETTING} {settings.workers}: only {EXECUTOR_SETTING} processes uses worker "
                          f"processes; add {EXECUTOR_SETTING} processes or leave out {WORKERS_SETTING}")
    if settings.ray_address is not None and executor != "ray":
        raise ConfigError(f"{RAY_ADDRESS_SETTING} {settings.ray_address}: only {EXECUTOR_SETTING} ray joins a Ray "
                          f"cluster; add {EXECUTOR_SETTING} ray or leave out {RAY_ADDRESS_SETTING}")
    if executor == "ray":
        _ray()
        if settings.ray_address is not None:
            probe_ray_address(settings.ray_address)
        elif os.environ.get("RAY_ADDRESS", "").strip():  # ray.init() joins it, retrying for minutes, warning
            probe_ray_address(os.environ["RAY_ADDRESS"].strip(), label="RAY_ADDRESS")
        else:
            # ray.init() also joins the cluster the last 'ray start' on this machine recorded: a file left by a
            # cluster that died without 'ray stop' made the scan retry a dead address for minutes
            recorded = _recorded_local_cluster()
            if recorded:
                probe_ray_address(recorded, label="recorded")


def _ray() -> Any:  # the ray module: it ships no type information leakaudit checks
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{EXECUTOR_SETTING} ray: Ray is not installed; install it with {RAY_INSTALL}, or use "
                          f"{EXECUTOR_SETTING} processes") from None
    return ray


def _recorded_local_cluster() -> str | None:
    """The address Ray's ``ray_current_cluster`` file records (the last ``ray start`` here), which ``ray.init()``
    without an address joins; None when there is none, or this Ray keeps it elsewhere (a private function)."""
    try:
        from ray._private import services

        address = services.find_bootstrap_address(None)
    except Exception:  # noqa: BLE001 -- a private API: any change in it means "not known", never a failed scan
        return None
    return address.strip() if isinstance(address, str) and address.strip() else None


def _unreachable(address: str, why: str, label: str = RAY_ADDRESS_SETTING) -> ConfigError:
    if label == "recorded":
        return ConfigError(f"{EXECUTOR_SETTING} ray: Ray's ray_current_cluster file (the last 'ray start' on this "
                           f"machine) names a cluster at {address}, but none answers there ({why}); it was left by a "
                           "cluster that stopped without 'ray stop': run 'ray stop' (or delete the file) to let the "
                           f"scan start a local Ray instance, or give {RAY_ADDRESS_SETTING}")
    if label == "RAY_ADDRESS":
        return ConfigError(f"RAY_ADDRESS={address} (environment): no Ray cluster answers there ({why}); start one "
                           "with 'ray start --head' and set its address (host:6379), or unset RAY_ADDRESS to "
                           "start a local Ray instance")
    return ConfigError(f"{RAY_ADDRESS_SETTING} {address}: no Ray cluster answers there ({why}); start one with "
                       f"'ray start --head' and give its address (host:6379), or leave out {RAY_ADDRESS_SETTING} to "
                       "start a local Ray instance")


def probe_ray_address(address: str, label: str = RAY_ADDRESS_SETTING) -> None:
    """A TCP connection to ``host:port`` (``ray://host:port`` too) within ``PROBE_SECONDS``: Ray itself keeps
    retrying an address that does not answer for minutes. ``auto`` is left to Ray (it reads the local
    cluster's address file and fails at once when there is none)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    shown = {"RAY_ADDRESS": f"RAY_ADDRESS={address} (environment)",
             "recorded": f"{EXECUTOR_SETTING} ray: Ray's ray_current_cluster file ({address})"}.get(
                 label, f"{label} {address}")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{shown}: not an address; give HOST:PORT of the Ray head node, e.g. 10.0.0.5:6379, "
                          "or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS):
            pass
    except (OSError, UnicodeError) as e:  # UnicodeError: a host name IDNA cannot encode
        raise _unreachable(address, getattr(e, "strerror", None) or type(e).__name__, label) from None


# ------------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class ModelSource:
    """How a worker loads the model the parent loaded: ``models.load_model``'s arguments with absolute paths (a
    Ray worker's working directory is not the parent's), the file's sha256 (a file replaced during the scan is
    refused, not audited as another model), and the names the parent's model carries, so the report does not
    depend on where the model was loaded."""

    path: str  # absolute
    sha256: str
    arch: str | None  # a file.py:factory with the file's absolute path
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    dropout: dict[str, float]
    arch_args: dict[str, Any]  # the factory's keyword arguments, as TOML/--arch-arg gave them
    shown_path: str  # LoadedModel.path as the parent has it (as given)
    shown_arch: str | None  # LoadedModel.arch as the parent has it

    def load(self) -> LoadedModel:
        from pathlib import Path

        from ..models.load import load_model

        model = load_model(self.path, arch=self.arch, input_shape=self.input_shape, num_classes=self.num_classes,
                           dropout=dict(self.dropout) or None, arch_kwargs=dict(self.arch_args) or None)
        if model.sha256 != self.sha256:
            raise ModelError(f"{self.shown_path}: the file changed during the scan (sha256 {model.sha256[:12]}..., "
                             f"was {self.sha256[:12]}...); run the scan again on a file that stays put")
        model.path, model.arch = Path(self.shown_path), self.shown_arch
        return model


@dataclass(frozen=True)
class Context:
    """What every job of a scan shares: sent to each worker once."""

    # the per-batch audit (``audit.audit_loaded``): injected so that coverage/ never imports the pipeline above
    # it; a module-level function, so a worker receives its name, not its code
    audit_batch: Callable[..., AuditResult]
    model: ModelSource | LoadedModel  # the LoadedModel itself when in memory: no file to load again
    findings: Findings
    settings: ScanSettings  # the batch's seed not yet applied
    ruleset: RuleSet  # the per-batch rules
    command: str
    started: datetime | None
    # torch's CPU threads in the parent: each worker uses as many, since torch's kernels split their sums by the
    # thread count and a worker with fewer threads can differ from the in-process run in the last digits (a
    # CNN's IG loss 0.0899071 in-process, 0.0899061 on a 1-thread worker), which a threshold may turn into
    # another verdict
    threads: int = 1
    references: ScanReferences | None = None  # the reference set and every sample of the scan
    clock: Clock | None = None  # the scan's time cap and each batch's share; None: each batch its own


@dataclass(frozen=True)
class Job:
    index: int  # the batch's place in the plan; its seed is the scan's seed + index
    batch: SampleBatch


@dataclass(frozen=True)
class Done:
    """A finished job: its result, or why it has none (``lost``)."""

    index: int
    result: AuditResult | None  # None when lost
    seconds: float  # the batch's own audit time (wall clock, in the worker)
    lost: str = ""


_loaded: tuple[ModelSource, LoadedModel] | None = None  # per worker process: the model is loaded once for all its jobs


def _model(context: Context) -> LoadedModel:
    global _loaded
    source = context.model
    if not isinstance(source, ModelSource):
        return source
    if _loaded is None or _loaded[0] != source:
        _loaded = (source, source.load())
    return _loaded[1]


def batch_seed(seed: int, index: int) -> int:
    return (seed + index) % (MAX_SEED + 1)


def audit_job(context: Context, job: Job, model: LoadedModel | None = None, observer: Observer | None = None) -> Done:
    """One batch's audit, as every executor runs it (``model``: the parent's own, in-process)."""
    t0 = time.perf_counter()
    settings = replace(context.settings, seed=batch_seed(context.settings.seed, job.index))
    result = context.audit_batch(model if model is not None else _model(context), job.batch, context.findings,
                                 settings, observer, command=context.command, started=context.started,
                                 ruleset=context.ruleset, references=context.references, clock=context.clock)
    return Done(job.index, result, time.perf_counter() - t0)


def model_source(loaded: LoadedModel, settings: ScanSettings) -> ModelSource:
    """How workers load ``loaded`` again: from its file, with the settings it was loaded with. The path must be
    one a worker can open: on a Ray cluster, the same path on every node."""
    from pathlib import Path

    target, sep, factory = (settings.arch or "").rpartition(":")
    arch = f"{Path(target).resolve()}{sep}{factory}" if target.endswith(".py") else settings.arch
    return ModelSource(str(Path(loaded.path).resolve()), loaded.sha256, arch, settings.input_shape,
                       settings.num_classes, dict(settings.dropout), dict(settings.arch_args), str(loaded.path),
                       loaded.arch)


# ------------------------------------------------------------------------------------------------ executors

Stop = Callable[[], bool]


def run_jobs(jobs: Sequence[Job], context: Context, *, model: LoadedModel, observer: Observer,
             on_start: Callable[[Job], None] | None = None, notes: list[str] | None = None) -> Iterator[Done]:
    """Every job's ``Done``, in completion order, on the settings' executor. Stops handing out jobs once
    ``observer.should_stop()``: the jobs not finished then are left out (the scan is reported interrupted).
    ``on_start`` hears of each job as it starts in-process (a worker's start is not seen here); ``notes`` gets
    what the report must say about where the jobs ran (a local Ray instance started instead of a cluster)."""
    executor = context.settings.executor
    if executor == "processes":
        yield from _processes(jobs, context, observer.should_stop, context.settings.workers)
    elif executor == "ray":
        yield from _on_ray(jobs, context, observer, context.settings.ray_address,
                           notes if notes is not None else [])
    else:
        yield from _inprocess(jobs, context, model, observer, on_start)


def _inprocess(jobs: Sequence[Job], context: Context, model: LoadedModel, observer: Observer,
               on_start: Callable[[Job], None] | None) -> Iterator[Done]:
    for job in jobs:
        if observer.should_stop():
            return
        if on_start is not None:
            on_start(job)
        yield audit_job(context, job, model, observer)


def cpu_count() -> int:
    """The CPUs this process may use: its affinity (not the machine's count), lowered to a container's CPU quota
    (cgroup ``cpu.max`` or ``cfs_quota_us``), which torch's own default ignores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, int(quota))) if quota is not None else cpus


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPUs a cgroup CPU quota allows this process (e.g. 2.0 for ``docker run --cpus 2``); None when there is
    none or it cannot be read (not Linux, no cgroup file system)."""
    from pathlib import Path

    base = Path(root)
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    v2 = next((line.partition("::")[2] for line in lines if line.startswith("0::")), "")
    v1 = next((parts[2] for parts in (line.split(":", 2) for line in lines)
               if len(parts) == 3 and "cpu" in parts[1].split(",")), "")
    candidates: list[tuple[Path, Path | None]] = [(base / v2.lstrip("/") / "cpu.max", None)] if v2 else []
    candidates += [(base / "cpu.max", None)]
    for folder in (base / "cpu" / v1.lstrip("/"), base / "cpu", base / "cpu,cpuacct"):
        candidates.append((folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            if period_file is None:
                quota, _, period = quota_file.read_text().strip().partition(" ")
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
            if quota in ("max", "-1"):
                return None
            return int(quota) / int(period)
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return None


def choose_threads(settings: ScanSettings, environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The torch threads of each running batch (the scan's process and every worker or Ray task), and why, in
    words for the report's notes. ``--threads`` wins, then ``OMP_NUM_THREADS``; otherwise the CPUs this process
    may use, divided among the batches that run at once here: torch's own default (the machine's cores, a
    container's quota ignored) oversubscribed a busy or limited machine, and ``--workers N`` worker processes at
    that default each ran N times too many threads."""
    environ = os.environ if environ is None else environ
    if settings.threads is not None:
        return settings.threads, f"{settings.threads} torch thread(s) per batch (--threads)"
    omp = str(environ.get("OMP_NUM_THREADS", "")).strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), f"{int(omp)} torch thread(s) per batch (OMP_NUM_THREADS={omp})"
    cpus = cpu_count()
    if settings.executor == "processes" and settings.workers is not None:
        threads = max(1, cpus // settings.workers)
        return threads, (f"{threads} torch thread(s) per batch: the {cpus} CPU(s) available to this process "
                         f"shared by --workers {settings.workers} (set --threads or OMP_NUM_THREADS to choose)")
    return cpus, (f"{cpus} torch thread(s) per batch: the CPU(s) available to this process (set --threads or "
                  "OMP_NUM_THREADS to choose)")


def default_workers(jobs: int, threads: int) -> int:
    """As many workers as the CPUs hold at ``threads`` torch threads each (at least one), at most one per job."""
    return max(1, min(cpu_count() // max(1, threads), jobs))


def _init_worker(context: Context) -> None:
    import signal

    import torch

    # Ctrl-C reaches the whole process group: the parent decides (stop handing out batches), workers carry on
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(context.threads)  # as in-process: the same sums in the same order
    global _context
    _context = context


_context: Context | None = None


def _worker_job(job: Job) -> Done:
    assert _context is not None, "the pool's initializer sets the context"
    return audit_job(_context, job)


def _pool(context: Context, workers: int) -> ProcessPoolExecutor:
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(context,))


def _processes(jobs: Sequence[Job], context: Context, stop: Stop, workers: int | None) -> Iterator[Done]:
    """At most ``workers`` jobs in flight, so that when the pool breaks (a worker died: every job in flight
    fails with it) the suspects are few; each is retried alone in a fresh pool of one worker."""
    workers = workers or default_workers(len(jobs), context.threads)
    waiting = list(jobs)
    while waiting:
        suspects: list[Job] = []
        pool = _pool(context, min(workers, len(waiting)))
        try:
            running: dict[Future[Done], Job] = {}
            refused = False
            while (waiting or running) and not suspects:
                while waiting and len(running) < workers and not stop():
                    try:
                        running[pool.submit(_worker_job, waiting[0])] = waiting[0]
                    except BrokenProcessPool:  # a worker died since the last look: the next job is not to blame
                        refused = True
                        break
                    waiting.pop(0)
                if stop():
                    return
                finished, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                yield from _collect(finished, running, suspects)
                if refused and not running and not suspects:  # broke with no job in it (its start-up)
                    suspects.append(waiting.pop(0))
            # broken: the pool fails every job it still holds (or finished it just before)
            yield from _collect(wait(running).done, running, suspects)
        finally:
            _close(pool)
        for job in sorted(suspects, key=lambda j: j.index):
            if stop():
                return
            yield _alone(context, job)


def _collect(finished: set[Future[Done]], running: dict[Future[Done], Job], suspects: list[Job]) -> Iterator[Done]:
    for future in finished:
        job = running.pop(future)
        try:
            yield future.result()
        except BrokenProcessPool:
            suspects.append(job)


def _alone(context: Context, job: Job) -> Done:
    """The retry of a job whose worker died: alone in a fresh worker, so a second death is its own."""
    pool = _pool(context, 1)
    try:
        return pool.submit(_worker_job, job).result()
    except BrokenProcessPool:
        return Done(job.index, None, 0.0, lost=f"batch {job.index + 1}: its worker process died twice (retried "
                    "once, alone)")
    finally:
        _close(pool)


def _close(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down; workers still running an abandoned job (Ctrl-C, an error elsewhere) are ended, not
    waited for (the pool keeps its processes in a private attribute: read before shutdown clears it)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
        process.join(timeout=5)


# -- Ray


def _ray_job(context: Context, job: Job) -> Done:
    import torch

    torch.set_num_threads(context.threads)  # Ray sets a task's OMP threads to its num_cpus; as in-process here
    return audit_job(context, job)


def _start_ray(address: str | None) -> Any:
    import logging

    ray = _ray()
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except Exception as e:  # noqa: BLE001 -- Ray raises plain Exception when its local node times out at start-up
        label = f"{RAY_ADDRESS_SETTING} {address}"
        if address is None and os.environ.get("RAY_ADDRESS", "").strip():
            address = os.environ["RAY_ADDRESS"].strip()
            label = f"RAY_ADDRESS={address} (environment)"
        if address is None:
            raise EnvironmentProblem(f"{EXECUTOR_SETTING} ray: a local Ray instance did not start "
                                     f"({' '.join(str(e).split())[:200]}); the machine may be short of memory or "
                                     "CPU, or a stale Ray session is in the way: check 'ray status' (or 'ray stop'), "
                                     f"or use {EXECUTOR_SETTING} processes") from None
        # the address answered the probe: something there refused this driver
        raise ConfigError(f"{label}: the Ray cluster there did not accept this scan "
                          f"({' '.join(str(e).split())[:160]}); use the cluster's Ray version here, and with token "
                          "authentication (Ray's default since 2.59) set RAY_AUTH_MODE=token and the cluster's "
                          "token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) before the scan") from None
    return ray


def _gpu(settings: ScanSettings) -> bool:
    from ..attacks.device import resolve_device

    return resolve_device(settings.device).type == "cuda"


LOCAL_RAY_NOTE = "Ray: this scan started a local Ray instance"


def _started_locally(ray: Any) -> bool:
    """Whether ``ray.init`` started a Ray instance of its own rather than joining one: with no address it also
    joins a cluster that ``ray start`` runs on this machine. A joining driver's node is not the head; Ray keeps
    that in a private attribute, so when it is missing the answer is the address's: none given, none found."""
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    is_head = getattr(node, "is_head", None)
    return bool(is_head()) if callable(is_head) else False


def _on_ray(jobs: Sequence[Job], context: Context, observer: Observer, address: str | None,
            notes: list[str]) -> Iterator[Done]:
    stop: Stop = observer.should_stop
    ray = _start_ray(address)
    try:
        if _started_locally(ray):
            # A Ray user expects a cluster (RAY_ADDRESS, 'ray job submit'): a scan that quietly ran on this one
            # machine is slower than planned and was not where the nodes' data and GPUs are
            cpus = ray.cluster_resources().get("CPU", 0)
            note = (f"{LOCAL_RAY_NOTE} on this machine ({cpus:g} CPUs), not a cluster: no --ray-address, "
                    "RAY_ADDRESS unset and no 'ray start' cluster here; to use a cluster give --ray-address or "
                    "RAY_ADDRESS, or submit the scan with 'ray job submit'")
            notes.append(note)
            observer.stage("ray", note)
        gpu = _gpu(context.settings)
        if gpu and ray.cluster_resources().get("GPU", 0) < 1:  # the tasks would wait for ever
            raise ConfigError(f"{DEVICE_SETTING} {context.settings.device}: the Ray cluster has no GPU for its tasks; "
                              f"start its nodes on GPU machines, or give {DEVICE_SETTING} cpu")
        largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if not gpu and largest < context.threads:  # no node could take a task: they would wait for ever
            raise ConfigError(f"{EXECUTOR_SETTING} ray: each task runs {context.threads} torch threads (as this "
                              f"process does) but the largest Ray node has {largest:g} CPUs; run the scan with "
                              f"{THREADS_SETTING} {max(1, int(largest))}, or add larger nodes")
        # a CPU task holds as many CPUs as it runs threads, so Ray does not oversubscribe a node's cores; a GPU
        # task holds a GPU (the GPU does the work)
        options = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": context.threads}
        task = ray.remote(max_retries=1, retry_exceptions=False, **options)(_ray_job)
        shared = ray.put(context)
        pending = {task.remote(shared, job): job for job in jobs}
        while pending:
            if stop():
                for ref in pending:
                    ray.cancel(ref, force=True)
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                job = pending.pop(ref)
                yield _ray_result(ray, ref, job)
    finally:
        ray.shutdown()


def _ray_result(ray: Any, ref: Any, job: Job) -> Done:
    from ray.exceptions import RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except WorkerCrashedError:  # after Ray's own retry
        return Done(job.index, None, 0.0, lost=f"batch {job.index + 1}: its Ray worker died twice (retried once)")
    except RayTaskError as e:  # what the job raised, as in-process (a LeakauditError is exit 2, others exit 3)
        cause = getattr(e, "cause", None)
        raise (cause if isinstance(cause, BaseException) else e) from None
