"""The optimisation over the stacked ``(R, ...)`` restarts: the variables and best-so-far snapshots (``_Runner``),
Adam with per-restart learning rates and its schedule (step/plateau decay, the fit to a time share), L-BFGS,
and ``match_gradients``, which runs one attack."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Iterator, Mapping

import torch
from torch import nn

from ...errors import ConfigError, ModelError
from ...progress import AttackProgress, NullObserver, Observer
from ...update.interface import LocalTraining
from .problem import EngineResult, Objective, Schedule, _build, _Problem
from .restarts import _choose_step


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the RNG the model's own random modules draw from, without touching the caller's state."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _init(pb: _Problem, objective: Objective, restarts: int, seed: int,
          device: torch.device) -> dict[str, torch.Tensor]:
    """Restart r draws from its own generator seeded ``seed + r``: a batch of R restarts starts exactly where
    R single-restart runs with seeds seed..seed+R-1 start."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    ms: dict[str, list[torch.Tensor]] = {mv.layer: [] for mv in pb.masks}
    for r in range(restarts):
        gen = torch.Generator().manual_seed(seed + r)
        xs.append(torch.randn(pb.sample_shape, generator=gen))
        if objective.soft_labels:
            ys.append(torch.randn((pb.sample_shape[0], pb.num_classes), generator=gen))
        for mv in pb.masks:
            ms[mv.layer].append(torch.bernoulli(torch.full(mv.shape, 1.0 - mv.p), generator=gen))
    vars_ = {"x": torch.stack(xs)}
    if ys:
        vars_["y"] = torch.stack(ys)
    for n, m in ms.items():
        vars_[f"mask:{n}"] = torch.stack(m)
    return {k: v.to(device) for k, v in vars_.items()}


def _split(vars_: dict[str, torch.Tensor]):
    y = {"y": vars_["y"]} if "y" in vars_ else {}
    masks = {k[5:]: v for k, v in vars_.items() if k.startswith("mask:")}
    return vars_["x"], y, masks


