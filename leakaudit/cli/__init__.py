"""The ``leakaudit`` command: a thin layer over the core.

Each command lives in its own module and only parses options, calls the core and hands results to a
formatter. Errors: ``LeakauditError`` -> one line on stderr, exit 2; anything else -> exit 3 (internal
error, please report); tracebacks only with ``--debug``.
"""

from __future__ import annotations

import sys

import typer

from .app import app

# Importing the command modules registers their commands on ``app``.
from . import inspect_cmd  # noqa: E402,F401
from . import rules_cmd  # noqa: E402,F401
from . import scan_cmd  # noqa: E402,F401
from . import sweep_cmd  # noqa: E402,F401


def main() -> None:
    sys.exit(app_main(sys.argv[1:]))


def app_main(argv: list[str]) -> int:
    from .app import run

    return run(argv)


__all__ = ["app", "main", "app_main", "typer"]
