"""The CI examples stay in step with the CLI: valid YAML, reports kept on failure, only real options used."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the CI examples")

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"


def _scan_options() -> set[str]:
    import typer.main

    import leakaudit.cli.scan_cmd  # noqa: F401 -- registers scan on the app
    from leakaudit.cli.app import app  # the Typer object: leakaudit.cli.app may be bound to its module

    command = typer.main.get_command(app).commands["scan"]
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def _scan_lines(text: str) -> list[list[str]]:
    folded = re.sub(r"\\?\n\s+(?=--)", " ", text)  # YAML folded scalars, shell continuations: lines start with --
    return [shlex.split(line[line.index("leakaudit scan"):].replace('"${options[@]}"', ""))
            for line in folded.splitlines() if "leakaudit scan" in line and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", [ROOT / "action.yml", CI / "gitlab-ci.yml"])
def test_ci_example_uses_only_existing_scan_options(path):
    text = path.read_text()
    yaml.safe_load(text)
    commands = _scan_lines(text)
    assert commands, f"{path.name} runs no leakaudit scan"
    known = _scan_options()
    for argv in commands:
        used = {a.split("=")[0] for a in argv if a.startswith("--")}
        assert used <= known, f"{path.name}: unknown options {used - known}"
        assert {"junit", "sarif", "markdown"} <= set(argv[argv.index("--format") + 1].split(","))
    # the options the Action adds from its inputs, too
    added = set(re.findall(r"options\+=\((--[a-z-]+)", text))
    assert added <= known and bool(added) == (path.name == "action.yml"), added - known


def _action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def _step(doc: dict, name: str) -> dict:
    return next(s for s in doc["runs"]["steps"] if s.get("name", "").startswith(name))


def _workflow_steps() -> list[dict]:
    doc = yaml.safe_load((CI / "github-actions.yml").read_text())
    return next(iter(doc["jobs"].values()))["steps"]


@pytest.mark.parametrize("path", [ROOT / "action.yml", CI / "github-actions.yml"])
def test_every_action_used_is_pinned_to_a_version(path):
    """A `uses:` without @version runs whatever the action's default branch holds on the day."""
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", path.read_text(), flags=re.M)
    assert uses
    for ref in uses:
        assert ref.startswith("./") or re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", ref), ref


def test_the_action_installs_its_own_checkout_with_the_cpu_torch_wheels():
    step = _step(_action(), "Install leakaudit")
    assert step["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    lines = step["run"].splitlines()
    assert any('pip install' in line and line.rstrip().endswith('"$ACTION_PATH"') for line in lines)
    torch_line = next(line for line in lines if " torch " in line)
    assert torch_line.rstrip().endswith("--index-url https://download.pytorch.org/whl/cpu")


def test_the_workflow_runs_the_action_it_checks_out_with_the_permissions_its_steps_need():
    doc = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = _workflow_steps()
    checkout = next(s for s in steps if s.get("with", {}).get("path"))
    action = next(s for s in steps if s.get("uses", "").startswith("./"))
    assert action["uses"] == f"./{checkout['with']['path']}"
    uploads_sarif = action["with"].get("upload-sarif") == "true"
    # SARIF upload needs security-events: write; nothing else writes
    assert doc["permissions"] == {"contents": "read", **({"security-events": "write"} if uploads_sarif else {})}


def test_the_action_uploads_reports_even_when_the_scan_fails():
    upload = _step(_action(), "Upload the reports")
    assert upload["if"].startswith("always()") and upload["with"]["path"] == "${{ inputs.output-dir }}"
    sarif = _step(_action(), "Upload SARIF")
    assert "inputs.upload-sarif == 'true'" in sarif["if"] and "steps.scan.outputs.sarif-file" in sarif["if"]
    assert sarif["uses"].startswith("github/codeql-action/upload-sarif@")


def _run_action(tmp_path: Path, given: dict[str, str], cwd: Path | None = None,
                environ: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """The Action's scan step and then its result step, as the runner runs them (`shell: bash` is `bash
    --noprofile --norc -eo pipefail`), inputs given through the steps' env as the runner sets them; returns the
    result step's exit code, the scan step's outputs and what the steps printed."""
    import os
    import subprocess

    action = _action()
    defaults = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    inputs = {**defaults, **given}
    outputs_file = tmp_path / "github_output"
    outputs_file.write_text("")
    printed = ""
    base = {**(os.environ if environ is None else environ), "GITHUB_OUTPUT": str(outputs_file)}
    scan = _step(action, "Scan")
    step_env = {k: _expand(v, inputs, {}) for k, v in scan["env"].items()}
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", scan["run"]],
                          env={**base, **step_env}, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]  # the scan step never fails: the uploads must run
    printed += done.stdout + done.stderr
    outputs = dict(line.split("=", 1) for line in outputs_file.read_text().splitlines() if line)
    result = _step(action, "Result")
    step_env = {k: _expand(v, inputs, outputs) for k, v in result["env"].items()}
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", result["run"]],
                          env={**base, **step_env}, capture_output=True, text=True, timeout=30)
    return done.returncode, outputs, printed + done.stdout + done.stderr


