"""The CI examples stay in step with the CLI: valid YAML, reports kept on failure, only real options used."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the CI examples")

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"


def _scan_options() -> set[str]:
    import typer.main

    from leakaudit.cli import app

    command = typer.main.get_command(app).commands["scan"]
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def _scan_lines(text: str) -> list[list[str]]:
    folded = re.sub(r"\n\s+(?=--)", " ", text)  # YAML folded scalars: continuation lines start with --
    return [shlex.split(line[line.index("leakaudit scan"):]) for line in folded.splitlines()
            if "leakaudit scan" in line and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_example_uses_only_existing_scan_options(name):
    text = (CI / name).read_text()
    yaml.safe_load(text)
    commands = _scan_lines(text)
    assert commands, f"{name} runs no leakaudit scan"
    known = _scan_options()
    for argv in commands:
        used = {a.split("=")[0] for a in argv if a.startswith("--")}
        assert used <= known, f"{name}: unknown options {used - known}"
        assert "junit" in argv[argv.index("--format") + 1]


def test_github_workflow_uploads_reports_even_when_the_scan_fails():
    doc = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = next(iter(doc["jobs"].values()))["steps"]
    upload = next(s for s in steps if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()" and upload["with"]["path"].startswith("leakaudit-report")


def test_gitlab_job_keeps_artifacts_and_junit_always():
    job = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["leakaudit"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "leakaudit-report/report.junit.xml"
