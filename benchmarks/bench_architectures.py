"""The attack suite over standard architectures: does a default scan find the leak a new user's model has?

For each standard architecture (random weights, as a user would bring it untrained or early in training) it
builds the model with torchvision / timm, exports it to ONNX in training mode the way the docs recommend
(TorchScript exporter, ``TrainingMode.TRAINING``, so BatchNorm and dropout survive), writes a folder of
real 32x32 photos (the bundled ``examples/samples``), and runs ``leakaudit scan`` as a user would, once per
case, on one client batch of photos drawn with the seed (``--batches`` for more):

- ``undefended``: the model without dropout, no simulated defense -- every one of these leaks, so the
  honest verdict is FAIL (or INCONCLUSIVE when the attacks are too weak; never PASS);
- ``dropout``: the same architecture with dropout (its own classifier dropout where it has one);
- ``noise``: the undefended model with ``--defense noise:sigma=SIGMA`` (a strong noise defense: its verdict
  should be PASS backed by a control that reconstructs, not a false INCONCLUSIVE);
- ``bn-eval``: the undefended model trained by a client whose BatchNorm is in eval mode (frozen statistics,
  ``--client-batchnorm eval``), which allows batch 1: each photo is its own client batch.

It prints one markdown row per case and attack: SSIM / PSNR (means over the batch, after matching), the
attack's time, the scan's wall time, exit code and verdict, and whether the positive control reconstructed;
then, per scan, how many photos the report counts as recognised (docs/recognition.md), the attack that scored
best on most of them, and the medians of ``ssim_skill`` and ``match_p`` over the photos. Every figure is
measured by this run.

Usage:
  python benchmarks/bench_architectures.py                         # every architecture, standard budget
  python benchmarks/bench_architectures.py --budget quick --arch convnet --case undefended
  python benchmarks/bench_architectures.py --timeout 900 --threads 2 --keep /tmp/suite
  python benchmarks/bench_architectures.py --arch resnet20 --arch resnet18 --case bn-eval --batches 6 --threads 1

timm is optional (``pip install timm``): without it the ViT rows say so and are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")  # the exporter we choose

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "samples"
EXIT = {0: "PASS", 1: "FAIL", 2: "bad input", 3: "internal error", 4: "INCONCLUSIVE"}


class TutorialConvNet(nn.Module):
    """The CIFAR ConvNet of the FL tutorials (Flower, TFF): two conv3x3 + maxpool blocks, two Linear layers."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet18(dropout: float) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=10)
    if dropout:  # torchvision's ResNet has no dropout; users who add one put it before the classifier
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


def _mobilenet(dropout: float) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    return mobilenet_v3_small(weights=None, num_classes=10, dropout=dropout)


def _zoo(name: str) -> Callable[[float], nn.Module]:
    def build(dropout: float) -> nn.Module:
        from leakaudit.models import create_model

        return create_model(name, num_classes=10, input_shape=(3, 32, 32), dropout=dropout)
    return build


def _vit(dropout: float) -> nn.Module:
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                             patch_size=4, drop_rate=dropout)


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[float], nn.Module]
    dropout: float  # the rate of the `dropout` case
    batch: int  # the smallest batch the model trains with (train-mode BatchNorm needs 2 on a 1x1 map)
    needs: str = ""  # optional module


ARCHS = {a.name: a for a in (
    Arch("convnet", lambda p: TutorialConvNet(dropout=p), 0.25, 1),
    Arch("flower", _zoo("flower"), 0.5, 1),  # Flower's quickstart CNN
    Arch("resnet20", _zoo("resnet20"), 0.25, 2),  # CIFAR ResNet-20
    Arch("resnet18", _resnet18, 0.25, 2, "torchvision"),
    Arch("mobilenet_v3_small", _mobilenet, 0.2, 2, "torchvision"),
    Arch("vit_tiny", _vit, 0.1, 1, "timm"),
)}
CASES = ("undefended", "dropout", "noise", "bn-eval")


def _available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def export(arch: Arch, dropout: float, path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = arch.build(dropout).train()
    x = torch.rand(arch.batch, 3, 32, 32)
    with warnings.catch_warnings():  # the exporter's notes on BatchNorm counters are not figures of the suite
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
                          do_constant_folding=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}})


