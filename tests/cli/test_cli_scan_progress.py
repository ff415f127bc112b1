"""The CLI's progress listener: Ctrl-C once asks the scan to stop, twice aborts; output goes to stderr only."""

from __future__ import annotations

import io
import signal

import pytest
from rich.console import Console

from leakaudit.cli.progress import RichObserver
from leakaudit.progress import AttackProgress


def test_first_ctrl_c_requests_a_stop_second_aborts():
    buffer = io.StringIO()
    with RichObserver(Console(file=buffer, width=100)) as observer:
        assert signal.getsignal(signal.SIGINT) == observer._on_sigint
        assert observer.should_stop() is False
        observer._on_sigint(signal.SIGINT, None)
        assert observer.should_stop() is True
        assert "stopping at the next check" in buffer.getvalue()
        with pytest.raises(KeyboardInterrupt):
            observer._on_sigint(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is not observer._on_sigint  # handler restored


def test_attack_progress_shows_iterations_and_loss():
    buffer = io.StringIO()
    with RichObserver(Console(file=buffer, width=120)) as observer:
        observer.stage("attack dia", "DIA")
        for it in (50, 100):
            observer.attack_progress(AttackProgress("dia", it, 100, 0.25 / it))
    text = buffer.getvalue()
    assert "attack dia" in text and "100/100" in text and "loss 0.0025" in text


def test_quiet_prints_nothing_but_still_stops():
    buffer = io.StringIO()
    with RichObserver(Console(file=buffer), quiet=True) as observer:
        observer.stage("load model", "m.onnx")
        observer.attack_progress(AttackProgress("ig", 1, 10, 0.5))
        observer._on_sigint(signal.SIGINT, None)
        assert observer.should_stop()
    assert buffer.getvalue() == ""
