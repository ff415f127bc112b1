"""Which IG settings reconstruct on convolutional models: a measured grid, not a guess (issue 12).

For each model -- the tutorial CIFAR ConvNet (batch 1), torchvision resnet18 and mobilenet_v3_small with 10
classes (batch 2: train-mode BatchNorm needs two samples on their 1x1 maps) -- random weights, real 32x32
photos from ``examples/samples``, the pipeline's own client update (train mode, CIFAR normalisation, labels
known), it runs leakaudit's registered ``ig`` attack with each setting of a grid (iterations, restarts, Adam
lr, TV weight) and prints SSIM (brightness-adjusted, as the default rule judges it), plain SSIM and PSNR, best
reconstruction per original and the batch's worst, with the iterations actually run and the seconds.

A wall-clock budget per model (``--max-seconds``) caps the grid: settings are tried in the order listed, a
setting that would start after the budget is reported as "not run", and a running one stops at its next
progress check once the budget is spent (the row says how many iterations it ran) -- so the same script fits
a short GPU lease and a CPU afternoon.

Usage:
  python benchmarks/bench_ig_settings.py --device cuda --max-seconds 80
  python benchmarks/bench_ig_settings.py --models convnet --grid smoke      # a 1-minute CPU check
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 32, 32)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")

# (iterations, restarts, lr, tv): the standard budget's IG iterations at lr 0.1 with TV weights around the
# planner's 1e-4, one smaller step size, then longer runs (the thorough budget is 24,000 x 4).
GRIDS = {
    "smoke": ((30, 1, 0.1, 1e-4), (30, 1, 0.1, 1e-2)),
    "conv": ((600, 1, 0.1, 1e-4), (600, 1, 0.1, 1e-2), (600, 1, 0.1, 1e-1), (600, 1, 0.03, 1e-2),
             (2400, 1, 0.1, 1e-2), (2400, 1, 0.1, 1e-4), (8000, 1, 0.1, 1e-2)),
    "tv": ((300, 1, 0.1, 1e-4), (300, 1, 0.1, 1e-2), (300, 1, 0.1, 0.1), (300, 1, 0.1, 0.3),
           (600, 1, 0.1, 1e-2), (600, 1, 0.1, 0.1), (600, 1, 0.1, 0.3), (600, 1, 0.1, 1.0)),
    # iterations against restarts at the conv-net TV weight: what the quick/standard budgets should spend
    "budget": ((300, 1, 0.1, 0.1), (300, 2, 0.1, 0.1), (600, 1, 0.1, 0.1), (600, 2, 0.1, 0.1), (600, 4, 0.1, 0.1),
               (1200, 1, 0.1, 0.1), (1200, 2, 0.1, 0.1)),
}


class ConvNet(nn.Module):
    """The FL tutorials' CIFAR ConvNet (without its dropout: the undefended case)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _model(name: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    if name == "convnet":
        return ConvNet(), 1
    import torchvision

    if name == "resnet18":
        return torchvision.models.resnet18(num_classes=10), 2
    return torchvision.models.mobilenet_v3_small(num_classes=10, dropout=0.0), 2


def _pixels(name: str) -> torch.Tensor:
    image = Image.open(ROOT / "examples" / "samples" / f"{name}.png").convert("RGB").resize((32, 32))
    return torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0


class _Deadline:
    """An observer that asks the attack to stop once the grid's wall-clock budget is spent."""

    def __init__(self, until: float) -> None:
        self.until = until

    def stage(self, name: str, detail: str = "") -> None:
        pass

    def attack_progress(self, event: object) -> None:
        pass

    def should_stop(self) -> bool:
        return time.perf_counter() > self.until


def _target(module: nn.Module, batch_size: int, first: int = 0):  # noqa: ANN202
    from leakaudit.attacks.interface import AttackTarget
    from leakaudit.data.interface import Normalization, SampleBatch
    from leakaudit.models.interface import LoadedModel
    from leakaudit.update import ThreatModel, client_update

    cifar = Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    names = PHOTOS[first:first + batch_size]
    pixels = torch.stack([_pixels(n) for n in names])
    batch = SampleBatch(cifar.to_model(pixels), torch.arange(batch_size), pixels, names, "samples/", cifar)
    model = LoadedModel(module, SHAPE, 10, Path("m.onnx"), "0" * 64, "onnx")
    grads = client_update(model, batch, ThreatModel(), seed=0).gradients
    bounds = (cifar.to_model(torch.zeros(1, *SHAPE)), cifar.to_model(torch.ones(1, *SHAPE)))
    target = AttackTarget(module=module, gradients=grads, input_shape=SHAPE, num_classes=10, labels=batch.y,
                          num_samples=batch_size, bounds=bounds)
    return target, batch


def _scores(x: torch.Tensor, batch) -> tuple[float, float, float]:  # noqa: ANN001
    """The batch's worst sample (each original against its best reconstruction): adjusted SSIM, SSIM, PSNR."""
    from leakaudit.metrics.functional import psnr, ssim, ssim_best_adjusted

    rec = batch.normalization.to_pixels(x).clamp(0, 1)
    worst = [min(max(float(f(r[None], p[None])) for r in rec) for p in batch.pixels)
             for f in (ssim_best_adjusted, ssim, psnr)]
    return worst[0], worst[1], worst[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="convnet,resnet18,mobilenet_v3_small")
    ap.add_argument("--grid", default="conv", choices=sorted(GRIDS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--photos", type=int, default=1, help="client batches of distinct photos per model (max 4)")
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="wall-clock budget per model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(f"command: python benchmarks/bench_ig_settings.py {' '.join(__import__('sys').argv[1:])}")
    print(f"torch {torch.__version__}, {name}; rows: the batch's worst sample (best reconstruction per original)\n")
    print("| model | photos | iterations x restarts | lr | TV | iterations run | SSIM adjusted | SSIM | PSNR dB | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        deadline = _Deadline(time.perf_counter() + args.max_seconds)
        module, batch_size = _model(model_name)
        for first in range(0, min(args.photos * batch_size, len(PHOTOS)) - batch_size + 1, batch_size):
            _grid(model_name, _target(module, batch_size, first), GRIDS[args.grid], deadline, device)


def _grid(model_name: str, problem, grid, deadline: _Deadline, device: torch.device) -> None:  # noqa: ANN001
    """One row per setting of ``grid`` on one client batch."""
    from leakaudit.attacks import ATTACKS
    from leakaudit.attacks.interface import AttackSettings

    target, batch = problem
    for iterations, restarts, lr, tv in grid:
        head = f"| {model_name} | {'+'.join(batch.names)} | {iterations} x {restarts} | {lr:g} | {tv:g} |"
        if deadline.should_stop():
            print(f"{head} not run: the --max-seconds budget was spent | | | | |", flush=True)
            continue
        started = time.perf_counter()
        rec = ATTACKS.get("ig").run(target, AttackSettings(iterations, restarts, lr, tv), device=device, seed=0,
                                    observer=deadline)
        seconds = time.perf_counter() - started
        adjusted, plain, db = _scores(rec.x, batch)
        print(f"{head} {rec.iterations_run} | {adjusted:.3f} | {plain:.3f} | {db:.1f} | {seconds:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
