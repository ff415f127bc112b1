"""Build the bundled examples: small seeded models (ONNX + safetensors) and 32x32 sample images.

Run from anywhere (outputs go next to this file):

    pip install -e ".[examples]"
    python examples/build_examples.py

Models are untrained (seeded initialisation): gradient leakage of an untrained model is the setting of the
seed papers' headline numbers, and it keeps the files small and the build fast. Every model takes 32x32 RGB
input and has 10 classes; widths are reduced from the zoo defaults so each file stays around 1 MB, and the
widths are stored in the safetensors metadata so ``leakaudit`` rebuilds the same architecture.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE / "models"
SAMPLES_DIR = HERE / "samples"
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


@dataclass(frozen=True)
class ExampleModel:
    name: str
    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    formats: tuple[str, ...] = ("onnx", "safetensors")


MODELS = (
    ExampleModel("mlp", "mlp", {"hidden": [64, 64]}, seed=1),
    ExampleModel("mlp_dropout", "mlp", {"hidden": [64, 64], "dropout": 0.5}, seed=2),
    ExampleModel("mlp_precode", "mlp", {"hidden": [64, 64], "precode": True, "latent_dim": 256}, seed=3),
    ExampleModel("cnn_dropout", "cnn", {"width": 16, "dropout": 0.25}, seed=4),
)
# The dropout MLP again, exported in eval mode: the export drops its Dropout nodes (detection warns).
EVAL_EXPORT = "mlp_dropout"
# A user-written architecture with a random layer only the probe recognises (examples/custom_arch.py).
CUSTOM = ExampleModel("noisy_mlp", "custom_arch.py:noisy_mlp", {"hidden": 64, "sigma": 0.1}, seed=5,
                      formats=("safetensors",))


@dataclass(frozen=True)
class ExampleImage:
    file: str
    photo: str  # skimage.data function
    box: tuple[int, int, int] | None  # (top, left, size) of a square crop; None: the centred square
    label: int


# Labels are class numbers for the 10-class example models (untrained, so any label is as good as another);
# chelsea the cat gets CIFAR-10's "cat" (3), the rest are spread over the other classes.
IMAGES = (
    ExampleImage("rocket.png", "rocket", (0, 200, 427), 0),
    ExampleImage("coffee.png", "coffee", None, 1),
    ExampleImage("astronaut.png", "astronaut", (0, 120, 260), 2),
    ExampleImage("chelsea.png", "chelsea", (0, 80, 300), 3),
    ExampleImage("camera.png", "camera", None, 4),
    ExampleImage("retina.png", "retina", None, 5),
)


def build_zoo_model(spec: ExampleModel) -> nn.Module:
    from leakaudit.models import create_model

    torch.manual_seed(spec.seed)
    return create_model(spec.arch, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, **spec.kwargs)


def build_custom_model(spec: ExampleModel) -> nn.Module:
    sys.path.insert(0, str(HERE))
    try:
        from custom_arch import noisy_mlp
    finally:
        sys.path.remove(str(HERE))
    torch.manual_seed(spec.seed)
    return noisy_mlp(num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, **spec.kwargs)


def export_onnx(module: nn.Module, path: Path, *, training: bool, shape: tuple[int, ...] = INPUT_SHAPE) -> None:
    """torch's default (dynamo) exporter with a dynamic batch axis. Training mode keeps Dropout nodes and the
    PRECODE sampling (RandomNormalLike); eval mode is what most deployment exports look like."""
    module.train(training)
    batch = torch.export.Dim("batch", min=1, max=4096)
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, *shape),), str(path), dynamo=True, training=mode,
                          do_constant_folding=False, input_names=["x"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    _strip_stack_traces(path)


def _strip_stack_traces(path: Path) -> None:
    """The dynamo exporter stores each node's Python stack trace, with the absolute paths of the machine
    that built the file; a committed example must not carry them (and they make rebuilds machine-dependent)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(model, str(path))


def save_weights(module: nn.Module, path: Path, spec: ExampleModel, *, arch_in_metadata: bool) -> None:
    from leakaudit.models import save_safetensors

    # A model file should not name code to import: the custom architecture is given with --arch instead.
    tmp = path.with_suffix(".tmp.safetensors")
    save_safetensors(module, tmp, arch=spec.arch if arch_in_metadata else None, input_shape=INPUT_SHAPE,
                     num_classes=NUM_CLASSES, arch_kwargs=dict(spec.kwargs))
    # safetensors writes metadata in hash order: keep an existing file with the same content, so a rebuild
    # leaves committed files (and their sha256) unchanged.
    if path.exists() and _safetensors_content(path) == _safetensors_content(tmp):
        tmp.unlink()
    else:
        tmp.replace(path)


def _safetensors_content(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return f.metadata() or {}, {k: f.get_tensor(k).tobytes() for k in sorted(f.keys())}


def build_models(out: Path = MODELS_DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in MODELS:
        module = build_zoo_model(spec)
        if "onnx" in spec.formats:
            written.append(out / f"{spec.name}.onnx")
            export_onnx(module, written[-1], training=True)
        if "safetensors" in spec.formats:
            written.append(out / f"{spec.name}.safetensors")
            save_weights(module, written[-1], spec, arch_in_metadata=True)
        if spec.name == EVAL_EXPORT:
            written.append(out / f"{spec.name}_eval.onnx")
            export_onnx(module, written[-1], training=False)
    written.append(out / f"{CUSTOM.name}.safetensors")
    save_weights(build_custom_model(CUSTOM), written[-1], CUSTOM, arch_in_metadata=False)
    return written


def _photo(name: str) -> np.ndarray:
    import skimage.data

    loader: Callable[[], np.ndarray] = getattr(skimage.data, name)
    img = loader()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    return img[:, :, :3]


def build_samples(out: Path = SAMPLES_DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in IMAGES:
        img = _photo(spec.photo)
        h, w = img.shape[:2]
        if spec.box is None:
            size = min(h, w)
            top, left = (h - size) // 2, (w - size) // 2
        else:
            top, left, size = spec.box
        crop = Image.fromarray(img[top:top + size, left:left + size])
        crop = crop.resize(INPUT_SHAPE[1:][::-1], Image.Resampling.LANCZOS)  # antialiased downscale
        written.append(out / spec.file)
        crop.save(written[-1], optimize=True)
    labels = out / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{s.file},{s.label}\n" for s in IMAGES), encoding="utf-8")
    return written + [labels]


def main() -> None:
    for path in build_models() + build_samples():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        print(f"{path.relative_to(HERE.parent)}  {path.stat().st_size / 1e6:.2f} MB  sha256 {digest}...")


if __name__ == "__main__":
    main()
