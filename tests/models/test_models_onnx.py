"""ONNX loading: files exported by current torch load, match onnxruntime, and keep dropout/PRECODE live."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from leakaudit.models import MaskableDropout, OnnxRandomOp, create_model, load_model
from leakaudit.models.onnx_loader import trainable_weights
from leakaudit.models.zoo import image_architectures

SHAPE = (3, 16, 16)


def export(module: nn.Module, path, *, train: bool, dynamo: bool, opset: int | None = None,
           shape: tuple[int, ...] = SHAPE) -> str:
    """Export as a user would: training mode keeps Dropout/random nodes, no constant folding."""
    if dynamo:
        pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (in the dev extra)")
    module.train(train)
    kwargs = dict(training=torch.onnx.TrainingMode.TRAINING if train else torch.onnx.TrainingMode.EVAL,
                  do_constant_folding=False, dynamo=dynamo, input_names=["x"], output_names=["y"])
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, *shape),), str(path), **kwargs)
    return str(path)


def onnxruntime_output(path: str, x: torch.Tensor) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]


def graph_weight_elements(path: str) -> int:
    return sum(int(np.prod(s)) for s in trainable_weights(onnx.load(path)).values())


def small_zoo(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    extra = {"width": 8} if name == "cnn" else {"dim": 32, "depth": 2, "mlp_dim": 64} if name == "vit" else {}
    if name == "mlp":
        extra = {"hidden": (64, 32)}
    return create_model(name, num_classes=10, input_shape=SHAPE, latent_dim=8, **extra, **kw)


# Every registered architecture, at torch's default opset and at 17, with both exporters torch has.
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("opset", [None, 17], ids=["default-opset", "opset17"])
@pytest.mark.parametrize("arch", image_architectures())
def test_zoo_export_matches_onnxruntime(tmp_path, arch, opset, dynamo):
    model = small_zoo(arch)
    path = export(model, tmp_path / f"{arch}.onnx", train=False, dynamo=dynamo, opset=opset)
    loaded = load_model(path)
    assert loaded.input_shape == SHAPE and loaded.num_classes == 10
    assert loaded.onnx.looks_eval_exported
    if opset is not None and not dynamo:  # the dynamo exporter cannot go below 18 and falls back to 18
        assert loaded.onnx.opset == opset
    x = torch.randn(2, *SHAPE)
    loaded.module.eval()
    with torch.no_grad():
        ours = loaded.module(x).numpy()
    np.testing.assert_allclose(ours, onnxruntime_output(path, x), atol=1e-4, rtol=0)
    assert loaded.num_trainable() == graph_weight_elements(path)
    if not dynamo:
        # The TorchScript exporter keeps the torch weights one to one (equal-valued ones merged by the
        # exporter are untied again); the dynamo exporter folds BatchNorm into Conv and pre-computes
        # parameter expressions, so its files hold other weights than the torch module.
        assert loaded.num_trainable() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("opset", [18, 19, 21, 22, 23])
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_vit_loads_at_recent_opsets(tmp_path, opset, dynamo):
    # The ViT exercises LayerNorm, softmax attention, GELU, Reshape/Transpose/Slice: the ops that changed most.
    path = export(small_zoo("vit", dropout=0.1), tmp_path / "vit.onnx", train=True, dynamo=dynamo, opset=opset)
    loaded = load_model(path)
    assert loaded.onnx.opset == opset
    assert loaded.num_trainable() == graph_weight_elements(path)


class LinearNet(nn.Module):
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 8, bias=bias)
        self.fc2 = nn.Linear(8, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("opset", [None, 17], ids=["default-opset", "opset17"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear_weights_are_trainable_and_give_the_same_gradients(tmp_path, bias, opset, dynamo):
    torch.manual_seed(0)
    model = LinearNet(bias)
    path = export(model, tmp_path / "linear.onnx", train=False, dynamo=dynamo, opset=opset, shape=(12,))
    loaded = load_model(path)
    assert loaded.input_shape == (12,) and loaded.num_classes == 3
    expected = 8 * 12 + 3 * 8 + (8 + 3 if bias else 0)
    assert loaded.num_trainable() == graph_weight_elements(path) == expected
    x, y = torch.randn(2, 12), torch.tensor([0, 2])
    np.testing.assert_allclose(loaded.module.eval()(x).detach().numpy(), onnxruntime_output(path, x), atol=1e-4)
    # The client's gradient over the loaded module has the same norm as over the original torch module.
    grads = []
    for module, params in ((model, list(model.parameters())), (loaded.module, list(loaded.trainable().values()))):
        loss = nn.functional.cross_entropy(module(x), y)
        grads.append(sum(g.pow(2).sum() for g in torch.autograd.grad(loss, params)).item())
    assert grads[0] == pytest.approx(grads[1], rel=1e-5)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_training_mode_dropout_comes_back_as_live_maskable_dropout(tmp_path, dynamo):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 4))
    path = export(model, tmp_path / "drop.onnx", train=True, dynamo=dynamo, shape=(12,))
    loaded = load_model(path)
    drops = [(n, m) for n, m in loaded.module.named_modules() if isinstance(m, MaskableDropout)]
    assert len(drops) == 1 and drops[0][1].p == pytest.approx(0.3)
    assert loaded.onnx.dropout_nodes[0][1] == pytest.approx(0.3) and not loaded.onnx.looks_eval_exported
    x = torch.randn(4, 12)
    loaded.module.train()
    assert not torch.equal(loaded.module(x), loaded.module(x))  # a fresh mask per forward
    drops[0][1].record = True
    loaded.module(x)
    mask = drops[0][1].last_mask
    assert mask.shape == (4, 64) and 0.55 < mask.mean().item() < 0.85  # keeps ~70% of the units
    loaded.module.eval()
    assert torch.equal(loaded.module(x), loaded.module(x))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_zoo_dropout_exports_as_dropout_nodes_with_their_rate(tmp_path, dynamo):
    path = export(small_zoo("mlp", dropout=0.4), tmp_path / "mlp.onnx", train=True, dynamo=dynamo)
    loaded = load_model(path)
    rates = [m.p for m in loaded.module.modules() if isinstance(m, MaskableDropout)]
    assert rates == pytest.approx([0.4, 0.4])
    assert [r for _, r in loaded.onnx.dropout_nodes] == pytest.approx([0.4, 0.4])


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_precode_export_stays_stochastic(tmp_path, dynamo):
    model = small_zoo("mlp", precode=True)
    path = export(model, tmp_path / "precode.onnx", train=True, dynamo=dynamo)
    loaded = load_model(path)
    assert ("RandomNormalLike" in loaded.onnx.op_types and
            any(op == "RandomNormalLike" for _, op in loaded.onnx.random_nodes))
    randoms = [m for m in loaded.module.modules() if isinstance(m, OnnxRandomOp)]
    assert len(randoms) == 1
    assert loaded.num_trainable() == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, *SHAPE)
    loaded.module.train()
    assert not torch.allclose(loaded.module(x), loaded.module(x))
    # With the noise pinned (as a well-informed attack would), the module is deterministic again.
    randoms[0].record = True
    loaded.module(x)
    randoms[0].sample = randoms[0].last_sample
    assert torch.equal(loaded.module(x), loaded.module(x))


def test_eval_export_of_a_dropout_model_is_flagged(tmp_path):
    path = export(small_zoo("mlp", dropout=0.5), tmp_path / "eval.onnx", train=False, dynamo=False)
    loaded = load_model(path)
    assert loaded.onnx.looks_eval_exported and loaded.onnx.dropout_nodes == ()
    assert not any(isinstance(m, MaskableDropout) for m in loaded.module.modules())


def test_declared_dropout_is_inserted_after_the_named_layer(tmp_path):
    torch.manual_seed(0)
    path = export(LinearNet(True), tmp_path / "lin.onnx", train=False, dynamo=False, shape=(12,))
    plain = load_model(path)
    first_linear = next(n for n, m in plain.module.named_modules() if isinstance(m, nn.Linear))
    loaded = load_model(path, dropout={first_linear: 0.5})
    assert loaded.declared_dropout == {first_linear: 0.5}
    assert first_linear == "fc1/Gemm"  # the ONNX node "/fc1/Gemm" -> onnx2torch module name
    by_node_name = load_model(path, dropout={"/fc1/Gemm": 0.5})
    assert [m.p for m in by_node_name.module.modules() if isinstance(m, MaskableDropout)] == [0.5]
    drops = [m for m in loaded.module.modules() if isinstance(m, MaskableDropout)]
    assert len(drops) == 1 and drops[0].p == 0.5
    assert loaded.num_trainable() == plain.num_trainable()
    x = torch.randn(3, 12)
    drops[0].record = True
    loaded.module.train()
    loaded.module(x)
    assert drops[0].last_mask.shape == (3, 8)  # applied to fc1's output
    loaded.module.eval()
    torch.testing.assert_close(loaded.module(x), plain.module.eval()(x))


def test_sha256_identifies_the_file(tmp_path):
    import hashlib

    path = export(LinearNet(True), tmp_path / "lin.onnx", train=False, dynamo=False, shape=(12,))
    with open(path, "rb") as f:
        assert load_model(path).sha256 == hashlib.sha256(f.read()).hexdigest()


def test_symbolic_batch_dimension_is_dropped_and_other_batch_sizes_run(tmp_path):
    torch.manual_seed(0)
    model = small_zoo("lenet").eval()
    path = str(tmp_path / "dyn.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, *SHAPE),), path, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    loaded = load_model(path)
    assert loaded.input_shape == SHAPE and loaded.onnx.batch_size is None
    x = torch.randn(5, *SHAPE)
    np.testing.assert_allclose(loaded.module.eval()(x).detach().numpy(), onnxruntime_output(path, x), atol=1e-4)
    fixed = load_model(export(model, tmp_path / "fixed.onnx", train=False, dynamo=False))
    assert fixed.onnx.batch_size == 2


def test_unnamed_opset10_dropout_nodes_get_their_module_names_and_exact_rates(tmp_path):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Dropout", ["x"], ["a"], ratio=0.2), helper.make_node("Dropout", ["a"], ["y"], ratio=0.3)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "unnamed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)]), str(path))
    loaded = load_model(path)
    modules = {n: m.p for n, m in loaded.module.named_modules() if isinstance(m, MaskableDropout)}
    assert dict(loaded.onnx.dropout_nodes) == modules == {"Dropout": 0.2, "Dropout_1": 0.3}


def _grad_norms(module: nn.Module, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = nn.functional.cross_entropy(module(x), y)
    return torch.stack([g.norm() for g in torch.autograd.grad(loss, params)])


def test_train_mode_gradient_matches_torch_with_masks_and_noise_pinned(tmp_path):
    # What the client computes: with the same dropout masks and PRECODE noise, the converted model gives
    # the torch model's gradient (as a multiset of per-tensor norms: parameter order differs).
    model = small_zoo("mlp", dropout=0.3, precode=True)
    path = export(model, tmp_path / "m.onnx", train=True, dynamo=False)
    loaded = load_model(path)
    x, y = torch.randn(2, *SHAPE), torch.tensor([1, 3])
    torch_drops = [m for m in model.modules() if isinstance(m, MaskableDropout)]
    onnx_drops = [m for m in loaded.module.modules() if isinstance(m, MaskableDropout)]
    masks = [(torch.rand(2, 64) > 0.3).float(), (torch.rand(2, 32) > 0.3).float()]
    for a, b, mask in zip(torch_drops, onnx_drops, masks, strict=True):
        a.mask, b.mask = mask, mask
    noise = torch.randn(2, 8)
    next(m for m in model.modules() if type(m).__name__ == "VariationalBottleneck").noise = noise
    next(m for m in loaded.module.modules() if isinstance(m, OnnxRandomOp)).sample = noise
    model.train(), loaded.module.train()
    torch.testing.assert_close(loaded.module(x), model(x))
    ours = _grad_norms(loaded.module, list(loaded.trainable().values()), x, y).sort().values
    theirs = _grad_norms(model, list(model.parameters()), x, y).sort().values
    torch.testing.assert_close(ours, theirs)


def test_train_mode_batchnorm_uses_batch_statistics_like_torch(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 14 * 14, 4))
    path = export(model, tmp_path / "bn.onnx", train=True, dynamo=False)
    loaded = load_model(path)
    assert not loaded.onnx.looks_eval_exported  # BatchNormalization in training mode is a training trace
    x, y = torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 3])
    model.train(), loaded.module.train()
    torch.testing.assert_close(loaded.module(x), model(x), atol=1e-4, rtol=1e-4)
    ours = _grad_norms(loaded.module, list(loaded.trainable().values()), x, y).sort().values
    theirs = _grad_norms(model, list(model.parameters()), x, y).sort().values
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)