def _join(x, y: dict, masks: dict) -> dict[str, torch.Tensor]:
    out = {"x": x}
    if "y" in y:
        out["y"] = y["y"]
    out.update({f"mask:{n}": m for n, m in masks.items()})
    return out


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class _Runner:
    """State of one batched optimisation: variables, best-so-far snapshots, live restarts."""

    def __init__(self, pb: _Problem, objective: Objective, sched: Schedule, seed: int, device: torch.device,
                 attack: str, observer: Observer) -> None:
        self.pb, self.objective, self.sched, self.attack, self.observer = pb, objective, sched, attack, observer
        self.vars = _init(pb, objective, sched.restarts, seed, device)
        r = sched.restarts
        self.alive = torch.ones(r, dtype=torch.bool, device=device)
        self.best = dict(self.vars)
        self.constrain()  # start inside the box
        self.best_loss = torch.full((r,), math.inf, device=device)
        self.best = {k: v.clone() for k, v in self.vars.items()}
        self.died_at = torch.full((r,), -1, dtype=torch.long, device=device)
        self.fitted_from: int | None = None  # the planned iterations, once fitted to the time share (``_fit``)
        self.batching, self._step, self.batching_note = _choose_step(
            pb, objective, sched.batching, lambda: _split(self.vars))

    def evaluate(self, it: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Gradients of every restart's objective at the current variables; updates the snapshots on device."""
        x, y, m = _split(self.vars)
        (gx, gy, gm), loss = self._step(x, y, m)
        finite = torch.isfinite(loss)
        newly_dead = self.alive & ~finite
        self.died_at = torch.where(newly_dead, torch.full_like(self.died_at, it), self.died_at)
        self.alive = self.alive & finite
        better = self.alive & (loss < self.best_loss)
        self.best_loss = torch.where(better, loss, self.best_loss)
        for k, v in self.vars.items():
            self.best[k] = torch.where(_bcast(better, v), v, self.best[k])
        grads = _join(gx, gy, gm)
        grads = {k: torch.where(_bcast(self.alive, g), g, torch.zeros_like(g)) for k, g in grads.items()}
        return grads, loss

    def constrain(self) -> None:
        """Box constraint on the input, masks within [0, 1]; dead restarts frozen at their best iterate."""
        with torch.no_grad():
            if self.pb.bounds is not None:
                lo, hi = self.pb.bounds
                self.vars["x"] = torch.maximum(torch.minimum(self.vars["x"], hi), lo)
            for k in self.vars:
                if k.startswith("mask:"):
                    self.vars[k] = self.vars[k].clamp(0.0, 1.0)
            for k, v in self.vars.items():
                self.vars[k] = torch.where(_bcast(self.alive, v), v, self.best[k])

    def check(self, it: int) -> bool:
        """Host-side look every ``check_every`` iterations (and at the first few, ``_early``): progress, stop
        request, convergence."""
        best = self.best_loss[self.alive]
        value = float(best.min()) if best.numel() else math.nan
        self.observer.attack_progress(AttackProgress(self.attack, it, self.sched.iterations, value))
        if self.observer.should_stop():
            return True
        if not bool(self.alive.any()):
            return True
        return self.sched.tol > 0 and bool((self.best_loss[self.alive] < self.sched.tol).all())


def _adam(runner: _Runner, sched: Schedule) -> tuple[int, bool]:
    """Adam with one learning rate per restart (plateau decay acts per restart); elementwise, so a batch of
    restarts evolves exactly as separate runs would. The image moves along the sign of its gradient."""
    device = runner.best_loss.device
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = {k: torch.zeros_like(v) for k, v in runner.vars.items()}
    v2 = {k: torch.zeros_like(v) for k, v in runner.vars.items()}
    lr = torch.full((sched.restarts,), sched.lr, device=device)
    milestones = _milestones(sched.iterations)
    plateau_best = [math.inf] * sched.restarts
    plateau_since = [0] * sched.restarts
    it = 0
    started = time.perf_counter()
    warm: tuple[int, float] | None = None  # (iteration, time) at the first look: the first iterations' one-off
    # costs (autograd's first graph, allocations) are no measure of the rate; measured: 0.3 s, then 1 ms each
    while it < sched.iterations:
        grads, _ = runner.evaluate(it)
        grads["x"] = grads["x"].sign()
        it += 1
        scale = 0.1 ** sum(it > s for s in milestones) if sched.decay == "step" else 1.0
        with torch.no_grad():
            for k, g in grads.items():
                m[k].mul_(b1).add_(g, alpha=1 - b1)
                v2[k].mul_(b2).addcmul_(g, g, value=1 - b2)
                step = (m[k] / (1 - b1 ** it)) / ((v2[k] / (1 - b2 ** it)).sqrt() + eps)
                runner.vars[k] = runner.vars[k] - _bcast(lr * scale, step) * step
        runner.constrain()
        if it % sched.check_every == 0 or it == sched.iterations or (sched.seconds is not None and _early(it)):
            if sched.seconds is not None:
                now = time.perf_counter()
                if warm is None:
                    warm = (it, now)
                elif it - warm[0] >= 3:  # a rate from one or two iterations is noise, and a fit only ever lowers
                    sched = _fit(runner, sched, it, now - started, (now - warm[1]) / (it - warm[0]))
                    milestones = _milestones(sched.iterations)
            if sched.decay == "plateau":
                _plateau(runner, lr, plateau_best, plateau_since, it, sched.patience)
            if runner.check(it):
                return it, it < sched.iterations
    return it, False


def _milestones(iterations: int) -> list[int]:
    return [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]


def _early(it: int) -> bool:
    """With a time share, the first iterations are looked at too: on a large model 25 iterations can take a
    minute, and the share (``Schedule.seconds``) and the scan's cap must be acted on before that."""
    return it < 25 and it & (it - 1) == 0  # 1, 2, 4, 8, 16


def _fit(runner: _Runner, sched: Schedule, it: int, elapsed: float, rate: float) -> Schedule:
    """The schedule with its iterations fitted to the time share at the mean rate since the first look, never
    above the plan. Before the first decay the fit may also rise again: on a busy machine a few iterations can
    take a hundred times the others (two torch threads waiting for a core: 1 ms, then 300 ms), and the mean
    over more iterations corrects an early, too pessimistic fit. After it, the fit only ever lowers."""
    from ..clock import fitted_iterations

    assert sched.seconds is not None
    planned = runner.fitted_from or sched.iterations
    total = fitted_iterations(it, elapsed, planned, sched.seconds, rate)
    if total > sched.iterations and it >= _milestones(sched.iterations)[0]:
        return sched
    if total != sched.iterations:
        runner.fitted_from = planned if total < planned else None
        sched = dataclasses.replace(sched, iterations=total)
        runner.sched = sched
    return sched


def _plateau(runner: _Runner, lr: torch.Tensor, best: list[float], since: list[int], it: int,
             patience: int) -> None:
    """ReduceLROnPlateau per restart (relative threshold 1e-4, as torch's default), checked at host checks."""
    losses = runner.best_loss.tolist()
    for r, loss in enumerate(losses):
        if loss < best[r] * (1 - 1e-4):
            best[r], since[r] = loss, it
        elif it - since[r] >= patience:
            lr[r] *= 0.1
            since[r] = it


def _lbfgs(runner: _Runner, sched: Schedule) -> tuple[int, bool]:
    """L-BFGS (DLG) on the stacked variables. The objective is a sum of independent per-restart terms, so
    this is one joint L-BFGS over a separable problem: restarts share the curvature history and the line
    search, which is why DLG's restarts do not reproduce separate runs bit for bit (Adam's do).

    ``iterations`` counts objective evaluations, not L-BFGS steps: a strong-Wolfe line search may evaluate
    up to 25 times in one step, and the budget has to bound the cost (one step may overshoot it by that)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in runner.vars.items()}
    opt = torch.optim.LBFGS(list(leaves.values()), lr=sched.lr, max_iter=1, history_size=100,
                            line_search_fn="strong_wolfe")
    state = {"evals": 0}

    def closure() -> torch.Tensor:
        runner.vars = {k: v.detach() for k, v in leaves.items()}
        grads, loss = runner.evaluate(state["evals"])
        state["evals"] += 1
        for k, v in leaves.items():
            v.grad = grads[k]
        return torch.where(runner.alive, loss, torch.zeros_like(loss)).sum()

    next_check = sched.check_every
    while state["evals"] < sched.iterations:
        opt.step(closure)
        with torch.no_grad():
            runner.vars = {k: v.detach().clone() for k, v in leaves.items()}
            runner.constrain()
            for k, v in leaves.items():
                v.copy_(runner.vars[k])
        if state["evals"] >= next_check or state["evals"] >= sched.iterations:
            next_check = state["evals"] + sched.check_every
            if runner.check(state["evals"]):
                return state["evals"], state["evals"] < sched.iterations
    runner.evaluate(state["evals"])  # the last step's iterate has not been evaluated yet
    return state["evals"], False


def match_gradients(module: nn.Module, observed: Mapping[str, torch.Tensor], objective: Objective,
                    schedule: Schedule, *, input_shape: tuple[int, ...], num_samples: int, num_classes: int,
                    labels: torch.Tensor | None = None, loss: str = "cross_entropy",
                    bounds: tuple[torch.Tensor, torch.Tensor] | None = None, device: torch.device | None = None,
                    seed: int | None = None, observer: Observer | None = None,
                    attack: str = "attack", init: torch.Tensor | None = None,
                    local: LocalTraining | None = None) -> EngineResult:
    """Run one gradient-matching attack with ``schedule.restarts`` batched restarts; return the restart
    with the lowest objective (the attacker has no ground truth to choose by).

    ``init``: an input ``(num_samples, *input_shape)`` every restart starts from instead of a random draw
    (an attack refining another's reconstruction, e.g. feature-inversion); labels and masks start as usual.
    ``local``: the client's FedAvg local steps; with more than one they are unrolled in the objective (masks
    then have a leading step dimension), otherwise the update is matched as one gradient, as for FedSGD."""
    device = device or torch.device("cpu")
    observer = observer or NullObserver()
    if schedule.iterations < 1 or schedule.restarts < 1:
        raise ConfigError(f"{attack}: iterations and restarts must be at least 1, got "
                          f"{schedule.iterations} and {schedule.restarts}; raise them")
    if labels is None and not objective.soft_labels:
        raise ConfigError(f"{attack}: needs labels (known or recovered) unless it optimises soft labels; "
                          "recover labels first or use an attack that optimises them (dlg)")
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    sample_shape = (num_samples, *input_shape)
    pb = _build(module, observed, objective, sample_shape, num_classes, labels, loss, bounds, device, local)
    with _seeded(seed, device):
        runner = _Runner(pb, objective, schedule, seed, device, attack, observer)
        if init is not None:
            _start_from(runner, init, sample_shape, attack)
        if schedule.optimizer == "adam":
            iterations, stopped = _adam(runner, schedule)
        elif schedule.optimizer == "lbfgs":
            iterations, stopped = _lbfgs(runner, schedule)
        else:
            raise ConfigError(f"{attack}: optimizer {schedule.optimizer!r} is unknown; use adam or lbfgs")
    return _result(runner, iterations, stopped, seed, attack)


def _start_from(runner: _Runner, init: torch.Tensor, sample_shape: tuple[int, ...], attack: str) -> None:
    """Every restart starts at ``init`` (clipped to the box) rather than at its random draw."""
    if tuple(init.shape) != tuple(sample_shape):
        raise ConfigError(f"{attack}: the starting input has shape {tuple(init.shape)}, expected "
                          f"{tuple(sample_shape)}; pass one input per sample")
    x = runner.vars["x"]
    runner.vars["x"] = init.detach().to(x.device, x.dtype).expand_as(x).clone()
    runner.constrain()


def _result(runner: _Runner, iterations: int, stopped: bool, seed: int, attack: str) -> EngineResult:
    losses = runner.best_loss.cpu()
    died = runner.died_at.cpu().tolist()
    notes = [f"seed {seed} (restart r starts from seed {seed}+r)", runner.batching_note]
    if runner.fitted_from is not None:
        notes.append(f"iterations fitted to the attack's time share ({runner.sched.seconds:.0f} s): "
                     f"{runner.sched.iterations} of {runner.fitted_from} planned, the step decay kept in proportion")
    if runner.pb.local is not None:
        notes.append(f"unrolled {runner.pb.local.steps} local steps: the objective simulates the client's "
                     f"{runner.pb.local} and matches the mean step gradient (weight delta / (-lr x "
                     f"{runner.pb.local.steps})) with the update")
    for r, at in enumerate(died):
        if at >= 0:
            notes.append(f"restart {r} dropped at iteration {at}: non-finite attack loss "
                         f"(its best finite iterate {'is kept' if math.isfinite(losses[r]) else 'does not exist'})")
    finite = torch.isfinite(losses)
    if not finite.any():
        raise ModelError(f"{attack}: every restart's objective was non-finite from the start; the model's "
                         "gradients overflow on the attack's inputs -- lower the attack's lr or check the weights")
    best = int(torch.where(finite, losses, torch.full_like(losses, math.inf)).argmin())
    x = runner.best["x"][best].detach().cpu()
    if runner.pb.labels is not None:
        labels = runner.pb.labels.detach().cpu()
    elif "y" in runner.best:
        labels = runner.best["y"][best].argmax(-1).detach().cpu()
    else:
        labels = None
    masks = {k[5:]: v[best].detach().cpu() for k, v in runner.best.items() if k.startswith("mask:")}
    return EngineResult(x=x, labels=labels, loss=float(losses[best]),
                        restart_losses=tuple(float(v) if math.isfinite(v) else math.nan for v in losses.tolist()),
                        best_restart=best, iterations_run=iterations, stopped_early=stopped, notes=tuple(notes),
                        masks=masks)
