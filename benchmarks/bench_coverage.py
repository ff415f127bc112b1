"""Coverage (issue 10 item 1): what auditing every sample costs, as a user runs `leakaudit scan`.

1. The README example (examples/samples, 6 photos; mlp_dropout.onnx), first batch only (--samples 1) vs every
   sample (the default).
2. A 64-image folder (random smooth 8x8 RGB images, a tiny MLP, the analytic attack) at batch 1 and 4: the
   recognised fraction and its interval, and the wall time.

    python3 benchmarks/bench_coverage.py

Prints one row per scan: wall seconds, batches, recognised / audited, 95% Clopper-Pearson interval, verdict.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def scan(args: list[str], out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run(["leakaudit", "scan", *args, "--output-dir", str(out), "--quiet",
                    "--format", "json"], cwd=ROOT, check=False)
    seconds = time.perf_counter() - t0
    return seconds, json.loads((out / "report.json").read_text())


def row(name: str, seconds: float, doc: dict) -> str:
    c = doc["coverage"]
    i = c["interval"]
    return (f"{name:<44} {seconds:7.1f} s  batches {c['batches_run']:>3}  recognised {c['recognised']:>3}/"
            f"{c['audited']:<3} 95% CI {i['lower']:.3f}-{i['upper']:.3f}  {doc['verdict']['overall']}")


def folder64(root: Path) -> tuple[Path, Path]:
    import numpy as np
    import torch
    from PIL import Image

    from leakaudit.models import create_model
    from leakaudit.models.safetensors_loader import save_safetensors

    torch.manual_seed(0)
    shape = (3, 8, 8)
    model = create_model("mlp", num_classes=4, input_shape=shape, hidden=(32,))
    save_safetensors(model, root / "mlp.safetensors", arch="mlp", input_shape=shape, num_classes=4,
                     arch_kwargs={"hidden": [32]})
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,label"]
    for i in range(64):
        yy, xx = np.mgrid[0:8, 0:8] / 7.0
        img = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * rng.uniform(0.3, 1.0, size=3)
        img[rng.integers(0, 6):, rng.integers(0, 6):] *= 0.3
        Image.fromarray((img * 255).astype(np.uint8)).save(images / f"img{i:02d}.png")
        rows.append(f"img{i:02d}.png,{i % 4}")
    (images / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "mlp.safetensors", images


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        readme = ["examples/models/mlp_dropout.onnx", "--data", "examples/samples"]
        for name, extra in (("README example, --samples 1", ["--samples", "1"]), ("README example, all (default)", [])):
            print(row(name, *scan(readme + extra, work / name.replace(" ", "_"))), flush=True)
        model, images = folder64(work)
        for batch in (1, 4):
            args = [str(model), "--data", str(images), "--attacks", "analytic", "--batch-size", str(batch)]
            print(row(f"64 images, analytic, batch {batch}", *scan(args, work / f"b{batch}")), flush=True)
        args = [str(model), "--data", str(images), "--attacks", "analytic", "--defense", "noise:sigma=10"]
        print(row("64 images, analytic, batch 1, noise sigma=10", *scan(args, work / "noise")), flush=True)


if __name__ == "__main__":
    main()
