"""The pre-commit hook and the container image (issue 21, item 2), checked as far as this machine allows: the
hook's entry runs a real scan per staged model; the Dockerfile is read (no Docker daemon in CI here) for what
users rely on: it installs only what pyproject.toml provides, with the CPU torch wheels, and runs as a user."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from leakaudit.cli import precommit

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read .pre-commit-hooks.yaml")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_hook_entry_is_an_installed_script_and_matches_model_files_only():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["language"] == "python" and hook["entry"] in PYPROJECT["project"]["scripts"]
    script = PYPROJECT["project"]["scripts"][hook["entry"]]
    assert script == "leakaudit.cli.precommit:main"
    files = re.compile(hook["files"])
    assert files.search("models/a.onnx") and files.search("b.safetensors")
    assert not files.search("train.py") and not files.search("a.onnx.txt")
    assert hook["require_serial"] is True  # parallel scans would oversubscribe the CPUs


@pytest.mark.parametrize("argv, options, models", [
    (["--data", "s/", "a.onnx", "m/b.safetensors"], ["--data", "s/"], ["a.onnx", "m/b.safetensors"]),
    (["--data", "s/", "--reference-data", "refs.safetensors", "a.onnx"],
     ["--data", "s/", "--reference-data", "refs.safetensors"], ["a.onnx"]),  # an option's value stays
    (["--data=s/", "A.ONNX"], ["--data=s/"], ["A.ONNX"]),
    (["--data", "s/"], ["--data", "s/"], []),
])
def test_the_hook_tells_the_staged_models_from_the_scan_options(argv, options, models):
    assert precommit.split(argv) == (options, models)


def test_the_hook_scans_each_staged_model_into_its_own_folder_and_fails_on_a_leak(tmp_path, capsys):
    models = [str(ROOT / "examples" / "models" / name) for name in ("mlp_dropout.onnx", "mlp.onnx")]
    code = precommit.main(["--data", str(ROOT / "examples" / "samples"), "--samples", "1", "--attacks", "analytic",
                           "--quiet", "--format", "json", "--output-dir", str(tmp_path), *models])
    assert code == 1  # both leak: the analytic attack inverts their first Linear layer
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2
    for folder in folders:
        assert json.loads((folder / "report.json").read_text())["verdict"]["exit_code"] == 1
    err = capsys.readouterr().err
    assert all(f"{m}: exit 1" in err for m in models)


def test_the_hook_without_a_model_is_one_line_exit_2(capsys):
    assert precommit.main(["--data", "s/"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model file given" in err


@pytest.mark.parametrize("codes, worst", [([0, 1], 1), ([4, 0], 4), ([1, 4], 1), ([1, 2], 2), ([0, 0], 0)])
def test_the_hook_exits_with_the_worst_code(monkeypatch, codes, worst):
    it = iter(codes)
    monkeypatch.setattr("leakaudit.cli.app_main", lambda argv: next(it))
    assert precommit.main(["--data", "s/", *[f"m{i}.onnx" for i in range(len(codes))]]) == worst


def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_installs_only_what_pyproject_provides_with_cpu_torch():
    steps = _dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    dependencies = {re.match(r"[\w-]+", d).group(0).lower() for d in PYPROJECT["project"]["dependencies"]}
    installs = [shlex.split(cmd) for kind, cmd in steps if kind == "RUN" and "pip install" in cmd]
    assert len(installs) == 2
    torch, package = installs
    named = torch[torch.index("install") + 1:torch.index("--index-url")]
    assert set(named) <= dependencies and torch[torch.index("--index-url") + 1] == \
        "https://download.pytorch.org/whl/cpu"
    assert package[package.index("install") + 1] == "/src"  # this project, nothing from a registry by name


def test_the_dockerfile_copies_everything_the_package_build_reads_and_dockerignore_keeps_it():
    steps = _dockerfile()
    copied = {src for kind, args in steps if kind == "COPY" for src in args.split()[:-1]}
    setuptools = PYPROJECT["tool"]["setuptools"]
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], *PYPROJECT["project"]["license-files"],
              "leakaudit", *setuptools["package-dir"].values()}
    assert needed <= copied, needed - copied
    assert all((ROOT / src).exists() for src in copied)
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & copied and ".git" in ignored


def test_the_image_runs_as_an_unprivileged_user_with_the_leakaudit_entrypoint():
    steps = _dockerfile()
    last_run = max(i for i, (kind, _) in enumerate(steps) if kind == "RUN")
    users = [(i, args) for i, (kind, args) in enumerate(steps) if kind == "USER"]
    assert users and users[-1][0] > last_run and users[-1][1] not in ("root", "0")
    entry = json.loads(next(args for kind, args in steps if kind == "ENTRYPOINT"))
    assert entry == ["leakaudit"] and "leakaudit" in PYPROJECT["project"]["scripts"]


@pytest.mark.parametrize("options, model, folder", [
    ([], "models/a.onnx", "leakaudit-report/models-a"),
    (["--output-dir", "out"], "/abs/m.onnx", "out/abs-m"),  # an absolute path stays under the folder
    (["--output-dir=out"], "../up/m.safetensors", "out/up-m"),
])
def test_each_model_reports_into_a_folder_of_its_own_under_the_output_dir(options, model, folder):
    assert precommit.report_dir(options, model) == ([], folder)
