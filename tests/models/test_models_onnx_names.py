"""A model file is data: names in an ONNX file never reach the code torch.fx generates and runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from leakaudit.cli import app_main
from leakaudit.models import load_model
from leakaudit.models.onnx_names import safe_names


def _payload(marker) -> str:
    """The issue's node name: closes fx's string literal, runs a shell command, reopens the literal."""
    return (f'node_relu_1") if getattr(__import__("os"), "system")("id > {marker}") < 0 '
            'else getattr(self, "node_relu_1')


def _mlp_onnx(path, *, relu_name="relu", value_name="r", weight_name="W", input_name="x", dropout_name=None):
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32), weight_name)
    nodes = [helper.make_node("Relu", [input_name], [value_name], name=relu_name)]
    last = value_name
    if dropout_name is not None:
        ratio = numpy_helper.from_array(np.array(0.3, dtype=np.float32), "ratio")
        nodes.append(helper.make_node("Dropout", [last, "ratio"], ["d"], name=dropout_name))
        last = "d"
        inits = [w, ratio]
    else:
        inits = [w]
    nodes.append(helper.make_node("MatMul", [last, weight_name], ["y"], name="fc"))
    graph = helper.make_graph(nodes, 'g"); import os #',
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("command", ["inspect", "scan"])
def test_a_node_name_holding_python_code_does_not_run_it(tmp_path, capsys, command):
    marker = tmp_path / "PWNED"
    path = _mlp_onnx(tmp_path / "evil.onnx", relu_name=_payload(marker))
    args = [command, str(path)]
    if command == "scan":
        np.savez(tmp_path / "data.npz", x=np.ones((2, 4), dtype=np.float32), y=np.array([0, 1]))
        args += ["--data", str(tmp_path / "data.npz"), "--output-dir", str(tmp_path / "out"), "--budget", "quick",
                 "--attacks", "ig", "--iterations", "1", "--restarts", "1"]
    assert app_main(args) in (0, 1, 4)  # the model loads and the command reaches a verdict
    capsys.readouterr()
    assert not marker.exists()


def test_a_model_with_hostile_names_loads_and_keeps_them_for_display(tmp_path):
    marker = tmp_path / "PWNED"
    evil = _payload(marker)
    path = _mlp_onnx(tmp_path / "evil.onnx", relu_name=evil, value_name=evil, weight_name=evil + "w",
                     input_name=evil + "x", dropout_name=evil + "drop")
    model = load_model(path, dropout={evil: 0.2})
    out = model.module(torch.ones(2, 4))
    assert out.shape == (2, 3) and not marker.exists()
    assert model.onnx.dropout_nodes[0][0] == evil + "drop"  # the file's name, for display
    assert dict(model.onnx.renamed)[evil] in dict(model.module.named_modules())
    assert list(model.declared_dropout) == [evil]  # --dropout accepts the file's name
    names = [n for n, _ in model.module.named_modules()] + [n for n, _ in model.module.named_parameters()]
    assert all('"' not in n and "(" not in n for n in names)


def test_the_dropout_node_with_a_renamed_name_is_detected_under_its_module(tmp_path):
    from leakaudit.detect import detect

    path = _mlp_onnx(tmp_path / "m.onnx", dropout_name='drop"; x')
    findings = detect(load_model(path))
    (layer,) = findings.dropout
    assert layer.name == "drop___x" and layer.p == pytest.approx(0.3)


def test_ordinary_export_names_are_kept(tmp_path):
    from leakaudit.models import create_model

    path = tmp_path / "cnn.onnx"
    torch.onnx.export(create_model("cnn", num_classes=10, input_shape=(3, 32, 32)).eval(),
                      torch.zeros(1, 3, 32, 32), str(path), dynamo=False)
    original = onnx.load(str(path))
    safe, renamed = safe_names(original)
    assert renamed == {}
    assert [n.name for n in safe.graph.node] == [n.name for n in original.graph.node]
    assert [i.name for i in safe.graph.initializer] == [i.name for i in original.graph.initializer]


def test_names_that_clean_to_the_same_text_stay_distinct():
    nodes = [helper.make_node("Relu", ["x"], ["a b"], name="r"), helper.make_node("Relu", ["a b"], ["a_b"], name="r"),
             helper.make_node("Relu", ["a_b"], ["y"], name='r"')]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    safe, renamed = safe_names(helper.make_model(graph))
    assert len({n.name for n in safe.graph.node}) == 3
    assert len({o for n in safe.graph.node for o in n.output}) == 3
    assert set(renamed) == {'r"'}


def test_subgraph_names_are_rewritten_and_keep_reading_outer_values():
    evil = 'x") or __import__("os").system("id") or ("'
    branch = lambda tag: helper.make_graph(  # noqa: E731
        [helper.make_node("Relu", [evil], [f"{tag} out"], name=f'{tag}"node')], f'{tag}"g', [],
        [helper.make_tensor_value_info(f"{tag} out", TensorProto.FLOAT, [1])])
    nodes = [helper.make_node("Relu", ["x"], [evil], name="first"),
             helper.make_node("If", ["cond"], ["y"], name='if"', then_branch=branch("then"),
                              else_branch=branch("else"))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    safe, _ = safe_names(helper.make_model(graph))
    outer = safe.graph.node[0].output[0]
    for sub in (safe.graph.node[1].attribute[0].g, safe.graph.node[1].attribute[1].g):
        assert sub.node[0].input[0] == outer  # the subgraph still reads the outer value
        assert '"' not in sub.name + sub.node[0].name + sub.node[0].output[0]
    assert '"' not in outer + safe.graph.node[1].name


@pytest.mark.parametrize("command", ["inspect", "scan"])
@pytest.mark.parametrize("field, name", [("node name", b"relu"), ("valueinfo name", b"xin")])
def test_a_name_that_is_not_utf8_is_one_line_exit_2(tmp_path, capsys, command, field, name):
    """Issue 20: a node name with invalid UTF-8 was exit 3 (`TypeError: cannot use a string pattern on a
    bytes-like object`)."""
    path = _mlp_onnx(tmp_path / "bad.onnx", relu_name="relu", input_name="xin")
    raw = path.read_bytes()
    assert raw.count(name) >= 1
    path.write_bytes(raw.replace(name, name[:-2] + b"\xff\xfe"))  # same length: the file stays well-formed
    args = [command, str(path)]
    if command == "scan":
        np.savez(tmp_path / "data.npz", x=np.ones((2, 4), dtype=np.float32), y=np.array([0, 1]))
        args += ["--data", str(tmp_path / "data.npz"), "--output-dir", str(tmp_path / "out"), "--quiet"]
    assert app_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.endswith(f"{path}: the ONNX file holds a {field} that is not valid UTF-8; re-export the model, or "
                        "rename its nodes and values to text (onnx.load, edit, onnx.save)")
