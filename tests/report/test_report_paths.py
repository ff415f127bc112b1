"""Paths in reports are relative to the working folder or under ``~``, never the runner's absolute location
(issue 20)."""

from __future__ import annotations

from pathlib import Path

from leakaudit.paths import shown_path


def test_a_path_is_shown_relative_to_the_working_folder_or_home(tmp_path, monkeypatch):
    home, work = tmp_path / "home" / "me", tmp_path / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert shown_path(work / "models" / "m.onnx") == str(Path("models") / "m.onnx")
    assert shown_path(home / ".cache" / "torch") == str(Path("~") / ".cache" / "torch")
    assert shown_path("relative/as/typed") == "relative/as/typed"
    assert shown_path(work) == "."
    assert shown_path("/opt/elsewhere/x") == "/opt/elsewhere/x"
