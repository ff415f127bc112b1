"""Torch threads of a scan (issue 21, item 10): chosen at scan start, not torch's default (the machine's
cores, blind to a container's CPU quota and to --workers), and stated in the report's notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leakaudit.cli import app_main
from leakaudit.config import ScanSettings
from leakaudit.coverage import executors


@pytest.fixture
def cpus(monkeypatch):
    """This process may use 8 CPUs, whatever the test machine has."""
    monkeypatch.setattr(executors, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("settings, environ, threads, why", [
    (ScanSettings(), {}, 8, "the CPU(s) available to this process"),
    (ScanSettings(executor="processes", workers=3), {}, 2, "shared by --workers 3"),
    (ScanSettings(executor="processes", workers=16), {}, 1, "shared by --workers 16"),
    (ScanSettings(), {"OMP_NUM_THREADS": "2"}, 2, "OMP_NUM_THREADS=2"),
    (ScanSettings(threads=3), {"OMP_NUM_THREADS": "2"}, 3, "(--threads)"),  # the flag wins
    (ScanSettings(), {"OMP_NUM_THREADS": "lots"}, 8, "available"),  # not a count: as if unset
])
def test_the_thread_count_is_the_flag_then_omp_then_the_cpus_shared_by_the_workers(cpus, settings, environ,
                                                                                     threads, why):
    chosen, note = executors.choose_threads(settings, environ)
    assert chosen == threads and f"{threads} torch thread(s) per batch" in note and why in note


def _cgroup(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return str(root)


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, docker run --cpus 1.5
    ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
    ({}, None),  # no cgroup file system
])
def test_a_container_cpu_quota_is_read_from_the_cgroup_files(tmp_path, monkeypatch, files, quota):
    monkeypatch.setattr(Path, "read_text", _without_proc(Path.read_text))
    assert executors.cgroup_cpu_quota(_cgroup(tmp_path, files)) == quota


def _without_proc(read_text):
    """/proc/self/cgroup names this machine's own groups; the tests use the files at the root alone."""
    def read(self, *args, **kwargs):
        if str(self) == "/proc/self/cgroup":
            raise OSError("not in this test")
        return read_text(self, *args, **kwargs)
    return read


def test_a_quota_below_the_affinity_lowers_the_cpu_count(monkeypatch):
    monkeypatch.setattr(executors, "cgroup_cpu_quota", lambda: 1.5)
    assert executors.cpu_count() == 1
    monkeypatch.setattr(executors, "cgroup_cpu_quota", lambda: None)
    assert executors.cpu_count() >= 1


def test_a_scan_runs_the_chosen_threads_and_its_report_says_how_many(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[2]
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    try:
        code = app_main(["scan", str(root / "examples" / "models" / "mlp_dropout.onnx"), "--data",
                         str(root / "examples" / "samples"), "--samples", "1", "--threads", "1", "--quiet",
                         "--format", "json", "--output-dir", str(tmp_path / "r")])
        assert torch.get_num_threads() == 1  # the flag beat OMP_NUM_THREADS=2
    finally:
        torch.set_num_threads(before)
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert code == 1 and "1 torch thread(s) per batch (--threads)" in doc["notes"]
    assert "--threads" not in doc["command"] and "threads" not in doc["settings"]  # how it ran, like --workers


def test_the_python_api_runs_an_explicit_thread_count():
    from leakaudit.audit import audit

    root = Path(__file__).resolve().parents[2]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = audit(str(root / "examples" / "models" / "mlp_dropout.onnx"), str(root / "examples" / "samples"),
                       samples=1, attacks=("analytic",), threads=1)
        assert torch.get_num_threads() == 1 and result.overall == "fail"
    finally:
        torch.set_num_threads(before)
