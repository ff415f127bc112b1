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


def _github_scan_step() -> dict:
    doc = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = next(iter(doc["jobs"].values()))["steps"]
    return next(s for s in steps if "leakaudit scan" in s.get("run", ""))


@pytest.mark.parametrize("strict, scan_exit, job_exit", [
    ("", 0, 0), ("", 1, 1), ("", 2, 2), ("", 3, 3),
    ("", 4, 0),  # inconclusive without --strict: a warning, the job goes on
    ("--strict", 1, 1),  # with --strict the scan itself exits 1 on inconclusive: the job fails
])
def test_github_scan_step_fails_on_everything_but_a_lenient_inconclusive(tmp_path, strict, scan_exit, job_exit):
    import os
    import subprocess

    stub = tmp_path / "leakaudit"  # stands in for the scan: records its arguments, exits with the given code
    stub.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\nexit {scan_exit}\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "MODEL": "m.onnx", "SAMPLES": "s/",
           "STRICT": strict}
    step = _github_scan_step()
    # GitHub's `shell: bash` runs `bash --noprofile --norc -eo pipefail`
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env,
                          capture_output=True, text=True, timeout=30)
    assert step["shell"] == "bash" and done.returncode == job_exit, done.stderr
    assert ("::warning" in done.stdout) == (scan_exit == 4)
    assert (tmp_path / "argv").read_text().split()[-1] == (strict or "leakaudit-report")


def test_gitlab_job_allows_only_inconclusive_and_can_be_strict():
    job = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["leakaudit"]
    assert job["allow_failure"] == {"exit_codes": [4]}
    assert job["variables"]["STRICT"] == "" and any(line.rstrip().endswith("$STRICT") for line in job["script"])


def test_github_scan_step_under_strict_passes_offline_with_an_earned_pass(tmp_path):
    """Issue 19: the workflow's scan step, run as written with STRICT="--strict" on a machine without LPIPS
    weights, against the bundled leaking model with a defense from the config file: an earned PASS, exit 0
    (the default profile's LPIPS rule is a warning, which --strict does not fail on)."""
    import json
    import os
    import subprocess
    import sys

    root = CI.parents[1]
    stub = tmp_path / "bin" / "leakaudit"  # the real CLI of this checkout
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "from leakaudit.cli import main; main()" "$@"\n')
    stub.chmod(0o755)
    work = tmp_path / "repo"
    work.mkdir()
    # the step's flags stay as written; the config file keeps the test fast: the analytic attack (and its
    # control) on one photo, behind a defense it cannot invert
    (work / "leakaudit.toml").write_text('attacks = "analytic"\nsamples = 1\ndefense = ["noise:sigma=1.0"]\n')
    env = {k: v for k, v in os.environ.items() if k != "LEAKAUDIT_LPIPS_WEIGHTS"}
    env.update({"PATH": f"{stub.parent}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(root),
                "TORCH_HOME": str(tmp_path / "torch-home"),  # an empty hub cache: no LPIPS weights
                "MODEL": str(root / "examples" / "models" / "mlp_dropout.onnx"),
                "SAMPLES": str(root / "examples" / "samples"), "STRICT": "--strict", "OMP_NUM_THREADS": "1"})
    step = _github_scan_step()
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env,
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((work / "leakaudit-report" / "report.json").read_text())
    lpips = next(r for r in doc["rules"]["results"] if r["id"] == "perceptual-lpips")
    assert lpips["status"] == "not_evaluated" and "LPIPS needs" in lpips["reason"]
    assert doc["rules"]["strict"] is True
    assert (doc["verdict"]["overall"], doc["verdict"]["control_reconstructed"]) == ("pass", True)
    assert (work / "leakaudit-report" / "report.junit.xml").is_file()
