"""Executors (issue 10 item 3): the wall time of a 64-image folder scan (a tiny MLP, the analytic attack; the
folder of ``bench_coverage.py``) at batch 1 and 4, in-process, with 2 local worker processes and on a local
Ray instance, as a user runs ``leakaudit scan`` (each a fresh process: start-up, model load and report
included), each at one torch thread (OMP_NUM_THREADS=1: see ``scan``).

    python3 benchmarks/bench_executors.py          # Ray rows need: pip install 'leakaudit[ray]'

Prints one row per scan: wall seconds, the speed-up over in-process (in-process wall / this wall: below 1 is
slower), and whether the report's figures equal the in-process ones (every JSON field but the wall-clock
times). A third scan, 16 images with 2000 iterations of Inverting Gradients per batch, shows batches that take
seconds.

On paper: batches are independent jobs, so on N nodes (one worker each) a scan of B batches would ideally take
the time of ceil(B / N) batches plus one model load and Ray start per node -- bounded below by the slowest
batch and by each worker's model load, and above by the in-process time. On this folder a batch takes
milliseconds (the analytic attack is closed-form), so start-up (spawning workers that import torch, starting
Ray) dominates and the workers cannot win; the speed-up appears when a batch runs optimisation attacks
(seconds to minutes per batch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "coverage"))

from bench_coverage import folder64  # noqa: E402 -- the 64-image folder, made the same way
from test_coverage_executors import without_times  # noqa: E402 -- the fields that may differ: times only

EXECUTORS = (("in-process", ["--executor", "inprocess"]), ("2 workers", ["--executor", "processes", "--workers", "2"]),
             ("local Ray", ["--executor", "ray"]))


def scan(args: list[str], out: Path) -> tuple[float, dict]:
    # one torch thread per process: a worker runs the scan's own thread count (so that the figures are the
    # in-process ones), and at 1 the two workers and two Ray tasks fill the 2 cores without oversubscribing them
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(["leakaudit", "scan", *args, "--output-dir", str(out), "--quiet",
                    "--format", "json"], cwd=ROOT, check=False, env=env)
    seconds = time.perf_counter() - t0
    return seconds, json.loads((out / "report.json").read_text())


SCANS = (  # (label, scan options): the two, and one whose batches take seconds (an optimisation attack)
    ("64 images, batch 1", ["--attacks", "analytic", "--batch-size", "1"]),
    ("64 images, batch 4", ["--attacks", "analytic", "--batch-size", "4"]),
    ("16 images, batch 4, ig x2000", ["--attacks", "ig", "--iterations", "2000", "--restarts", "1", "--batch-size", "4",
                                     "--samples", "16"]),
)


def main() -> None:
    has_ray = importlib.util.find_spec("ray") is not None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, images = folder64(work)
        print(f"{'scan':<44} {'wall':>8}  {'speed-up':>8}  report", flush=True)
        for scan_label, options in SCANS:
            base: tuple[float, dict] | None = None
            for name, extra in EXECUTORS:
                label = f"{scan_label}, {name}"
                if name == "local Ray" and not has_ray:
                    print(f"{label:<44} skipped: Ray is not installed (pip install 'leakaudit[ray]')", flush=True)
                    continue
                seconds, doc = scan([str(model), "--data", str(images), *options, *extra], work / "out")
                base = base or (seconds, doc)  # in-process: the reference (one folder: the report records it)
                same = "same figures" if without_times(doc) == without_times(base[1]) else "FIGURES DIFFER"
                c = doc["coverage"]
                print(f"{label:<44} {seconds:7.1f} s  {base[0] / seconds:7.2f}x  {same}; {c['recognised']}/"
                      f"{c['audited']} recognised in {c['batches_run']} batches", flush=True)


if __name__ == "__main__":
    main()
