"""Label recovery from the update: exact for one sample, measured for batches of 4 and 8."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from leakaudit.attacks.labels import LABEL_STRATEGIES, find_classifier, recover_labels
from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.errors import UnknownNameError
from leakaudit.metrics import label_accuracy
from leakaudit.models.interface import LoadedModel
from leakaudit.models.zoo import create_model
from leakaudit.update import ThreatModel, client_update

SHAPE = (3, 16, 16)


def _case(arch: str, n: int, seed: int, **kw) -> tuple[LoadedModel, dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(seed)
    module = create_model(arch, num_classes=10, input_shape=SHAPE, **kw)
    model = LoadedModel(module, SHAPE, 10, Path("m.safetensors"), "0" * 64, "safetensors", arch=arch)
    g = torch.Generator().manual_seed(1000 + seed)
    x, y = torch.rand(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)
    batch = SampleBatch(x, y, x, tuple(str(i) for i in range(n)), "samples/", Normalization("none", (0.0,), (1.0,)))
    return model, client_update(model, batch, ThreatModel(), seed=seed).gradients, y


@pytest.mark.parametrize("arch, kw", [
    ("mlp", {}), ("mlp", {"dropout": 0.5}), ("cnn", {"dropout": 0.25}), ("lenet", {}),
    ("lenet", {"precode": True, "latent_dim": 32}), ("vit", {"dropout": 0.1}),
])
def test_one_sample_labels_are_always_recovered(arch, kw):
    for seed in range(15):
        model, grads, y = _case(arch, 1, seed, **kw)
        auto = recover_labels(grads, model, 1, 10)
        assert auto.labels.tolist() == y.tolist() and auto.exact, (arch, seed)
        # iDLG from the weight gradient alone (a classifier without bias): right even where the features
        # entering the layer have both signs (PRECODE decoder, ViT LayerNorm), which defeats the row-sum rule.
        idlg = recover_labels(grads, model, 1, 10, strategy="idlg")
        assert idlg.labels.tolist() == y.tolist(), (arch, seed)


def _mean_accuracies(arch: str, n: int, strategies: list[str], trials: int = 20, **kw) -> dict[str, float]:
    totals = dict.fromkeys(strategies, 0.0)
    for seed in range(trials):
        model, grads, y = _case(arch, n, seed, **kw)
        for s in strategies:
            totals[s] += label_accuracy(recover_labels(grads, model, n, 10, strategy=s).labels, y) / trials
    return totals


# Floors set below the accuracies measured on these 20 seeded trials (auto = bias-softmax: 1.00 for batch 4
# on every model; 1.00 / 1.00 / 1.00 for batch 8 on mlp / cnn / lenet; bias-impact 0.99 on lenet).
@pytest.mark.parametrize("n, floor", [(4, 0.95), (8, 0.9)])
@pytest.mark.parametrize("arch", ["mlp", "cnn", "lenet"])
def test_batch_label_accuracy_is_measured_and_the_default_is_the_best_strategy(arch, n, floor, record_property):
    batch_strategies = [s for s, info in LABEL_STRATEGIES.items() if not info.single_only]
    measured = _mean_accuracies(arch, n, ["auto", *batch_strategies], dropout=0.25)
    auto = measured.pop("auto")
    line = f"label accuracy {arch} batch {n}: auto={auto:.3f} " + " ".join(f"{s}={v:.3f}" for s, v in measured.items())
    print(line)
    record_property(f"label_accuracy_{arch}_{n}", line)
    assert auto >= floor
    assert auto >= max(measured.values()) - 1e-9


def test_batch_16_on_deeper_models_is_where_the_softmax_estimate_pays(record_property):
    measured = {arch: _mean_accuracies(arch, 16, ["bias-softmax", "bias-impact"], trials=8)
                for arch in ("vit", "resnet20")}
    line = "label accuracy batch 16: " + " ".join(f"{a}: {v}" for a, v in measured.items())
    print(line)
    record_property("label_accuracy_16", line)
    for acc in measured.values():
        assert acc["bias-softmax"] >= acc["bias-impact"] and acc["bias-softmax"] >= 0.85


def test_softmax_estimate_needs_the_model_and_falls_back_without_it():
    model, grads, y = _case("lenet", 8, 3)
    without = recover_labels(grads, None, 8, 10, strategy="bias-softmax").labels
    assert torch.equal(without, recover_labels(grads, None, 8, 10, strategy="bias-impact").labels)


def test_classifier_without_bias_falls_back_to_weight_strategies():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10, bias=False))
    model = LoadedModel(module, (3, 4, 4), 10, Path("m.onnx"), "0" * 64, "onnx")
    for seed in range(10):
        x, y = torch.rand(1, 3, 4, 4), torch.tensor([seed % 10])
        batch = SampleBatch(x, y, x, ("a",), "s/", Normalization("none", (0.0,), (1.0,)))
        grads = client_update(model, batch, ThreatModel(), seed=seed).gradients
        result = recover_labels(grads, model, 1, 10)
        assert result.strategy == "idlg" and not result.exact and result.labels.tolist() == y.tolist()
    assert recover_labels(grads, model, 1, 10, strategy="bias-sign").labels is None


def test_matmul_classifier_found_from_gradient_shapes_alone():
    torch.manual_seed(0)
    w1, w2, b2 = torch.randn(48, 32), torch.randn(32, 10) * 0.1, torch.zeros(10)  # x @ W, as MatMul exports
    for label in range(10):
        params = [p.clone().requires_grad_(True) for p in (w1, w2, b2)]
        x = torch.rand(1, 48)
        logits = torch.relu(x @ params[0]) @ params[1] + params[2]
        loss = nn.functional.cross_entropy(logits, torch.tensor([label]))
        grads = dict(zip(["fc1", "head.MatMul", "head.Add"], torch.autograd.grad(loss, params), strict=True))
        layer = find_classifier(None, grads, 10)
        assert layer is not None and layer.weight == "head.MatMul" and layer.transposed and layer.bias == "head.Add"
        assert recover_labels(grads, None, 1, 10).labels.tolist() == [label]


def test_no_classification_layer_is_a_result_with_a_reason():
    grads = {"w": torch.randn(5, 7)}
    result = recover_labels(grads, None, 1, 10)
    assert result.labels is None and result.notes[0].startswith("not applicable: no classification layer")


def test_single_sample_strategy_on_a_batch_says_why_not():
    model, grads, _ = _case("mlp", 4, 0)
    result = recover_labels(grads, model, 4, 10, strategy="idlg")
    assert result.labels is None and "use bias-impact" in result.notes[0]


def test_unknown_strategy_lists_the_available_ones():
    model, grads, _ = _case("mlp", 1, 0)
    with pytest.raises(UnknownNameError, match=r"unknown label strategy 'bias'.*available: bias-corrected"):
        recover_labels(grads, model, 1, 10, strategy="bias")
