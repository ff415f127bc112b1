"""Each bad model input is one line that names the input and says what to do."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file
from torch import nn

from leakaudit.errors import ConfigError, InputError, ModelError, UnknownNameError
from leakaudit.models import create_model, load_model, save_safetensors


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def _onnx(tmp_path, op: str = "Relu", domain: str = "", opset: int = 17) -> str:
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    return str(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.onnx: no such file"):
        load_model(tmp_path / "nope.onnx")


def test_unsupported_extension(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(InputError, match=r"model\.pt: unsupported model format \.pt; give an \.onnx") as e:
        load_model(tmp_path / "model.pt")
    one_line(e)


def test_corrupt_onnx(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ModelError, match=r"bad\.onnx: not a readable ONNX model .*re-export") as e:
        load_model(tmp_path / "bad.onnx")
    one_line(e)


def test_corrupt_safetensors(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"{not a header")
    with pytest.raises(ModelError, match=r"bad\.safetensors: not a readable safetensors file") as e:
        load_model(tmp_path / "bad.safetensors", arch="mlp")
    one_line(e)


def test_onnx_op_without_converter_is_named(tmp_path):
    path = _onnx(tmp_path, op="FancyOp", domain="com.acme")
    with pytest.raises(ModelError, match=r"m\.onnx: ONNX op 'com\.acme\.FancyOp' has no converter .*; re-export") as e:
        load_model(path)
    one_line(e)


def test_standard_op_without_converter_is_named(tmp_path):
    path = _onnx(tmp_path, op="Mish", opset=18)  # a real ONNX op onnx2torch does not convert
    with pytest.raises(ModelError, match=r"ONNX op 'Mish' has no converter \(opset 18\)"):
        load_model(path)


def test_a_working_onnx_graph_loads(tmp_path):
    # Control for the two tests above: the same graph with a convertible op loads.
    assert load_model(_onnx(tmp_path, op="Relu")).num_classes == 4


def test_architecture_that_does_not_match_the_weights(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(create_model("mlp", num_classes=5, input_shape=(3, 16, 16)).state_dict(), str(path))
    with pytest.raises(ModelError, match=r"w\.safetensors: weights do not fit arch cnn: \d+ missing: .*"
                                         r"\d+ unexpected: .*; check arch") as e:
        load_model(path, arch="cnn", input_shape=(3, 16, 16))
    one_line(e)


def test_wrong_input_shape_is_reported_as_wrong_shapes(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors(create_model("mlp", num_classes=5, input_shape=(3, 16, 16)), path, arch="mlp")
    with pytest.raises(ModelError, match=r"1 wrong shape \(file vs model\): 1\.weight \(256, 768\) vs \(256, 3072\)"):
        load_model(path, input_shape=(3, 32, 32))


def test_unknown_arch_name(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'resnet21': did you mean .*resnet20"):
        load_model(path, arch="resnet21")


def test_safetensors_without_arch(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(InputError, match=r"w\.safetensors: .*names no architecture; give arch"):
        load_model(path)


@pytest.mark.parametrize("spec, message", [
    ("{dir}/missing.py:build", r"missing\.py does not exist"),
    ("{dir}/net.py:nothere", r"has no callable 'nothere'; pick one of: build"),
    ("{dir}/broken.py:build", r"importing .*broken\.py failed \(ZeroDivisionError"),
    ("no_such_pkg_xyz.mod:build", r"cannot import module 'no_such_pkg_xyz\.mod'"),
    ("{dir}/net.py:", r"expected NAME, path/to/file\.py:factory"),
])
def test_bad_user_factory(tmp_path, spec, message):
    (tmp_path / "net.py").write_text("from torch import nn\n\ndef build():\n    return nn.Linear(4, 2)\n")
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    weights = tmp_path / "w.safetensors"
    save_file(nn.Linear(4, 2).state_dict(), str(weights))
    with pytest.raises(ConfigError, match=message) as e:
        load_model(weights, arch=spec.format(dir=tmp_path), input_shape=(4,))
    one_line(e)


def test_factory_that_does_not_return_a_module(tmp_path):
    (tmp_path / "net.py").write_text("def build():\n    return 42\n")
    weights = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(weights))
    with pytest.raises(ModelError, match=r"returned int, not a torch nn\.Module"):
        load_model(weights, arch=f"{tmp_path / 'net.py'}:build", input_shape=(4,))


def test_declared_dropout_on_a_missing_layer_lists_close_names(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(create_model("mlp", num_classes=5, input_shape=(3, 8, 8)), path, arch="mlp",
                     input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match=r"dropout 11=0\.5: .*has no layer '11'; close names: 1"):
        load_model(path, dropout={"11": 0.5})


def test_onnx_input_shape_contradiction(tmp_path):
    with pytest.raises(InputError, match=r"input_shape 8: does not match the input 4 of .*m\.onnx"):
        load_model(_onnx(tmp_path), input_shape=(8,))


def test_onnx_with_two_inputs_is_refused(tmp_path):
    # Here the dropout ratio is a second graph input: leakaudit feeds one image/feature tensor.
    node = helper.make_node("Dropout", ["x", "r"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                            helper.make_tensor_value_info("r", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match=r"d\.onnx: the graph has 2 inputs"):
        load_model(path)


def test_onnx_with_two_outputs_is_refused(tmp_path):
    relu = helper.make_node("Relu", ["x"], ["y"])
    neg = helper.make_node("Neg", ["x"], ["z"])
    graph = helper.make_graph([relu, neg], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match=r"two\.onnx: the graph has 2 outputs \(y, z\); .*logits only") as e:
        load_model(path)
    one_line(e)


def test_onnx_whose_converted_graph_fails_at_run_time(tmp_path):
    # A Reshape to a size the input does not have: valid ONNX, fails when run.
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 5])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [shape])
    path = tmp_path / "bad_reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match=r"bad_reshape\.onnx: the converted model fails on an input of shape "
                                         r"\[1, 4\]") as e:
        load_model(path)
    one_line(e)


def test_onnx_without_input_shape_needs_and_accepts_the_option(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "noshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(InputError, match=r"noshape\.onnx: the graph's input shape \? has symbolic dimensions; "
                                         r"give input_shape"):
        load_model(path)
    assert load_model(path, input_shape=(4,)).input_shape == (4,)


def test_declared_dropout_rate_out_of_range(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(create_model("mlp", num_classes=5, input_shape=(3, 8, 8)), path, arch="mlp",
                     input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match=r"dropout 1=1\.5: the rate must be in \[0, 1\)"):
        load_model(path, dropout={"1": 1.5})


@pytest.mark.parametrize("kind", ["onnx", "safetensors"])
def test_a_model_with_one_output_class_is_refused_at_load(tmp_path, kind):
    module = create_model("mlp", num_classes=1, input_shape=(1, 8, 8))
    path = tmp_path / f"regression.{kind}"
    if kind == "onnx":
        torch.onnx.export(module.eval(), torch.zeros(1, 1, 8, 8), str(path), dynamo=False)
    else:
        save_safetensors(module, path, arch="mlp", input_shape=(1, 8, 8), num_classes=1)
    with pytest.raises(ModelError, match=r"regression\.\w+: the model has 1 output; .*cross-entropy over one class "
                                         r"has a zero gradient.*; audit a model with 2 or more class logits"):
        load_model(path)
