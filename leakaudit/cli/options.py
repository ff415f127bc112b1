"""Options that several commands share, declared once so their names, defaults and help texts cannot drift apart.

The scan settings' options (``--arch`` ... ``--embed-data``) are not written here: ``with_settings`` builds them
from ``config.SETTINGS``, the one row per ``ScanSettings`` field that also checks the value, names the config
key and writes the reproduce command. A command takes them as one ``given: GivenSettings`` parameter, keyed by
the setting's name (``budget``), never by a parameter string. Typer reads the Option objects without changing
them, so one instance can be the default of a parameter in several commands.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, TypeVar

import typer

from ..config import SETTING, SETTINGS, Setting, coerce

MODEL = typer.Argument(..., help="Model file: .onnx, or .safetensors with --arch.", show_default=False)
DATA = typer.Option(..., "--data", help="Samples: image folder, .npz/.npy or .safetensors (x, y).",
                    show_default=False)
CONFIG = typer.Option(None, "--config", help="Config file (default: ./leakaudit.toml or \\[tool.leakaudit] in "
                      "./pyproject.toml).")
DEBUG = typer.Option(False, "--debug", help="Show tracebacks.")


def setting_option(setting: Setting, command: str = "scan") -> Any:
    """The typer Option of one settings row, with the help text ``command`` shows."""
    decls = [setting.flag] + ([setting.short] if setting.short else [])
    return typer.Option(setting.default, *decls, help=setting.help_for(command), metavar=setting.metavar)


# inspect loads a model as scan does: the same options, from the same rows
ARCH_ARG = setting_option(SETTING["arch_args"])
INPUT_SHAPE = setting_option(SETTING["input_shape"])
NUM_CLASSES = setting_option(SETTING["num_classes"])
DROPOUT = setting_option(SETTING["dropout"])


def _annotation(setting: Setting) -> Any:
    if setting.kind is list:
        return list[str]
    return Optional[setting.kind] if setting.default is None else setting.kind


@dataclass(frozen=True)
class GivenSettings:
    """The settings flags typed on the command line (not their defaults), as typed, by setting name."""

    typed: Mapping[str, Any]

    def flags(self) -> dict[str, Any]:
        """Each value checked by its setting's owner (``config.coerce``): what ``resolve_settings`` lays over the
        config file. An error names the setting; the app's boundary shows it as the flag."""
        return {name: coerce(name, value) for name, value in self.typed.items()}


F = TypeVar("F", bound=Callable[..., Any])


def with_settings(command: str, *, after: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Give a typer command the options of every ``config.SETTINGS`` row that names ``command``.

    The decorated function takes ``ctx: typer.Context`` and ``given: GivenSettings``; the options take the
    place of ``given`` in ``--help``, in the table's order, and ``after`` moves the function's own option
    ``NAME`` to just after setting ``SETTING`` (``{"output": "formats"}``: ``--output`` after ``--format``)."""
    moved = dict(after or {})
    rows = [s for s in SETTINGS if command in s.commands]

    def decorate(fn: F) -> F:
        own = inspect.signature(fn, eval_str=True).parameters
        params: list[inspect.Parameter] = []
        for p in own.values():
            if p.name == "given":
                for s in rows:
                    params.append(inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY,
                                                    default=setting_option(s, command), annotation=_annotation(s)))
                    params += [own[name].replace(kind=inspect.Parameter.KEYWORD_ONLY)
                               for name, setting in moved.items() if setting == s.name]
            elif p.name not in moved:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(fn)
        def command_with_settings(**kwargs: Any) -> Any:
            ctx = kwargs["ctx"]
            typed = {}
            for s in rows:
                value = kwargs.pop(s.name)
                source = ctx.get_parameter_source(s.name)
                # by name: the enum is click's or typer's vendored copy's, depending on the typer version
                if source is not None and source.name == "COMMANDLINE":
                    typed[s.name] = value
            return fn(given=GivenSettings(typed), **kwargs)

        del command_with_settings.__wrapped__  # typer must read the signature below, not the function's own
        command_with_settings.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            params, return_annotation=inspect.signature(fn, eval_str=True).return_annotation)
        command_with_settings.__annotations__ = {p.name: p.annotation for p in params}
        return command_with_settings  # type: ignore[return-value]

    return decorate
