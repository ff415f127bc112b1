"""Where IG reaches the leak under the recognition criterion: photo x setting on small CIFAR CNNs (issue 24 item 4).

For each model -- Flower's quickstart CNN (conv5(3->6)-pool-conv5(6->16)-pool-fc120-fc84-fc10) and the zoo's
``cnn`` (conv3(3->32)-pool-conv3(32->64)-pool-fc128-fc10, padded), random weights (seed 0), train mode -- and
each bundled photo (``examples/samples``, its label from labels.csv, batch 1, the scan's default: no
normalisation, labels known), it runs leakaudit's registered ``ig`` attack with each setting of a grid and
scores the reconstruction as a scan does: SSIM, ``ssim_skill`` (0 = a blank or heavily blurred copy, 1 = exact),
``psnr_gain`` (dB over a blank or blurred copy), ``match_p`` (chance of being matched to its own photo among the
references: the bundled set plus the other photos) and recognised (``ssim_skill >= 0.1`` or ``psnr_gain >= 1``,
with ``match_p <= 0.02``: the default rules; docs/recognition.md).

Usage:
  python benchmarks/bench_ig_reach.py --models flower --grid reach --threads 1
  python benchmarks/bench_ig_reach.py --models flower,cnn --grid smoke --photos rocket.png   # a 1-minute check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 32, 32)
METRICS = ("ssim", "ssim_skill", "psnr_gain", "match_p")

# (iterations, restarts, lr, tv): the standard budget's IG (600 x 2, TV 0.1 for a conv net), then 4,000
# iterations -- what a plain IG loop needed on a ReLU CNN (issue 24) -- at the conv prior and at the papers' weight.
GRIDS = {
    "smoke": ((100, 1, 0.1, 0.1),),
    "standard": ((600, 2, 0.1, 0.1),),
    "reach": ((600, 2, 0.1, 0.1), (4000, 1, 0.1, 0.1), (4000, 1, 0.1, 1e-4)),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    from leakaudit.models import create_model

    return create_model(name, num_classes=10, input_shape=SHAPE).train()


def _problem(module: nn.Module, batch, i: int):  # noqa: ANN001, ANN202
    """The client's update for photo ``i`` alone, as a scan computes it, and the attack's target."""
    from leakaudit.attacks.interface import AttackTarget
    from leakaudit.data.interface import SampleBatch
    from leakaudit.models.interface import LoadedModel
    from leakaudit.update import ThreatModel, client_update

    one = SampleBatch(batch.x[i:i + 1], batch.y[i:i + 1], batch.pixels[i:i + 1], batch.names[i:i + 1],
                      batch.source, batch.normalization)
    model = LoadedModel(module, SHAPE, 10, Path("m.onnx"), "0" * 64, "onnx")
    grads = client_update(model, one, ThreatModel(), seed=0).gradients
    norm = batch.normalization
    bounds = (norm.to_model(torch.zeros(1, *SHAPE)), norm.to_model(torch.ones(1, *SHAPE)))
    return AttackTarget(module=module, gradients=grads, input_shape=SHAPE, num_classes=10, labels=one.y,
                        num_samples=1, bounds=bounds), one


def main() -> None:
    from leakaudit.attacks import ATTACKS
    from leakaudit.attacks.interface import AttackSettings
    from leakaudit.data import load_samples
    from leakaudit.data.interface import Normalization
    from leakaudit.metrics.references import scan_references
    from leakaudit.metrics.scoring import score
    from leakaudit.progress import NullObserver

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="flower", help="zoo architectures (flower, cnn, mlp, ...)")
    ap.add_argument("--grid", default="reach", choices=sorted(GRIDS))
    ap.add_argument("--photos", default="", help="comma-separated file names (default: all bundled photos)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    none = Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    batch = load_samples(ROOT / "examples" / "samples", input_shape=SHAPE, num_classes=10, normalization=none)
    references = scan_references(None, batch.pixels).pixels
    wanted = set(args.photos.split(",")) if args.photos else set(batch.names)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"command: python benchmarks/bench_ig_reach.py {' '.join(sys.argv[1:])}")
    print(f"torch {torch.__version__}, {where}; IG, batch 1, labels known, seed 0\n")
    print("| model | photo | iterations x restarts | TV | SSIM | ssim_skill | psnr_gain dB | match_p | recognised "
          "| s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        module = _model(model_name)
        counts: dict[tuple, int] = {}
        for i, name in enumerate(batch.names):
            if name not in wanted:
                continue
            target, one = _problem(module, batch, i)
            for iterations, restarts, lr, tv in GRIDS[args.grid]:
                started = time.perf_counter()
                rec = ATTACKS.get("ig").run(target, AttackSettings(iterations, restarts, lr, tv), device=device,
                                            seed=0, observer=NullObserver())
                seconds = time.perf_counter() - started
                pixels = none.to_pixels(rec.x.detach().cpu())
                m = score(pixels, one.pixels, names=list(one.names), labels_true=one.y, labels_recovered=one.y,
                          metrics=METRICS, references=references).samples[0].metrics
                recognised = (m["ssim_skill"] >= 0.1 or m["psnr_gain"] >= 1.0) and m["match_p"] <= 0.02
                key = (iterations, restarts, tv)
                counts[key] = counts.get(key, 0) + int(recognised)
                print(f"| {model_name} | {name} | {iterations} x {restarts} | {tv:g} | {m['ssim']:.2f} | "
                      f"{m['ssim_skill']:+.2f} | {m['psnr_gain']:+.1f} | {m['match_p']:.3f} | "
                      f"{'yes' if recognised else 'no'} | {seconds:.1f} |", flush=True)
        for (iterations, restarts, tv), n in counts.items():
            print(f"{model_name}, {iterations} x {restarts}, TV {tv:g}: {n} of {len(wanted)} recognised")


if __name__ == "__main__":
    main()
