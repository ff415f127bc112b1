"""Reading a file the user named, with the project's one-line errors (path first, then the fix)."""

from __future__ import annotations

from pathlib import Path

from .errors import LeakauditError


def read_user_text(path: Path, error: type[LeakauditError], *, missing: str, unreadable: str) -> str:
    """UTF-8 text of ``path``. ``missing`` is the whole message for a file that does not exist;
    ``unreadable`` may hold ``{e}`` for the OS or decoding error (replaced literally, not with str.format:
    the path itself may contain braces)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(unreadable.replace("{e}", str(e))) from e
