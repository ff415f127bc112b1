"""What `scan`, `sweep` and `render` do to the files around them (issue 11, section 3): no input is ever
overwritten, a run holds its output folder, a failed run leaves no stale report, a full disk is exit 2 with
nothing half-written, and JSON is strict. The scans use the analytic attack on a tiny MLP (seconds on CPU)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from leakaudit.cli import app_main
from leakaudit.report import output as out
from leakaudit.report.output import LOCK_NAME, MANIFEST_NAME, REPORT_NAMES, SWEEP_NAMES, OutputFolder

INPUT_SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A model file and a flat image folder with labels.csv: the inputs a wrong --output could destroy."""
    from PIL import Image

    from leakaudit.models import create_model
    from leakaudit.models.safetensors_loader import save_safetensors

    root = tmp_path_factory.mktemp("output")
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=4, input_shape=INPUT_SHAPE, hidden=(32,))
    save_safetensors(model, root / "mlp.safetensors", arch="mlp", input_shape=INPUT_SHAPE, num_classes=4,
                     arch_kwargs={"hidden": [32]})
    data = root / "samples"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / name)
    (data / "labels.csv").write_text("file,label\na.png,0\nb.png,1\n")
    (root / "scan.toml").write_text('attacks = "analytic"\n')
    return root


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def scan(workdir: Path, *extra: str) -> int:
    return app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples"),
                     "--attacks", "analytic", "--quiet", *extra])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("target, message", [
    ("mlp.safetensors", r"--output .*mlp\.safetensors: is the model \(.*\); writing there would overwrite an input"),
    ("samples/labels.csv", r"--output .*labels\.csv: lies in the --data input .*samples; writing there would "
                           r"change an input; choose a location outside it"),
    ("samples/a.png", r"a\.png: lies in the --data input"),
    ("scan.toml", r"--output .*scan\.toml: is the config file"),
])
def test_output_onto_an_input_is_refused_and_the_input_kept(workdir, tmp_path, capsys, target, message):
    before = digests(workdir)
    extra = ["--config", str(workdir / "scan.toml")] if target == "scan.toml" else []
    assert scan(workdir, "--output-dir", str(tmp_path / "r"), "--output", str(workdir / target), *extra) == 2
    assert re.search(message, error_line(capsys))
    assert digests(workdir) == before
    assert not (tmp_path / "r").exists()


def test_output_dir_inside_the_data_folder_is_refused(workdir, capsys):
    before = digests(workdir)
    assert scan(workdir, "--output-dir", str(workdir / "samples")) == 2
    assert "--output-dir " + str(workdir / "samples") + ": lies in the --data input" in error_line(capsys)
    assert digests(workdir) == before  # no report.json dropped into the samples (the next scan would refuse them)


