"""The ``aubench`` command line: wires one module per command into a Typer app, behind one error boundary.

Commands live in ``aubench_cli/commands/<name>.py`` as plain functions with ``Annotated`` options; they parse
options, call one library function and render its result. Library code raises ``AubenchError``; ``guarded``
turns that into one red line on stderr (problem and fix) and the error's exit code (2 for bad usage or input,
1 for failures), and any ``OSError`` the library let through (a folder we may not write, a full disk) into the
same kind of line (``errors.from_os_error``: 2 for permission / read-only / path, 1 for a full disk).
``AUBENCH_DEBUG=1`` lets the traceback through instead.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from aubench_cli import __version__
from aubench_cli.errors import AubenchError, debug_enabled, from_os_error

# One module per command under aubench_cli/commands/, in the order `aubench --help` lists them. Only commands
# that work are listed here.
COMMANDS = ["demo", "models", "profile", "synth", "preprocess", "train", "eval", "predict", "study", "report"]

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The error boundary around a command: domain errors become one red line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AubenchError as exc:
            if debug_enabled():
                raise
            _print_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # the one boundary for the file system: what, why, what to do
            if debug_enabled():
                raise
            err = from_os_error(exc)
            _print_error(err)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            _interrupted()
            raise typer.Exit(130) from None
        except typer.Exit as exc:
            if exc.exit_code == 130:  # a command that says itself what its interruption left (train, study)
                _reported["interrupt"] = True
            raise

    return wrapper


def _print_error(exc: AubenchError) -> None:
    text = f"error: {exc.message}"
    if exc.hint:
        text += f" - {exc.hint}"
    stderr.print(text, style="bold red", markup=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aubench {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="aubench",
        help="Benchmark CNNs and training settings for facial Action Unit detection (Bishay et al.).",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )

    @app.callback()
    def main(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    ) -> None:
        """aubench: which CNNs and training settings to choose for Action Unit detection."""

    for name in COMMANDS:
        module = importlib.import_module(f"aubench_cli.commands.{name}")
        app.command(module.NAME, help=module.__doc__.split("\n\n")[0])(guarded(module.command))
    return app


app = build_app()


_reported = {"interrupt": False}


def _interrupted() -> None:
    stderr.print("interrupted", style="yellow")
    _reported["interrupt"] = True


def run() -> None:
    try:
        app()
    except KeyboardInterrupt:  # outside a command (start-up): the same one line
        if debug_enabled():
            raise
        _interrupted()
        raise SystemExit(130) from None
    except SystemExit as exc:
        # Typer turns a Ctrl-C during option parsing (which imports pydantic lazily: a long window) into a silent
        # exit 130; a command that was interrupted has said so already
        if exc.code == 130 and not _reported["interrupt"]:
            _interrupted()
        raise
