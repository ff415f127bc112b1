"""Startup benchmark: how long the commands that need no model take as whole processes, and what they import.

Each command runs ``--repeat`` times (default 5) as a fresh ``python -c 'from leakaudit.cli import main; main()'``
process (what the ``leakaudit`` console script runs); the fastest wall time is printed, with whether torch,
numpy, onnx or scipy was imported. ``render`` re-renders a report.json written first by a one-iteration scan
of the example MLP (not timed). Goal (issue 8): ``--help``, ``rules`` and ``render`` under 0.5 s.

Usage: python benchmarks/bench_startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "onnx", "scipy")
# main() ends in sys.exit: the heavy modules loaded by then are written from an atexit hook, to stderr's end
_PROBE = ("import atexit, sys\n"
          "atexit.register(lambda: sys.stderr.write(\n"
          f"    '\\nheavy: ' + ','.join(m for m in {HEAVY!r} if m in sys.modules)))\n"
          "from leakaudit.cli import main\n"
          "main()\n")


def _run(args: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"leakaudit {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    heavy = done.stderr.rpartition("heavy: ")[2].strip()
    return seconds, heavy or "none"


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
    repeat = parser.parse_args().repeat
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


if __name__ == "__main__":
    main()
