"""FedAvg with several local steps: IG with the local steps unrolled in its objective (Geiping et al. 2020,
section 5) against IG that takes the weight delta for one gradient (leakaudit before issue 12).

For each model, client learning rate and photo (batch 1, labels known, CIFAR-10 normalisation) the client sends
the FedAvg update of ``--steps`` local SGD steps (``update.client``); both attacks then run the same IG settings
(iterations, restarts, TV, Adam lr, seed) on it. Printed per row:
- ``1-cos one-grad`` / ``1-cos unrolled``: each objective's gradient distance at the *true* image -- how far the
  single-gradient model of the client is from the update it explains (the unrolled one is ~0 by construction);
- SSIM / PSNR of both reconstructions against the photo, and the attack's seconds.

Usage: python benchmarks/bench_fedavg.py [--steps 5] [--lrs 0.001,0.01,0.1] [--iterations 1000] [--restarts 1]
       [--models mlp.onnx,cnn] [--photos astronaut,chelsea] [--tv 1e-4] [--threads 1]
``mlp.onnx`` is the bundled examples/models/mlp.onnx; other names are zoo architectures at 3x32x32 (seed 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 32, 32)


def _model(name: str):  # noqa: ANN202
    from leakaudit.models import load_model
    from leakaudit.models.interface import LoadedModel
    from leakaudit.models.zoo import create_model

    if name.endswith(".onnx"):
        return load_model(str(ROOT / "examples" / "models" / name))
    torch.manual_seed(0)
    module = create_model(name, num_classes=10, input_shape=SHAPE)
    return LoadedModel(module, SHAPE, 10, Path(f"{name}.safetensors"), "0" * 64, "safetensors", arch=name)


def _batch(photo: str, label: int):  # noqa: ANN202
    from leakaudit.data.interface import Normalization, SampleBatch

    image = Image.open(ROOT / "examples" / "samples" / f"{photo}.png").convert("RGB").resize(SHAPE[1:])
    pixels = (torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0)[None]
    cifar = Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    return SampleBatch(cifar.to_model(pixels), torch.tensor([label]), pixels, (photo,), "samples/", cifar)


def _distance_at_truth(target, batch, local) -> float:  # noqa: ANN001
    """The IG objective (1 - cosine, no TV) at the true image: no optimisation step is taken (lr 0)."""
    from leakaudit.attacks.engine import Objective, Schedule, match_gradients

    res = match_gradients(target.module, target.gradients, Objective(), Schedule(iterations=1, lr=0.0),
                          input_shape=SHAPE, num_samples=1, num_classes=10, labels=batch.y, bounds=target.bounds,
                          seed=0, init=batch.x, local=local)
    return res.loss


def _row(model, name: str, photo: str, label: int, steps: int, lr: float, settings) -> str:  # noqa: ANN001
    from leakaudit.attacks import ATTACKS
    from leakaudit.attacks.interface import AttackTarget
    from leakaudit.metrics.functional import psnr, ssim
    from leakaudit.progress import NullObserver
    from leakaudit.update import ThreatModel, client_update

    batch = _batch(photo, label)
    threat = ThreatModel(protocol="fedavg", local_steps=steps, local_lr=lr)
    update = client_update(model, batch, threat, seed=0)
    norm = batch.normalization
    bounds = (norm.to_model(torch.zeros(1, *SHAPE)), norm.to_model(torch.ones(1, *SHAPE)))
    unrolled = AttackTarget(module=model.module, gradients=update.gradients, input_shape=SHAPE, num_classes=10,
                            labels=batch.y, bounds=bounds, local_training=threat.local_training())
    one_gradient = dataclasses.replace(unrolled, local_training=None)
    cells = [f"{_distance_at_truth(t, batch, t.local_training):.2e}" for t in (one_gradient, unrolled)]
    for target in (one_gradient, unrolled):
        start = time.perf_counter()
        rec = ATTACKS.get("ig").run(target, settings, device=torch.device("cpu"), seed=0, observer=NullObserver())
        seconds = time.perf_counter() - start
        x = norm.to_pixels(rec.x).clamp(0, 1)
        cells += [f"{float(ssim(x, batch.pixels)):.3f}", f"{float(psnr(x, batch.pixels)):.1f}", f"{seconds:.1f}"]
    return f"| {name} | {lr:g} | {photo} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lrs", default="0.001,0.01,0.1")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--tv", type=float, default=1e-4)
    ap.add_argument("--models", default="mlp.onnx,cnn")
    ap.add_argument("--photos", default="astronaut,chelsea")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from leakaudit.attacks.interface import AttackSettings

    settings = AttackSettings(iterations=args.iterations, restarts=args.restarts, lr=0.1, tv=args.tv)
    print(f"FedAvg {args.steps} local steps, batch 1, labels known; IG {args.iterations} iterations x "
          f"{args.restarts} restart(s), TV {args.tv:g}, Adam lr 0.1, seed 0; torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    print("| model | client lr | photo | 1-cos one-grad | 1-cos unrolled | SSIM one-grad | PSNR one-grad | s "
          "| SSIM unrolled | PSNR unrolled | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    photos = args.photos.split(",")
    for name in args.models.split(","):
        model = _model(name)
        for lr in (float(v) for v in args.lrs.split(",")):
            for i, photo in enumerate(photos):
                print(_row(model, name, photo, i, args.steps, lr, settings), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
