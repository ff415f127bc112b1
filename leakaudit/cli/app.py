"""The typer application object and the error/exit-code boundary shared by every command."""

from __future__ import annotations

import sys
import traceback

import click
import typer

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LeakauditError

EXIT_CODES_HELP = (
    "Exit codes: 0 all rules pass, 1 a fail-severity rule fails (leak found), "
    "2 usage or input error, 3 internal error, 130 interrupted."
)

app = typer.Typer(
    name="leakaudit",
    help="Audit federated-learning models for gradient-inversion leakage. " + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def fail(message: str) -> None:
    """Print one error line on stderr (used by run())."""
    typer.echo(f"leakaudit: error: {message}", err=True)


def run(argv: list[str]) -> int:
    """Run the CLI on ``argv`` and return the exit code instead of raising SystemExit."""
    _state["debug"] = "--debug" in argv
    try:
        result = app(args=argv, standalone_mode=False)
        return int(result) if isinstance(result, int) else EXIT_OK
    except LeakauditError as e:
        if _state["debug"]:
            traceback.print_exc()
        fail(str(e))
        return EXIT_USAGE
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        fail("interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as e:  # bad option, missing argument: usage error
        e.show(file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        fail("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 -- the internal-error boundary
        if _state["debug"]:
            traceback.print_exc()
        fail(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback and please report it)")
        return EXIT_INTERNAL
