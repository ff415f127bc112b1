"""The core names settings, the CLI names flags (issue 22 item 5): a flag a core error message names is an option
of some command, a setting a message marks (``errors.setting_ref``) is a row of ``config.SETTINGS``, and the
CLI shows a marked setting as its flag while a Python caller reads the setting's name."""

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
from leakaudit.errors import ConfigError

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


def test_every_flag_a_core_error_names_is_an_option_of_a_command():
    options = _options()
    named, unknown = 0, []
    for where, call in _core_calls():
        if not _name(call.func).endswith(("Error", "Problem")):
            continue
        text = "\n".join(n.value for n in ast.walk(call) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        for other in OTHER_PROGRAMS:
            text = text.replace(other, "")
        for flag in FLAG.findall(text):
            named += 1
            if flag not in options:
                unknown.append(f"{where}: {flag}")
    assert named > 50, "the scan found too few flags in core errors: did the source layout change?"
    assert unknown == [], "core errors name flags no command has; name the setting (errors.setting_ref) instead"


def test_every_setting_a_core_error_marks_is_a_row_of_the_settings_table():
    marked = [(where, call.args[0]) for where, call in _core_calls() if _name(call.func) == "setting_ref"]
    assert marked, "no core error marks a setting: the scan or the mechanism changed"
    bad = [f"{where}: {ast.unparse(arg)}" for where, arg in marked
           if not (isinstance(arg, ast.Constant) and arg.value in SETTING)]
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
