"""scan and sweep refuse bad settings the same way, before the model loads and before any file is written;
``--device`` accepts what the engine runs on (cuda:N too); messages name flags that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leakaudit.cli import app_main
from leakaudit.config import coerce
from leakaudit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "mlp.onnx"
SAMPLES = ROOT / "examples" / "samples"
VARY = ["--vary", "noise.sigma=0.01,0.1"]


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading the model is the expensive step a pre-flight must come before."""
    import leakaudit.models.load

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(leakaudit.models.load, "load_model", refuse)


BAD_SETTINGS = [
    (["--attacks", "igg"], "unknown attack 'igg'"),
    (["--rules", "nonexistent.toml"], "nonexistent.toml"),
    (["--defense", "nois:sigma=1"], "unknown defense"),
    (["--budget", "huge"], "--budget"),
    (["--device", "gpu"], "--device gpu: not a device; use auto, cpu, cuda or cuda:N"),
]


@pytest.mark.parametrize("command", ["scan", "sweep"])
@pytest.mark.parametrize("args, message", BAD_SETTINGS)
def test_bad_settings_are_refused_before_the_model_loads_and_nothing_is_written(
        command, args, message, tmp_path, capsys, no_model_load):
    out = tmp_path / "r"
    extra = VARY if command == "sweep" else []
    assert app_main([command, str(MODEL), "--data", str(SAMPLES), "--output-dir", str(out), "--quiet",
                     *extra, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_sweep_refuses_a_scan_only_format_before_the_model_loads(tmp_path, capsys, no_model_load):
    out = tmp_path / "r"
    assert app_main(["sweep", str(MODEL), "--data", str(SAMPLES), "--output-dir", str(out), *VARY,
                     "--format", "json,junit"]) == 2
    assert "a sweep writes json and html only" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("text, expected", [("cuda:0", "cuda:0"), ("CUDA:1", "cuda:1"), ("cpu", "cpu"),
                                            ("auto", "auto"), ("cuda", "cuda")])
def test_every_device_the_engine_runs_on_is_a_valid_setting(text, expected):
    assert coerce("device", text, "--device") == expected
    assert coerce("device", text, "leakaudit.toml device") == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:-1", "tpu", 0])
def test_other_device_texts_are_refused_naming_where_they_came_from(text):
    with pytest.raises(ConfigError, match=r"^leakaudit.toml device .*: not a device; use auto, cpu, cuda or cuda:N"):
        coerce("device", text, "leakaudit.toml device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a CUDA GPU")
@pytest.mark.parametrize("command", ["scan", "sweep"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_one_line_before_the_model_loads(command, device, tmp_path, capsys, no_model_load):
    out = tmp_path / "r"
    extra = VARY if command == "sweep" else []
    assert app_main([command, str(MODEL), "--data", str(SAMPLES), "--output-dir", str(out), *extra,
                     "--device", device]) == 2
    err = capsys.readouterr().err
    assert err == f"leakaudit: error: --device {device}: no CUDA GPU is usable here; use --device cpu or auto\n"
    assert not out.exists()


def test_a_preset_with_mean_and_std_names_the_real_flags(tmp_path, capsys):
    assert app_main(["scan", str(MODEL), "--data", str(SAMPLES), "--output-dir", str(tmp_path / "r"), "--quiet",
                     "--normalize", "cifar10", "--mean", "0.5", "--std", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "--normalize cifar10: a preset fixes mean and std; drop --mean/--std" in err
    assert "--normalization" not in err
