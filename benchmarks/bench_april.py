"""APRIL benchmark: how exactly the closed-form ViT attack recovers real images, and what stops it.

For each ViT (the zoo's, as built; the zoo's widened to more embedding dimensions than patches; timm
vit_tiny at 32x32 with patch 4 from torch and from its training-mode ONNX export, when timm is installed) and
each of four real 32x32 photos (batch 1, the pipeline's own client update, no normalisation) it prints the
rank of the system, the fit residual, the max abs error in pixels, SSIM, PSNR and the attack's time; then,
on one model, the same under a few defenses and FedAvg local steps.

Usage: python benchmarks/bench_april.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("astronaut", "chelsea", "coffee", "rocket")  # examples/samples/*.png
SHAPE = (3, 32, 32)


def _pixels(name: str) -> torch.Tensor:
    image = Image.open(ROOT / "examples" / "samples" / f"{name}.png").convert("RGB").resize((32, 32))
    return torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0


def _models(tmp: Path) -> list[tuple[str, torch.nn.Module]]:
    from leakaudit.models import load_model
    from leakaudit.models.zoo import create_model

    torch.manual_seed(0)
    out = [("zoo vit (dim 64, 64 patches)", create_model("vit", num_classes=10, input_shape=SHAPE)),
           ("zoo vit dim 96", create_model("vit", num_classes=10, input_shape=SHAPE, dim=96))]
    try:
        import timm
    except ImportError:
        print("timm not installed: timm rows left out")
        return out
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10,
                            drop_rate=0.1)
    path = tmp / "vit_tiny.onnx"
    torch.onnx.export(vit.train(), torch.randn(1, *SHAPE), str(path), training=torch.onnx.TrainingMode.TRAINING,
                      dynamo=False)
    return out + [("timm vit_tiny (torch)", vit), ("timm vit_tiny (ONNX)", load_model(str(path)).module)]


def _attack(module: torch.nn.Module, pixels: torch.Tensor, threat) -> tuple[dict, float]:  # noqa: ANN001
    from leakaudit.attacks.april import invert_patches
    from leakaudit.data.interface import Normalization, SampleBatch
    from leakaudit.metrics.functional import psnr, ssim
    from leakaudit.models.interface import LoadedModel
    from leakaudit.update import client_update

    model = LoadedModel(module, SHAPE, 10, Path("m.onnx"), "0" * 64, "onnx")
    batch = SampleBatch(pixels[None], torch.tensor([0]), pixels[None], ("x",), "samples/",
                        Normalization("none", (0.0,) * 3, (1.0,) * 3))
    grads = client_update(model, batch, threat, seed=0).gradients
    start = time.perf_counter()
    result = invert_patches(grads, module, SHAPE)
    seconds = time.perf_counter() - start
    if result.x is None:
        return {"reason": result.reason}, seconds
    rec = result.x.clamp(0, 1)
    return {"rank": result.rank, "residual": result.residual, "maxerr": float((rec - batch.x).abs().max()),
            "ssim": float(ssim(rec, batch.x)), "psnr": float(psnr(rec, batch.x))}, seconds


def main() -> None:
    from leakaudit.update import ThreatModel, parse_defense

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
    print("model | image | rank | residual | max abs error | SSIM | PSNR dB | seconds")
    for label, module in models:
        for name in IMAGES:
            r, s = _attack(module, _pixels(name), ThreatModel())
            print(f"{label} | {name} | {r['rank']} | {r['residual']:.1e} | {r['maxerr']:.1e} | {r['ssim']:.4f} "
                  f"| {r['psnr']:.1f} | {s:.3f}")
    label, module = models[-1] if len(models) > 2 else models[1]
    print(f"\n{label}, astronaut, under defenses: threat | SSIM | PSNR dB | residual")
    threats = [(d, ThreatModel(defenses=(parse_defense(d),))) for d in
               ("noise:sigma=1e-4", "noise:sigma=1e-3", "noise:sigma=1e-2", "clip:norm=1e-3", "prune:keep=0.5")]
    threats += [("fedavg 5 steps lr 0.1", ThreatModel(protocol="fedavg", local_steps=5, local_lr=0.1))]
    for text, threat in threats:
        r, _ = _attack(module, _pixels("astronaut"), threat)
        print(f"{text} | {r['ssim']:.4f} | {r['psnr']:.1f} | {r['residual']:.1e}" if "ssim" in r else
              f"{text} | {r['reason']}")


if __name__ == "__main__":
    main()
