"""The core names settings, the CLI names flags (issue 22 item 5): no core error writes a flag (the few kept on
purpose are listed with why), a setting a message marks (``errors.setting_ref``) is a row of ``config.SETTINGS``
and an input it marks (``errors.argument_ref``) one of ``config.ARGUMENTS``; the CLI shows a marked setting as its
flag, a Python caller reads the setting's name, and a config file's value is named by its key."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer.main

import leakaudit.cli.scan_cmd  # noqa: F401 -- registers scan and sweep on the app
import leakaudit.cli.sweep_cmd  # noqa: F401
from leakaudit.cli.app import _named_by_flag, app
from leakaudit.config import SETTING, ScanSettings
from leakaudit.coverage.executors import check_execution
from leakaudit.errors import ConfigError, LeakauditError

ROOT = Path(__file__).resolve().parents[2]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OTHER_PROGRAMS = ("ray start --head",)  # another program's command line, quoted as a fix


def _options() -> set[str]:
    found: set[str] = set()
    commands = [typer.main.get_command(app)]
    while commands:
        command = commands.pop()
        found.update(o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
        commands.extend(getattr(command, "commands", {}).values())
    return found


def _core_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted((ROOT / "leakaudit").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where.startswith("leakaudit/cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                calls.append((f"{where}:{node.lineno}", node))
    return calls


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


# A core message written out with a flag, kept on purpose: (file, flag) -> why.
KEPT_IN_ERRORS = {
    ("leakaudit/config.py", "--arch-arg"): "refuse_loader_keywords: only a config file gets there, and the fix it "
                                           "names is the command line itself",
}
# Core modules whose other strings (not errors) may write flags: text a report, the terminal summary or the reproduce
# command shows, which reads the same for every caller because the report's own command line is the CLI's.
ADVICE = {
    "leakaudit/attacks/matching.py": "why DLG was not planned (a plan reason in the report)",
    "leakaudit/attacks/planner.py": "why an attack was not planned (a plan reason in the report)",
    "leakaudit/audit.py": "the reproduce command, the report's notes and its time-cap and strict reasons",
    "leakaudit/config.py": "the settings table and ARGUMENTS: the one place flags are named",
    "leakaudit/coverage/combine.py": "the report's incomplete reason (resume it)",
    "leakaudit/coverage/executors.py": "the report's notes on threads and the local Ray instance",
    "leakaudit/coverage/run.py": "a progress stage on the terminal",
    "leakaudit/coverage/split.py": "the report's note on samples not audited",
    "leakaudit/detect/__init__.py": "the findings' export warnings in the report",
    "leakaudit/detect/dropout.py": "a findings warning in the report",
    "leakaudit/detect/modality.py": "why the input is read as a modality (inspect and the report)",
    "leakaudit/models/batchnorm.py": "the report's note on the batch size chosen",
    "leakaudit/report/document.py": "report advice",
    "leakaudit/report/html.py": "report text",
    "leakaudit/report/junit.py": "report text",
    "leakaudit/report/recommendations.py": "the report's recommendations",
    "leakaudit/report/sarif.py": "report text",
    "leakaudit/result.py": "conditioning and BatchNorm advice in the report",
    "leakaudit/sweep/html.py": "the sweep report's text",
    "leakaudit/update/buffers.py": "a BatchNorm-statistics finding in the report",
    "leakaudit/verdict/outcome.py": "the verdict's summary line",
}
# message parameters (where=, flag=...) and read_user_text's messages (missing=, unreadable=) are errors too
MESSAGE_KEYWORDS = ("missing", "unreadable")


def _flags(node: ast.AST) -> list[str]:
    text = "\n".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    for other in OTHER_PROGRAMS:
        text = text.replace(other, "")
    return FLAG.findall(text)


def _core_trees() -> list[tuple[str, ast.Module]]:
    return [(path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
            for path in sorted((ROOT / "leakaudit").rglob("*.py"))
            if not path.relative_to(ROOT).as_posix().startswith("leakaudit/cli/")]


def _error_parts(tree: ast.Module) -> list[ast.AST]:
    """What a core error message is built from: raise statements and error constructors, the defaults of
    functions' parameters (``where="--budget"``) and read_user_text's messages."""
    parts: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            parts.append(node.exc)
        elif isinstance(node, ast.Call):
            if _name(node.func).endswith(("Error", "Problem")):
                parts.append(node)
            parts.extend(k.value for k in node.keywords if k.arg in MESSAGE_KEYWORDS)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            parts.extend(d for d in (*node.args.defaults, *node.args.kw_defaults) if d is not None)
    return parts


def test_no_core_error_writes_a_flag():
    """The core names settings (errors.setting_ref) and inputs (errors.argument_ref); only the CLI names flags."""
    found, written = 0, []
    for where, tree in _core_trees():
        for part in _error_parts(tree):
            for flag in _flags(part):
                found += 1
                if (where, flag) not in KEPT_IN_ERRORS:
                    written.append(f"{where}:{getattr(part, 'lineno', '?')}: {flag}")
    assert found >= len(KEPT_IN_ERRORS), "the scan missed the messages kept on purpose: did the layout change?"
    assert written == [], ("core errors write flags; mark the setting with errors.setting_ref (an input that is not "
                           "a setting: errors.argument_ref) so the CLI names the flag and a Python caller the field")


def test_flags_outside_errors_are_only_in_the_modules_that_write_report_text():
    docstrings = set()
    strays = []
    for where, tree in _core_trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    docstrings.add(id(first.value))
        strays += [f"{where}:{node.lineno}: {flag}" for node in ast.walk(tree)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                   and where not in ADVICE for flag in _flags(node)]
    assert strays == [], "a core module writes flags: mark the setting (errors.setting_ref), or list the module " \
                         "in ADVICE with why its text is the CLI's"


def test_the_flags_kept_are_options_of_a_command():
    options = _options()
    kept = {flag for _, flag in KEPT_IN_ERRORS}
    assert kept <= options
    from leakaudit.config import ARGUMENTS

    assert set(ARGUMENTS.values()) <= options, "config.ARGUMENTS names an option no command has"
    assert not set(ARGUMENTS) & set(SETTING), "an input of config.ARGUMENTS is also a setting: mark it as one"


def test_every_setting_a_core_error_marks_is_a_row_of_the_settings_table():
    from leakaudit.config import ARGUMENTS

    calls = _core_calls()
    marked = [(where, call.args[0]) for where, call in calls if _name(call.func) == "setting_ref"]
    inputs = [(where, call.args[0]) for where, call in calls if _name(call.func) == "argument_ref"]
    assert marked and inputs, "no core error marks a setting or an input: the scan or the mechanism changed"
    bad = [f"{where}: {ast.unparse(arg)}" for where, arg in marked
           if not (isinstance(arg, ast.Constant) and arg.value in SETTING)]
    bad += [f"{where}: {ast.unparse(arg)}" for where, arg in inputs
            if not (isinstance(arg, ast.Constant) and arg.value in ARGUMENTS)]
    assert bad == []


@pytest.mark.parametrize("settings,python,cli", [
    (ScanSettings(workers=2), "workers 2: only executor processes uses worker processes; add executor processes "
     "or leave out workers", "--workers 2: only --executor processes uses worker processes; add --executor "
     "processes or leave out --workers"),
    (ScanSettings(executor="threads"), "executor threads: not an executor",
     "--executor threads: not an executor"),
])
def test_a_python_caller_reads_the_setting_and_the_cli_the_flag(settings, python, cli):
    with pytest.raises(ConfigError) as caught:
        check_execution(settings)
    assert str(caught.value).startswith(python)
    assert _named_by_flag(caught.value).startswith(cli)


MODEL = ROOT / "examples" / "models" / "mlp_dropout.onnx"
SAMPLES = ROOT / "examples" / "samples"


# Errors of the core's layers, raised before any attack: the pre-flight (audit.py), the model loader (models/) and
# the sample loader (data/, an input that is not a setting).
CASES = [
    pytest.param(["--arch", "mlp"], dict(arch="mlp"), SAMPLES,
                 "--arch mlp: {model} is ONNX and holds its own architecture; drop --arch",
                 "arch mlp: {model} is ONNX and holds its own architecture; drop arch", id="models"),
    pytest.param(["--no-dropout", "--dropout", "fc1=0.5"], dict(no_dropout=True, dropout={"fc1": 0.5}), SAMPLES,
                 "--no-dropout with --dropout fc1: the model either trains with dropout or without",
                 "no_dropout with dropout fc1: the model either trains with dropout or without", id="preflight"),
    pytest.param([], {}, "missing", "missing: no such file or folder; point --data at an image folder",
                 "missing: no such file or folder; point data at an image folder", id="data"),
]


@pytest.mark.parametrize("argv, settings, data, cli, python", CASES)
def test_the_cli_names_the_flag_and_a_python_caller_the_setting(tmp_path, monkeypatch, capsys, argv, settings, data,
                                                                cli, python):
    import leakaudit
    from leakaudit.cli import app_main

    monkeypatch.chdir(tmp_path)  # no leakaudit.toml of the checkout's
    code = app_main(["scan", str(MODEL), "--data", str(data), "--output-dir", "out", "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("leakaudit: error: " + cli.format(model=MODEL)), err
    assert err.count("\n") == 1 and "\x1e" not in err
    with pytest.raises(LeakauditError) as caught:
        leakaudit.audit(str(MODEL), str(data), **settings)
    assert str(caught.value).startswith(python.format(model=MODEL))
    assert not FLAG.search(str(caught.value)), "a Python caller is told a flag"


def test_a_config_files_value_is_named_by_its_key(tmp_path, monkeypatch, capsys):
    from leakaudit.cli import app_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "leakaudit.toml").write_text('arch = "mlp"\n')
    code = app_main(["scan", str(MODEL), "--data", str(SAMPLES), "--output-dir", "out", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"leakaudit: error: leakaudit.toml arch mlp: {MODEL} is ONNX"), err
    # given on the command line as well, the flag wins and is what the message names
    code = app_main(["scan", str(MODEL), "--data", str(SAMPLES), "--output-dir", "out", "--quiet", "--arch", "cnn"])
    assert code == 2 and capsys.readouterr().err.startswith("leakaudit: error: --arch cnn: "), err


def test_a_marked_message_from_a_config_value_names_the_key_and_from_a_flag_the_flag(tmp_path):
    from leakaudit.config import load_config
    from leakaudit.errors import setting_ref

    (tmp_path / "pyproject.toml").write_text('[tool.leakaudit]\ndropout = { nope = 0.5 }\n')
    config = load_config(cwd=tmp_path)
    error = ConfigError(f"{setting_ref('dropout')} nope=0.5: m has no layer 'nope'")
    with pytest.raises(ConfigError, match=r"^pyproject\.toml \[tool\.leakaudit\] dropout nope=0\.5: m has no"):
        with config.attributed({}):
            raise error
    with pytest.raises(ConfigError) as caught:
        with config.attributed({"dropout": {"nope": 0.5}}):
            raise error
    assert _named_by_flag(caught.value).startswith("--dropout nope=0.5: ")
    assert str(caught.value).startswith("dropout nope=0.5: ")


def test_a_setting_the_file_gave_is_named_by_its_key_later_in_the_message_too(tmp_path):
    from leakaudit.config import load_config
    from leakaudit.errors import setting_ref

    (tmp_path / "leakaudit.toml").write_text('normalize = "cifar10"\nmean = "0.5"\n')
    config = load_config(cwd=tmp_path)
    error = ConfigError(f"{setting_ref('normalize')} cifar10: a preset fixes mean and std; drop {setting_ref('mean')}"
                        f"/{setting_ref('std')}")
    with pytest.raises(ConfigError) as caught:
        with config.attributed({}):
            raise error
    assert str(caught.value) == "leakaudit.toml normalize cifar10: a preset fixes mean and std; drop mean/--std"
    with pytest.raises(ConfigError) as caught:
        with config.attributed({"mean": (0.5,)}):  # the flag won: it is what the user typed
            raise error
    assert str(caught.value) == "leakaudit.toml normalize cifar10: a preset fixes mean and std; drop --mean/--std"
    with pytest.raises(ConfigError) as caught:  # a message that starts with no setting the file gave
        with config.attributed({}):
            raise ConfigError(f"m: cannot take {setting_ref('mean')} 0.5 with {setting_ref('std')} unset")
    assert str(caught.value) == "m: cannot take mean 0.5 with --std unset"
