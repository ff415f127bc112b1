"""One row per setting (``config.SETTINGS``): the options of scan and sweep, the config keys and the reproduce
command all come from it, and an error the core writes about a setting names the flag on the command line."""

from __future__ import annotations

import shlex

import pytest
import typer.main

import leakaudit.cli.scan_cmd  # noqa: F401 -- registers scan and sweep on the app
import leakaudit.cli.sweep_cmd  # noqa: F401
from leakaudit.cli import app_main
from leakaudit.cli.app import app  # the Typer object (leakaudit.cli.app is also the name of its module)
from leakaudit.config import SETTINGS, ScanSettings, coerce, setting_args
from leakaudit.errors import ConfigError

NON_DEFAULT = ScanSettings(
    arch="cnn", arch_args={"img_size": 32, "name": "a b", "scale": 1.0, "dims": [4, 4], "flag": True},
    input_shape=(3, 32, 32), num_classes=10, dropout={"fc.1": 0.123456789}, normalize="cifar10",
    mean=(0.48215827, 0.5, 1.0), std=(0.25, 0.25, 0.25), rules="strict", attacks=("ig", "dia"), all_attacks=True,
    budget="quick", iterations=7, restarts=2, defenses=("noise:sigma=0.01", "clip:norm=1"), batch_size=3,
    local_steps=2, local_lr=0.05, protocol="fedavg", labels_known=True, update_buffers="yes", client_batch_size=32,
    device="cpu", seed=42, strict=True)


def _options(command: str) -> dict[str, object]:
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


@pytest.mark.parametrize("command", ["scan", "sweep"])
def test_every_row_for_the_command_is_an_option_named_by_its_setting(command):
    params = _options(command)
    for s in SETTINGS:
        if command in s.commands:
            assert s.flag in params[s.name].opts  # type: ignore[attr-defined]
        else:
            assert s.name not in params


def _settings_of(argv: list[str], monkeypatch) -> ScanSettings:
    """What scan resolves from ``argv`` (stopped before anything loads)."""
    import leakaudit.cli.scan_cmd as scan_cmd

    seen: list[ScanSettings] = []

    def resolve(config_file, flags):
        seen.append(scan_cmd.ScanSettings(**{**vars(ScanSettings()), **flags}))
        raise ConfigError("stop")

    monkeypatch.setattr(scan_cmd, "resolve_settings", resolve)
    assert app_main(argv) == 2
    return seen[0]


def test_the_reproduce_command_gives_the_same_settings_back(tmp_path, monkeypatch):
    from leakaudit.cli.scan_cmd import reproduce_command

    monkeypatch.chdir(tmp_path)  # no config file
    command = reproduce_command("m.onnx", "samples dir", NON_DEFAULT)
    argv = shlex.split(command)
    assert argv[:5] == ["leakaudit", "scan", "m.onnx", "--data", "samples dir"]
    assert _settings_of(argv[1:], monkeypatch) == NON_DEFAULT  # floats at full precision, TOML arch args typed


def test_the_reproduce_command_leaves_out_defaults_and_output_settings():
    assert setting_args(ScanSettings()) == ["--seed", "0"]
    quiet = ScanSettings(quiet=True, exit_zero=True, embed_data=True, output_dir="x", formats=("junit",))
    assert setting_args(quiet) == ["--seed", "0"]


def test_the_core_names_the_setting_and_the_cli_shows_the_flag(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match=r"^budget: 'fast' is not one of quick, standard, thorough") as e:
        coerce("budget", "fast")
    assert e.value.setting == "budget"
    assert e.value.naming("--budget").startswith("--budget: 'fast' is not one of")
    with pytest.raises(ConfigError, match=r"^leakaudit\.toml budget: 'fast'") as named:
        coerce("budget", "fast", "leakaudit.toml budget")  # a config file names its key itself
    assert named.value.setting is None

    monkeypatch.chdir(tmp_path)
    for flag, value, shown in (("--budget", "fast", "--budget: 'fast' is not one of"),
                               ("--format", "json,pdf", None),
                               ("--arch-arg", "noequals", "--arch-arg: 'noequals' is not KEY=VALUE"),
                               ("--num-classes", "1", "--num-classes: 1 is below 2")):
        assert app_main(["scan", "m.onnx", "--data", "d", flag, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith("leakaudit: error: ")
        if shown:
            assert shown in err
        assert "error: budget" not in err and "arch_args" not in err and "num_classes" not in err
