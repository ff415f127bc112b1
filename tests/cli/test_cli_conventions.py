"""The conventions a CLI user expects (issue 21): -h on every command, python -m leakaudit, shell completion,
--verbose, and docs/cli.md generated from the --help texts and kept up to date."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from leakaudit.cli import app_main
from leakaudit.cli.docs import render_cli_markdown

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
COMMANDS = ["scan", "render", "inspect", "rules", "score", "sweep"]


def test_docs_cli_md_is_generated_from_the_help_texts_and_up_to_date():
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == render_cli_markdown(), \
        "docs/cli.md is stale: regenerate it with python3 -m leakaudit.cli.docs > docs/cli.md"


def test_docs_cli_md_lists_every_command_and_option():
    text = render_cli_markdown()
    for command in COMMANDS:
        assert f"## leakaudit {command}\n" in text
    for option in ("`--format`", "`--verbose`, `-v`", "`--quiet`, `-q`", "`--vary`", "`-h`, `--help`"):
        assert option in text
    assert "install_completion" not in text and "[tool.leakaudit]" in text  # rich's \[ escape undone


@pytest.mark.parametrize("args", [["-h"], *([c, "-h"] for c in COMMANDS)])
def test_dash_h_is_help_on_every_command(args, capsys):
    assert app_main(args) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out and "--help" in out


def test_python_dash_m_leakaudit_is_the_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "leakaudit", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout.startswith("leakaudit ")) == (0, True), done.stderr
    bad = subprocess.run([sys.executable, "-m", "leakaudit", "scan"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("leakaudit: error: ")


def test_shell_completion_answers_a_completion_request(monkeypatch, capsys):
    monkeypatch.setenv("_LEAKAUDIT_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "leakaudit sc")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert app_main([]) == 0
    assert set(capsys.readouterr().out.split()) == {"scan", "score"}
    monkeypatch.delenv("_LEAKAUDIT_COMPLETE")
    # typer detects the shell from the process tree unless told not to (its own switch), and the tree of a test
    # run need not hold one: the shell is named instead, as a user's `--show-completion bash` does
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    assert app_main(["--show-completion", "bash"]) == 0
    assert "_LEAKAUDIT_COMPLETE" in capsys.readouterr().out


def _scan(tmp_path: Path, *extra: str) -> int:
    return app_main(["scan", str(EXAMPLES / "models" / "mlp.safetensors"), "--data", str(EXAMPLES / "samples"),
                     "--attacks", "analytic", "--samples", "2", "--format", "json", "--output-dir",
                     str(tmp_path / "r"), *extra])


def test_verbose_shows_each_attacks_per_sample_lines_and_every_samples_test(tmp_path, capsys):
    assert _scan(tmp_path) == 1
    plain = capsys.readouterr().err.splitlines()
    assert _scan(tmp_path, "--verbose") == 1
    verbose = capsys.readouterr().err.splitlines()
    analytic = next(i for i, line in enumerate(verbose) if line.startswith("  analytic "))
    sample = verbose[analytic + 1]
    assert sample.startswith("    ") and "ssim " in sample and sample.endswith("  recognised")
    assert not any(line.startswith("    ") and line.endswith("recognised") for line in plain)
    # the worst sample's test is in both; --verbose adds the other sample's, naming its batch and best attack
    assert sum("(batch " in line and "best attack analytic): matched to its own original" in line
               for line in verbose) == 1
    assert not any("best attack" in line for line in plain)


def test_verbose_with_quiet_is_a_usage_error(tmp_path, capsys):
    assert _scan(tmp_path, "--verbose", "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith("leakaudit: error: --verbose: cannot be combined with --quiet") and len(err.splitlines()) == 1
