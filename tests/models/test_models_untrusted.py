"""A safetensors file is data, and user code cannot turn a scan into a silent pass.

- the file's metadata may name a built-in architecture only: a code reference in it is refused (exit 2)
  with the ``--arch`` that runs it on purpose, and nothing is imported or called;
- malformed metadata is exit 2 naming the metadata key, not an option the user never gave;
- an exit or exception of a user factory (at import, when called, in its forward) is exit 2 naming it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file, save_model

from leakaudit.cli import app_main
from leakaudit.models import create_model


def _run(capsys, *args) -> tuple[int, str]:
    code = app_main(["inspect", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0
    return code, err


@pytest.mark.parametrize("arch", ["os:system", "{dir}/evil.py:build"])
def test_a_code_reference_in_the_metadata_is_refused_without_running_it(tmp_path, capsys, arch):
    marker = tmp_path / "PWNED"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build(**kw):\n    return None\n")
    arch = arch.format(dir=tmp_path)
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={
        "leakaudit.arch": arch, "leakaudit.input_shape": "[4]",
        "leakaudit.arch_kwargs": json.dumps({"command": f"touch {marker}"})})
    code, err = _run(capsys, path)
    assert code == 2 and not marker.exists()
    assert err == (f"leakaudit: error: {path}: the file's metadata leakaudit.arch={arch!r} asks to run code; a "
                   "model file may only name a built-in architecture (cnn, flower, lenet, lstm-lm, mlp, resnet18, "
                   "resnet20, text-transformer, vit): "
                   "if you trust that code, run it on purpose with --arch path/to/file.py:factory")


@pytest.mark.parametrize("key, value, says", [
    ("arch_kwargs", "[1, 2]", "leakaudit.arch_kwargs='[1, 2]' is not a JSON object of factory arguments"),
    ("arch_kwargs", '"abc"', "leakaudit.arch_kwargs='abc' is not a JSON object of factory arguments"),
    ("arch_kwargs", "3", "leakaudit.arch_kwargs='3' is not a JSON object of factory arguments"),
    ("arch_kwargs", "{oops", "leakaudit.arch_kwargs='{oops' is not JSON"),
    ("num_classes", '"ten"', "leakaudit.num_classes='ten' is not a positive integer"),
    ("arch", "[1]", "leakaudit.arch='[1]' is not an architecture name"),
])
def test_malformed_metadata_is_an_input_error_naming_the_metadata(tmp_path, capsys, key, value, says):
    path = tmp_path / "w.safetensors"
    meta = {"leakaudit.arch": "mlp", "leakaudit.input_shape": "[1, 28, 28]", "leakaudit.num_classes": "10",
            f"leakaudit.{key}": value}
    save_model(create_model("mlp", num_classes=10, input_shape=(1, 28, 28)), str(path), metadata=meta)
    code, err = _run(capsys, path)
    assert code == 2
    assert err.startswith(f"leakaudit: error: {path}: the file's metadata {says}; fix the metadata")
    if key == "arch_kwargs":
        assert "--" not in err  # no option sets arch_kwargs: the message must not point at one


def test_an_unknown_architecture_in_the_metadata_names_the_metadata(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"leakaudit.arch": "mpl", "leakaudit.input_shape": "[4]"})
    code, err = _run(capsys, path)
    assert code == 2
    assert err.startswith(f"leakaudit: error: {path}: the architecture 'mpl' named by the file's metadata "
                          "(leakaudit.arch): unknown architecture 'mpl': did you mean mlp?")


@pytest.mark.parametrize("source, says", [
    ("import sys\nsys.exit(0)\ndef build(**kw):\n    pass\n", "importing {py} failed (it called sys.exit(0))"),
    ("import sys\ndef build(**kw):\n    sys.exit(0)\n", "building the model failed (it called sys.exit(0))"),
    ("class Stop(BaseException):\n    pass\ndef build(**kw):\n    raise Stop('no')\n",
     "building the model failed (Stop: no)"),
    ("import sys, torch\nclass M(torch.nn.Linear):\n    def forward(self, x):\n        sys.exit(0)\n"
     "def build(**kw):\n    return M(4, 3)\n", "--arch {py}:build: the model's forward stopped the process (it called "
     "sys.exit(0)); fix the architecture's code"),
])
def test_an_exit_from_user_code_is_an_input_error_not_a_pass(tmp_path, capsys, source, says):
    py = tmp_path / "net.py"
    py.write_text(source)
    path = tmp_path / "w.safetensors"
    save_file(torch.nn.Linear(4, 3).state_dict(), str(path))
    code, err = _run(capsys, path, "--arch", f"{py}:build", "--input-shape", "4")
    assert code == 2
    assert says.format(py=py) in err


def test_a_scan_whose_factory_exits_fails_with_exit_2(tmp_path, capsys):
    py = tmp_path / "net.py"
    py.write_text("import sys\ndef build(**kw):\n    sys.exit(0)\n")
    path = tmp_path / "w.safetensors"
    save_file(torch.nn.Linear(4, 3).state_dict(), str(path))
    data = tmp_path / "data.npz"
    np.savez(data, x=np.zeros((2, 4), dtype=np.float32), y=np.array([0, 1]))
    code = app_main(["scan", str(path), "--arch", f"{py}:build", "--input-shape", "4", "--data", str(data),
                     "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "it called sys.exit(0)" in capsys.readouterr().err


def test_a_huge_input_shape_in_the_metadata_is_refused_before_allocating(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_model(create_model("mlp", num_classes=10, input_shape=(1, 28, 28)), str(path),
               metadata={"leakaudit.arch": "mlp", "leakaudit.input_shape": "[3, 100000, 100000]"})
    code, err = _run(capsys, path)
    assert code == 2
    assert err == (f"leakaudit: error: {path}: the file's metadata leakaudit.input_shape [3, 100000, 100000] is not "
                   "a sample shape leakaudit can allocate (dims >= 1, at most 268,435,456 elements); give "
                   "--input-shape C,H,W")


def test_an_exit_from_the_forward_mid_scan_is_exit_2_not_0(tmp_path, capsys):
    """The forward runs fine at load and detection, then exits during the attacks."""
    py = tmp_path / "late.py"
    py.write_text("import sys\nfrom torch import nn\n\nclass M(nn.Module):\n    def __init__(self):\n"
                  "        super().__init__()\n        self.fc = nn.Linear(4, 3)\n        self.calls = 0\n\n"
                  "    def forward(self, x):\n        self.calls += 1\n        if self.calls > 6:\n"
                  "            sys.exit(0)\n        return self.fc(x)\n\ndef build(**kw):\n    return M()\n")
    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}, str(path),
              metadata={"leakaudit.input_shape": "[4]"})
    data = tmp_path / "data.npz"
    np.savez(data, x=np.ones((2, 4), dtype=np.float32), y=np.array([0, 1]))
    code = app_main(["scan", str(path), "--arch", f"{py}:build", "--data", str(data), "--budget", "quick",
                     "--attacks", "analytic,ig", "--output-dir", str(tmp_path / "out")])  # ig runs past the leak
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"leakaudit: error: --arch {py}:build: the model's forward stopped the process (it called sys.exit(0)); "
        "fix the architecture's code")


# Issue 20: metadata that reaches a loader. A model file may configure built-in architectures only.

RECORDER = ("import json, os, torch\n"
            "def build(**kw):\n"
            "    open(os.environ['SEEN'], 'w').write(json.dumps(sorted(kw)))\n"
            "    return torch.nn.Linear(4, 3)\n")


@pytest.mark.parametrize("metadata", [{"checkpoint_path": "/tmp/evil.pth"}, {"weights": "IMAGENET1K_V1"},
                                      {"pretrained": True, "width": 3}])
def test_metadata_arguments_never_reach_a_third_party_factory(tmp_path, capsys, monkeypatch, metadata):
    """`--arch timm:…` got `checkpoint_path` from the file (timm opened it), `--arch torchvision.models:…` got
    `weights` (torchvision tried to download): a third-party factory gets arguments from the user alone."""
    py = tmp_path / "net.py"
    py.write_text(RECORDER)
    monkeypatch.setenv("SEEN", str(tmp_path / "seen.json"))
    path = tmp_path / "w.safetensors"
    save_file(torch.nn.Linear(4, 3).state_dict(), str(path),
              metadata={"leakaudit.arch_kwargs": json.dumps(metadata), "leakaudit.dropout": "0.5"})
    code, _ = _run(capsys, path, "--arch", f"{py}:build", "--input-shape", "4", "--num-classes", "3")
    assert code == 0
    assert json.loads((tmp_path / "seen.json").read_text()) == ["num_classes"]
    # the user's own --arch-arg, on the command line, still reaches it (a loader keyword included)
    code, _ = _run(capsys, path, "--arch", f"{py}:build", "--input-shape", "4", "--num-classes", "3",
                   "--arch-arg", "weights=none")
    assert code == 0 and json.loads((tmp_path / "seen.json").read_text()) == ["num_classes", "weights"]


def test_a_loader_keyword_in_a_zoo_models_metadata_is_refused(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_model(create_model("mlp", num_classes=10, input_shape=(1, 28, 28)), str(path), metadata={
        "leakaudit.arch": "mlp", "leakaudit.input_shape": "[1, 28, 28]",
        "leakaudit.arch_kwargs": json.dumps({"pretrained_cfg_overlay": {"file": "/etc/passwd"}})})
    code, err = _run(capsys, path)
    assert code == 2
    assert err == (f"leakaudit: error: {path}: the file's metadata leakaudit.arch_kwargs names pretrained_cfg_overlay, "
                   "which opens or downloads a file; a model file may not ask for that: fix the metadata (e.g. save "
                   "the weights again with leakaudit.models.save_safetensors)")


def test_a_loader_keyword_from_a_config_file_is_refused(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_file(torch.nn.Linear(4, 3).state_dict(), str(path))
    config = tmp_path / "leakaudit.toml"
    config.write_text('arch = "timm:resnet18"\n[arch_args]\ncheckpoint_path = "/tmp/evil.pth"\n')
    code = app_main(["scan", str(path), "--data", str(tmp_path), "--config", str(config),
                     "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith(f"{config} arch_args: checkpoint_path makes the architecture's factory open or download a "
                        "file, which only the command line may ask for; remove it, or give --arch-arg "
                        "checkpoint_path=... on the command line if you mean it")


@pytest.mark.parametrize("value", ["NaN", "-0.5", "1.0", '"0.5"'])
def test_a_dropout_rate_in_the_metadata_that_is_not_a_rate_is_refused(tmp_path, capsys, value):
    """NaN or -0.5 built a model without dropout and the scan passed (exit 0)."""
    path = tmp_path / "w.safetensors"
    save_model(create_model("mlp", num_classes=10, input_shape=(1, 28, 28)), str(path), metadata={
        "leakaudit.arch": "mlp", "leakaudit.input_shape": "[1, 28, 28]", "leakaudit.dropout": value})
    code, err = _run(capsys, path)
    assert code == 2
    assert "the file's metadata leakaudit.dropout=" in err and "is not a dropout rate in [0, 1)" in err


@pytest.mark.parametrize("value", ["nan", "-0.5", "inf", "true"])
def test_an_arch_arg_dropout_that_is_not_a_rate_is_refused(tmp_path, capsys, value):
    path = tmp_path / "w.safetensors"
    save_model(create_model("mlp", num_classes=10, input_shape=(1, 28, 28)), str(path))
    code, err = _run(capsys, path, "--arch", "mlp", "--input-shape", "1,28,28", "--arch-arg", f"dropout={value}")
    assert code == 2
    assert "--arch mlp: dropout=" in err and "is not a dropout rate in [0, 1); give e.g. --arch-arg dropout=0.25" in err


def test_an_arch_arg_nested_50000_deep_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_model(create_model("mlp", num_classes=10, input_shape=(1, 28, 28)), str(path))
    code, err = _run(capsys, path, "--arch", "mlp", "--input-shape", "1,28,28",
                     "--arch-arg", "hidden=" + "[" * 50_000 + "]" * 50_000)
    assert code == 2 and "--arch-arg: hidden: nested more than 32 deep; give a flat value" in err
