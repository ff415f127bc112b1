"""A small ONNX file cannot make leakaudit allocate a huge tensor or read files outside the model's folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from leakaudit.cli import app_main
from leakaudit.errors import ConfigError, InputError, ModelError
from leakaudit.models import load_model

LIMIT = "more than the 268,435,456 leakaudit allocates for one tensor; check the file comes from a real export, " \
        "or raise LEAKAUDIT_MAX_TENSOR_ELEMENTS if it does"


def _model(path, extra_nodes, extra_inits=(), *, extra_output: str | None = None, weight=None):
    """x (2, 4) -> MatMul W -> y (2, 3); ``extra_output`` (a scalar) is added to y so the extra nodes run."""
    w = weight if weight is not None else numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "W")
    nodes = [*extra_nodes, helper.make_node("MatMul", ["x", "W"], ["y0" if extra_output else "y"], name="fc")]
    if extra_output:
        nodes += [helper.make_node("ReduceSum", [extra_output], ["s"], keepdims=0, name="sum"),
                  helper.make_node("Add", ["y0", "s"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              initializer=[w, *extra_inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _declared_only(name, dims):
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    tensor.raw_data = b"\0" * 16
    return tensor


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _constant_of_shape(path):
    return _model(path, [helper.make_node("ConstantOfShape", ["shape"], ["c"], name="cos")],
                  [_ints("shape", [1, 4 * 10 ** 9])], extra_output="c")


def test_a_constant_of_shape_bomb_is_refused_before_allocating(tmp_path):
    """The issue's 1 KB file took 13 GB; here the CLI runs with 1.5 GB of address space beyond what it has
    after start-up, and must refuse the file with exit 2."""
    path = _constant_of_shape(tmp_path / "bomb.onnx")
    script = textwrap.dedent(f"""
        import resource, sys
        from leakaudit.cli import app_main
        import leakaudit.models.onnx_loader  # heavy imports first: the limit is for what the file makes us do
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 1536 * 2 ** 20, resource.RLIM_INFINITY))
        sys.exit(app_main(["inspect", {str(path)!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"leakaudit: error: {path}: value 'c' has 4,000,000,000 elements, {LIMIT}"


@pytest.mark.parametrize("make, says", [
    (lambda p: _model(p, [helper.make_node("Tile", ["x", "reps"], ["t"], name="tile")],
                      [_ints("reps", [100000, 100000])], extra_output="t"), "value 't' has 80,000,000,000 elements"),
    (lambda p: _model(p, [helper.make_node("Expand", ["x", "shape"], ["e"], name="expand")],
                      [_ints("shape", [10 ** 5, 10 ** 4, 1, 1])], extra_output="e"), "value 'e' has 8,000,000,000"),
    (lambda p: _model(p, [], weight=_declared_only("W", [4, 3 * 10 ** 9])),
     "initializer 'W' has 12,000,000,000 elements"),
])
def test_huge_static_tensors_are_refused(tmp_path, make, says):
    with pytest.raises(ModelError, match=f"{says}"):
        load_model(make(tmp_path / "m.onnx"))


def test_an_op_whose_size_is_computed_from_data_is_checked_before_it_runs(tmp_path):
    # The shape comes from the input's values (Cast of x): no inference can bound it, so the converted op
    # checks the size it is asked for before allocating.
    nodes = [helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64, name="cast"),
             helper.make_node("ReduceMax", ["xi"], ["m"], keepdims=1, name="max"),
             helper.make_node("Reshape", ["m", "one"], ["m1"], name="reshape"),
             helper.make_node("ConstantOfShape", ["m1"], ["c"], name="grow")]
    path = _model(tmp_path / "m.onnx", nodes, [_ints("one", [1])], extra_output="c")
    model = load_model(path)  # the load-time run feeds zeros: a size of 0
    with pytest.raises(ModelError, match=r"the output of ConstantOfShape node 'grow' has 3,000,000,000 elements, "
                                         + LIMIT):
        model.module(torch.full((2, 4), 3e9))


def test_the_bound_is_configurable(tmp_path, monkeypatch):
    path = _model(tmp_path / "m.onnx", [])
    monkeypatch.setenv("LEAKAUDIT_MAX_TENSOR_ELEMENTS", "8")
    with pytest.raises(ModelError, match=r"initializer 'W' has 12 elements, more than the 8 "):
        load_model(path)
    monkeypatch.setenv("LEAKAUDIT_MAX_TENSOR_ELEMENTS", "lots")
    with pytest.raises(ConfigError, match=r"LEAKAUDIT_MAX_TENSOR_ELEMENTS='lots': not a positive integer"):
        load_model(path)
    monkeypatch.setenv("LEAKAUDIT_MAX_TENSOR_ELEMENTS", str(10 ** 6))
    assert load_model(path).num_classes == 3


def _external(tmp_path, location, length=48):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 3], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _model(folder / "m.onnx", [], weight=w)


@pytest.mark.parametrize("location, says", [
    ("../secret.bin", "initializer 'W' reads external data from '../secret.bin', outside the model's folder"),
    ("{tmp}/secret.bin", "initializer 'W' reads external data from '{tmp}/secret.bin', outside the model's folder"),
    ("link.bin", "the external data 'link.bin' of initializer 'W' is a symbolic link"),
    ("short.bin", "initializer 'W' reads bytes 0..48 of 'short.bin', which has 8"),
])
def test_external_data_is_read_only_from_the_models_folder(tmp_path, capsys, location, says):
    (tmp_path / "secret.bin").write_bytes(np.arange(12, dtype=np.float32).tobytes())
    path = _external(tmp_path, location.format(tmp=tmp_path))
    (path.parent / "link.bin").symlink_to(tmp_path / "secret.bin")
    (path.parent / "short.bin").write_bytes(b"\0" * 8)
    assert app_main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"leakaudit: error: {path}: {says.format(tmp=tmp_path)}")


def test_external_data_next_to_the_model_loads(tmp_path):
    path = _external(tmp_path, "m.onnx.data")
    (path.parent / "m.onnx.data").write_bytes(np.arange(12, dtype=np.float32).tobytes())
    model = load_model(path)
    assert model.num_trainable() == 12


def test_a_huge_static_input_is_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]),
                               helper.make_node("ReduceMean", ["f"], ["y"], axes=[1], keepdims=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(InputError, match=r"the input of shape \[1, 3, 100000, 100000\] has 30,000,000,000 elements"):
        load_model(tmp_path / "m.onnx", num_classes=2)
