"""``leakaudit inspect``: table and --json on the bundled examples, exit codes on bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from leakaudit.cli import app_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = EXAMPLES / "models"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert app_main(["inspect", *args, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # stdout holds only the JSON document


def test_table_shows_model_facts_and_dropout(capsys: pytest.CaptureFixture[str]) -> None:
    path = MODELS / "mlp_dropout.onnx"
    assert app_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert sha256(path) in out
    assert "3,32,32" in out and "classes 10" in out
    assert out.count("dropout p=0.5 (onnx)") == 2
    assert "Linear" in out


def test_json_lists_layers_and_findings(capsys: pytest.CaptureFixture[str]) -> None:
    path = MODELS / "mlp_precode.onnx"
    doc = run_json(capsys, str(path))
    assert doc["schema"] == "leakaudit.inspect/1"
    assert doc["model"]["sha256"] == sha256(path)
    assert doc["model"]["input_shape"] == [3, 32, 32] and doc["model"]["num_classes"] == 10
    assert doc["model"]["onnx"]["random_nodes"][0]["op_type"] == "RandomNormalLike"
    assert sum(layer["trainable"] for layer in doc["layers"]) == doc["model"]["trainable_parameters"]
    (b,) = doc["bottlenecks"]
    assert b["latent_dim"] == 256 and len(b["params_before"]) == 4


def test_eval_export_warns_in_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(MODELS / "mlp_dropout_eval.onnx")
    assert app_main(["inspect", path]) == 0
    assert "--dropout LAYER=P" in capsys.readouterr().out
    doc = run_json(capsys, path)
    assert doc["dropout"] == [] and any("no Dropout nodes" in w for w in doc["warnings"])


def test_declared_dropout_option(capsys: pytest.CaptureFixture[str]) -> None:
    layers = run_json(capsys, str(MODELS / "mlp_dropout_eval.onnx"))["layers"]
    first_linear = next(layer["name"] for layer in layers if layer["type"] == "Linear")
    doc = run_json(capsys, str(MODELS / "mlp_dropout_eval.onnx"), "--dropout", f"{first_linear}=0.5")
    assert [(d["p"], d["source"]) for d in doc["dropout"]] == [(0.5, "declared")]
    assert doc["model"]["declared_dropout"] == {first_linear: 0.5}


def test_custom_random_layer_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    arch = f"{EXAMPLES / 'custom_arch.py'}:noisy_mlp"
    doc = run_json(capsys, str(MODELS / "noisy_mlp.safetensors"), "--arch", arch)
    assert len(doc["unrecognized_stochastic"]) == 1
    assert doc["model"]["arch"] == arch
    assert run_json(capsys, str(MODELS / "noisy_mlp.safetensors"), "--arch", arch,
                    "--no-probe")["unrecognized_stochastic"] == []


def test_safetensors_with_metadata_needs_no_options(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, str(MODELS / "cnn_dropout.safetensors"))
    assert doc["model"]["arch"] == "cnn" and [d["p"] for d in doc["dropout"]] == [0.25, 0.25]


@pytest.mark.parametrize("args, pattern", [
    (["missing.onnx"], "missing.onnx: no such file"),
    ([str(MODELS / "mlp.onnx"), "--dropout", "nolayer"], "--dropout"),
    ([str(MODELS / "mlp.onnx"), "--dropout", "nolayer=0.5"], "no layer 'nolayer'"),
    ([str(MODELS / "noisy_mlp.safetensors")], "names no architecture"),
    ([str(EXAMPLES / "README.md")], "unsupported model format"),
])
def test_input_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], args: list[str], pattern: str) -> None:
    assert app_main(["inspect", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leakaudit: error: ") and pattern in lines[0]


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["inspect", "missing.onnx", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