def test_output_naming_a_folder_is_exit_2(workdir, tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    assert scan(workdir, "--output-dir", str(tmp_path / "r"), "--output", str(tmp_path / "dir")) == 2
    assert f"--output {tmp_path / 'dir'}: is a folder; give a file name" in error_line(capsys)


def test_a_run_writes_a_set_with_its_manifest_and_no_lock_or_temp(workdir, tmp_path):
    assert scan(workdir, "--output-dir", str(tmp_path / "r"), "--format", "json,html,junit,markdown,sarif") == 1
    assert names(tmp_path / "r") == [MANIFEST_NAME, *sorted(REPORT_NAMES)]
    manifest = json.loads((tmp_path / "r" / MANIFEST_NAME).read_text())
    for entry in manifest["files"]:
        assert hashlib.sha256((tmp_path / "r" / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]


def test_a_second_scan_on_a_held_folder_is_refused_before_it_loads_anything(workdir, tmp_path, capsys, monkeypatch):
    import leakaudit.audit

    monkeypatch.setattr(leakaudit.audit, "audit", lambda *a, **k: pytest.fail("the second scan ran"))
    with OutputFolder(tmp_path / "r", REPORT_NAMES):  # what a concurrent scan holds
        assert scan(workdir, "--output-dir", str(tmp_path / "r")) == 2
    line = error_line(capsys)
    assert f"--output-dir {tmp_path / 'r'}: another leakaudit run (pid {os.getpid()}) is writing" in line
    assert "pass a different --output-dir" in line


def test_a_read_only_output_is_exit_2_before_the_attacks(workdir, tmp_path, capsys, monkeypatch):
    """Root ignores chmod: the probe write fails the way a read-only mount makes it fail."""
    import leakaudit.audit

    monkeypatch.setattr(leakaudit.audit, "audit", lambda *a, **k: pytest.fail("attacks ran before the check"))
    real = out._write_file

    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(out, "_write_file", read_only)
    assert scan(workdir, "--output-dir", str(tmp_path / "r")) == 2
    assert error_line(capsys) == (f"leakaudit: error: {tmp_path / 'r'}: cannot write in the folder (Read-only file "
                                  "system); pass a writable --output-dir")
    monkeypatch.setattr(out, "_write_file", real)


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EDQUOT, "Disk quota exceeded")])
def test_full_disk_is_exit_2_naming_the_file_and_leaves_nothing_half_written(workdir, tmp_path, capsys,
                                                                            monkeypatch, code, text):
    folder = tmp_path / "r"
    assert scan(workdir, "--output-dir", str(folder), "--format", "json,html,junit") == 1  # a previous set
    real = out._write_file

    def full(path, data):
        if path.name.startswith(out.TEMP_PREFIX + "report.html"):
            path.write_bytes(data[:100])
            raise OSError(code, os.strerror(code))
        real(path, data)

    monkeypatch.setattr(out, "_write_file", full)
    assert scan(workdir, "--output-dir", str(folder), "--format", "json,html,junit") == 2
    assert error_line(capsys).endswith(f"{folder / 'report.html'}: cannot write ({text}); free disk space "
                                       "(or quota) there, or pass another --output-dir")
    assert names(folder) == []  # no temp, no report.json of this run beside the old report.html


def test_a_failed_run_leaves_no_stale_report(workdir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "r"
    assert scan(workdir, "--output-dir", str(folder), "--defense", "noise:sigma=10") == 0  # PASS
    assert "report.json" in names(folder)
    # an input error found after the output step (a missing data folder)
    assert app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(tmp_path / "nodata"),
                     "--output-dir", str(folder), "--quiet"]) == 2
    assert names(folder) == []
    # an internal error during the attacks (exit 3)
    assert scan(workdir, "--output-dir", str(folder), "--defense", "noise:sigma=10") == 0
    import leakaudit.update

    monkeypatch.setattr(leakaudit.update, "client_update", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    assert scan(workdir, "--output-dir", str(folder)) == 3
    assert names(folder) == []
    monkeypatch.undo()
    # a bad option, before the settings are known: the folder named on the command line is cleared too
    assert scan(workdir, "--output-dir", str(folder), "--defense", "noise:sigma=10") == 0
    capsys.readouterr()
    assert scan(workdir, "--output-dir", str(folder), "--iterations", "-1") == 2
    assert "--iterations" in error_line(capsys)
    assert names(folder) == []
    assert scan(workdir, "--output-dir", str(folder), "--defense", "noise:sigma=10") == 0
    assert scan(workdir, "--output-dir", str(folder), "--output", str(tmp_path / "x.json"), "--format", "html") == 2
    assert names(folder) == []


def test_a_failed_run_takes_back_the_folder_it_created(workdir, tmp_path):
    assert app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(tmp_path / "nodata"),
                     "--output-dir", str(tmp_path / "new" / "r"), "--quiet"]) == 2
    assert not (tmp_path / "new").exists()


