"""Once a cheap exact attack has settled the verdict (a fail-severity rule fired), the automatic plan does not
spend minutes on the optimisation attacks after it: no later attack can turn a leak into a pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakaudit.audit import audit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = EXAMPLES / "models" / "mlp_dropout.onnx"  # first layer Linear with bias: analytic is exact
CNN = EXAMPLES / "models" / "cnn_dropout.onnx"  # first layer Conv2d: analytic does not apply
SAMPLES = EXAMPLES / "samples"


def _by_name(result) -> dict:
    return {a.name: a for a in result.attacks}


def test_the_auto_plan_stops_after_the_attack_that_settled_a_fail():
    result = audit(MLP, SAMPLES, iterations=2, batch_size=1)
    attacks = _by_name(result)
    assert result.overall == "fail" and attacks["analytic"].status == "ran"
    for name in ("ig", "dia"):
        assert attacks[name].status == "skipped"
        assert attacks[name].reason.startswith("verdict already settled by analytic (recognised-structure")
        assert "--all-attacks" in attacks[name].reason
    assert result.control is not None and result.control.status == "not_needed"


@pytest.mark.parametrize("how", [{"all_attacks": True}, {"attacks": ("analytic", "ig", "dia")}])
def test_all_attacks_or_a_named_list_runs_every_attack_past_the_leak(how):
    attacks = _by_name(audit(MLP, SAMPLES, iterations=2, batch_size=1, **how))
    assert [attacks[n].status for n in ("analytic", "ig", "dia")] == ["ran", "ran", "ran"]


def test_attacks_that_leave_the_verdict_open_do_not_stop_the_plan():
    """Without a settled leak every planned attack runs: a pass needs all of them to fail to reconstruct.
    (Heavy noise on the update: nothing reconstructs.)"""
    result = audit(CNN, SAMPLES, iterations=2, batch_size=1, defenses=("noise:sigma=10",))
    assert result.overall != "fail"
    assert not [a for a in result.attacks if "settled" in a.reason]
    attacks = _by_name(result)
    assert attacks["ig"].status == "ran" and attacks["dia"].status == "ran"
