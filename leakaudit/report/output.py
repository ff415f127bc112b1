"""Where a run's files go: never onto an input, never half a set, never two runs mixed.

An output folder (``--output-dir``) is held by one run at a time, through ``OutputFolder``:

1. **Before the model is loaded** the run creates the folder, takes an exclusive lock on
   ``.leakaudit.lock`` inside it (``flock``: the kernel drops it when the process dies, even by SIGKILL),
   deletes temp files a killed run left (``.leakaudit-tmp-*``), writes and deletes a probe file (so a
   read-only, full or forbidden location is exit 2 now, not after minutes of attacks), and deletes the
   previous report set: first ``leakaudit-manifest.json``, then, of the files this run will write (its
   ``names``: ``--format json`` writes report.json alone), those that leakaudit verifiably wrote: regular
   files (not links) whose sha256 the old manifest records, or, with no manifest (a killed run, leakaudit
   0.1.0), that name leakaudit in their first KiB. A manifest is a claim, not proof: a name it lists that this
   run does not write, an input of the run, a link or a special file is never touched. Nothing else is. The
   lock file is opened without following a link and must be a regular file. A second run on a locked folder
   is refused with exit 2.
2. **At the end** every file is written to a temp name in the folder and flushed to disk, then renamed into
   place, then the manifest (names, sizes, sha256) is renamed in **last**. A write error (disk full, quota,
   read-only, permission) is exit 2 naming the path; the temps and any file this run already renamed are
   deleted, so the folder holds no set at all.

What a reader can observe in the folder after a SIGKILL at any moment: either the previous complete set
with its manifest (killed before step 1 deleted it), or no manifest and some or none of the report files,
possibly with ``.leakaudit-tmp-*`` files the next run deletes (killed during steps 1-2), or the new
complete set with its manifest. A manifest never sits next to a file from another run, so a reader (a CI
job archiving the folder) trusts a set only when the manifest is present and each listed file has its
sha256. A failed run (exit 2 or 3 after step 1) leaves no report set, so no stale PASS can be archived.

A single file (``--output report.json``, ``render --output``) is written by ``write_atomic``: temp file in
the same folder, then rename, so a reader sees the old file or the new one, never a part of one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Iterable, Mapping, Sequence

from ..errors import OutputError, argument_ref, setting_ref

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
OUTPUT = argument_ref("output")
OUTPUT_DIR = setting_ref("output_dir")

LOCK_NAME = ".leakaudit.lock"
MANIFEST_NAME = "leakaudit-manifest.json"
TEMP_PREFIX = ".leakaudit-tmp-"
REPORT_NAMES = ("report.json", "report.html", "report.junit.xml", "report.md", "report.sarif")
SWEEP_NAMES = ("sweep.json", "sweep.html")
_STALE_TEMP_SECONDS = 60  # a temp of an unlocked single file older than this belongs to a dead run
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}  # e.g. NFS without a lock daemon

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]


def _fix(e: OSError, flag: str) -> str:
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"free disk space (or quota) there, or pass another {flag}"
    return f"pass a writable {flag}"


def _error(path: Path, what: str, e: OSError, flag: str) -> OutputError:
    reason = e.strerror or type(e).__name__
    return OutputError(f"{path}: cannot {what} ({reason}); {_fix(e, flag)}")


def _write_file(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist), write ``data`` and flush it to disk. The seam tests replace to
    simulate a full disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    """Remove a temp on the way out of an error: a second error here would hide the first."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _temp_path(folder: Path, name: str) -> Path:
    return folder / f"{TEMP_PREFIX}{name}.{secrets.token_hex(4)}"


def _write_temp(folder: Path, name: str, data: bytes, flag: str) -> Path:
    tmp = _temp_path(folder, name)
    try:
        _write_file(tmp, data)
    except OSError as e:
        _discard(tmp)
        raise _error(folder / name, "write", e, flag) from e
    return tmp


