"""The output folder's guarantees (leakaudit/report/output.py): one run at a time, the previous set gone before
the attacks, a whole set or none, nothing half-written on a full disk, no input overwritten, strict JSON."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from leakaudit.errors import InputError, OutputError
from leakaudit.report import load_document, render_json
from leakaudit.report import output as out
from leakaudit.report.output import (LOCK_NAME, MANIFEST_NAME, REPORT_NAMES, OutputFolder, discard_previous,
                                     prepare_file, refuse_inputs, write_atomic)

SET = {"report.json": '{"schema_version": "1.0"}\n', "report.html": "<html></html>\n"}


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def full_disk_on(monkeypatch, victim: str, code: int = errno.ENOSPC) -> None:
    """The write of ``victim``'s temp stops half-way with ``code``, as a full disk does."""
    real = out._write_file

    def write(path: Path, data: bytes) -> None:
        if path.name.startswith(out.TEMP_PREFIX + victim):
            path.write_bytes(data[: len(data) // 2])
            raise OSError(code, os.strerror(code))
        real(path, data)

    monkeypatch.setattr(out, "_write_file", write)


def test_a_committed_set_has_its_manifest_last_and_no_temp_or_lock_left(tmp_path):
    with OutputFolder(tmp_path / "r", REPORT_NAMES) as folder:
        assert (tmp_path / "r" / LOCK_NAME).exists()
        written = folder.commit(SET)
    assert [p.name for p in written] == ["report.json", "report.html"]
    assert names(tmp_path / "r") == [MANIFEST_NAME, "report.html", "report.json"]
    manifest = json.loads((tmp_path / "r" / MANIFEST_NAME).read_text())
    assert [f["name"] for f in manifest["files"]] == ["report.json", "report.html"]
    assert manifest["files"][0]["sha256"] == hashlib.sha256(SET["report.json"].encode()).hexdigest()


def test_files_are_readable_by_others_as_umask_allows_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}")
        with OutputFolder(tmp_path / "r", REPORT_NAMES) as folder:
            folder.commit(SET)
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "r" / "report.json").stat().st_mode & 0o777 == 0o644


def test_opening_the_folder_removes_the_previous_set_and_only_it(tmp_path):
    folder = tmp_path / "r"
    with OutputFolder(folder, REPORT_NAMES) as held:
        held.commit({**SET, "report.junit.xml": "<testsuites/>"})
    (folder / "notes.txt").write_text("mine")
    with OutputFolder(folder, REPORT_NAMES):
        # the attacks run here: the old PASS must already be gone
        assert names(folder) == [LOCK_NAME, "notes.txt"]
    assert names(folder) == ["notes.txt"]


def test_without_a_manifest_the_known_names_are_removed(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    for name in ("report.json", "report.junit.xml", "sweep.json"):
        (folder / name).write_text('{"tool": {"name": "leakaudit", "version": "0.1.0"}}')
    (folder / "report.html").write_text("<html>the user's own page</html>")
    with OutputFolder(folder, REPORT_NAMES):
        pass
    # a report folder's clean-up leaves a sweep alone, and a report.html leakaudit did not write
    assert names(folder) == ["report.html", "sweep.json"]


def test_a_manifest_cannot_make_the_clean_up_delete_outside_the_folder(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (tmp_path / "precious.txt").write_text("keep")
    (folder / ".hidden").write_text("keep")
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": [{"name": "../precious.txt"}, {"name": ".hidden"},
                                                              {"name": "/etc/passwd"}]}))
    with OutputFolder(folder, REPORT_NAMES):
        pass
    assert (tmp_path / "precious.txt").exists() and (folder / ".hidden").exists()
    assert not (folder / MANIFEST_NAME).exists()