def scan(model: Path, out: Path, args: argparse.Namespace, batch: int, defense: str | None,
         batchnorm: str = "train") -> dict:
    cmd = ["leakaudit", "scan", str(model), "--data", str(SAMPLES), "--budget", args.budget,
           "--samples", str(batch * args.batches), "--batch-size", str(batch), "--device", args.device,
           "--output-dir", str(out), "--seed", str(args.seed), "--client-batchnorm", batchnorm]
    if defense:
        cmd += ["--defense", defense]
    env = None
    if args.threads:
        cmd += ["--threads", str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"wall": time.perf_counter() - started, "exit": None, "verdict": f"not done in {args.timeout} s"}
    wall = time.perf_counter() - started
    result: dict = {"wall": wall, "exit": proc.returncode, "verdict": EXIT.get(proc.returncode, "?"),
                    "command": " ".join(cmd[1:])}
    report = out / "report.json"
    if not report.exists():
        result["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return result
    data = json.loads(report.read_text())
    result["attacks"] = [a for a in data["attacks"] if a["status"] == "ran"]
    control = data.get("control") or {}
    result["control"] = control.get("status") == "ran" and bool(control.get("reconstructed"))
    result["samples"] = (data.get("coverage") or {}).get("samples", [])
    return result


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def rows(arch: str, case: str, batch: int, r: dict) -> list[str]:
    head = f"| {arch} | {case} | {batch} |"
    tail = f" {r['wall']:.0f} | {r['verdict']} | {'yes' if r.get('control') else 'no'} |"
    if "attacks" not in r:
        return [head + f" – | – | – | – |{tail}" + (f" {r['error']}" if "error" in r else "")]
    out = []
    for a in r["attacks"]:
        m = a.get("means") or {}
        out.append(head + f" {a['name']} | {_fmt(m.get('ssim'))} | {_fmt(m.get('psnr'))} | "
                          f"{_fmt(a.get('seconds'), 2)} |{tail}")
    return out


def recognition(arch: str, case: str, r: dict) -> str:
    """The scan's photos under the recognition criterion: recognised of N, the attack best on most photos, the
    medians of its ssim_skill and match_p over the photos, the scan's seconds."""
    samples = r.get("samples") or []
    if not samples:
        return f"| {arch} | {case} | {r['verdict']} | – | – | – | – | {r['wall']:.0f} |"
    best = Counter(s["attack"] for s in samples if s.get("attack"))
    skill = [s["metrics"]["ssim_skill"] for s in samples if s["metrics"].get("ssim_skill") is not None]
    p = [s["metrics"]["match_p"] for s in samples if s["metrics"].get("match_p") is not None]
    return (f"| {arch} | {case} | {r['verdict']} | {sum(bool(s['recognised']) for s in samples)} of {len(samples)} | "
            f"{', '.join(f'{a} ({n})' for a, n in best.most_common()) or '–'} | "
            f"{_fmt(statistics.median(skill) if skill else None, 2)} | "
            f"{_fmt(statistics.median(p) if p else None, 2)} | {r['wall']:.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", choices=sorted(ARCHS), help="architecture(s); default: all")
    ap.add_argument("--case", action="append", choices=CASES, help="case(s); default: all")
    ap.add_argument("--budget", default="standard", choices=("quick", "standard", "thorough"))
    ap.add_argument("--sigma", type=float, default=0.1, help="noise defense strength (default 0.1)")
    ap.add_argument("--batches", type=int, default=1,
                    help="client batches per scan (default 1: one batch of photos drawn with the seed)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads of each scan (--threads, OMP_NUM_THREADS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per scan before it counts as not done")
    ap.add_argument("--keep", type=Path, help="keep models and reports in this folder")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="leakaudit-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"command: python benchmarks/bench_architectures.py {' '.join(sys.argv[1:])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, budget {args.budget}, "
          f"data: examples/samples (32x32 photos), noise sigma {args.sigma}\n")
    print("| model | case | batch | attack | SSIM | PSNR dB | attack s | scan s | verdict | control reconstructed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    try:
        for name in args.arch or list(ARCHS):
            arch = ARCHS[name]
            if arch.needs and not _available(arch.needs):
                print(f"| {name} | – | – | skipped: {arch.needs} is not installed | | | | | | |")
                continue
            for case in args.case or CASES:
                dropout = arch.dropout if case == "dropout" else 0.0
                model = work / f"{name}_p{dropout:g}.onnx"
                if not model.exists():
                    export(arch, dropout, model, args.seed)
                defense = f"noise:sigma={args.sigma:g}" if case == "noise" else None
                # Frozen BatchNorm statistics make batch 1 a batch the client can train with.
                batch, batchnorm = (1, "eval") if case == "bn-eval" else (arch.batch, "train")
                r = scan(model, work / f"{name}-{case}", args, batch, defense, batchnorm)
                print("\n".join(rows(name, case, batch, r)), flush=True)
                summary.append(recognition(name, case, r))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| model | case | verdict | recognised | best attack (photos) | median ssim_skill | median match_p "
          "| scan s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
