"""`scan --resume` trusts nothing in `scan-checkpoint.json` it cannot check (issue 19, issue 20): the checkpoint is
bound to the content of the model, the samples and the rules and to the settings, carries the sha256 of its own
records, and a hostile file (deep nesting, a huge integer, a link, a FIFO) is one line, exit 2.

The model and data are those of test_coverage_scan (an MLP the analytic attack inverts exactly: every batch
leaks); each scan is a few seconds."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from leakaudit.cli import app_main
from leakaudit.coverage import checkpoint

SHAPE = (3, 8, 8)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mlp_workdir) -> Path:
    root = mlp_workdir(tmp_path_factory.mktemp("checkpoint"), 8, SHAPE)
    (root / "rules.toml").write_text((ROOT / "rules" / "default.toml").read_text())
    return root


def scan(workdir: Path, out: Path, *extra: str, data: Path | None = None) -> int:
    return app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(data or workdir / "images"),
                     "--output-dir", str(out), "--quiet", "--attacks", "analytic", "--samples", "8",
                     "--batch-size", "2", *extra])


@pytest.fixture
def interrupted(workdir, tmp_path, interrupt_batch) -> Path:
    """An output folder holding the checkpoint of a scan stopped in its third batch (two batches done, both
    leaking); the real batch function is back in place for the --resume."""
    import leakaudit.audit as audit_module

    out = tmp_path / "r"
    real = interrupt_batch(3)
    assert scan(workdir, out, "--rules", str(workdir / "rules.toml")) == 130
    audit_module.audit_loaded = real
    assert (out / checkpoint.NAME).is_file()
    return out


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_checkpoint_is_bound_to_content_and_resumes_unchanged(workdir, interrupted):
    doc = json.loads((interrupted / checkpoint.NAME).read_text())
    assert len(doc["samples_sha256"]) == 4 and len(doc["rules_sha256"]) == 64 and len(doc["records_sha256"]) == 64
    assert [b["overall"] for b in doc["batches"]] == ["fail", "fail"]
    assert [b["conditioning"]["verdict"] for b in doc["batches"]] == ["stable", "stable"]  # kept per batch
    assert scan(workdir, interrupted, "--rules", str(workdir / "rules.toml"), "--resume") == 1


def test_a_rules_file_edited_between_ctrl_c_and_resume_is_refused(workdir, tmp_path, interrupted, capsys):
    """Issue 19: with the rule file's fail rules turned to warn, the failed batches counted as warnings (exit 0)."""
    rules = workdir / "rules.toml"
    original = rules.read_text()
    capsys.readouterr()
    try:
        rules.write_text(original.replace('severity = "fail"', 'severity = "warn"'))
        assert scan(workdir, interrupted, "--rules", str(rules), "--resume") == 2
    finally:
        rules.write_text(original)
    assert "the rules differ from the checkpointed scan's (the --rules file was edited" in one_line(capsys)


def test_samples_with_the_same_names_but_other_pixels_are_refused(workdir, tmp_path, interrupted, capsys,
                                                                  write_images):
    import shutil

    from PIL import Image

    data = tmp_path / "images"
    shutil.copytree(workdir / "images", data)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(data / "img00.png")
    capsys.readouterr()
    assert scan(workdir, interrupted, "--rules", str(workdir / "rules.toml"), "--resume", data=data) == 2
    assert "the samples or their batches differ from the checkpointed scan (names, pixels or labels)" in \
        one_line(capsys)


def _edit(out: Path, change, *, redigest: bool) -> None:
    path = out / checkpoint.NAME
    doc = json.loads(path.read_text())
    change(doc)
    if redigest:
        keep = ("leakaudit", "model_sha256", "arch_sha256", "settings", "rules_sha256", "samples", "samples_sha256",
                "references_sha256", "utility_sha256")
        doc["records_sha256"] = checkpoint._digest({**{k: doc[k] for k in keep}, "batches": doc["batches"],
                                                    "records": doc["records"]})
    path.write_text(json.dumps(doc))


def _passing(doc: dict) -> None:
    """What an editor would change to make the two leaking batches pass."""
    for b in doc["batches"]:
        for r in b["rules"]:
            r["status"] = "pass"
    for s in doc["records"]:
        s["recognised"], s["rules"] = False, []


