"""Errors a user can act on, and the exit codes the CLI maps them to.

Every user-facing error is one line that starts with the input it is about and ends with the fix,
e.g. ``samples/: folder holds no images (.png/.jpg/.jpeg/.bmp); point --data at a folder of images``.
The CLI prints ``str(error)`` and exits 2; tracebacks only with ``--debug``.

An error about one scan setting that the core names by the setting (``budget: 'fast' is not one of ...``,
from ``config.coerce``) carries the setting in ``error.setting``; a front end shows it in its own words:
the CLI as the flag (``--budget: ...``, ``leakaudit.cli.app``), a config file as its key. A setting named
anywhere in a message is marked with ``setting_ref("workers")``: the core does not know which front end shows
the message, so ``str(error)`` names the ScanSettings field (a Python caller's word) and ``error.shown(label)``
lets the CLI name the flag (``--workers``), which ``config.SETTINGS`` maps in one place. An input that is not a
setting (the sample data, the run a ``--resume`` continues) is marked with ``argument_ref("data")`` the same way
(``config.ARGUMENTS``).
"""

from __future__ import annotations

import re
from typing import Callable

EXIT_OK = 0
EXIT_LEAK = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INCONCLUSIVE = 4  # no leak found, but the attacks could not reconstruct even without the defenses
EXIT_INTERRUPTED = 130


# Control characters a message never holds otherwise (user text in a message is repr'd or escaped).
_MARK = re.compile("\x1e([a-z_]+)\x1f")


def setting_ref(name: str) -> str:
    """``name`` (a ScanSettings field) marked in a message, for the front end to name: ``f"{setting_ref('workers')}
    3: ..."`` reads ``--workers 3: ...`` on the command line and ``workers 3: ...`` to a Python caller."""
    return f"\x1e{name}\x1f"


def argument_ref(name: str) -> str:
    """An input that is not a ScanSettings field (``data``, ``resume``: a row of ``config.ARGUMENTS``) marked
    in a message as ``setting_ref`` marks a setting: the CLI names its option (``--data``), a Python caller reads
    ``name``, the argument or input it gave."""
    return f"\x1e{name}\x1f"


class LeakauditError(Exception):
    """Base of all errors caused by the user's input or settings (exit code 2)."""

    setting: str | None = None  # the ScanSettings field the message starts with, when it is about one

    def __str__(self) -> str:
        return self.shown(lambda name: name)

    def shown(self, label: Callable[[str], str]) -> str:
        """The message with every setting it marks (``setting_ref()``) named ``label(name)``."""
        return _MARK.sub(lambda m: label(m.group(1)), super().__str__())

    def naming(self, label: str, message: str | None = None) -> str:
        """The message (``message``: as a front end shows it) with the setting it starts with named ``label``
        instead (e.g. the flag); unchanged when the error is not about a setting or does not start with its name."""
        message, name = str(self) if message is None else message, self.setting
        if name and message.startswith(name) and message[len(name):][:1] in (" ", ":"):
            return label + message[len(name):]
        return message


class InputError(LeakauditError):
    """A file or value the user gave cannot be used: missing, corrupt, wrong shape, NaN..."""


class ModelError(InputError):
    """The model file cannot be loaded or converted."""


class DataError(InputError):
    """The sample data cannot be loaded or does not fit the model."""


class ConfigError(LeakauditError):
    """A rule file, config file or option value is invalid."""


class UnknownNameError(ConfigError):
    """A name looked up in a registry does not exist."""


class OutputError(LeakauditError):
    """The output location cannot be used: not writable, disk full, locked by another run, or an input."""


class EnvironmentProblem(LeakauditError):
    """The machine cannot run what was asked, through no fault of the inputs: e.g. a local Ray instance that
    timed out starting. Exit 2 with its own message (what failed, what to check), not an internal error."""
