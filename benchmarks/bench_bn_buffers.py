"""BatchNorm buffers benchmark: what a server recovers in closed form from the running statistics a client sends
with its update (``--update-buffers yes``; ``attacks/bnstats.py``, scored by ``update/buffers.py``).

torchvision resnet18 (random weights) at 32x32, batch 2, train-mode BatchNorm, one FedSGD client step on two real
photos from examples/samples: per seed (weights and the pair of photos change with it) the largest relative error
of the recovered batch means and variances over all BatchNorm layers, the layers that see two values per channel,
the relative error of their recovered per-sample pre-BatchNorm activations (up to a swap per channel) and the time
of the closed form alone.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_bn_buffers.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from _photos import IMAGES, SEEDS, SHAPE, pixels as _pixels  # noqa: F401 (beside this file)


def main() -> None:
    import torchvision

    from leakaudit.data import SampleBatch, normalization
    from leakaudit.models import LoadedModel
    from leakaudit.update import client_update
    from leakaudit.update.buffers import buffer_leak
    from leakaudit.update.interface import ThreatModel

    print("| seed | samples | BN layers recovered | mean error (max) | variance error (max) | layers with 2 values "
          "per channel | activation error (max) | closed form |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in SEEDS:
        torch.manual_seed(seed)
        net = torchvision.models.resnet18(num_classes=10)
        model = LoadedModel(net, SHAPE, 10, Path("resnet18.safetensors"), "0" * 64, "safetensors", arch="resnet18")
        names = (IMAGES[seed % 4], IMAGES[(seed + 1) % 4])
        pixels = torch.stack([_pixels(n) for n in names])
        norm = normalization("imagenet", channels=3)
        batch = SampleBatch(norm.to_model(pixels), torch.tensor([seed % 10, (seed + 3) % 10]), pixels,
                            tuple(f"{n}.png" for n in names), "examples/samples", norm)
        old = {n: b.detach().clone() for n, b in net.named_buffers()}
        update = client_update(model, batch, ThreatModel(batch_size=2, buffers=True), seed=seed)
        leak = buffer_leak(net, old, update, SHAPE)
        assert leak is not None and leak.status == "recovered", leak
        two = [d for d in leak.layers if d["activation_error"] is not None]
        print(f"| {seed} | {', '.join(names)} | {len(leak.layers)} | {max(d['mean_error'] for d in leak.layers):.2g} "
              f"| {max(d['var_error'] for d in leak.layers):.2g} | {len(two)} ({two[0]['name']} ... {two[-1]['name']}) "
              f"| {max(d['activation_error'] for d in two):.2g} | {leak.seconds * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
