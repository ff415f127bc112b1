"""Model errors through the CLI boundary: exit code 2, one line on stderr, no traceback."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper
from safetensors.torch import save_file

from leakaudit.cli import app_main
from leakaudit.models import create_model


def _bad_op_onnx(path):
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.acme")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    imports = [helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)]
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))


def _mismatched_weights(path):
    save_file(create_model("mlp", num_classes=5, input_shape=(3, 8, 8)).state_dict(), str(path))


@pytest.mark.parametrize("name, make, extra, starts", [
    ("missing.onnx", None, [], "no such file"),
    ("model.pt", lambda p: p.write_bytes(b"x"), [], "unsupported model format .pt"),
    ("corrupt.onnx", lambda p: p.write_bytes(b"\x00garbage" * 20), [], "not a readable ONNX model"),
    ("corrupt.safetensors", lambda p: p.write_bytes(b"{oops"), ["--arch", "mlp"], "not a readable safetensors"),
    ("fancy.onnx", _bad_op_onnx, [], "ONNX op 'com.acme.FancyOp'"),
    ("w.safetensors", _mismatched_weights, ["--arch", "cnn", "--input-shape", "3,8,8"],
     "weights do not fit --arch cnn"),
])
def test_inspect_reports_model_errors_in_one_line_with_exit_code_2(tmp_path, capsys, name, make, extra, starts):
    path = tmp_path / name
    if make is not None:
        make(path)
    code = app_main(["inspect", str(path), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"leakaudit: error: {path}: {starts}")
