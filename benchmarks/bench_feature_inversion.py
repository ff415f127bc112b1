"""feature-inversion benchmark: what the attack recovers on a tutorial CIFAR ConvNet and two torchvision models.

For each model (the tutorial ConvNet -- conv3x3(32)-ReLU-maxpool2, conv3x3(64)-ReLU-maxpool2, flatten,
Linear(4096,128)-ReLU-Dropout(0.25)-Linear(128,10) -- from torch and from its training-mode TorchScript ONNX
export; torchvision resnet18 and mobilenet_v3_small with 10 classes), random weights, real 32x32 photos at
batch 1 and 2 (the pipeline's own client update: train mode, dropout live, CIFAR normalisation, labels known),
it prints the layer the probe chose, the rows used, how many samples were separated, the feature-fit residual,
SSIM / PSNR of the features-only image, of what the attack returns (refined by IG at batch 1 unless the
features came through dropout) and of the IG refinement run anyway (best over the batch's reconstructions for
each original), and the attack's time; with IG alone at the same total iterations for comparison. A variant of
the ConvNet with dropout before fc1 shows why the attack does not refine there; the Flower quickstart CNN with
dropout after fc1 and fc2, why it keeps the refined image only when it matches the exact features better.

Settings are the `quick` budget's (300 feature-matching iterations x 1 restart, then 200 IG iterations).
Usage: python benchmarks/bench_feature_inversion.py [--budget quick|standard] [--models ConvNet] [--batch-size 1]
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
    """The tutorial ConvNet; ``drop_in`` adds dropout on the flattened conv features, before fc1 (as the zoo cnn
    and Keras-style Flatten-Dropout-Dense heads have it): the features fc1 sees are then masked."""

    def __init__(self, drop_in: float = 0.0) -> None:
        super().__init__()
        self.drop_in = nn.Dropout(drop_in) if drop_in else nn.Identity()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4096, 128)
        self.drop = nn.Dropout(0.25)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(self.drop(torch.relu(self.fc1(self.drop_in(torch.flatten(x, 1))))))


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
    torch.manual_seed(0)
    before = ConvNet(drop_in=0.25)
    replace_dropout(before)
    out.append(("tutorial ConvNet, dropout 0.25 before fc1 (torch)", before))
    from leakaudit.models import create_model

    # fc1's features are exact, but IG's copy runs without the client's dropout masks after fc1 and fc2.
    torch.manual_seed(0)
    flower = create_model("flower", dropout=0.5)
    out.append(("Flower CNN, dropout after fc1 and fc2 (torch)", flower))
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
    refined_anyway = _refine(target, plain.x, int(settings.extra["refine"]), float(settings.extra["refine_tv"]))
    ig_settings = dataclasses.replace(budget_settings("ig", budget), iterations=full.iterations_run, tv=1e-2)
    start = time.perf_counter()
    ig = ATTACKS.get("ig").run(target, ig_settings, device=cpu, seed=0, observer=quiet)
    ig_seconds = time.perf_counter() - start
    (s0, p0), (s1, p1), (s2, _) = _scores(plain.x, batch), _scores(full.x, batch), _scores(ig.x, batch)
    s3, p3 = _scores(refined_anyway, batch)
    layer = full.notes[0].split(":")[0].removeprefix("layer ")
    rows = full.notes[0].split(": ")[1].split(" rows")[0]
    residual = full.notes[0].rsplit(" ", 1)[1]
    separated = next((n.split(" samples")[0].removeprefix("separated ") for n in full.notes
                      if n.startswith("separated ")), "1 of 1")

    def fmt(values: list[float], digits: int = 3) -> str:
        return " / ".join(f"{v:.{digits}f}" for v in values)

    return (f"{head} | {layer} | {rows} | {separated} | {residual} | {fmt(s0)} ({fmt(p0, 1)} dB) | {fmt(s1)} | "
            f"{fmt(p1, 1)} | {fmt(s3)} ({fmt(p3, 1)} dB) | {seconds:.1f} | {fmt(s2)} ({ig_settings.iterations} it, "
            f"{ig_seconds:.1f} s)")


def _refine(target, x0: torch.Tensor, iterations: int, tv: float) -> torch.Tensor:  # noqa: ANN001
    """IG started from the features-only image, as the attack refines -- also where it chooses not to."""
    from leakaudit.attacks.engine import Objective, Schedule, match_gradients

    res = match_gradients(target.module, target.gradients, Objective(distance="cosine", tv=tv),
                          Schedule(iterations=iterations, restarts=1, lr=0.1), input_shape=SHAPE,
                          num_samples=target.num_samples, num_classes=10, labels=target.labels,
                          bounds=target.bounds, device=torch.device("cpu"), seed=0, init=x0)
    return res.x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="quick", choices=("quick", "standard"))
    parser.add_argument("--models", default="", help="only the models whose label contains this text")
    parser.add_argument("--batch-size", type=int, choices=(1, 2), help="only this batch size (default: both)")
    args = parser.parse_args()
    budget = args.budget
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
    print("model | images | layer (input features) | rows | separated | feature residual | SSIM features only | "
          "SSIM returned | PSNR returned dB | SSIM IG-refined (whether or not the attack refines) | seconds | "
          "IG alone SSIM (same iterations)")
    for label, module in models:
        if args.models not in label:
            continue
        for size, batches in enumerate(BATCHES, start=1):
            if args.batch_size not in (None, size):
                continue
            for names in batches:
                print(_row(label, module, names, budget), flush=True)


if __name__ == "__main__":
    main()