def test_an_edited_checkpoint_is_refused_by_its_records_sha256(workdir, interrupted, capsys):
    """Issue 19: an edited checkpoint turned a model reconstructed exactly into PASS."""
    _edit(interrupted, _passing, redigest=False)
    capsys.readouterr()
    assert scan(workdir, interrupted, "--rules", str(workdir / "rules.toml"), "--resume") == 2
    assert "the checkpoint's records do not match their sha256 (edited or damaged)" in one_line(capsys)


def test_a_batch_whose_verdict_was_a_leak_cannot_be_restored_as_a_pass(workdir, interrupted, capsys):
    """Even with the sha256 recomputed: a batch recorded as fail whose rules no longer fire is refused, so
    combining batches never turns a fail into a pass."""
    _edit(interrupted, _passing, redigest=True)
    capsys.readouterr()
    assert scan(workdir, interrupted, "--rules", str(workdir / "rules.toml"), "--resume") == 2
    assert "the checkpoint is inconsistent (batch 1's verdict (fail) disagrees with its rules)" in one_line(capsys)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply, not a checkpoint leakaudit wrote"),
    ('{"kind": ' + "7" * 5000 + "}", r"cannot read the checkpoint (a number too long to be one leakaudit wrote)"),
    ("{\"kind\": \xff}", "cannot read the checkpoint ("),
])
def test_a_hostile_checkpoint_is_one_line_exit_2(workdir, tmp_path, capsys, text, message):
    out = tmp_path / "r"
    out.mkdir()
    (out / checkpoint.NAME).write_text(text, encoding="latin-1")
    assert scan(workdir, out, "--resume") == 2
    err = one_line(capsys)
    assert message in err and err.endswith("run the scan again without --resume (it starts over)")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks and FIFOs are POSIX")
def test_a_checkpoint_that_is_a_link_or_a_fifo_is_refused(workdir, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    (out / checkpoint.NAME).symlink_to(elsewhere)
    assert scan(workdir, out, "--resume") == 2
    assert "cannot read the checkpoint (a link)" in one_line(capsys)
    (out / checkpoint.NAME).unlink()
    os.mkfifo(out / checkpoint.NAME)
    assert scan(workdir, out, "--resume") == 2  # no blocking read
    assert "the checkpoint is not a regular file" in one_line(capsys)


def test_a_scan_with_an_active_suppression_resumes(workdir, tmp_path, interrupt_batch):
    """A batch whose rules carry the status ``suppressed`` (an [[ignore]] entry applied) was refused on --resume as
    "an unknown verdict": a multi-batch scan with a suppression file could not be resumed."""
    import leakaudit.audit as audit_module

    ignore = tmp_path / "ignore.toml"
    ignore.write_text('[[ignore]]\nrule = "label-recovery"\nmodel = "*.safetensors"\nreason = "labels are public"\n'
                      "expires = 2999-12-31\n")
    out = tmp_path / "r"
    args = ("--rules", str(workdir / "rules.toml"), "--ignore-file", str(ignore))
    real = interrupt_batch(3)
    assert scan(workdir, out, *args) == 130
    audit_module.audit_loaded = real
    doc = json.loads((out / checkpoint.NAME).read_text())
    assert any(r["status"] == "suppressed" for b in doc["batches"] for r in b["rules"])
    assert scan(workdir, out, *args, "--resume") == 1  # the other rules still leak: the scan completes as a FAIL
    report = json.loads((out / "report.json").read_text())
    assert report["coverage"]["batches_run"] == 4
    assert [r["status"] for r in report["rules"]["results"] if r["id"] == "label-recovery"] == ["suppressed"]
    assert not (out / checkpoint.NAME).exists()


def test_other_held_out_utility_data_is_refused(workdir, tmp_path, interrupt_batch, capsys):
    """Each batch's defense cost is measured on the --utility-data samples: a resume on other ones would mix the
    figures of two held-out sets in one report."""
    import shutil

    from PIL import Image

    import leakaudit.audit as audit_module

    held = tmp_path / "held"
    shutil.copytree(workdir / "images", held)
    out = tmp_path / "r"
    args = ("--rules", str(workdir / "rules.toml"), "--defense", "noise:sigma=0.001", "--utility-data", str(held))
    real = interrupt_batch(3)
    assert scan(workdir, out, *args) == 130
    audit_module.audit_loaded = real
    Image.new("RGB", (8, 8), (9, 9, 9)).save(held / "img00.png")  # same names, other pixels
    capsys.readouterr()
    assert scan(workdir, out, *args, "--resume") == 2
    assert "the held-out utility data differ from the checkpointed scan's (another --utility-data" in one_line(capsys)
