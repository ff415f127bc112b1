"""Errors a user can act on, and the exit codes the CLI maps them to.

Every user-facing error is one line that starts with the input it is about and ends with the fix,
e.g. ``samples/: folder holds no images (.png/.jpg/.jpeg/.bmp); point --data at a folder of images``.
The CLI prints ``str(error)`` and exits 2; tracebacks only with ``--debug``.

An error about one scan setting that the core names by the setting (``budget: 'fast' is not one of ...``,
from ``config.coerce``) carries the setting in ``error.setting``; a front end shows it in its own words:
the CLI as the flag (``--budget: ...``, ``leakaudit.cli.app``), a config file as its key.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_LEAK = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INCONCLUSIVE = 4  # no leak found, but the attacks could not reconstruct even without the defenses
EXIT_INTERRUPTED = 130


class LeakauditError(Exception):
    """Base of all errors caused by the user's input or settings (exit code 2)."""

    setting: str | None = None  # the ScanSettings field the message starts with, when it is about one

    def naming(self, label: str) -> str:
        """The message with the setting it starts with named ``label`` instead (e.g. the flag); unchanged when
        the error is not about a setting or does not start with its name."""
        message, name = str(self), self.setting
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
