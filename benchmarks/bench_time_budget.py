"""Time-budget benchmark: does ``--budget quick`` end within its cap (120 s) on the models FL engineers deploy,
and what did each attack get? (issue 24: efficientnet_b0 at 64 px ran over 15 min at quick before budgets were
time.)

Each model (random init, exported to ONNX in training mode, as a user would) is scanned on bundled photos
(chelsea; rocket too at batch 2) with ``leakaudit scan --budget quick`` in a subprocess; the script prints the
wall time of the whole command (Python start-up included), the exit code, the verdict, and per attack the
iterations it ran of those planned.

Usage: python benchmarks/bench_time_budget.py [--budget quick] [--models flower_cnn,resnet20,...] [--max-time S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = [ROOT / "examples" / "samples" / f"{name}.png" for name in ("chelsea", "rocket")]


def _zoo(name: str) -> nn.Module:
    from leakaudit.models import create_model

    return create_model(name, num_classes=10, input_shape=(3, 32, 32))


def _torchvision(name: str) -> nn.Module:
    import torchvision

    return getattr(torchvision.models, name)(num_classes=10)


# name -> (factory, input side, batch size)
MODELS = {
    "flower_cnn": (lambda: _zoo("flower"), 32, 1),  # Flower's quickstart CNN
    "resnet20": (lambda: _zoo("resnet20"), 32, 2),
    "squeezenet1_1": (lambda: _torchvision("squeezenet1_1"), 64, 1),
    "shufflenet_v2_x0_5": (lambda: _torchvision("shufflenet_v2_x0_5"), 64, 2),
    "efficientnet_b0": (lambda: _torchvision("efficientnet_b0"), 64, 2),
    "resnet18": (lambda: _torchvision("resnet18"), 32, 2),
    "mobilenet_v3_small": (lambda: _torchvision("mobilenet_v3_small"), 32, 2),
}


def export(name: str, path: Path) -> int:
    factory, side, batch = MODELS[name]
    torch.manual_seed(0)
    model = factory().train()
    warnings.filterwarnings("ignore")  # the TorchScript exporter's deprecation notes, once per model
    torch.onnx.export(model, torch.rand(batch, 3, side, side), str(path), dynamo=False,
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    return batch


def scan(model: Path, batch: int, out: Path, args: argparse.Namespace) -> tuple[float, int, dict]:
    data = model.parent / "data"
    for i, photo in enumerate(PHOTOS[:batch]):  # one class folder per photo: the label is the folder
        (data / str(i)).mkdir(parents=True, exist_ok=True)
        (data / str(i) / photo.name).write_bytes(photo.read_bytes())
    cmd = [sys.executable, "-m", "leakaudit", "scan", str(model), "--data", str(data), "--budget", args.budget,
           "--batch-size", str(batch), "--output-dir", str(out), "--quiet", "--format", "json"]
    cmd += ["--max-time", str(args.max_time)] if args.max_time else []
    t0 = time.perf_counter()
    code = subprocess.run(cmd, check=False).returncode
    seconds = time.perf_counter() - t0
    doc = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return seconds, code, doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--max-time", type=float, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep each model's report in KEEP/MODEL/")
    args = ap.parse_args()
    print("| model | batch | wall s | exit | verdict | attacks: iterations run / planned |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            batch = export(name, path)
            out = args.keep / name if args.keep else Path(tmp) / "report"
            seconds, code, doc = scan(path, batch, out, args)
            ran = [f"{a['name']} {a['iterations_run']}/{a['iterations_planned']}"
                   + (" (cap)" if "time cap" in (a.get("reason") or "") else "")
                   for a in doc.get("attacks", []) if a.get("status") in ("ran", "interrupted")]
            verdict = (doc.get("verdict") or {}).get("overall", "no report")
            print(f"| {name} | {batch} | {seconds:.0f} | {code} | {verdict} | {'; '.join(ran) or '-'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