def _sync_folder(folder: Path) -> None:
    """Make the renames durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def _make_parent(path: Path, flag: str, example: str) -> None:
    """Refuse a folder where a file is to go, and create the file's folder."""
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name, e.g. {path / example}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(path.parent, "create the folder", e, flag) from e


def write_atomic(path: str | Path, text: str | bytes, *, flag: str = OUTPUT, example: str = "report.json") -> None:
    """Write one file: temp file next to ``path``, then rename, so a reader never sees part of it.
    Any OS error (disk full, read-only, a folder at ``path``) is an OutputError naming the path."""
    path = Path(path)
    _make_parent(path, flag, example)
    tmp = _write_temp(path.parent, path.name, _encode(text), flag)
    try:
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise _error(path, "write", e, flag) from e


def prepare_file(path: str | Path, *, flag: str = OUTPUT, example: str = "report.json") -> None:
    """Before a run writes ``path``: refuse a folder, check its folder is writable, delete temps a killed run
    left, and delete a previous leakaudit report there, so a failed run leaves no stale one."""
    path = Path(path)
    _make_parent(path, flag, example)
    _probe(path.parent, flag)
    now = time.time()
    # No lock guards a single file: only temps too old to belong to a live run are deleted.
    for tmp in path.parent.glob(f"{TEMP_PREFIX}{path.name}.*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TEMP_SECONDS:
                tmp.unlink()
        except OSError:
            pass
    if path.is_file() and _looks_like_report(path):
        try:
            path.unlink()
        except OSError as e:
            raise _error(path, "delete the previous report", e, flag) from e


def _looks_like_report(path: Path) -> bool:
    """Whether ``path`` is a JSON report leakaudit wrote (its first key is schema_version): only such a file
    is deleted before the run replaces it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and b'"schema_version"' in head


def _probe(folder: Path, flag: str) -> None:
    probe = _temp_path(folder, "probe")
    try:
        _write_file(probe, b"leakaudit write probe\n")
    except OSError as e:
        raise _error(folder, "write in the folder", e, flag) from e
    finally:
        _discard(probe)


def _manifest(files: dict[str, bytes]) -> bytes:
    from .. import __version__

    doc = {
        "tool": "leakaudit",
        "version": __version__,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "description": "The files of one complete leakaudit run, written last: without this file, or with a "
                       "file whose sha256 differs, the folder does not hold a complete set.",
        "files": [{"name": n, "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()],
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


_MANIFEST_LIMIT = 1 << 20  # a manifest of a few report files is a few hundred bytes


def _open_regular(path: Path) -> int | None:
    """A read-only descriptor of ``path`` when it is a regular file, not a link (nor a FIFO, device or
    folder: opening those could block or read what is not ours); None otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _written_by_leakaudit(path: Path) -> bool:
    """Every file leakaudit writes names itself in its first KiB (JSON "tool", HTML title, JUnit suite name)."""
    fd = _open_regular(path)
    if fd is None:
        return False
    try:
        return b"leakaudit" in os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)


def _sha256_is(path: Path, digest: str) -> bool:
    fd = _open_regular(path)
    if fd is None:
        return False
    h = hashlib.sha256()
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    except OSError:
        return False
    finally:
        os.close(fd)
    return h.hexdigest() == digest


