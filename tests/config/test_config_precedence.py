"""Settings precedence (defaults < config file < flags) and config-file validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakaudit.config import ScanSettings, load_config, resolve_settings
from leakaudit.errors import ConfigError


def test_no_config_file_gives_the_defaults(tmp_path):
    cfg = load_config(cwd=tmp_path)
    assert cfg.path is None
    assert resolve_settings(cfg, {}) == ScanSettings()


def test_leakaudit_toml_beats_defaults_and_flags_beat_the_file(tmp_path):
    (tmp_path / "leakaudit.toml").write_text(
        'budget = "quick"\nseed = 5\nformat = ["json", "junit"]\ndefense = ["noise:sigma=0.1"]\n'
        'dropout = { "fc.1" = 0.5 }\nbatch-size = 2\nlabels_known = true\n')
    cfg = load_config(cwd=tmp_path)
    assert cfg.path == tmp_path / "leakaudit.toml"
    s = resolve_settings(cfg, {"seed": 9})
    assert (s.budget, s.seed, s.formats, s.defenses) == ("quick", 9, ("json", "junit"), ("noise:sigma=0.1",))
    assert s.dropout == {"fc.1": 0.5} and s.batch_size == 2 and s.labels_known is True


def test_pyproject_tool_table_is_read_and_leakaudit_toml_wins(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.leakaudit]\nbudget = "thorough"\n')
    assert resolve_settings(load_config(cwd=tmp_path), {}).budget == "thorough"
    (tmp_path / "leakaudit.toml").write_text('budget = "quick"\n')
    assert resolve_settings(load_config(cwd=tmp_path), {}).budget == "quick"


def test_applied_names_what_the_file_gave_as_flags_and_leaves_out_what_flags_override(tmp_path):
    (tmp_path / "leakaudit.toml").write_text('defense = ["noise:sigma=1.0", "clip:norm=2"]\nseed = 5\n'
                                            'strict = false\nrules = "strict"\n')
    cfg = load_config(cwd=tmp_path)
    assert cfg.applied({"seed": 9}) == ("settings from leakaudit.toml (flags win): --defense noise:sigma=1.0 "
                                        "--defense clip:norm=2 --strict=false --rules strict")
    assert cfg.applied({"defenses": (), "seed": 1, "strict": True, "rules": "default"}) == ""
    assert load_config(cwd=tmp_path / "nowhere").applied({}) == ""


def test_pyproject_without_tool_table_is_ignored(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_config(cwd=tmp_path).path is None


def test_explicit_config_beats_the_working_directory_and_resolves_rule_paths(tmp_path):
    (tmp_path / "leakaudit.toml").write_text('budget = "quick"\n')
    other = tmp_path / "ci"
    other.mkdir()
    (other / "scan.toml").write_text('budget = "thorough"\nrules = "my-rules.toml"\n')
    s = resolve_settings(load_config(other / "scan.toml", cwd=tmp_path), {})
    assert s.budget == "thorough" and Path(s.rules) == other / "my-rules.toml"


@pytest.mark.parametrize("text, message", [
    ('budjet = "quick"\n', r"leakaudit\.toml: unknown key 'budjet'; did you mean budget\?"),
    ('budget = "fast"\n', r"leakaudit\.toml budget: 'fast' is not one of quick, standard, thorough"),
    ('iterations = 0\n', r"leakaudit\.toml iterations: 0 is below 1"),
    ('iterations = "many"\n', r"leakaudit\.toml iterations: 'many' is not an integer"),
    ('strict = "yes"\n', r"leakaudit\.toml strict: 'yes' is not true/false"),
    ('input-shape = "3,a,32"\n', r"leakaudit\.toml input-shape: '3,a,32' is not a shape"),
    ('dropout = ["fc"]\n', r"leakaudit\.toml dropout: 'fc' is not LAYER=P"),
    ('dropout = { fc = 1.5 }\n', r"leakaudit\.toml dropout: rate 1\.5 of layer 'fc' is outside \[0, 1\)"),
    ('budget = \n', r"leakaudit\.toml: invalid TOML \(.*line 1"),
    ('iterations = inf\n', r"leakaudit\.toml iterations: inf is not finite; give an integer from 1 to 1000000$"),
    ('iterations = nan\n', r"leakaudit\.toml iterations: nan is not finite"),
    ('iterations = 1e400\n', r"leakaudit\.toml iterations: inf is not finite"),
    ('iterations = 1000000000000000000000000000000\n',
     r"leakaudit\.toml iterations: 1000000000000000000000000000000 is above 1000000, the most leakaudit accepts"),
    ('restarts = 0\n', r"leakaudit\.toml restarts: 0 is below 1"),
    ('restarts = 1000\n', r"leakaudit\.toml restarts: 1000 is above 64"),
    ('local-steps = 100000000\n', r"leakaudit\.toml local-steps: 100000000 is above 10000"),
    ('seed = -1\n', r"leakaudit\.toml seed: -1 is below 0"),
    ('seed = 18446744073709551615\n', r"leakaudit\.toml seed: 18446744073709551615 is above 4294967295"),
    ('local-lr = inf\n', r"leakaudit\.toml local-lr: inf is not finite; give a number"),
    ('mean = "nan"\n', r"leakaudit\.toml mean: 'nan' holds a value that is not finite"),
    ('std = [inf]\n', r"leakaudit\.toml std: \[inf\] holds a value that is not finite"),
    ('defense = [""]\n', r"leakaudit\.toml defense: an empty defense ''; give NAME:K=V"),
    ('defense = ["noise:sigma=-1"]\n',
     r"leakaudit\.toml defense noise:sigma=-1: sigma=-1 is out of range; sigma must be in \[0, inf\)"),
    ('defense = ["nois:sigma=0.1"]\n', r"leakaudit\.toml defense nois:sigma=0\.1: unknown defense 'nois'"),
    ('defense = ["noise:\\nsigma=-1"]\n', r"leakaudit\.toml defense 'noise:\\nsigma=-1': sigma=-1 is out of range"),
    ('input-shape = "3,100000,100000"\n', r"leakaudit\.toml input-shape: '3,100000,100000' has 30,000,000,000 values"),
])
def test_bad_config_values_give_one_line_errors_naming_file_and_key(tmp_path, text, message):
    (tmp_path / "leakaudit.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(cwd=tmp_path)
    assert "\n" not in str(info.value)


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml", cwd=tmp_path)


def test_explicit_pyproject_without_tool_table_is_an_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.black]\nline-length = 100\n')
    with pytest.raises(ConfigError, match=r"pyproject\.toml: no \[tool\.leakaudit\] table"):
        load_config(tmp_path / "pyproject.toml", cwd=tmp_path)


def test_seed_bound_fits_every_rng():
    import torch

    from leakaudit.config import MAX_SEED, coerce

    seed = coerce("seed", MAX_SEED, "--seed")
    torch.Generator().manual_seed(seed + 64)  # restart r seeds seed + r, restarts <= 64


@pytest.mark.parametrize("pyproject, message", [
    ("tool = 1\n", r"pyproject\.toml: tool = 1 is not a table, so it cannot hold \[tool\.leakaudit\]"),
    ('[tool]\nleakaudit = "x"\n', r"pyproject\.toml: \[tool\.leakaudit\] must be a table, not 'x'"),
])
def test_pyproject_with_a_tool_entry_that_is_not_a_table_is_refused(tmp_path, pyproject, message):
    (tmp_path / "pyproject.toml").write_text(pyproject)
    with pytest.raises(ConfigError, match=message):
        load_config(cwd=tmp_path)


def test_errors_in_pyproject_name_the_file_section_and_key_not_a_flag(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.leakaudit]\niterations = inf\ndefense = ["noise:sigma=-1"]\n')
    message = r"^pyproject\.toml \[tool\.leakaudit\] iterations: inf is not finite"
    with pytest.raises(ConfigError, match=message) as info:
        load_config(cwd=tmp_path)
    assert "--" not in str(info.value)
    (tmp_path / "pyproject.toml").write_text('[tool.leakaudit]\ndefense = ["noise:sigma=-1"]\n')
    with pytest.raises(ConfigError, match=r"^pyproject\.toml \[tool\.leakaudit\] defense noise:sigma=-1: "):
        load_config(cwd=tmp_path)


def test_a_folder_named_leakaudit_toml_is_refused_not_skipped(tmp_path):
    (tmp_path / "leakaudit.toml").mkdir()
    with pytest.raises(ConfigError, match=r"leakaudit\.toml: cannot read config file \(a folder, not a regular file\)"):
        load_config(cwd=tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--seed", str(2**64)], "leakaudit: error: --seed: 18446744073709551616 is above 4294967295"),
    (["--iterations", str(10**30)], "leakaudit: error: --iterations: 1000000000000000000000000000000 is above"),
    (["--defense", ""], "leakaudit: error: --defense: an empty defense ''; give NAME:K=V"),
])
def test_bad_flags_are_refused_before_anything_runs(tmp_path, capsys, argv, message):
    from leakaudit.cli import app_main

    out = tmp_path / "out"
    assert app_main(["scan", "model.safetensors", "--data", str(tmp_path), "--output-dir", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not out.exists()


def test_a_later_error_about_a_config_value_names_the_config_key_not_the_flag(tmp_path):
    from leakaudit.errors import InputError

    (tmp_path / "pyproject.toml").write_text('[tool.leakaudit]\ndropout = { nope = 0.5 }\ninput-shape = "1,28,28"\n')
    cfg = load_config(cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"^pyproject\.toml \[tool\.leakaudit\] dropout nope=0\.5: m has no layer"):
        with cfg.attributed({}):
            raise ConfigError("--dropout nope=0.5: m has no layer 'nope'; see `leakaudit inspect`")
    with pytest.raises(InputError, match=r"^pyproject\.toml \[tool\.leakaudit\] input-shape 1,28,28: does not match"):
        with cfg.attributed({}):
            raise InputError("--input-shape 1,28,28: does not match the model")
    # given on the command line as well: the flag is what the user typed, and what applied
    with pytest.raises(ConfigError, match=r"^--dropout nope=0\.5"):
        with cfg.attributed({"dropout": {"nope": 0.5}}):
            raise ConfigError("--dropout nope=0.5: m has no layer 'nope'")
    # a flag the config does not set, or one that only shares a prefix, is left alone
    assert cfg.attribute("--dropout-rate x: y", {}) == "--dropout-rate x: y"
    assert cfg.attribute("--seed 1: y", {}) == "--seed 1: y"


@pytest.mark.parametrize("command", [["scan"], ["sweep", "--vary", "noise.sigma=0.1,0.2"]])
def test_cli_names_the_config_key_behind_a_model_dependent_error(tmp_path, monkeypatch, capsys, command):
    from leakaudit.cli import app_main

    examples = Path(__file__).parents[2] / "examples"
    (tmp_path / "leakaudit.toml").write_text("dropout = { nope = 0.5 }\n")
    monkeypatch.chdir(tmp_path)
    argv = [*command[:1], str(examples / "models" / "mlp.safetensors"), "--data", str(examples / "samples"),
            *command[1:], "--attacks", "analytic", "--quiet"]
    assert app_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("leakaudit: error: leakaudit.toml dropout nope=0.5: ") and "--dropout" not in err, err


# A setting whose valid values a stage owns gets one answer wherever it comes from: a config file, a flag, or
# a Python caller of audit()/plan() -- the stage's own check, so adding a budget or preset there is enough.
@pytest.mark.parametrize("name, value, owner_check", [
    ("budget", "fast", "leakaudit.attacks.planner:check_budget"),
    ("normalize", "cifar", "leakaudit.data.normalize:check_preset"),
    ("device", "gpu", "leakaudit.attacks.device:device_spec"),
    ("protocol", "fedprox", "leakaudit.update.client:check_protocol"),
])
def test_owned_settings_are_refused_by_their_owner_with_the_same_message(tmp_path, name, value, owner_check):
    import importlib

    from leakaudit.config import coerce

    module, function = owner_check.split(":")
    check = getattr(importlib.import_module(module), function)
    with pytest.raises(ConfigError) as from_owner:
        check(value, f"--{name}")
    with pytest.raises(ConfigError) as from_flag:
        coerce(name, value, f"--{name}")
    assert str(from_flag.value) == str(from_owner.value)
    (tmp_path / "leakaudit.toml").write_text(f'{name} = "{value}"\n')
    with pytest.raises(ConfigError) as from_file:
        load_config(cwd=tmp_path)
    assert str(from_file.value) == f"leakaudit.toml {name}" + str(from_owner.value)[len(f"--{name}"):]


def test_python_callers_get_the_planners_budget_check_before_anything_loads():
    from leakaudit.audit import preflight

    with pytest.raises(ConfigError, match=r"^budget: 'fast' is not one of quick, standard, thorough"):
        preflight(ScanSettings(budget="fast"))


def test_every_setting_has_exactly_one_row_and_its_flag_default_is_the_settings_default():
    from leakaudit.config import SETTING_NAMES, SETTINGS, coerce

    assert sorted(s.name for s in SETTINGS) == sorted(SETTING_NAMES)  # one row (one check, one flag) per field
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)
    defaults = ScanSettings()
    for s in SETTINGS:  # --help's default, read as a flag would be, is what a scan without the flag gets
        assert coerce(s.name, s.default) == getattr(defaults, s.name), s.name
