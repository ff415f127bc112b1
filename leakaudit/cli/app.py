"""The typer application object and the error/exit-code boundary shared by every command.

typer >= 0.26 vendors its own click (``typer._click``) and no longer installs the ``click`` package, older
typer uses ``click`` itself: this module never imports click. It reaches the exceptions of whichever click
typer runs on through ``typer.BadParameter`` (public in every typer version), and invokes the click command
directly so that KeyboardInterrupt, usage errors and exits reach this boundary raw in both.
"""

from __future__ import annotations

import importlib
import sys
import traceback
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

import typer
import typer.main

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LeakauditError
from ..safetext import visible

if TYPE_CHECKING:
    from rich.console import Console

EXIT_CODES_HELP = (
    "Exit codes: 0 all rules pass and the attacks reconstructed the undefended case, 1 a fail-severity rule "
    "fails (leak found; with --strict also: one could not be evaluated), 2 usage or input error, 3 internal "
    "error, 4 inconclusive (the attacks could not reconstruct even without the defenses; --strict: 1), 130 "
    "interrupted."
)

app = typer.Typer(
    name="leakaudit",
    help="Audit federated-learning models for gradient-inversion leakage. " + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command inherits -h from the root context
)

# Set by run() from --debug anywhere on the command line, so every command's errors are handled alike.
_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"leakaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


def stderr_console() -> Console:
    """The rich console for progress and summaries on stderr. On a terminal it fits the terminal; elsewhere (a CI
    log, a pipe, a file) rich would wrap every line at 80 columns, splitting a rule line or a file name over
    two lines that a reader or a grep cannot join, so lines are never wrapped there (tables get 160 columns)."""
    from rich.console import Console

    if sys.stderr.isatty():
        return Console(stderr=True)
    return Console(stderr=True, width=160, soft_wrap=True)


def click_exceptions() -> ModuleType:
    """The exceptions module of the click that typer runs on (``typer._click.exceptions`` or ``click.exceptions``)."""
    return importlib.import_module(typer.BadParameter.__module__)


def one_line(message: str) -> str:
    """``message`` as one terminal-safe line: lines joined by spaces; control, bidi and zero-width characters (a
    file name in the message may hold ANSI/OSC escapes) shown as escapes (leakaudit.safetext)."""
    joined = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return visible(joined.replace("\t", " "))


def fail(message: str) -> None:
    """Print one error line on stderr, whatever the message holds."""
    typer.echo(f"leakaudit: error: {one_line(message)}", err=True)


def _named_by_flag(e: LeakauditError) -> str:
    """The error's message; one the core wrote about a setting (``budget: ...``) names its flag (``--budget: ...``)."""
    from ..config import flag_of, option_of

    message = e.shown(option_of)
    return message if e.setting is None else e.naming(flag_of(e.setting), message)


def _usage_message(e: Any) -> str:
    """A click usage error as ``<message>; see 'leakaudit scan --help'`` (the command it is about)."""
    ctx = getattr(e, "ctx", None)
    command = ctx.command_path if ctx is not None and ctx.command_path else "leakaudit"
    return f"{one_line(e.format_message()).rstrip('.')}; see '{command} --help'"


def _invoke(argv: list[str]) -> Any:
    """The command's return value. Not ``app(...)``: typer's main() turns KeyboardInterrupt into a silent exit 130
    (new typer) or an Abort after a blank line (old typer); invoking the click command keeps every exception raw."""
    command = typer.main.get_command(app)
    # A shell's completion request (the script --install-completion installs sets _LEAKAUDIT_COMPLETE): answered
    # here, as typer's main() would, and nothing else runs.
    command._main_shell_completion({}, "leakaudit", "_LEAKAUDIT_COMPLETE")  # exits (SystemExit) when it answered
    with command.make_context("leakaudit", list(argv)) as ctx:
        return command.invoke(ctx)


def run(argv: list[str]) -> int:
    """Run the CLI on ``argv`` and return the exit code instead of raising SystemExit."""
    _state["debug"] = "--debug" in argv
    # Python warnings (torch's, numpy's...) would add lines to the one-line error and to the terminal summary:
    # they are recorded, and shown with --debug only.
    with warnings.catch_warnings(record=True) as caught:
        try:
            return _run(argv)
        finally:
            if _state["debug"]:
                for w in caught:
                    sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))


def _run(argv: list[str]) -> int:
    exceptions = click_exceptions()
    try:
        result = _invoke(argv)
        return int(result) if isinstance(result, int) else EXIT_OK
    except LeakauditError as e:
        if _state["debug"]:
            traceback.print_exc()
        fail(_named_by_flag(e))
        return EXIT_USAGE
    except typer.Exit as e:  # --help, --version
        return int(e.exit_code)
    except SystemExit as e:  # typer's --show-completion / --install-completion end with sys.exit
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    except typer.Abort:
        fail("interrupted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        fail("interrupted")
        return EXIT_INTERRUPTED
    except exceptions.ClickException as e:  # bad option, missing argument, bad value: usage error
        if type(e).__name__ == "NoArgsIsHelpError":  # click >= 8.2, bare `leakaudit`: the help (typer printed it)
            if e.format_message().strip():
                typer.echo(e.format_message(), err=True)
            return EXIT_USAGE
        fail(_usage_message(e) if isinstance(e, exceptions.UsageError) else e.format_message())
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 -- the internal-error boundary
        if _state["debug"]:
            traceback.print_exc()
        fail(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback and please report it)")
        return EXIT_INTERNAL
