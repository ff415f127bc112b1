"""``docs/cli.md``: the command reference, generated from the commands' own help texts.

``python3 -m leakaudit.cli.docs > docs/cli.md`` regenerates it; ``tests/cli/test_cli_docs.py`` fails when the
file differs from what this prints, so the page cannot drift from ``--help``. It reads the click command
objects (names, help, options, defaults) rather than typer's rendered help, whose layout changes between typer
versions. typer's own ``--install-completion`` / ``--show-completion`` are described once, in words.
"""

from __future__ import annotations

import re
from typing import Any

HEADER = """# Command-line reference

Generated from the commands' `--help` texts by `python3 -m leakaudit.cli.docs > docs/cli.md` (a test checks that
this file is up to date); `leakaudit COMMAND -h` shows the same in a terminal.

Every command takes `-h` / `--help`. `python -m leakaudit` is the same program as `leakaudit`.
Shell completion (bash, zsh, fish, PowerShell): `leakaudit --install-completion` installs it for the current
shell; `leakaudit --show-completion` prints the script instead.
"""

_TYPER_OWN = {"install_completion", "show_completion"}


def _text(help_text: str | None) -> str:
    """A help text as Markdown: rich's markup escape (``\\[``) undone, whitespace joined, pipes escaped."""
    text = re.sub(r"\s+", " ", (help_text or "").replace("\\[", "[")).strip()
    return text.replace("|", "\\|")


def _default(param: Any) -> str:
    if getattr(param, "required", False):
        return "required"
    if getattr(param, "is_flag", False):
        return "on" if param.default is True else ""
    if param.default in (None, (), []):
        return ""
    default = param.default
    if isinstance(default, (list, tuple)):
        default = ",".join(str(d) for d in default)
    return f"`{default}`"


def _names(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}`"
    return ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])


def _declared_help(app: Any) -> dict[tuple[str, str], str]:
    """(command, parameter) -> the help text declared in the command's signature. Some typer versions (0.18 on
    click 8.5) leave an argument's ``help`` unset on the click object; the declaration always has it."""
    import inspect

    out: dict[tuple[str, str], str] = {}
    for info in app.registered_commands:
        name = info.name or info.callback.__name__
        for pname, param in inspect.signature(info.callback).parameters.items():
            declared = getattr(param.default, "help", None)
            if isinstance(declared, str):
                out[(name, pname)] = declared
    return out


def _command(name: str, command: Any, declared: dict[tuple[str, str], str]) -> list[str]:
    lines = [f"## leakaudit {name}", "", _text(command.help), ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    usage = " ".join(["leakaudit", name, *(p.name.upper() for p in arguments), "[OPTIONS]"])
    lines += [f"`{usage}`", "", "| option | default | what it does |", "|---|---|---|"]
    for param in command.params:
        if param.name in _TYPER_OWN or getattr(param, "hidden", False):
            continue
        help_text = getattr(param, "help", None) or declared.get((name, param.name), "")
        lines.append(f"| {_names(param)} | {_default(param)} | {_text(help_text)} |")
    lines.append("| `-h`, `--help` |  | Show the help and exit. |")
    if command.epilog:
        lines += ["", _text(command.epilog)]
    return [*lines, ""]


def render_cli_markdown() -> str:
    import typer.main

    from . import _register_commands
    from .app import app

    _register_commands()
    group: Any = typer.main.get_command(app)  # a TyperGroup (click's Group) of whichever click typer runs on
    declared = _declared_help(app)
    lines = [HEADER, "## leakaudit", "", _text(group.help), "",
             "| option | what it does |", "|---|---|",
             *(f"| {_names(p)} | {_text(getattr(p, 'help', ''))} |" for p in group.params
               if p.name not in _TYPER_OWN),
             "| `-h`, `--help` | Show the help and exit. |", ""]
    for name in sorted(group.commands):  # by name: the registration order depends on which module was imported first
        lines += _command(name, group.commands[name], declared)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_cli_markdown())