def _listed_files(folder: Path) -> dict[str, str]:
    """The plain file names a previous manifest lists, with the sha256 it records for each (nothing outside the
    folder, no hidden names; a manifest that is a link, a special file, too large or not JSON lists nothing)."""
    fd = _open_regular(folder / MANIFEST_NAME)
    if fd is None:
        return {}
    try:
        raw = os.read(fd, _MANIFEST_LIMIT + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if len(raw) > _MANIFEST_LIMIT:
        return {}
    try:
        files = json.loads(raw.decode("utf-8"))["files"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return {}
    listed: dict[str, str] = {}
    for f in files if isinstance(files, list) else []:
        name, digest = (f.get("name"), f.get("sha256")) if isinstance(f, dict) else (None, None)
        if (isinstance(name, str) and isinstance(digest, str) and name and Path(name).name == name
                and not name.startswith(".") and name not in (".", "..")):
            listed[name] = digest.lower()
    return listed


class OutputFolder:
    """An output folder held by this run (see the module docstring). Use as a context manager."""

    def __init__(self, folder: str | Path, names: Sequence[str], *, flag: str = OUTPUT_DIR,
                 keep: Iterable[str | Path] = (), verified_only: bool = False) -> None:
        self.folder = Path(folder)
        self.names = tuple(names)
        self.flag = flag
        # never deleted: e.g. the sweep.json a --resume continues, and the run's inputs
        self._keep = {Path(k).resolve() for k in keep}
        self._verified_only = verified_only  # only files whose sha256 the old manifest records (no name check)
        self._fd: int | None = None
        self._renamed: list[Path] = []
        self._created: list[Path] = []  # folders this run made, deepest first
        self._committed = False

    def targets(self) -> list[Path]:
        """Every path this run may write, for the check that none of them is an input."""
        return [self.folder / n for n in (*self.names, MANIFEST_NAME, LOCK_NAME)]

    def __enter__(self) -> OutputFolder:
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.flag} {self.folder}: is a file, not a folder; pass a folder for the reports")
        self._created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _error(self.folder, "create the output folder", e, self.flag) from e
        try:
            self._lock()
            self._clean_temps()
            _probe(self.folder, self.flag)
            self._clear_previous()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder. A run that wrote no set takes back the folders it created (when empty), so a
        failed first run leaves nothing behind."""
        self._unlock()
        if self._committed:
            return
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or not ours to remove): leave it and its parents
        self._created = []

    def _lock(self) -> None:
        if fcntl is None:
            return
        path = self.folder / LOCK_NAME
        # never through a link (its target would be truncated), never a FIFO or device (O_NONBLOCK: no hang)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        while True:
            try:
                fd = os.open(path, flags, 0o666)
            except OSError as e:
                if os.path.islink(path):  # ELOOP (EMLINK on BSD): O_NOFOLLOW met a link
                    raise self._foreign_lock(path, "a link") from None
                raise _error(path, "create the lock file", e, self.flag) from e
            try:
                mode = os.fstat(fd).st_mode
            except OSError as e:
                os.close(fd)
                raise _error(path, "create the lock file", e, self.flag) from e
            if not stat.S_ISREG(mode):
                os.close(fd)
                raise self._foreign_lock(path, "not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                pid = f" (pid {holder})" if holder.isdigit() else ""
                raise OutputError(f"{self.flag} {self.folder}: another leakaudit run{pid} is writing to this folder; "
                                  f"wait for it to finish, or pass a different {self.flag}") from None
            except OSError as e:
                os.close(fd)
                if e.errno in _NO_LOCKS:  # the filesystem has no locks: run unlocked rather than not at all
                    return
                raise _error(path, "lock the output folder", e, self.flag) from e
            # The previous holder deletes the file on release: retry when ours is no longer the one at `path`.
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd

    def _foreign_lock(self, path: Path, what: str) -> OutputError:
        return OutputError(f"{self.flag} {self.folder}: {path.name} is {what}, not a lock leakaudit made; delete "
                           f"it, or pass a different {self.flag}")

    def _unlock(self) -> None:
        if self._fd is None:
            return
        try:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)  # while still holding it: see _lock's retry
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None

    def _clean_temps(self) -> None:
        patterns = [f"{TEMP_PREFIX}*"]
        # temp names of earlier leakaudit versions (.report.json.x1y2.tmp, sweep.jsonx1y2.tmp)
        patterns += [f".{n}.*.tmp" for n in self.names] + [f"{n}*.tmp" for n in self.names]
        for pattern in patterns:
            for tmp in self.folder.glob(pattern):
                if _is_regular(tmp):  # a link or a special file of that name is not one of our temps
                    self._delete(tmp, "delete a leftover temp file")

    def _delete(self, path: Path, what: str) -> None:
        if path.resolve() in self._keep or not (path.is_file() or path.is_symlink()):
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _error(path, what, e, self.flag) from e

    def _clear_previous(self) -> None:
        listed = _listed_files(self.folder)
        self._delete(self.folder / MANIFEST_NAME, "delete the previous manifest")  # first: no set is claimed now
        # Only what this run replaces (its own names), and only what leakaudit verifiably wrote: the recorded
        # sha256 of a regular file, or, with no manifest (a killed run, or leakaudit 0.1.0), the name leakaudit
        # in its first KiB -- so `--output-dir .` cannot take a user's own report.html or any file a planted
        # manifest lists.
        for name in self.names:
            path = self.folder / name
            if not _is_regular(path):
                continue
            verified = name in listed and _sha256_is(path, listed[name])
            if verified or (not self._verified_only and _written_by_leakaudit(path)):
                self._delete(path, "delete the previous report")

    def put(self, name: str, text: str | bytes) -> Path:
        """Replace one file now (sweep.json after every value): old or new, never part of one. The set is
        not complete (no manifest) until ``commit``."""
        path = self.folder / name
        tmp = _write_temp(self.folder, name, _encode(text), self.flag)
        try:
            os.replace(tmp, path)
        except OSError as e:
            _discard(tmp)
            raise _error(path, "write", e, self.flag) from e
        return path

    def commit(self, files: Mapping[str, str | bytes]) -> list[Path]:
        """Write the whole set: every file to a temp name, then the renames, the manifest last. On an error
        no file of this run stays behind."""
        data = {name: _encode(text) for name, text in files.items()}
        temps: dict[str, Path] = {}
        try:
            for name, blob in data.items():
                temps[name] = _write_temp(self.folder, name, blob, self.flag)
            temps[MANIFEST_NAME] = _write_temp(self.folder, MANIFEST_NAME, _manifest(data), self.flag)
            for name, tmp in temps.items():
                self._rename(tmp, self.folder / name)
        except BaseException:
            for tmp in temps.values():
                _discard(tmp)
            for path in self._renamed:
                if path.resolve() not in self._keep:
                    _discard(path)
            self._renamed = []
            raise
        _sync_folder(self.folder)
        self._renamed = []
        self._committed = True
        return [self.folder / n for n in data]

    def _rename(self, tmp: Path, path: Path) -> None:
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _error(path, "write", e, self.flag) from e
        self._renamed.append(path)


def discard_previous(folder: str | Path, names: Sequence[str], *, keep: Iterable[str | Path] = ()) -> None:
    """Best effort, for a run that fails before it holds its folder (a bad option or config file): delete the
    previous set so it cannot pass for this run's result (the manifest, and the files of ``names`` whose sha256
    it records; ``keep``: the run's inputs). Skipped when another run holds the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    try:
        with OutputFolder(folder, names, keep=keep, verified_only=True):
            pass
    except (OutputError, OSError):
        pass  # the run's own error is the one to report


def refuse_inputs(targets: Iterable[tuple[str, Path]], inputs: Iterable[tuple[str, Path]]) -> None:
    """OutputError when a path the run would write is one of its inputs or lies inside an input folder.

    ``targets``: (flag, path) pairs; ``inputs``: (what, path) pairs, e.g. ("the model", model.onnx)."""
    resolved = []
    for what, path in inputs:
        if path.exists():
            resolved.append((what, path, path.resolve(), path.is_dir()))
    for flag, target in targets:
        real = target.resolve()
        for what, path, real_input, is_dir in resolved:
            if is_dir and (real == real_input or real.is_relative_to(real_input)):
                raise OutputError(f"{flag} {target}: lies in {what} {path}; writing there would change an "
                                  "input; choose a location outside it")
            if not is_dir and (real == real_input or _same_file(target, path)):
                raise OutputError(f"{flag} {target}: is {what} ({path}); writing there would overwrite an input; "
                                  "choose another file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
