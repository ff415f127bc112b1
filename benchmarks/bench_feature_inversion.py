"""feature-inversion benchmark: what the attack recovers on a tutorial CIFAR ConvNet and two torchvision models.

For each model (the tutorial ConvNet -- conv3x3(32)-ReLU-maxpool2, conv3x3(64)-ReLU-maxpool2, flatten,
Linear(4096,128)-ReLU-Dropout(0.25)-Linear(128,10) -- from torch and from its training-mode TorchScript ONNX
export; torchvision resnet18 and mobilenet_v3_small with 10 classes), random weights, real 32x32 photos at
batch 1 and 2 (the pipeline's own client update: train mode, dropout live, CIFAR normalisation, labels known),
it prints the layer the probe chose, the rows used, how many samples were separated, the feature-fit residual,
SSIM / PSNR of the features-only image and after the IG refinement (best over the batch's reconstructions for
each original), and the attack's time; with IG alone at the same total iterations for comparison.

Settings are the `quick` budget's (300 feature-matching iterations x 1 restart, then 200 IG iterations).
Usage: python benchmarks/bench_feature_inversion.py [--budget quick|standard]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 32, 32)
BATCHES = ((("astronaut",), ("chelsea",), ("coffee",), ("rocket",)), (("astronaut", "coffee"), ("chelsea", "rocket")))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4096, 128)
        self.drop = nn.Dropout(0.25)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(self.drop(torch.relu(self.fc1(torch.flatten(x, 1)))))


def _pixels(name: str) -> torch.Tensor:
    image = Image.open(ROOT / "examples" / "samples" / f"{name}.png").convert("RGB").resize((32, 32))
    return torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0


def _onnx(module: nn.Module, path: Path) -> nn.Module:
    from leakaudit.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.train(), torch.randn(2, *SHAPE), str(path),
                          training=torch.onnx.TrainingMode.TRAINING, dynamo=False, do_constant_folding=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return load_model(str(path)).module


def _models(tmp: Path) -> list[tuple[str, nn.Module]]:
    from leakaudit.models.dropout_tools import replace_dropout

    torch.manual_seed(0)
    convnet = ConvNet()
    replace_dropout(convnet)  # as the safetensors loader does: dropout the attacks can switch off
    out = [("tutorial ConvNet (torch)", convnet), ("tutorial ConvNet (ONNX)", _onnx(convnet, tmp / "convnet.onnx"))]
    try:
        import torchvision
    except ImportError:
        print("torchvision not installed: its rows left out")
        return out
    torch.manual_seed(0)
    out.append(("torchvision resnet18", torchvision.models.resnet18(num_classes=10)))
    torch.manual_seed(0)
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=10)
    replace_dropout(mobilenet)
    out.append(("torchvision mobilenet_v3_small", mobilenet))
    return out


def _scores(x: torch.Tensor, batch) -> tuple[list[float], list[float]]:  # noqa: ANN001
    from leakaudit.metrics.functional import psnr, ssim

    rec = batch.normalization.to_pixels(x).clamp(0, 1)
    ssims = [max(float(ssim(r[None], p[None])) for r in rec) for p in batch.pixels]
    psnrs = [max(float(psnr(r[None], p[None])) for r in rec) for p in batch.pixels]
    return ssims, psnrs


def _row(label: str, module: nn.Module, names: tuple[str, ...], budget: str) -> str:
    from leakaudit.attacks import ATTACKS, budget_settings
    from leakaudit.attacks.interface import AttackTarget
    from leakaudit.data.interface import Normalization, SampleBatch
    from leakaudit.models.interface import LoadedModel
    from leakaudit.progress import NullObserver
    from leakaudit.update import ThreatModel, client_update

    cifar = Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    pixels = torch.stack([_pixels(n) for n in names])
    batch = SampleBatch(cifar.to_model(pixels), torch.arange(len(names)), pixels, names, "samples/", cifar)
    model = LoadedModel(module, SHAPE, 10, Path("m.onnx"), "0" * 64, "onnx")
    head = f"{label} | {'+'.join(names)}"
    try:
        grads = client_update(model, batch, ThreatModel(), seed=0).gradients
    except Exception as e:  # noqa: BLE001 -- train-mode BatchNorm at batch 1 cannot run: the client cannot either
        return f"{head} | client update fails: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    bounds = (cifar.to_model(torch.zeros(1, *SHAPE)), cifar.to_model(torch.ones(1, *SHAPE)))
    target = AttackTarget(module=module, gradients=grads, input_shape=SHAPE, num_classes=10, labels=batch.y,
                          num_samples=len(names), bounds=bounds)
    settings = budget_settings("feature-inversion", budget)
    cpu, quiet = torch.device("cpu"), NullObserver()
    attack = ATTACKS.get("feature-inversion")
    plain = attack.run(target, dataclasses.replace(settings, extra={**settings.extra, "refine": 0}), device=cpu,
                       seed=0, observer=quiet)
    if plain.x.shape[0] == 0:
        return f"{head} | {plain.notes[0]}"
    start = time.perf_counter()
    full = attack.run(target, settings, device=cpu, seed=0, observer=quiet)
    seconds = time.perf_counter() - start
    ig_settings = dataclasses.replace(budget_settings("ig", budget), iterations=full.iterations_run, tv=1e-2)
    start = time.perf_counter()
    ig = ATTACKS.get("ig").run(target, ig_settings, device=cpu, seed=0, observer=quiet)
    ig_seconds = time.perf_counter() - start
    (s0, _), (s1, p1), (s2, _) = _scores(plain.x, batch), _scores(full.x, batch), _scores(ig.x, batch)
    layer = full.notes[0].split(":")[0].removeprefix("layer ")
    rows = full.notes[0].split(": ")[1].split(" rows")[0]
    residual = full.notes[0].rsplit(" ", 1)[1]
    separated = next((n.split(" samples")[0].removeprefix("separated ") for n in full.notes
                      if n.startswith("separated ")), "1 of 1")

    def fmt(values: list[float], digits: int = 3) -> str:
        return " / ".join(f"{v:.{digits}f}" for v in values)

    return (f"{head} | {layer} | {rows} | {separated} | {residual} | {fmt(s0)} | {fmt(s1)} | {fmt(p1, 1)} | "
            f"{seconds:.1f} | {fmt(s2)} ({ig_settings.iterations} it, {ig_seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="quick", choices=("quick", "standard"))
    budget = parser.parse_args().budget
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
    print("model | images | layer (input features) | rows | separated | feature residual | SSIM features only | "
          "SSIM refined | PSNR refined dB | seconds | IG alone SSIM (same iterations)")
    for label, module in models:
        for batches in BATCHES:
            for names in batches:
                print(_row(label, module, names, budget), flush=True)


if __name__ == "__main__":
    main()
