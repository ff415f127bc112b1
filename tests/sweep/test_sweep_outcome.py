"""A sweep value gets the scan's own verdict (leakaudit.verdict.outcome): a value whose attacks all crashed is
an error (no verdict), never a pass; a leak found beside a crashed attack is still a fail."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from leakaudit import audit as A
from leakaudit.config import ScanSettings
from leakaudit.data.interface import Normalization
from leakaudit.detect.interface import Findings
from leakaudit.sweep.interface import DONE, ERROR, INTERRUPTED
from leakaudit.sweep.pipeline import point_from_audit


def result(*, leaked: bool, crashed: bool, incomplete: bool = False) -> A.AuditResult:
    now = datetime.now(timezone.utc)
    samples = (A.SampleScore(0, 0, "s0", {"ssim": 0.9 if leaked else 0.1}),)
    attacks = [A.AttackOutcome("analytic", "ran", samples=samples, seconds=0.1)] if leaked else []
    if crashed:
        attacks.append(A.AttackOutcome("ig", "failed", reason="RuntimeError: derivative for "
                                       "aten::hardsigmoid_backward is not implemented"))
    status = "fail" if leaked else "not_evaluated"
    rule = A.RuleOutcome("ssim-any", "ssim", ">=", 0.6, "fail", "any", status, observed=0.9 if leaked else None)
    return A.AuditResult(
        model=A.ModelCard("m.safetensors", "0" * 64, "safetensors", (1, 4, 4), 2, 1, "mlp"),
        findings=Findings(layers=()), data=A.DataCard("d.npz", 1, (1, 4, 4), Normalization("none", (0.0,), (1.0,)),
                                                     ("s0",), (1,)),
        threat=A.ThreatModel(), attacks=tuple(attacks), rules=(rule,), rules_overall="fail" if leaked else "pass",
        rules_profile="default", strict=False, seed=0, device="cpu", started_at=now, finished_at=now,
        settings=ScanSettings(), incomplete=incomplete, incomplete_reason="interrupted" if incomplete else "")


@pytest.mark.parametrize("leaked, crashed, incomplete, status, passed", [
    (False, True, False, ERROR, None),  # every attack crashed: no verdict, and so no pass
    (True, True, False, DONE, False),  # the leak is real
    (True, False, False, DONE, False),
    (False, True, True, INTERRUPTED, None),
])
def test_a_values_point_follows_the_scan_outcome(leaked, crashed, incomplete, status, passed):
    r = result(leaked=leaked, crashed=crashed, incomplete=incomplete)
    point = point_from_audit(0.1, r)
    assert (point.status, point.passed) == (status, passed)
    if status == ERROR:
        assert r.overall == "error" and "hardsigmoid_backward" in point.error and point.error_kind == "internal"
    if crashed and status == DONE:
        assert any("ig failed" in n for n in point.notes)
