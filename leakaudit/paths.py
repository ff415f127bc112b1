"""Paths as a report shows them: relative to the working folder, or under ``~``, never the runner's absolute
location (a report is archived and shared; ``/home/ci-runner-17/...`` says nothing to its reader and tells
them about the machine)."""

from __future__ import annotations

import os
from pathlib import Path


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working folder when inside it, else under ``~`` when inside the home folder,
    else as given (a relative path is left as the user typed it)."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.relative_to(Path.cwd())) or "."
    except (ValueError, OSError):
        pass
    try:
        return str(Path("~") / p.relative_to(Path.home()))
    except (ValueError, RuntimeError, KeyError):
        return str(p)