def test_a_second_run_on_a_held_folder_is_refused_naming_the_folder_and_the_fix(tmp_path):
    with OutputFolder(tmp_path / "r", REPORT_NAMES):
        with pytest.raises(OutputError, match=rf"^output_dir {tmp_path / 'r'}: another leakaudit run \(pid "
                                              rf"{os.getpid()}\) is writing to this folder; wait for it to "
                                              r"finish, or pass a different output_dir"):
            with OutputFolder(tmp_path / "r", REPORT_NAMES):
                pass
    with OutputFolder(tmp_path / "r", REPORT_NAMES):  # released: the next run gets it
        pass


def test_full_disk_is_an_output_error_naming_the_file_and_leaves_no_set(tmp_path, monkeypatch):
    folder = tmp_path / "r"
    with OutputFolder(folder, REPORT_NAMES) as held:
        held.commit(SET)
    for code, text, fix in ((errno.ENOSPC, "No space left on device", "free disk space"),
                            (errno.EDQUOT, "Disk quota exceeded", "free disk space"),
                            (errno.EROFS, "Read-only file system", "pass a writable output_dir"),
                            (errno.EACCES, "Permission denied", "pass a writable output_dir")):
        full_disk_on(monkeypatch, "report.html", code)
        with OutputFolder(folder, REPORT_NAMES) as held:
            with pytest.raises(OutputError, match=rf"{folder / 'report.html'}: cannot write \({text}\); {fix}"):
                held.commit(SET)
        assert names(folder) == []  # no temp, no half file, no report.json of this run, no old set


def test_a_failed_rename_takes_back_the_files_already_renamed(tmp_path, monkeypatch):
    folder = tmp_path / "r"
    folder.mkdir()
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == "report.html":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(src, dst)

    with OutputFolder(folder, REPORT_NAMES) as held:
        monkeypatch.setattr(out.os, "replace", replace)
        with pytest.raises(OutputError, match="report.html: cannot write"):
            held.commit(SET)
        monkeypatch.undo()
    assert names(folder) == []


def test_a_read_only_location_is_refused_when_the_folder_is_opened(tmp_path, monkeypatch):
    """Root ignores chmod, so the probe's write is made to fail the way a read-only mount fails it."""
    full_disk_on(monkeypatch, "probe", errno.EROFS)
    with pytest.raises(OutputError, match=rf"{tmp_path / 'r'}: cannot write in the folder \(Read-only file "
                                          r"system\); pass a writable output_dir"):
        with OutputFolder(tmp_path / "r", REPORT_NAMES):
            pytest.fail("the run must not start")
    assert not (tmp_path / "r").exists()  # the folder this run made is taken back with its lock file


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "r").write_text("x")
    with pytest.raises(OutputError, match=r"^output_dir .*r: is a file, not a folder"):
        with OutputFolder(tmp_path / "r", REPORT_NAMES):
            pass


