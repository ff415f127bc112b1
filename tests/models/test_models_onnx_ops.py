"""Single-op graphs for the converters leakaudit adds to onnx2torch, checked against onnxruntime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from leakaudit.models import OnnxRandomOp
from leakaudit.models.onnx_loader import convert

ort = pytest.importorskip("onnxruntime")
X_SHAPE = [2, 5, 6]


def build(tmp_path, node, opset: int, inits=(), extra_nodes=()) -> str:
    graph = helper.make_graph([*extra_nodes, node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE)],
                              [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
                              list(inits))
    # IR 8 so the installed onnxruntime reads it whatever IR version onnx writes by default.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    path = tmp_path / "op.onnx"
    onnx.save(model, str(path))
    return str(path)


def ints(name: str, values: list[int]):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def compare(path: str) -> None:
    x = np.random.default_rng(0).standard_normal(X_SHAPE).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = convert(path, onnx.load(path))(torch.from_numpy(x))
    ours = ours[0] if isinstance(ours, tuple) else ours
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours.detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([0], [3], [1], [1]),
    ([-1], [-10**9], [2], [-1]),  # reverse a whole axis
    ([4], [0], [1], [-2]),
    ([1, 0], [10**9, 2], [1, 2], [2, 1]),
    ([-3], [10**18], [-1], [1]),  # negative axis, end past the dimension
])
def test_slice(tmp_path, starts, ends, axes, steps):
    node = helper.make_node("Slice", ["x", "s", "e", "a", "p"], ["y"])
    compare(build(tmp_path, node, 13, [ints("s", starts), ints("e", ends), ints("a", axes), ints("p", steps)]))


@pytest.mark.parametrize("opset", [18, 20, 21])
def test_split_with_num_outputs(tmp_path, opset):
    node = helper.make_node("Split", ["x"], ["y", "z", "w"], axis=2, num_outputs=3)
    graph_out = helper.make_node("Concat", ["w", "y"], ["out"], axis=2)
    path = build(tmp_path, graph_out, opset, extra_nodes=[node])
    compare(path)


@pytest.mark.parametrize("opset", [19, 21])
def test_reshape_allowzero(tmp_path, opset):
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1)
    compare(build(tmp_path, node, opset, [ints("shape", [2, -1, 3])]))


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])
def test_reduce_with_axes_input(tmp_path, op):
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)
    compare(build(tmp_path, node, 18, [ints("axes", [1, -1])]))


@pytest.mark.parametrize("opset", [18, 19, 21])
def test_pad_with_axes_input(tmp_path, opset):
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode="reflect")
    compare(build(tmp_path, node, opset, [ints("pads", [1, 2, 2, 1]), ints("axes", [1, 2])]))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_20(tmp_path, approximate):
    compare(build(tmp_path, helper.make_node("Gelu", ["x"], ["y"], approximate=approximate), 20))


def test_random_like_ops_sample_fresh_values_with_the_right_law(tmp_path):
    normal = helper.make_node("RandomNormalLike", ["x"], ["n"], mean=2.0, scale=0.5)
    uniform = helper.make_node("RandomUniformLike", ["x"], ["u"], low=-1.0, high=3.0)
    out = helper.make_node("Concat", ["n", "u"], ["y"], axis=0)
    path = build(tmp_path, out, 20, extra_nodes=[normal, uniform])
    module = convert(path, onnx.load(path))
    assert len([m for m in module.modules() if isinstance(m, OnnxRandomOp)]) == 2
    x = torch.zeros(200, 5, 6)
    first, second = module(x), module(x)
    assert first.shape == (400, 5, 6) and not torch.equal(first, second)
    n, u = first[:200], first[200:]
    assert abs(n.mean().item() - 2.0) < 0.02 and abs(n.std().item() - 0.5) < 0.02
    assert u.min().item() >= -1.0 and u.max().item() < 3.0 and abs(u.mean().item() - 1.0) < 0.05


def test_bernoulli_and_fixed_shape_random_normal(tmp_path):
    probs = helper.make_node("Sigmoid", ["x"], ["p"])
    bern = helper.make_node("Bernoulli", ["p"], ["b"])
    noise = helper.make_node("RandomNormal", [], ["n"], shape=X_SHAPE)
    out = helper.make_node("Add", ["b", "n"], ["y"])
    path = build(tmp_path, out, 20, extra_nodes=[probs, bern, noise])
    module = convert(path, onnx.load(path))
    bern_module = next(m for m in module.modules() if type(m).__name__ == "OnnxBernoulli")
    bern_module.record = True
    module(torch.zeros(*X_SHAPE))
    values = set(bern_module.last_sample.unique().tolist())
    assert values <= {0.0, 1.0} and len(values) == 2  # p = sigmoid(0) = 0.5


def test_slice_and_reshape_with_bounds_computed_at_run_time(tmp_path):
    # Bounds produced by nodes (not constants) take the dynamic path of both converters.
    negs = [helper.make_node("Neg", [n], [f"{n}_neg"]) for n in ("s", "e", "a", "p")]
    negs += [helper.make_node("Neg", [f"{n}_neg"], [f"{n}_dyn"]) for n in ("s", "e", "a", "p")]
    sl = helper.make_node("Slice", ["x", "s_dyn", "e_dyn", "a_dyn", "p_dyn"], ["sliced"])
    shape = helper.make_node("Shape", ["sliced"], ["shp"])
    reshape = helper.make_node("Reshape", ["sliced", "shp"], ["y"], allowzero=1)
    path = build(tmp_path, reshape, 19, [ints("s", [-1]), ints("e", [-10**9]), ints("a", [2]), ints("p", [-2])],
                 extra_nodes=[*negs, sl, shape])
    compare(path)


def test_a_torchvision_backed_op_converts_when_its_converter_was_deferred(tmp_path):
    # The loader imports onnx2torch without its RoiAlign/NonMaxSuppression converters (they import torchvision,
    # ~1.5 CPU-s of every ONNX scan's start-up); a graph that has one must still convert. In a fresh process:
    # here other tests may have imported torchvision already, and then nothing is deferred.
    graph = helper.make_graph(
        [helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=2, output_width=3, sampling_ratio=2,
                          spatial_scale=0.5)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("rois", TensorProto.FLOAT, [2, 4], [0, 0, 14, 14, 2, 3, 9, 12]),
         helper.make_tensor("idx", TensorProto.INT64, [2], [0, 1])])
    path = tmp_path / "roi.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8), str(path))
    x = np.random.default_rng(0).standard_normal([2, 3, 8, 8]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, onnx, torch\n"
            "from leakaudit.models.onnx_loader import convert\n"
            "print('before', 'torchvision' in sys.modules)\n"
            f"path = {str(path)!r}\n"
            f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, convert(path, onnx.load(path))(x).detach().numpy())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["before", "False"]
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)
