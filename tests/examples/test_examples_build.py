"""The bundled examples are what build_examples.py says they are, and rebuild to the same content."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from leakaudit.models import load_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_examples", EXAMPLES / "build_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_sample_images_rebuild_to_the_same_pixels_and_labels(build, tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    build.build_samples(tmp_path)
    for spec in build.IMAGES:
        fresh = np.asarray(Image.open(tmp_path / spec.file))
        committed = np.asarray(Image.open(EXAMPLES / "samples" / spec.file))
        assert fresh.shape == (32, 32, 3) and np.array_equal(fresh, committed), spec.file
    assert (tmp_path / "labels.csv").read_text() == (EXAMPLES / "samples" / "labels.csv").read_text()


def test_committed_weights_are_the_seeded_models(build) -> None:
    for spec in build.MODELS:
        expected = build.build_zoo_model(spec).state_dict()
        stored = load_file(str(EXAMPLES / "models" / f"{spec.name}.safetensors"))
        assert set(stored) == set(expected), spec.name
        assert all(torch.equal(stored[k], expected[k]) for k in stored), spec.name


@pytest.mark.parametrize("onnx_name, twin", [
    ("mlp.onnx", "mlp.safetensors"),
    ("mlp_dropout.onnx", "mlp_dropout.safetensors"),
    ("mlp_dropout_eval.onnx", "mlp_dropout.safetensors"),
    ("mlp_precode.onnx", "mlp_precode.safetensors"),
    ("cnn_dropout.onnx", "cnn_dropout.safetensors"),
])
def test_onnx_examples_compute_what_their_safetensors_twins_compute(onnx_name: str, twin: str) -> None:
    onnx_model = load_model(EXAMPLES / "models" / onnx_name).module.eval()
    torch_model = load_model(EXAMPLES / "models" / twin).module.eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for m in onnx_model.modules():
        if hasattr(m, "sample") and type(m).__name__.startswith("OnnxRandom"):
            # ONNX random ops sample in eval mode too; zero noise is the bottleneck's eval output (z = mu)
            m.sample = torch.zeros(3, 256)
    with torch.no_grad():
        assert torch.allclose(onnx_model(x), torch_model(x), atol=1e-5)
