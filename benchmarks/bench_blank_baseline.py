"""What a blank "reconstruction" scores: SSIM of a constant image against each sample, as a scan scores it.

An attack that recovers nothing often returns a near-constant image. SSIM (and the brightness-adjusted
SSIM the default rules use) of a constant image is not near 0 on every photo: on one whose 8x8 windows are
mostly smooth (sky, a wall) it is C2 / (sigma^2 + C2) in each such window. This prints, per sample of a
data folder loaded the way ``leakaudit scan`` loads it, the score of a constant image at the sample's
own mean colour (the best constant an attacker could guess; an upper bound for any blank output) and at
mid-grey, so a threshold can be read against what nothing scores.

Usage: python benchmarks/bench_blank_baseline.py [--data examples/samples] [--size 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from leakaudit.data import load_samples
from leakaudit.data.interface import Normalization
from leakaudit.metrics.functional import psnr, ssim, ssim_best_adjusted

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="examples/samples", help="relative paths are read from the repository root")
    ap.add_argument("--size", type=int, default=32, help="the model's input side (samples are resized to it)")
    args = ap.parse_args()
    plain = Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    batch = load_samples(ROOT / args.data, input_shape=(3, args.size, args.size), num_classes=1000, normalization=plain)
    print(f"command: python benchmarks/bench_blank_baseline.py --data {args.data} --size {args.size}\n")
    print("| sample | pixel std | mean-colour image: SSIM | SSIM adjusted | PSNR dB | mid-grey: SSIM adjusted |")
    print("|---|---|---|---|---|---|")
    for name, px in zip(batch.names, batch.pixels, strict=True):
        target = px[None]
        mean_colour = target.mean(dim=(2, 3), keepdim=True).expand_as(target).contiguous()
        grey = torch.full_like(target, 0.5)
        print(f"| {name} | {float(target.std()):.3f} | {float(ssim(mean_colour, target)):.3f} | "
              f"{float(ssim_best_adjusted(mean_colour, target)):.3f} | {float(psnr(mean_colour, target)):.1f} | "
              f"{float(ssim_best_adjusted(grey, target)):.3f} |")


if __name__ == "__main__":
    main()