def _expand(value: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    match = re.fullmatch(r"\$\{\{ (inputs|steps\.scan\.outputs)\.([\w-]+) \}\}", value)
    assert match, f"an env value the test does not expand: {value}"
    return (inputs if match.group(1) == "inputs" else outputs).get(match.group(2), "")


@pytest.mark.parametrize("strict, inconclusive, scan_exit, step_exit", [
    ("false", "warn", 0, 0), ("false", "warn", 1, 1), ("false", "warn", 2, 2), ("false", "warn", 3, 3),
    ("false", "warn", 130, 130),
    ("false", "warn", 4, 0),  # inconclusive, lenient: a warning, the job goes on
    ("false", "fail", 4, 4),  # inconclusive, asked to fail: the step fails with the scan's code
    ("true", "warn", 1, 1),  # with --strict the scan itself exits 1 on inconclusive: the step fails
])
def test_the_action_step_result_is_the_scan_exit_code(tmp_path, strict, inconclusive, scan_exit, step_exit):
    import os

    stub = tmp_path / "leakaudit"  # stands in for the scan: records its arguments, exits with the given code
    stub.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\nexit {scan_exit}\n')
    stub.chmod(0o755)
    code, outputs, printed = _run_action(tmp_path, {
        "model": "m.onnx", "data": "s/", "strict": strict, "inconclusive": inconclusive,
        "args": "--seed 0 --samples *"}, environ={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert code == step_exit, printed
    assert outputs["exit-code"] == str(scan_exit) and "verdict" not in outputs  # the stub wrote no report
    assert ("::warning" in printed) == (scan_exit == 4 and inconclusive == "warn")
    argv = (tmp_path / "argv").read_text().split()
    assert ("--strict" in argv) == (strict == "true")
    assert "--budget" not in argv and "--rules" not in argv  # empty inputs leave them to the config file
    assert argv[-4:] == ["--seed", "0", "--samples", "*"]  # args split on whitespace, never globbed


def test_gitlab_job_allows_only_inconclusive_and_can_be_strict():
    job = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["leakaudit"]
    assert job["allow_failure"] == {"exit_codes": [4]}
    assert job["variables"]["STRICT"] == "" and any(line.rstrip().endswith("$STRICT") for line in job["script"])


def test_the_action_under_strict_passes_offline_with_an_earned_pass(tmp_path):
    """Issue 19: the Action's scan, run as written with strict "true" on a machine without LPIPS weights, against
    the bundled leaking model with a defense from the config file: an earned PASS, exit 0 (the default profile's
    LPIPS rule is a warning, which --strict does not fail on), every report the Action uploads written."""
    import json
    import os
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
    environ = {k: v for k, v in os.environ.items() if k != "LEAKAUDIT_LPIPS_WEIGHTS"}
    environ.update({"PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root),
                    "TORCH_HOME": str(tmp_path / "torch-home"),  # an empty hub cache: no LPIPS weights
                    "OMP_NUM_THREADS": "1", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")})
    inputs = {"model": str(root / "examples" / "models" / "mlp_dropout.onnx"),
              "data": str(root / "examples" / "samples"), "strict": "true"}
    code, outputs, printed = _run_action(tmp_path, inputs, cwd=work, environ=environ)
    assert code == 0, printed[-3000:]
    assert outputs == {"exit-code": "0", "verdict": "pass", "sarif-file": "leakaudit-report/report.sarif"}
    out = work / "leakaudit-report"
    doc = json.loads((out / "report.json").read_text())
    lpips = next(r for r in doc["rules"]["results"] if r["id"] == "perceptual-lpips")
    assert lpips["status"] == "not_evaluated" and "LPIPS needs" in lpips["reason"]
    assert doc["rules"]["strict"] is True
    assert (doc["verdict"]["overall"], doc["verdict"]["control_reconstructed"]) == ("pass", True)
    assert all((out / f"report.{ext}").is_file() for ext in ("html", "junit.xml", "md", "sarif"))
    assert "PASS" in (tmp_path / "summary.md").read_text().upper()  # the job summary the scan appends


def test_the_ci_files_validate_against_the_schemastore_schemas():
    """The schemas GitHub's and GitLab's editors use (SchemaStore, vendored by check-jsonschema, a dev
    dependency): a misspelt key or a wrong type fails here, not on the runner."""
    import shutil
    import subprocess

    tool = shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed: pip install check-jsonschema (the dev extra has it)")
    for schema, path in (("github-actions", ROOT / "action.yml"), ("github-workflows", CI / "github-actions.yml"),
                         ("gitlab-ci", CI / "gitlab-ci.yml")):
        done = subprocess.run([tool, "--builtin-schema", f"vendor.{schema}", str(path)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
