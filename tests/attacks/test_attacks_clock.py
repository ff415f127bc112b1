"""Budgets in time (issue 24): attacks fit their iterations to their share of the scan's cap, the cap stops them,
and a scan the cap cut short cannot pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from leakaudit.attacks.clock import BUDGET_SECONDS, Clock, TimedObserver, fitted_iterations, max_time
from leakaudit.attacks.engine import Objective, Schedule, match_gradients
from leakaudit.audit import audit
from leakaudit.data import SampleBatch, normalization
from leakaudit.models import LoadedModel, create_model
from leakaudit.progress import NullObserver


def test_fitted_iterations_follow_the_measured_rate_and_never_exceed_the_plan():
    # 10 iterations took 1 s: a 5 s share holds 50 of the 600 planned
    assert fitted_iterations(10, 1.0, 600, 5.0) == 50
    assert fitted_iterations(10, 1.0, 600, 1000.0) == 600  # the plan is the ceiling
    assert fitted_iterations(10, 1.0, 600, 0.1) == 10  # never fewer than already ran
    assert fitted_iterations(10, 1.0, 600, float("inf")) == 600
    # a slow first iteration is no measure of the rest: 10 done in 1 s, then 10 ms each -> 10 + 4 s / 10 ms
    assert fitted_iterations(10, 1.0, 600, 5.0, rate=0.01) == 410


def test_the_cap_defaults_to_the_budget_and_a_given_one_wins():
    assert max_time("quick", None) == BUDGET_SECONDS["quick"] <= 120
    assert max_time("standard", 30) == 30.0


def test_a_clock_shares_what_is_left_and_keeps_time_for_scoring():
    now = time.time()
    clock = Clock.start(now, 100.0, waves=2)
    assert clock.end == pytest.approx(now + 90.0)  # 10% of the cap is kept for scoring and the reports
    assert clock.batch_seconds == pytest.approx(45.0, abs=0.5)
    assert clock.share(now + 30.0, 3) == pytest.approx(10.0, abs=0.5)
    assert not clock.over() and Clock.start(now - 200.0, 100.0).over()


def test_a_timed_observer_asks_to_stop_at_its_end_and_says_why():
    watched = TimedObserver(NullObserver(), time.time() - 1)
    assert watched.should_stop() and watched.timed_out
    assert not TimedObserver(NullObserver(), time.time() + 60).should_stop()


def _linear_problem() -> tuple[nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.rand(1, 1, 4, 4), torch.tensor([1])
    loss = nn.functional.cross_entropy(net(x), y)
    names = [n for n, _ in net.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(net.parameters())), strict=True))
    return net, grads, y


def test_the_engine_fits_its_iterations_to_the_time_share_and_completes_the_fitted_schedule():
    net, grads, y = _linear_problem()
    kw = dict(input_shape=(1, 4, 4), num_samples=1, num_classes=3, labels=y, seed=0)
    fitted = match_gradients(net, grads, Objective(), Schedule(iterations=10**6, seconds=0.5), **kw)
    assert 1 <= fitted.iterations_run < 10**6 and not fitted.stopped_early  # finished its (shorter) schedule
    assert any("fitted to the attack's time share" in n for n in fitted.notes)
    plain = match_gradients(net, grads, Objective(), Schedule(iterations=40), **kw)
    assert plain.iterations_run == 40 and not any("fitted" in n for n in plain.notes)


def _tiny() -> tuple[LoadedModel, SampleBatch]:
    torch.manual_seed(0)
    net = create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,))
    model = LoadedModel(net, (1, 8, 8), 4, Path("mlp.safetensors"), "0" * 64, "safetensors", arch="mlp")
    pixels = torch.rand(1, 1, 8, 8)
    return model, SampleBatch(pixels, torch.tensor([2]), pixels, ("a.png",), "in memory",
                              normalization("none", channels=1))


def test_a_scan_that_reaches_its_cap_is_inconclusive_with_the_reason_not_a_pass():
    model, batch = _tiny()
    earned = audit(model, batch, attacks=("analytic",), defenses=("noise:sigma=1.0",))
    assert earned.overall == "pass"  # the control reconstructs the undefended update: the pass is earned
    capped = audit(model, batch, attacks=("analytic",), defenses=("noise:sigma=1.0",), max_time=1e-3)
    assert capped.overall == "inconclusive"
    assert [a.status for a in capped.attacks] == ["skipped"] and "time cap" in capped.attacks[0].reason
    assert "time cap" in capped.control.limited and capped.control.counts is False
    assert "time cap" in capped.outcome.summary and "--max-time" in capped.outcome.summary


def test_a_leak_found_before_the_cap_stands():
    model, batch = _tiny()
    result = audit(model, batch, attacks=("analytic",), max_time=60)
    assert result.overall == "fail" and result.control.limited == ""


def test_fitted_iterations_are_pinned_for_the_control_and_reported(monkeypatch):
    import leakaudit.attacks.clock as clock

    monkeypatch.setattr(clock, "fitted_iterations", lambda done, elapsed, planned, seconds, rate=None: max(done, 20))
    model, batch = _tiny()
    result = audit(model, batch, attacks=("ig",), budget="quick", defenses=("noise:sigma=1.0",), restarts=1)
    assert result.fitted_iterations() == {"ig": 20}
    control_ig = [a for a in result.control.attacks if a.name == "ig"]
    # the control never out-spends the defended attack: it runs the iterations the main run was fitted to
    assert control_ig and control_ig[0].iterations_planned == 20


def test_pinned_iterations_are_not_fitted(monkeypatch):
    import leakaudit.attacks.clock as clock

    monkeypatch.setattr(clock, "fitted_iterations", lambda done, elapsed, planned, seconds, rate=None: max(done, 20))
    model, batch = _tiny()
    result = audit(model, batch, attacks=("ig",), budget="quick", attack_iterations={"ig": 30}, restarts=1)
    ig = result.attacks[0]
    assert (ig.iterations_planned, ig.iterations_run) == (30, 30) and result.fitted_iterations() == {}


def test_an_early_pessimistic_fit_rises_again_before_the_first_decay_but_not_after():
    from types import SimpleNamespace

    from leakaudit.attacks.engine import _fit

    runner = SimpleNamespace(fitted_from=None, sched=None)
    sched = Schedule(iterations=600, seconds=10.0)
    # a busy machine: the first iterations took 0.3 s each, so 600 cannot fit a 10 s share
    slow = _fit(runner, sched, 4, 1.2, 0.3)
    assert slow.iterations < 40 and runner.fitted_from == 600
    # before the first decay (3/8 of the fitted count) the mean rate has fallen to 10 ms: the plan fits again
    again = _fit(runner, slow, 8, 1.3, 0.01)
    assert again.iterations == 600 and runner.fitted_from is None
    # once the decay began, a better rate no longer raises the count (the step schedule is under way)
    runner.fitted_from = 600  # fitted down to 40 earlier; iteration 20 is past 3/8 of 40
    late = _fit(runner, Schedule(iterations=40, seconds=10.0), 20, 5.0, 0.001)
    assert late.iterations == 40 and runner.fitted_from == 600
    assert _fit(runner, Schedule(iterations=40, seconds=10.0), 10, 5.0, 0.001).iterations == 600  # before it
