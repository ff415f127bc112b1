"""The ``leakaudit`` command: a thin layer over the core.

Each command lives in its own module and only parses options, calls the core and hands results to a
formatter. Errors: ``LeakauditError`` -> one line on stderr, exit 2; anything else -> exit 3 (internal
error, please report); tracebacks only with ``--debug``.

This module imports nothing heavy at import time: the console script imports it before ``main()`` runs, and
a Ctrl-C during typer's, rich's or the commands' imports must still end as one line and exit 130. It imports
only ``sys`` at its top (not even ``signal`` or ``typing``, whose imports take milliseconds), so the moment
between the console script's import of this module and ``main()`` taking over is as short as it can be. (A
Ctrl-C while Python itself starts -- its ``site`` module and the ``.pth`` files of installed packages --
happens before any leakaudit code exists, and Python ends that with its own message.)
"""

import sys

TYPE_CHECKING = False  # not typing's: importing typing here would widen the window a Ctrl-C cannot be caught in
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

__all__ = ["app", "main", "app_main", "typer"]


def main() -> None:
    try:
        _sigterm_like_sigint()
        from .app import run

        _register_commands()
    except KeyboardInterrupt:
        sys.stderr.write("leakaudit: error: interrupted\n")
        sys.exit(130)
    sys.exit(run(sys.argv[1:]))


def app_main(argv: list[str]) -> int:
    from .app import run

    _register_commands()
    return run(argv)


def _register_commands() -> None:
    """Importing the command modules registers their commands on ``app``."""
    from . import inspect_cmd, rules_cmd, scan_cmd, score_cmd, sweep_cmd  # noqa: F401
    from .app import app

    globals()["app"] = app  # the Typer object, not the submodule of the same name that the import bound


def _sigterm_like_sigint() -> None:
    """SIGTERM (a CI runner's timeout, ``kill``) does what SIGINT does at that moment: during a scan the polite
    stop that writes the report marked incomplete (exit 130), elsewhere a KeyboardInterrupt."""
    import signal  # here, not at the top: importing it takes long enough for a Ctrl-C to land in

    def forward(signum: int, frame: "FrameType | None") -> None:
        handler = signal.getsignal(signal.SIGINT)
        if handler is signal.SIG_IGN:
            return
        if callable(handler):
            handler(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt  # SIG_DFL or a handler not set from Python

    signal.signal(signal.SIGTERM, forward)


def __getattr__(name: str) -> "Any":
    """``leakaudit.cli.app`` / ``.typer``, imported on first use (see the module docstring)."""
    if name == "app":
        _register_commands()
        return globals()["app"]
    if name == "typer":
        import typer

        return typer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
