"""Reading a file the user named, with the project's one-line errors (path first, then the fix).

A user-named path may be anything: ``/dev/zero`` (endless), a FIFO (blocks until someone writes), a folder,
a 10 GB file, or text nested thousands of levels deep (the TOML and JSON parsers recurse). Every reader of
config files, rule files, report.json and sweep.json goes through here, so each of those is refused once,
with exit 2, instead of hanging, exhausting memory or ending in a RecursionError:

- only regular files are read (checked on the opened descriptor, opened non-blocking so a FIFO cannot stall);
- at most ``TEXT_LIMIT`` bytes (1 MiB) for TOML settings and rules, ``REPORT_LIMIT`` (256 MiB) for reports;
  a report with ``--embed-data`` holds one PNG data URI per sample and attack, tens of KB each;
- text must be UTF-8; nesting deeper than ``MAX_DEPTH`` levels is refused after parsing;
- JSON must be strict JSON: ``NaN``/``Infinity`` are not JSON numbers, and no leakaudit version writes them.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from .errors import LeakauditError

TEXT_LIMIT = 1 << 20  # config and rule files: a few KB in practice
REPORT_LIMIT = 256 << 20  # report.json / sweep.json, embedded images included
MAX_DEPTH = 64  # settings and reports nest a handful of levels; this is far beyond any file leakaudit writes

# Factory keywords that make a model factory open, download or unpickle a file (timm, torchvision, hub-style
# factories): never from a model file's metadata or a config file, only when typed on the command line.
LOADER_KEYWORDS = frozenset({
    "checkpoint_path", "checkpoint", "weights", "weights_backbone", "weights_path", "pretrained",
    "pretrained_backbone", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "file", "file_name",
    "filename", "path", "url", "model_dir", "cache_dir", "hf_hub_id", "hub_id", "state_dict", "map_location",
    "progress", "download",
})


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for the messages that refuse it."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _read_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes; OSError with a readable reason for anything but a regular file within ``limit``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(f"{file_kind(mode)}, not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than the {_size(limit)} this file may have")
    return data


def read_user_text(path: Path, error: type[LeakauditError], *, missing: str, unreadable: str,
                   limit: int = TEXT_LIMIT) -> str:
    """UTF-8 text of ``path``. ``missing`` is the whole message for a file that does not exist;
    ``unreadable`` may hold ``{e}`` for the reason (replaced literally, not with str.format: the path itself
    may contain braces)."""
    try:
        data = _read_bytes(Path(path), limit)
    except FileNotFoundError:
        raise error(missing) from None
    except OSError as e:
        raise error(unreadable.replace("{e}", e.strerror or str(e))) from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        reason = f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}"
        raise error(unreadable.replace("{e}", reason)) from e


def one_line(text: str) -> str:
    """Parser messages may span lines; an error is one line."""
    return " ".join(text.split())


def check_depth(doc: Any, where: str, error: type[LeakauditError], fix: str) -> None:
    """Refuse tables/arrays nested deeper than MAX_DEPTH (iterative: the check itself must not recurse)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise error(f"{where}: nested more than {MAX_DEPTH} levels deep, which no leakaudit file needs; {fix}")
        items = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))


def parse_toml(text: str, where: str, error: type[LeakauditError], fix: str) -> dict[str, Any]:
    """``tomllib.loads`` with one-line errors; ``fix`` ends each message (e.g. "fix the syntax")."""
    import tomllib  # here only: the one TOML import of the package, so reading JSON never needs it

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{where}: invalid TOML ({one_line(str(e))}); {fix}") from e
    except RecursionError as e:  # tomllib recurses once per nested array or inline table
        raise error(f"{where}: nested more than {MAX_DEPTH} levels deep, which no leakaudit file needs; {fix}") from e
    check_depth(doc, where, error, fix)
    return doc


def _no_constant(name: str) -> float:
    raise ValueError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(text)
    return value


def parse_json(text: str, where: str, error: type[LeakauditError], fix: str) -> Any:
    """Strict JSON (no NaN/Infinity), with one-line errors naming ``where``; ``fix`` ends each message."""
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise error(f"{where}: invalid JSON at line {e.lineno} ({one_line(e.msg)}); {fix}") from e
    except ValueError as e:  # from _no_constant / _finite_float
        raise error(f"{where}: holds the number {e}, which is not finite (JSON numbers must be); {fix}") from e
    except RecursionError as e:
        raise error(f"{where}: nested more than {MAX_DEPTH} levels deep, which no leakaudit file needs; {fix}") from e
    check_depth(doc, where, error, fix)
    return doc