def test_a_failed_run_removes_the_previous_output_json(workdir, tmp_path):
    target = tmp_path / "scan.json"
    assert scan(workdir, "--output-dir", str(tmp_path / "r"), "--output", str(target)) == 1
    assert json.loads(target.read_text())["schema_version"]
    assert app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(tmp_path / "nodata"), "--output",
                     str(target), "--output-dir", str(tmp_path / "r"), "--quiet"]) == 2
    assert not target.exists()


def test_render_errors_are_exit_2(workdir, tmp_path, capsys):
    assert scan(workdir, "--output-dir", str(tmp_path / "r")) == 1
    report = tmp_path / "r" / "report.json"
    (tmp_path / "dir").mkdir()
    assert app_main(["render", str(report), "--output", str(tmp_path / "dir")]) == 2
    assert f"--output {tmp_path / 'dir'}: is a folder; give a file name, e.g. {tmp_path / 'dir' / 'report.html'}" \
        in error_line(capsys)
    doc = json.loads(report.read_text())
    doc["attacks"][0]["seconds"] = float("nan")
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(doc))  # Python writes the literal NaN, which is not JSON
    assert app_main(["render", str(nan), "--format", "json", "--output", "-"]) == 2
    assert f"{nan}: holds the number NaN, which is not finite" in error_line(capsys)
    assert app_main(["render", "/dev/zero"]) == 2
    assert "/dev/zero: cannot read (a device, not a regular file)" in error_line(capsys)


def test_render_json_is_strict_json_and_keeps_non_finite_values_as_strings(workdir, tmp_path, capsys):
    assert scan(workdir, "--output-dir", str(tmp_path / "r")) == 1  # exact reconstruction: PSNR inf
    assert app_main(["render", str(tmp_path / "r" / "report.json"), "--format", "json", "--output", "-"]) == 0
    text = capsys.readouterr().out
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert "inf" in {s["metrics"].get("psnr") for a in doc["attacks"] for s in a.get("samples", [])}


def test_sweep_holds_its_folder_and_refuses_an_input(workdir, tmp_path, capsys):
    args = ["sweep", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples"), "--attacks", "analytic",
            "--vary", "noise.sigma=0.1,10", "--quiet"]
    with OutputFolder(tmp_path / "s", SWEEP_NAMES):
        assert app_main(args + ["--output-dir", str(tmp_path / "s")]) == 2
    assert "another leakaudit run" in error_line(capsys)
    assert app_main(args + ["--output-dir", str(workdir / "samples")]) == 2
    assert "lies in the --data input" in error_line(capsys)


def test_sweep_writes_its_set_and_resumes_in_place(workdir, tmp_path):
    args = ["sweep", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples"), "--attacks", "analytic",
            "--vary", "noise.sigma=0.1,10", "--quiet", "--output-dir", str(tmp_path / "s")]
    assert app_main(args) == 0
    assert names(tmp_path / "s") == [MANIFEST_NAME, "sweep.html", "sweep.json"]
    assert app_main(args + ["--resume", str(tmp_path / "s" / "sweep.json")]) == 0  # its own output: allowed
    assert names(tmp_path / "s") == [MANIFEST_NAME, "sweep.html", "sweep.json"]
    assert not (tmp_path / "s" / LOCK_NAME).exists()
    # a bad option: the previous sweep goes, except the sweep.json the user asked to resume
    assert app_main(args + ["--resume", str(tmp_path / "s" / "sweep.json"), "--format", "junit"]) == 2
    assert names(tmp_path / "s") == ["sweep.json"]


