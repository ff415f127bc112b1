"""The client update of an ONNX export is the update of the torch model it came from."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.models import create_model, load_model
from leakaudit.models.interface import LoadedModel
from leakaudit.update import ThreatModel, client_update

SHAPE = (3, 8, 8)


def test_onnx_export_with_dropout_gives_the_torch_models_gradient_and_masks(tmp_path: Path):
    torch.manual_seed(0)
    module = create_model("mlp", num_classes=10, input_shape=SHAPE, dropout=0.3).train()
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, *SHAPE),), str(path), training=torch.onnx.TrainingMode.TRAINING,
                          dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    onnx_model = load_model(path)
    torch_model = LoadedModel(module, SHAPE, 10, Path("mlp.safetensors"), "0" * 64, "safetensors", arch="mlp")
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    batch = SampleBatch(x, torch.tensor([1, 2, 3]), x, ("a", "b", "c"), "samples/",
                        Normalization("none", (0.0,), (1.0,)))

    ours = client_update(onnx_model, batch, ThreatModel(), seed=5)
    reference = client_update(torch_model, batch, ThreatModel(), seed=5)

    assert len(ours.gradients) == len(reference.gradients) == 6  # every Gemm weight and bias is trainable
    for (name, g), (ref_name, ref) in zip(ours.gradients.items(), reference.gradients.items(), strict=True):
        assert g.shape == ref.shape, (name, ref_name)
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-6)
    assert len(ours.true_dropout_masks) == 2  # both Dropout nodes of the file sampled and recorded
    for mask, ref in zip(ours.true_dropout_masks.values(), reference.true_dropout_masks.values(),
                          strict=True):
        assert torch.equal(mask, ref)
