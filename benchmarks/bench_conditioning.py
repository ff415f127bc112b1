"""Conditioning benchmark: the cosine between a client's update at the samples and at the samples moved by 1e-4
of the pixel range (``leakaudit.update.conditioning``), on models where gradient matching works (the zoo's mlp
and cnn) and on torchvision nets whose train-mode BatchNorm sees two values per channel at 32x32 and batch 2.

For each model, batch size and BatchNorm mode it prints the cosine for three seeds (weights, samples and the
move all change with the seed: four real 32x32 photos from examples/samples, repeated to fill a batch), the
verdict at the threshold leakaudit uses, and the BatchNorm layers at 4 or fewer values per channel.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_conditioning.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from _photos import IMAGES, SEEDS, SHAPE, pixels as _pixels  # noqa: F401 (beside this file)


def _model(name: str) -> torch.nn.Module:
    from leakaudit.models import create_model

    if name.startswith("torchvision:"):
        import torchvision

        return getattr(torchvision.models, name.split(":", 1)[1])(num_classes=10)
    return create_model(name, num_classes=10, input_shape=SHAPE)


def measure(name: str, batch: int, mode: str, seed: int) -> tuple[float | None, str, list[str]]:
    from leakaudit.data import SampleBatch, normalization
    from leakaudit.models import LoadedModel
    from leakaudit.models.batchnorm import client_model
    from leakaudit.update import client_update
    from leakaudit.update.conditioning import conditioning
    from leakaudit.update.interface import ThreatModel

    torch.manual_seed(seed)
    loaded = client_model(LoadedModel(_model(name), SHAPE, 10, Path(name), "0" * 64, "safetensors", arch=name), mode)
    pixels = torch.stack([_pixels(IMAGES[(seed + i) % len(IMAGES)]) for i in range(batch)])
    samples = SampleBatch(pixels, torch.arange(batch) % 10, pixels, tuple(f"{i}.png" for i in range(batch)),
                          "photos", normalization("none", channels=3))
    threat = ThreatModel(batch_size=batch, batchnorm=mode)
    update = client_update(loaded, samples, threat, seed=seed)
    c = conditioning(loaded, samples, threat, update.gradients, seed=seed)
    return c.cosine, c.verdict, [f"{d['name']} ({d['values_per_channel']})" for d in c.layers]


def main() -> None:
    cases = [("mlp", 1, "train"), ("mlp", 2, "train"), ("cnn", 2, "train"),
             ("torchvision:resnet18", 2, "train"), ("torchvision:resnet18", 8, "train"),
             ("torchvision:resnet18", 1, "eval"), ("torchvision:resnet18", 2, "eval"),
             ("torchvision:mobilenet_v3_small", 2, "train"), ("torchvision:mobilenet_v3_small", 8, "train")]
    print("| model | batch | BatchNorm | cosine (seeds 0, 1, 2) | verdict | layers <= 4 values per channel |")
    print("|---|---|---|---|---|---|")
    for name, batch, mode in cases:
        rows = [measure(name, batch, mode, s) for s in SEEDS]
        cosines = ", ".join("n/a" if c is None else f"{c:.3f}" for c, _, _ in rows)
        verdicts = "/".join(sorted({v for _, v, _ in rows}))
        layers = rows[0][2]
        shown = ", ".join(layers[:2]) + (f" and {len(layers) - 2} more" if len(layers) > 2 else "")
        print(f"| {name} | {batch} | {mode} | {cosines} | {verdicts} | {shown or 'none'} |")


if __name__ == "__main__":
    main()
