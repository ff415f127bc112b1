"""The CLI's exit-code boundary: usage errors from the option parser are exit 2 with one prefixed line, any
message is printed as one terminal-safe line, an interrupt anywhere is one line and exit 130, and the package
states the Python, typer and test command that CI really checks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from leakaudit.cli import app_main
from leakaudit.cli.app import one_line

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "mlp.onnx"
SAMPLES = ROOT / "examples" / "samples"


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["scan", str(MODEL), "--data", str(SAMPLES), "--bogus"], "No such option"),
    (["scan"], "Missing argument"),
    (["scan", str(MODEL)], "Missing option '--data'"),
    (["scan", str(MODEL), "--data", str(SAMPLES), "--embed-data", "true"], "unexpected extra argument"),
    (["scan", str(MODEL), "--data", str(SAMPLES), "--iterations", "many"], "Invalid value for '--iterations'"),
    (["sweep", str(MODEL), "--data", str(SAMPLES), "--bogus"], "No such option"),
])
def test_usage_errors_exit_2_with_one_line_naming_the_help(capsys, tmp_path, args, message):
    assert app_main(args + ["--output-dir", str(tmp_path / "r")] if len(args) > 2 else args) == 2
    line = error_line(capsys)
    command = f"leakaudit {args[0]}"
    assert line.startswith("leakaudit: error: ") and message in line, line
    assert line.endswith(f"; see '{command} --help'"), line
    assert not (tmp_path / "r").exists()


def test_an_unknown_command_points_at_the_top_level_help(capsys):
    assert app_main(["scna"]) == 2
    line = error_line(capsys)
    assert line.startswith("leakaudit: error: No such command") and line.endswith("; see 'leakaudit --help'")


def test_help_and_version_still_exit_0(capsys):
    assert app_main(["--version"]) == 0
    assert app_main(["scan", "--help"]) == 0
    assert "--data" in capsys.readouterr().out


def test_multi_line_and_control_characters_become_one_safe_line():
    assert one_line("first line\n  second\r\nthird\n") == "first line second third"
    assert one_line("node \x1b[31mred\x1b]0;title\x07 end") == "node \\x1b[31mred\\x1b]0;title\\x07 end"


def test_a_multi_line_internal_error_is_one_line(capsys, monkeypatch, tmp_path):
    import leakaudit.cli.scan_cmd as scan_cmd

    def broken(*args, **kwargs):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(scan_cmd, "resolve_settings", broken)
    assert app_main(["scan", str(MODEL), "--data", str(SAMPLES), "--output-dir", str(tmp_path / "r")]) == 3
    assert "internal error: RuntimeError: first line second line (rerun" in error_line(capsys)


def test_ctrl_c_before_the_scan_starts_is_one_line_and_130(capsys, monkeypatch, tmp_path):
    """A KeyboardInterrupt that escapes a command (here: while its settings resolve) -- typer >= 0.26 would
    turn it into a silent exit 130, older typer into a blank line and 'Aborted!'."""
    import leakaudit.cli.scan_cmd as scan_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scan_cmd, "resolve_settings", interrupted)
    assert app_main(["scan", str(MODEL), "--data", str(SAMPLES), "--output-dir", str(tmp_path / "r")]) == 130
    assert capsys.readouterr().err == "leakaudit: error: interrupted\n"


def run_entry_point(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nimport sys\nfrom leakaudit.cli import main\nsys.argv = ['leakaudit', *sys.argv[1:]]\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_importing_the_entry_point_imports_nothing_heavy():
    """The console script imports leakaudit.cli before main() runs: a Ctrl-C there could not be caught."""
    code = "import sys, leakaudit.cli; print(sorted(m for m in ('typer', 'rich', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_ctrl_c_while_the_cli_imports_is_one_line_and_130():
    prelude = ("import builtins\nreal = builtins.__import__\n"
               "def hook(name, *a, **k):\n"
               "    if name == 'typer':\n        raise KeyboardInterrupt\n"
               "    return real(name, *a, **k)\n"
               "builtins.__import__ = hook")
    proc = run_entry_point(prelude, "--version")
    assert proc.returncode == 130 and proc.stderr == "leakaudit: error: interrupted\n", proc.stderr


def test_the_entry_point_exits_2_for_a_usage_error():
    proc = run_entry_point("", "scan", "--embed-data", "true")
    assert proc.returncode == 2 and proc.stderr.startswith("leakaudit: error: "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# -- what the package declares is what CI checks ------------------------------------------------------


def test_no_module_imports_click():
    """typer >= 0.26 vendors click and does not install it: an `import click` breaks a fresh install."""
    offenders = []
    for path in (ROOT / "leakaudit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "click"]
    assert offenders == []


def test_ci_runs_exactly_the_readme_test_command_with_an_eager_upgrade():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run the tests", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", section, re.S).group(1).strip()
    assert "--upgrade-strategy eager" in command
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_the_declared_python_is_the_one_the_readme_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floor = re.fullmatch(r">=\s*(3\.\d+)", project["requires-python"]).group(1)
    assert floor == "3.11"  # leakaudit.userfiles imports tomllib, new in 3.11
    assert f"Python {floor}+" in (ROOT / "README.md").read_text(encoding="utf-8")


# -- issue 20: Python warnings and the start-up window --------------------------------------------------------

def test_python_warnings_do_not_add_lines_to_the_one_line_error_and_show_with_debug(tmp_path, capsys):
    """`--arch-arg hidden=[0]` makes torch warn "Initializing zero-element tensors is a no-op" before the
    weights are refused: the error is still one line; --debug shows the warning."""
    import numpy as np
    import torch

    from leakaudit.models import create_model
    from leakaudit.models.safetensors_loader import save_safetensors

    model = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_safetensors(create_model("mlp", num_classes=4, input_shape=(3, 8, 8), hidden=(32,)), model, arch="mlp",
                     input_shape=(3, 8, 8), num_classes=4, arch_kwargs={"hidden": [32]})
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32),
             y=np.arange(4))
    args = ["scan", str(model), "--data", str(tmp_path / "d.npz"), "--arch-arg", "hidden=[0]", "--quiet",
            "--output-dir", str(tmp_path / "out")]
    assert app_main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "weights do not fit" in err and "zero-element" not in err, err
    assert app_main([*args, "--debug"]) == 2
    assert "UserWarning: Initializing zero-element tensors is a no-op" in capsys.readouterr().err


def test_the_entry_modules_import_nothing_but_sys():
    """The console script imports leakaudit and leakaudit.cli before main() can catch a Ctrl-C: they import as
    little as possible (not even typing), so a Ctrl-C there is as unlikely as it can be (issue 20)."""
    for path in (ROOT / "leakaudit" / "__init__.py", ROOT / "leakaudit" / "cli" / "__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        assert names <= {"sys"}, (path.name, names)
