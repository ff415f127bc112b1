"""Where IG reaches the leak under the recognition criterion: photo x setting on small CIFAR CNNs (issue 24 item 4).

For each model -- Flower's quickstart CNN (conv5(3->6)-pool-conv5(6->16)-pool-fc120-fc84-fc10) and the zoo's
``cnn`` (conv3(3->32)-pool-conv3(32->64)-pool-fc128-fc10, padded), random weights (seed 0), train mode -- and
each bundled photo (``examples/samples``, its label from labels.csv, batch 1, the scan's default: no
normalisation, labels known), it runs leakaudit's registered ``ig`` attack with each setting of a grid and
scores the reconstruction as a scan does: SSIM, ``ssim_skill`` (0 = a blank or heavily blurred copy, 1 = exact),
``psnr_gain`` (dB over a blank or blurred copy), ``match_p`` (chance of being matched to its own photo among the
references: the bundled set plus the other photos) and recognised (``ssim_skill >= 0.1`` or ``psnr_gain >= 1``,
with ``match_p <= 0.02``: the default rules; docs/recognition.md).

``--models`` also takes torchvision networks (``torchvision:resnet18``, random weights, 10 classes), and
``--client-batchnorm eval`` computes the client's update with frozen BatchNorm statistics, as a scan with
that flag does (the attack sees the same frozen model). ``--plain`` adds, per setting, a plain IG loop written
here and not leakaudit's engine (torch's Adam on the image, uniform start in the pixel box, cosine distance
over every parameter's gradient plus TV, clamped to the box after each step, no restarts, no step decay): the
kind of loop issue 24's figures came from.

Usage:
  python benchmarks/bench_ig_reach.py --models flower --grid reach --threads 1
  python benchmarks/bench_ig_reach.py --models torchvision:resnet18 --client-batchnorm eval --grid bn-eval --plain
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
    # eval-mode BatchNorm nets: issue 24's 150 iterations at the papers' TV weight and at the conv prior
    "bn-eval": ((150, 1, 0.1, 1e-4), (150, 1, 0.1, 0.1)),
}


def _model(name: str, batchnorm: str) -> nn.Module:
    """A zoo architecture or ``torchvision:NAME``, random weights (seed 0), as the client trains it."""
    from leakaudit.models.batchnorm import client_model
    from leakaudit.models.interface import LoadedModel

    torch.manual_seed(0)
    if name.startswith("torchvision:"):
        import torchvision

        module = getattr(torchvision.models, name.split(":", 1)[1])(weights=None, num_classes=10)
        for m in module.modules():  # undefended: mobilenet_v3_small's own classifier dropout off
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    else:
        from leakaudit.models import create_model

        module = create_model(name, num_classes=10, input_shape=SHAPE)
    loaded = LoadedModel(module.train(), SHAPE, 10, Path("m.onnx"), "0" * 64, "onnx")
    return client_model(loaded, batchnorm).module


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


def plain_ig(target, iterations: int, lr: float, tv: float, seed: int = 0) -> torch.Tensor:  # noqa: ANN001
    """Inverting Gradients in a few lines, outside leakaudit's engine: a check that the engine is not what
    stops a reconstruction."""
    module, (low, high) = target.module, target.bounds
    names = [n for n, _ in module.named_parameters() if n in target.gradients]
    params = [dict(module.named_parameters())[n] for n in names]
    observed = [target.gradients[n].detach() for n in names]
    generator = torch.Generator().manual_seed(seed)
    x = (low + (high - low) * torch.rand(low.shape, generator=generator)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(iterations):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(module(x), target.labels)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * o).sum() for g, o in zip(grads, observed, strict=True))
        norm = torch.sqrt(sum((g * g).sum() for g in grads)) * torch.sqrt(sum((o * o).sum() for o in observed))
        tv_term = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
        (1 - dot / norm + tv * tv_term).backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, high), low))
    return x.detach()


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
    ap.add_argument("--client-batchnorm", default="train", choices=("train", "eval"))
    ap.add_argument("--plain", action="store_true", help="also a plain IG loop per setting (restarts ignored)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    none = Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    batch = load_samples(ROOT / "examples" / "samples", input_shape=SHAPE, num_classes=10, normalization=none)
    references = scan_references(None, batch.pixels).pixels
    wanted = set(args.photos.split(",")) if args.photos else set(batch.names)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"command: python benchmarks/bench_ig_reach.py {' '.join(sys.argv[1:])}")
    print(f"torch {torch.__version__}, {where}; IG, batch 1, labels known, seed 0, client BatchNorm "
          f"{args.client_batchnorm}\n")
    print("| model | photo | attack | iterations x restarts | TV | SSIM | ssim_skill | psnr_gain dB | match_p "
          "| recognised | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        module = _model(model_name, args.client_batchnorm)
        counts: dict[tuple, int] = {}
        for i, name in enumerate(batch.names):
            if name not in wanted:
                continue
            target, one = _problem(module, batch, i)
            for iterations, restarts, lr, tv in GRIDS[args.grid]:
                for attack in ("ig", "plain") if args.plain else ("ig",):
                    started = time.perf_counter()
                    if attack == "ig":
                        x = ATTACKS.get("ig").run(target, AttackSettings(iterations, restarts, lr, tv),
                                                  device=device, seed=0, observer=NullObserver()).x
                    else:
                        x = plain_ig(target, iterations, lr, tv)
                    seconds = time.perf_counter() - started
                    pixels = none.to_pixels(x.detach().cpu())
                    m = score(pixels, one.pixels, names=list(one.names), labels_true=one.y, labels_recovered=one.y,
                              metrics=METRICS, references=references).samples[0].metrics
                    recognised = (m["ssim_skill"] >= 0.1 or m["psnr_gain"] >= 1.0) and m["match_p"] <= 0.02
                    runs = restarts if attack == "ig" else 1
                    key = (attack, iterations, runs, tv)
                    counts[key] = counts.get(key, 0) + int(recognised)
                    print(f"| {model_name} | {name} | {attack} | {iterations} x {runs} | {tv:g} | {m['ssim']:.2f} | "
                          f"{m['ssim_skill']:+.2f} | {m['psnr_gain']:+.1f} | {m['match_p']:.3f} | "
                          f"{'yes' if recognised else 'no'} | {seconds:.1f} |", flush=True)
        for (attack, iterations, restarts, tv), n in counts.items():
            print(f"{model_name}, {attack} {iterations} x {restarts}, TV {tv:g}: {n} of {len(wanted)} recognised")


if __name__ == "__main__":
    main()
