"""What each budget costs on the bundled example models, and what it finds: whole ``leakaudit scan`` processes.

For every example model and budget it runs ``leakaudit scan MODEL --data examples/samples --budget B`` with
the default attack plan on one client batch (``--samples 1 --batch-size 1``, the photo drawn with the seed),
once undefended and, with ``--defense``, once defended, and prints per scan: wall time, the verdict, and per
attack that ran its iterations x restarts, seconds and SSIM (adjusted) / PSNR. Every figure is measured by the
run. ``thorough`` is the papers' settings (tens of thousands of iterations) and meant for a GPU: on a CPU
give it a ``--timeout``; a scan cut by it prints as not done, with the time it was given.

Usage:
  python benchmarks/bench_budgets.py                                   # quick and standard, every example
  python benchmarks/bench_budgets.py --budget thorough --timeout 600 --models mlp_dropout.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp.onnx", "mlp_dropout.onnx", "mlp_precode.onnx", "cnn_dropout.onnx")
VERDICTS = {0: "PASS", 1: "FAIL", 2: "bad input", 3: "internal error", 4: "INCONCLUSIVE"}


def _scan(model: str, budget: str, out: Path, args: argparse.Namespace, defense: str | None) -> str:
    cmd = ["leakaudit", "scan", str(ROOT / "examples" / "models" / model), "--data", str(ROOT / "examples" / "samples"),
           "--budget", budget, "--samples", "1", "--batch-size", "1", "--seed", str(args.seed), "--device",
           args.device, "--format", "json", "--output-dir", str(out), "--quiet"]
    if defense:
        cmd += ["--defense", defense]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    head = f"| {model} | {budget} | {defense or 'none'} |"
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"{head} not done in {args.timeout:.0f} s | | |"
    wall = time.perf_counter() - started
    if not (out / "report.json").exists():
        return f"{head} {wall:.1f} | exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]} | |"
    doc = json.loads((out / "report.json").read_text())
    ran = [a for a in doc["attacks"] if a["status"] == "ran"]
    runs = {a["name"]: a for a in doc["budget"]["attacks"]}
    parts = []
    for a in ran:
        m, r = a.get("means") or {}, runs.get(a["name"], {})
        size = f"{r['iterations']} x {r['restarts']}" if r.get("iterations") else "closed form"
        parts.append(f"{a['name']} {size}: {a['seconds']:.1f} s, SSIM adj {float(m.get('ssim_adjusted', 'nan')):.2f}"
                     f" / {float(m.get('psnr', 'nan')):.1f} dB")  # JSON writes an exact copy's PSNR as "inf"
    skipped = sum(a["status"] == "skipped" for a in doc["attacks"])
    return (f"{head} {wall:.1f} | {VERDICTS.get(done.returncode, done.returncode)} | "
            f"{'; '.join(parts) or 'none'} ({skipped} skipped) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated files in examples/models")
    ap.add_argument("--budget", action="append", choices=("quick", "standard", "thorough"),
                    help="budget(s); default: quick and standard")
    ap.add_argument("--defense", default="noise:sigma=0.1", help="the defended scan's --defense ('' for none)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each scan")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per scan before it counts as not done")
    args = ap.parse_args()
    budgets = args.budget or ["quick", "standard"]
    defenses = [None, args.defense] if args.defense else [None]
    print(f"command: python benchmarks/bench_budgets.py --models {args.models} "
          + " ".join(f"--budget {b}" for b in budgets) + f" --threads {args.threads} --device {args.device}; "
          f"load average before: {os.getloadavg()[0]:.1f}\n")
    print("| model | budget | defense | scan s | verdict | attacks that ran (time, SSIM adjusted / PSNR, means) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for budget in budgets:
                for defense in defenses:
                    out = Path(tmp) / f"{model}-{budget}-{'d' if defense else 'u'}"
                    print(_scan(model, budget, out, args, defense), flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
