"""Standard architectures by name: torchvision/timm factories loaded from safetensors without a wrapper file."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file, save_model

from leakaudit.cli import app_main
from leakaudit.config import parse_arch_args


def _inspect(capsys, *args) -> tuple[int, str, str]:
    code = app_main(["inspect", *map(str, args), "--no-probe", "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_a_torchvision_factory_gets_num_classes_but_no_input_shape(tmp_path, capsys):
    path = tmp_path / "resnet18.safetensors"
    save_model(torchvision.models.resnet18(num_classes=10), str(path))
    code, out, err = _inspect(capsys, path, "--arch", "torchvision.models:resnet18", "--num-classes", "10",
                              "--input-shape", "3,32,32")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"]["num_classes"] == 10 and doc["model"]["input_shape"] == [3, 32, 32]


def test_a_timm_model_by_name_with_its_arguments(tmp_path, capsys):
    timm = pytest.importorskip("timm", reason="timm is an optional dependency (pip install 'leakaudit[timm]')")
    path = tmp_path / "vit.safetensors"
    save_model(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4,
                                 num_classes=10), str(path))
    code, out, err = _inspect(capsys, path, "--arch", "timm:vit_tiny_patch16_224", "--arch-arg", "img_size=32",
                              "--arch-arg", "patch_size=4", "--num-classes", "10", "--input-shape", "3,32,32")
    assert code == 0, err
    assert json.loads(out)["model"]["num_classes"] == 10


@pytest.mark.parametrize("arg, says", [
    ("img_size", "'img_size' is not KEY=VALUE"),
    ("=32", "'=32' is not KEY=VALUE"),
    ("img-size=32", "'img-size' is not an argument name"),
])
def test_a_malformed_arch_arg_is_one_line_exit_2(tmp_path, capsys, arg, says):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    code, _, err = _inspect(capsys, path, "--arch", "torchvision.models:resnet18", "--arch-arg", arg)
    assert code == 2 and err.count("\n") == 0 and err.startswith(f"leakaudit: error: --arch-arg: {says}")


def test_arch_arg_values_are_toml_literals():
    assert parse_arch_args(["img_size=32", "drop=0.1", "fused=false", "name=abc", "shape=[4, 4]", "s='x y'"],
                           "--arch-arg") == {"img_size": 32, "drop": 0.1, "fused": False, "name": "abc",
                                             "shape": [4, 4], "s": "x y"}


def test_a_file_cannot_name_a_timm_model(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"leakaudit.arch": "timm:vit_tiny_patch16_224",
                                                          "leakaudit.input_shape": "[3, 32, 32]"})
    code, _, err = _inspect(capsys, path)
    assert code == 2 and "asks to run code" in err
