"""Startup benchmark: how long the commands that need no model take as whole processes, and what they import.

Each command runs ``--repeat`` times (default 5) as a fresh ``python -c 'from leakaudit.cli import main; main()'``
process (what the ``leakaudit`` console script runs); the fastest wall time is printed, with whether torch,
numpy, onnx or scipy was imported. ``render`` re-renders a report.json written first by a one-iteration scan
of the example MLP (not timed). Goal (issue 8): ``--help``, ``rules`` and ``render`` under 0.5 s.

``--onnx`` also runs the commands that load an ONNX model -- the README's quick-start scan cut to one photo and
the analytic attack (``scan examples/models/mlp_dropout.onnx --data examples/samples --samples 1 --attacks
analytic``) and ``inspect`` of the same file -- and prints each one's median CPU seconds (user + system) and
median peak RSS, with whether torchvision or ``torch._dynamo`` was imported.

Issue 22: onnx2torch's NonMaxSuppression and RoiAlign converters import torchvision, which imports
``torch._dynamo`` and sympy; the loader now imports them only for a graph with one of those ops
(``leakaudit/models/onnx2torch_import.py``), and a batch of one is matched without importing scipy
(``metrics/matching.py``). ``OMP_NUM_THREADS=1 PYTHONPATH=TREE python benchmarks/bench_startup.py --onnx
--repeat 3``, run alternately on the tree before the change (A) and after it (B), two rounds each, on a shared
2-core machine (load average 4.4-5.2):

    command          CPU s (A -> B)             peak RSS (A -> B)
    scan, 1 photo    4.38, 4.51 -> 2.94, 2.69   916, 904 -> 725, 740 MiB
    inspect          4.16, 3.60 -> 2.45, 2.40   841, 841 -> 682, 682 MiB

Usage: python benchmarks/bench_startup.py [--repeat N] [--onnx]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "onnx", "scipy")
ONNX_HEAVY = ("torchvision", "torch._dynamo")
# main() ends in sys.exit: the heavy modules loaded by then are written from an atexit hook, to stderr's end
def _probe(heavy: tuple[str, ...]) -> str:
    return ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write(\n"
            f"    '\\nheavy: ' + ','.join(m for m in {heavy!r} if m in sys.modules)))\n"
            "from leakaudit.cli import main\n"
            "main()\n")


_PROBE = _probe(HEAVY)


def _run(args: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"leakaudit {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    heavy = done.stderr.rpartition("heavy: ")[2].strip()
    return seconds, heavy or "none"


def _run_measured(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """CPU seconds (user + system) and peak RSS in MiB of one fresh process, with the ONNX_HEAVY it imported."""
    child = subprocess.Popen([sys.executable, "-c", _probe(ONNX_HEAVY), *args], cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own usage; RUSAGE_CHILDREN would sum all of them
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"leakaudit {' '.join(args)}: exit {child.returncode}\n{stderr}")
    heavy = stderr.rpartition("heavy: ")[2].strip()
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, heavy or "none"


def _report(folder: Path) -> Path:
    """A report.json to re-render: the example MLP, one analytic attack, one iteration (setup, not timed)."""
    examples = ROOT / "examples"
    subprocess.run([sys.executable, "-c", "from leakaudit.cli import main; main()", "scan",
                    str(examples / "models" / "mlp.safetensors"), "--data", str(examples / "samples"),
                    "--attacks", "analytic", "--iterations", "1", "--quiet", "--exit-zero", "--format", "json",
                    "--output-dir", str(folder)], check=False, capture_output=True, cwd=folder)
    path = folder / "report.json"
    if not path.is_file():
        raise SystemExit("could not write the report.json that render re-renders (the setup scan failed)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the fastest is printed")
    parser.add_argument("--onnx", action="store_true",
                        help="also the quick-start ONNX scan and inspect: median CPU seconds and peak RSS")
    options = parser.parse_args()
    repeat = options.repeat
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report = _report(folder)
        commands = {"leakaudit --help": ["--help"], "leakaudit rules": ["rules"],
                    "leakaudit render report.json": ["render", str(report), "--output", str(folder / "r.html")],
                    "leakaudit scan --help": ["scan", "--help"]}
        print(f"{'command':<32} {'fastest of ' + str(repeat):>14}  heavy modules imported")
        for name, args in commands.items():
            runs = [_run(args, folder) for _ in range(repeat)]
            print(f"{name:<32} {min(s for s, _ in runs):>12.3f} s  {runs[0][1]}")
        if options.onnx:
            _onnx_table(folder, repeat)


def _onnx_table(folder: Path, repeat: int) -> None:
    examples = ROOT / "examples"
    model = str(examples / "models" / "mlp_dropout.onnx")
    commands = {"leakaudit scan (quick start, 1)": ["scan", model, "--data", str(examples / "samples"), "--samples",
                                                    "1", "--attacks", "analytic", "--quiet", "--exit-zero",
                                                    "--output-dir", str(folder / "scan")],
                "leakaudit inspect": ["inspect", model]}
    print(f"\n{'command':<32} {'CPU s':>8} {'peak RSS':>10}  of {ONNX_HEAVY} imported (medians of {repeat})")
    for name, args in commands.items():
        runs = [_run_measured(args, folder) for _ in range(repeat)]
        cpu = statistics.median(c for c, _, _ in runs)
        rss = statistics.median(r for _, r, _ in runs)
        print(f"{name:<32} {cpu:>8.2f} {rss:>6.0f} MiB  {runs[0][2]}")


if __name__ == "__main__":
    main()