KILLED_RUN = """
import os, signal, sys
from leakaudit.report import output as out
real = out._write_file
def write(path, data):
    if path.name.startswith(out.TEMP_PREFIX + "report.html"):
        path.write_bytes(data[:10])
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
out._write_file = write
with out.OutputFolder(sys.argv[1], out.REPORT_NAMES) as folder:
    folder.commit({"report.json": "new", "report.html": "new", "report.junit.xml": "new"})
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")
def test_sigkill_mid_write_leaves_no_complete_set_and_the_next_run_cleans_up(tmp_path):
    folder = tmp_path / "r"
    with OutputFolder(folder, REPORT_NAMES) as held:
        held.commit({"report.json": "old", "report.html": "old", "report.junit.xml": "old"})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(folder)], timeout=120)
    assert proc.returncode == -9
    left = names(folder)
    # what a reader sees after the kill: no manifest, none of the old files, temps and the stale lock file
    assert MANIFEST_NAME not in left and not set(left) & set(REPORT_NAMES)
    assert any(n.startswith(out.TEMP_PREFIX) for n in left) and LOCK_NAME in left
    with OutputFolder(folder, REPORT_NAMES) as held:  # the dead run's lock is free, its temps go
        assert names(folder) == [LOCK_NAME]
        held.commit(SET)
    assert names(folder) == [MANIFEST_NAME, "report.html", "report.json"]


def test_temps_of_earlier_versions_are_cleaned_too(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / ".report.json.x1y2z3.tmp").write_text("half")
    (folder / "sweep.jsonab12.tmp").write_text("half")
    with OutputFolder(folder, ("sweep.json", "sweep.html", *REPORT_NAMES)):
        pass
    assert names(folder) == []


def test_discard_previous_skips_a_folder_another_run_holds(tmp_path):
    folder = tmp_path / "r"
    with OutputFolder(folder, REPORT_NAMES) as held:
        held.commit(SET)
        discard_previous(folder, REPORT_NAMES)  # held: left alone, no error
        assert "report.json" in names(folder)
    discard_previous(folder, REPORT_NAMES)
    assert names(folder) == []
    discard_previous(tmp_path / "missing", REPORT_NAMES)  # nothing to do, nothing created
    assert not (tmp_path / "missing").exists()


def test_resume_file_in_the_folder_is_kept(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "sweep.json").write_text("{}")
    (folder / "sweep.html").write_text("<title>leakaudit sweep: noise.sigma</title>")
    with OutputFolder(folder, ("sweep.json", "sweep.html"), keep=[folder / "sweep.json"]):
        pass
    assert names(folder) == ["sweep.json"]


def test_outputs_that_are_inputs_are_refused(tmp_path):
    data = tmp_path / "samples"
    data.mkdir()
    (data / "labels.csv").write_text("file,label\n")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    os.link(model, tmp_path / "hard.json")
    inputs = [("the model", model), ("the --data input", data)]
    for target, message in ((model, r"--output .*m\.onnx: is the model \(.*m\.onnx\); writing there would overwrite"),
                            (tmp_path / "hard.json", r"hard\.json: is the model"),
                            (data / "labels.csv", r"labels\.csv: lies in the --data input .*samples; "),
                            (data / "new.json", r"new\.json: lies in the --data input"),
                            (tmp_path / "samples" / ".." / "m.onnx", r"is the model")):
        with pytest.raises(OutputError, match=message):
            refuse_inputs([("--output", target)], inputs)
    refuse_inputs([("--output", tmp_path / "report.json")], inputs)  # next to the inputs is fine


def test_output_file_checks(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match=r"^output .*dir: is a folder; give a file name, e.g. .*dir/report.json"):
        prepare_file(tmp_path / "dir")
    with pytest.raises(OutputError, match=r"is a folder"):
        write_atomic(tmp_path / "dir", "{}")
    old = tmp_path / "scan.json"
    old.write_text(render_json({"schema_version": "1.0", "verdict": {"overall": "pass"}}))
    mine = tmp_path / "notes.json"
    mine.write_text('{"not": "a report"}')
    prepare_file(old)  # a previous report goes before the run: a failed run leaves no stale PASS
    prepare_file(mine)  # another file is only replaced if the run succeeds
    assert not old.exists() and mine.exists()


def test_single_file_on_a_full_disk_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "scan.json"
    target.write_text("old")
    full_disk_on(monkeypatch, "scan.json")
    with pytest.raises(OutputError, match=r"scan\.json: cannot write \(No space left on device\)"):
        write_atomic(target, "new")
    assert names(tmp_path) == ["scan.json"] and target.read_text() == "old"


def test_json_output_is_strict_json_whatever_the_document_holds():
    text = render_json({"schema_version": "1.0", "a": [float("nan"), float("inf"), -float("inf"), 1.5]})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written"))["a"] == ["nan", "inf", "-inf", 1.5]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_report_holding_a_non_finite_literal_is_an_input_error(tmp_path, literal):
    bad = tmp_path / "nan.json"
    bad.write_text('{"schema_version": "1.0", "x": ' + literal + "}")
    with pytest.raises(InputError, match=rf"nan\.json: holds the number {literal}, which is not finite"):
        load_document(bad)


# Issue 20: an output folder an attacker prepared. A manifest is a claim, not proof; the lock is never a link.

def test_a_planted_manifest_deletes_nothing_this_run_does_not_replace(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    for name in ("m.onnx", "pyproject.toml", "report.html"):
        (folder / name).write_text(f"the user's {name}")
    listed = [{"name": n, "sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest()}
              for n in ("m.onnx", "pyproject.toml", "report.html")]
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": [{"name": "m.onnx"}, {"name": "pyproject.toml"},
                                                              *listed]}))
    with OutputFolder(folder, ("report.json",), keep=[folder / "m.onnx"]):
        pass
    # listed, even with their true sha256, but not written by this run (--format json): all three stay
    assert names(folder) == ["m.onnx", "pyproject.toml", "report.html"]


def test_a_listed_file_goes_only_when_its_sha256_matches_and_never_an_input(tmp_path):
    folder = tmp_path / "r"
    with OutputFolder(folder, REPORT_NAMES) as held:
        held.commit({"report.json": SET["report.json"], "report.html": "<p>no name here</p>"})
    (folder / "report.html").write_text("<p>edited by the user since</p>")
    with OutputFolder(folder, REPORT_NAMES, keep=[folder / "report.json"]):
        pass
    # report.json is an input of this run (kept); report.html no longer has the recorded sha256 nor the name
    assert names(folder) == ["report.html", "report.json"]


def test_a_users_report_html_naming_leakaudit_stays_with_format_json(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "report.html").write_text("<html>my notes about leakaudit</html>")
    with OutputFolder(folder, ("report.json",)) as held:
        held.commit({"report.json": SET["report.json"]})
    assert (folder / "report.html").read_text() == "<html>my notes about leakaudit</html>"


def test_discard_previous_deletes_only_files_the_manifest_verifies(tmp_path):
    folder = tmp_path / "r"
    with OutputFolder(folder, REPORT_NAMES) as held:
        held.commit(SET)
    (folder / "report.junit.xml").write_text("<testsuites name='leakaudit'/> the user's own")
    discard_previous(folder, REPORT_NAMES)
    assert names(folder) == ["report.junit.xml"]


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks and flock are POSIX")
def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (folder / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OutputError, match=rf"^output_dir {folder}: \.leakaudit\.lock is a link, not a lock "
                                          r"leakaudit made; delete it, or pass a different output_dir$"):
        with OutputFolder(folder, REPORT_NAMES):
            pass
    assert victim.read_text() == "precious" and (folder / LOCK_NAME).is_symlink()
    (folder / LOCK_NAME).unlink()
    (folder / LOCK_NAME).symlink_to(tmp_path / "missing")  # a dangling link would be created through
    with pytest.raises(OutputError, match=r"is a link, not a lock"):
        with OutputFolder(folder, REPORT_NAMES):
            pass
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_lock_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    os.mkfifo(folder / LOCK_NAME)
    with pytest.raises(OutputError, match=r"\.leakaudit\.lock is not a regular file, not a lock leakaudit made; "
                                          r"delete it"):
        with OutputFolder(folder, REPORT_NAMES):
            pass


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_manifest_or_report_that_is_a_fifo_or_link_is_not_read_nor_followed(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    os.mkfifo(folder / MANIFEST_NAME)
    os.mkfifo(folder / "report.json")
    outside = tmp_path / "outside.html"
    outside.write_text("<title>leakaudit report</title>")
    (folder / "report.html").symlink_to(outside)
    (folder / ".leakaudit-tmp-x").symlink_to(outside)
    with OutputFolder(folder, REPORT_NAMES):  # returns: no blocking read of a FIFO
        pass
    assert outside.read_text() == "<title>leakaudit report</title>"
    assert (folder / ".leakaudit-tmp-x").is_symlink()
