"""The ``aubench`` command line: wires one module per command into a Typer app, behind one error boundary.

Commands live in ``aubench_cli/commands/<name>.py`` as plain functions with ``Annotated`` options; they parse
options, call one library function and render its result. Library code raises ``AubenchError``; ``guarded``
turns that into one red line on stderr (problem and fix) and the error's exit code (2 for bad usage or input,
1 for failures), and any ``OSError`` the library let through (a folder we may not write, a full disk) into the
same kind of line (``errors.from_os_error``: 2 for permission / read-only / path, 1 for a full disk).
``AUBENCH_DEBUG=1`` lets the traceback through instead.

Errors of the parser itself (a value that is not a number or not one of the choices, an unknown option) go the
same way: one line on stderr naming the option, the bad value and the valid ones, exit 2 (``_Group.main``), never
Typer's boxed panel. ``--help`` shows plain placeholders (``INTEGER``, ``NUMBER``, ``TEXT``, ``PATH``, the
choices spaced so that they wrap between words, nothing for a flag) instead of Python types (``_placeholders``),
and usage lines name arguments in capitals without Typer's braces (``_Command``).
"""

from __future__ import annotations

import enum
import functools
import importlib
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import typer.core
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


def _one_line(exc: Exception) -> str:
    """A parser error as one line: the message, with a choice error restated with the real choices."""
    message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    message = message.replace("Value error, ", "")
    param = getattr(exc, "param", None)
    choices = getattr(getattr(param, "type_descriptor", None), "choices", None)
    bad = re.search(r"'([^']*)' is not one of", message)
    if choices and bad:
        values = [str(c.value if isinstance(c, enum.Enum) else c) for c in choices]
        opt = next((o for o in getattr(param, "opts", []) if o.startswith("--")), getattr(param, "name", "value"))
        return f"{bad.group(1)!r} is not a valid {opt} - choose one of {', '.join(values)}"
    extra = re.search(r"unexpected extra argument(?:s|\(s\))? \((.*)\)", message, re.IGNORECASE)
    if extra and extra.group(1).strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return (f"unexpected value {extra.group(1)!r}: a flag takes no value - write the flag alone for true, "
                "leave it out for false")
    if message.startswith("Invalid value for"):
        message = "invalid value for" + message[len("Invalid value for"):]
    elif message[:1].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    return message.rstrip(".")


def _flag_without_type(option: Any) -> Any:
    if option is not None and getattr(option, "metavar", None) is None:
        option.metavar = ""  # --help is a flag: no '<bool>' beside it
    return option


class _Group(typer.core.TyperGroup):
    """The app: parser errors (bad values, unknown options or commands) as one red line and exit 2."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:  # --install-completion, --show-completion (added after __init__)
            if getattr(param, "is_flag", False):
                _flag_without_type(param)
        return params

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_without_type(super().get_help_option(ctx))

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:
            if not hasattr(exc, "format_message") or debug_enabled():
                raise
            ctx = getattr(exc, "ctx", None)
            path = getattr(ctx, "command_path", None) or "aubench"
            path = re.sub(r"^\S*python\S* -m aubench_cli|^__main__\.py", "aubench", path)
            stderr.print(f"error: {_one_line(exc)} - see {path} --help", style="bold red", markup=False)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            stderr.print("aborted", style="yellow")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _no_type(ctx: Any = None) -> str:
    return ""


class _Command(typer.core.TyperCommand):
    """A command whose usage line names its arguments in capitals (``{out}`` read as a Python format field)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # an argument's name column shows its placeholder: no Python type beside it
            if getattr(param, "param_type_name", "") == "argument":
                param.display_type_rich = _no_type  # type: ignore[method-assign]

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_without_type(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") != "argument":
                continue
            name = param.metavar or param.name.upper()
            name += "..." if param.nargs != 1 and not name.endswith("...") else ""
            pieces.append(name if param.required else f"[{name}]")
        return pieces


def _placeholder(tp: Any, name: str) -> str | None:
    """The help placeholder of an option of type ``tp``: '' for a flag, the choices, or a plain word."""
    if typing.get_origin(tp) is typing.Union or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    if typing.get_origin(tp) is list:
        (tp,) = typing.get_args(tp)
    if name == "sets":  # --set
        return "KEY=VALUE"
    if tp is bool:
        return ""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(str(e.value) for e in tp)
    if tp is int:
        return "INTEGER"
    if tp is float:
        return "NUMBER"
    if isinstance(tp, type) and issubclass(tp, Path):
        return "PATH"
    if tp is str:
        return "TEXT"
    return None


def _placeholders(fn: Callable[..., Any]) -> None:
    """Fill the help placeholder (metavar) of every option of ``fn`` that has none (Typer would print the
    Python type: ``<bool>``, ``<list[str]>``, ``<int range>``). The annotations are evaluated once and kept
    (as strings, each evaluation would build new option objects)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    for name, hint in hints.items():
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        tp, *meta = typing.get_args(hint)
        for info in meta:
            if isinstance(info, typer.models.ParameterInfo) and info.metavar is None:
                if isinstance(info, typer.models.ArgumentInfo):
                    info.metavar = name.upper()
                else:
                    info.metavar = _placeholder(tp, name)
    fn.__annotations__ = hints


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
        cls=_Group,
    )

    @app.callback()
    def main(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="",
                                     help="Print the version."),
    ) -> None:
        """aubench: which CNNs and training settings to choose for Action Unit detection."""

    for name in COMMANDS:
        module = importlib.import_module(f"aubench_cli.commands.{name}")
        _placeholders(module.command)
        app.command(module.NAME, help=module.__doc__.split("\n\n")[0], cls=_Command)(guarded(module.command))
    return app


app = build_app()


_reported = {"interrupt": False}


def _interrupted() -> None:
    stderr.print("interrupted", style="yellow")
    _reported["interrupt"] = True


def _exit_quietly_on_interrupt() -> None:
    """From here on, Ctrl-C ends the process at once with 130. The command has returned; what is left is the
    interpreter's shutdown, which waits for threads (Rich's refresh thread, a video writer's, a worker pool's
    feeder): a Ctrl-C landing there printed 'Exception ignored in: <module 'threading'>' and a traceback."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or debug_enabled():
        return

    def _now(signum: int, frame: Any) -> None:
        if not _reported["interrupt"]:
            sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(130)

    try:
        signal.signal(signal.SIGINT, _now)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        pass


def run() -> None:
    try:
        _run()
    finally:
        _exit_quietly_on_interrupt()


def _run() -> None:
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