def test_a_full_disk_in_the_folder_takes_back_the_output_json_too(workdir, tmp_path, monkeypatch):
    real = out._write_file

    def full(path, data):
        if path.name.startswith(out.TEMP_PREFIX + "report.html"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(out, "_write_file", full)
    target = tmp_path / "scan.json"
    assert scan(workdir, "--output-dir", str(tmp_path / "r"), "--output", str(target)) == 2
    assert not target.exists() and not (tmp_path / "r").exists()


def test_a_planted_manifest_in_the_output_folder_deletes_no_input_nor_other_file(workdir, tmp_path, monkeypatch):
    """Issue 20: `{"files":[{"name":"m.onnx"},{"name":"pyproject.toml"}]}` in `.` with `--output-dir .` deleted both
    before the model loaded; a user's report.html naming leakaudit went too, with --format json."""
    here = tmp_path / "project"
    here.mkdir()
    (here / "m.safetensors").write_bytes((workdir / "mlp.safetensors").read_bytes())
    (here / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    (here / "report.html").write_text("<html>notes on our leakaudit runs</html>")
    (here / MANIFEST_NAME).write_text(json.dumps({"files": [{"name": "m.safetensors"}, {"name": "pyproject.toml"},
                                                            {"name": "report.html"}]}))
    monkeypatch.chdir(here)
    code = app_main(["scan", "m.safetensors", "--data", str(workdir / "samples"), "--attacks", "analytic",
                     "--quiet", "--output-dir", ".", "--format", "json"])
    assert code == 1
    assert (here / "pyproject.toml").read_text() == "[project]\nname = 'mine'\n"
    assert (here / "report.html").read_text() == "<html>notes on our leakaudit runs</html>"
    assert (here / "m.safetensors").read_bytes() == (workdir / "mlp.safetensors").read_bytes()
    listed = json.loads((here / MANIFEST_NAME).read_text())["files"]
    assert [f["name"] for f in listed] == ["report.json"]


def test_scan_appends_its_markdown_summary_to_github_step_summary(workdir, tmp_path, monkeypatch):
    """In GitHub Actions, GITHUB_STEP_SUMMARY names a file the job page shows: the scan appends (never
    overwrites) the same Markdown that --format markdown writes as report.md."""
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert scan(workdir, "--output-dir", str(tmp_path / "r"), "--format", "json,markdown") == 1  # analytic: a leak
    written = summary.read_text(encoding="utf-8")
    report_md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert written == "earlier step\n" + report_md
    assert report_md.startswith("## leakaudit: FAIL\n") and "| **FAIL** |" in report_md
    assert "**Coverage:** 2 of 2 sample(s) recognised" in report_md
    assert scan(workdir, "--output-dir", str(tmp_path / "r2")) == 1  # without --format markdown: still appended
    assert summary.read_text(encoding="utf-8").count("## leakaudit: FAIL") == 2
    assert not (tmp_path / "r2" / "report.md").exists()


def test_an_unwritable_step_summary_is_a_warning_not_another_exit_code(workdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a folder: cannot be opened for appending
    assert scan(workdir, "--output-dir", str(tmp_path / "r")) == 1
    err = capsys.readouterr().err
    assert "GITHUB_STEP_SUMMARY" in err and "cannot append the summary" in err
    assert (tmp_path / "r" / "report.json").is_file()


def test_summary_lines_are_not_wrapped_off_a_terminal(workdir, tmp_path, capsys):
    """A CI log is not a terminal: rich would wrap at 80 columns and split a rule line or a file name."""
    assert app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(workdir / "samples"), "--attacks",
                     "analytic", "--output-dir", str(tmp_path / "r")]) == 1
    lines = capsys.readouterr().err.splitlines()
    coverage = next(line for line in lines if line.startswith("  coverage: "))
    assert len(coverage) > 80 and re.search(r" Clopper-Pearson\) in 2 batch\(es\) of 1; worst [ab]\.png$", coverage)
    assert any(line.startswith("LEAK: ") and line.endswith("not evaluated") for line in lines)


def test_on_a_terminal_the_console_fits_the_terminal(monkeypatch):
    import sys

    from leakaudit.cli.app import stderr_console

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert stderr_console().width == 160 and stderr_console().soft_wrap
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not stderr_console().soft_wrap
