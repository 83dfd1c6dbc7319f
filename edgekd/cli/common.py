"""What every ``edgekd`` command shares: the error → exit-code wrapper, the lazily imported API, the options
several commands take, the columns of their figure tables and the warnings printout.

Exit codes: 0 success, 2 user error (bad input, impossible budget), 1 internal error, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). Text from user files is printed through :func:`edgekd.console.shown`.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Collection, Iterable
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import typer.core
from rich.table import Table
from rich.text import Text

from edgekd.console import err, shown
from edgekd.errors import EdgekdError, is_out_of_memory, too_long_name

try:  # typer ≥ 0.2x parses with its own copy of click, whose errors are not click's
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:
    from click.exceptions import NoSuchOption, UsageError


def api() -> ModuleType:
    """:mod:`edgekd.api`, imported when a command runs: it imports torch (seconds), which ``--help``,
    ``--version`` and shell completion do not need."""
    from edgekd import api

    return api


F = TypeVar("F", bound=Callable[..., Any])

state = {"debug": False}  # set by the global --debug option (see edgekd.cli)


def handle_errors(func: F) -> F:
    """Turn user errors into one line on stderr and exit code 2; other failures into exit code 1. With ``--debug``
    the traceback is printed before that line; the exit code stays the same. A command run with ``--json`` also
    prints the failure as its one JSON object on stdout (``{"error": ..., "internal": ..., "exit_code": ...}``), so
    that a script reading stdout gets a document either way."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except EdgekdError as exc:
            _debug_traceback()
            _fail(one_line(exc), 2, as_json)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see main)
            terminated = isinstance(exc, Terminated)
            _fail(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; finished stages are kept and a re-run "
                  "resumes from them", 143 if terminated else 130, as_json, label=None)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
            _debug_traceback()
            too_long = too_long_name(exc)
            if too_long is not None:
                _fail(f"{shown(too_long)}: a name longer than this filesystem allows (ENAMETOOLONG); expected a path "
                      "whose every part is under 255 bytes, or a hub id", 2, as_json)
            if is_out_of_memory(exc):
                _fail(f"out of memory: {one_line(exc)}; this machine cannot hold the model, batch or input as given: "
                      "use smaller ones", 2, as_json)
            hint = "" if state["debug"] else " (run with --debug for the traceback)"
            _fail(f"{type(exc).__name__}: {one_line(exc)}{hint}", 1, as_json, label="internal error")

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int, as_json: bool, *, label: str | None = "error") -> NoReturn:
    """Say ``message`` (rich markup, its user text escaped) on stderr after ``label``, and on stdout as JSON (the
    plain text) for ``--json``; exit with ``code``."""
    err.print(f"[bold red]{label}:[/] {message}" if label else message, highlight=False, soft_wrap=True)
    if as_json:
        plain = Text.from_markup(message).plain
        sys.stdout.write(json.dumps({"error": plain, "internal": label == "internal error", "exit_code": code}) + "\n")
    raise typer.Exit(code=code)


class _JsonUsageErrors:
    """What :class:`JsonUsageCommand` and :class:`JsonUsageGroup` share: a usage error click raises while it reads
    their arguments (before :func:`handle_errors` runs) is printed as the one JSON document on stdout when the
    arguments ask for ``--json`` (see :meth:`asks_for_json`), as every later error is; without ``--json`` click's
    usage box stays."""

    def asks_for_json(self, args: list[str]) -> bool:
        """Whether ``args`` (this command's or group's own) ask for the JSON document."""
        raise NotImplementedError

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        """The context, as click makes it; a usage error of arguments asking for ``--json`` as that document."""
        given = list(args)  # click's parser consumes the list it reads
        try:
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[misc]
        except UsageError as exc:
            if not self.asks_for_json(given):
                raise
            _usage_error_as_json(exc, info_name)


class JsonUsageCommand(_JsonUsageErrors, typer.core.TyperCommand):
    """A command whose usage errors (an option value of the wrong type or out of range, an unknown option, a missing
    argument) are also printed as its one JSON document on stdout when it is given ``--json``."""

    def asks_for_json(self, args: list[str]) -> bool:
        """Whether this command has a ``--json`` option and ``args`` give it."""
        return _json_among(args) and any("--json" in param.opts for param in self.params)


class JsonUsageGroup(_JsonUsageErrors, typer.core.TyperGroup):
    """A group of commands (``edgekd``, ``edgekd devices``) whose usage errors when no command was chosen (an unknown
    command name, or ``--json`` with no command before it) are printed as the JSON document too when ``--json`` is
    among the arguments: the command the user meant would have printed one."""

    def asks_for_json(self, args: list[str]) -> bool:
        """Whether ``--json`` is among ``args`` (the group's and its command's; no group has that option itself)."""
        return _json_among(args)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """The command ``args`` name, as typer finds it; an unknown name given ``--json`` as the JSON document."""
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            if not self.asks_for_json(args):
                raise
            _usage_error_as_json(exc, ctx.info_name)


def _json_among(args: list[str]) -> bool:
    """Whether ``--json`` is one of ``args`` before any ``--`` (after it, an argument's value)."""
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _usage_error_as_json(exc: UsageError, info_name: str | None) -> NoReturn:
    """Print click's usage error ``exc`` as the one-line error and its JSON document (:func:`_fail`), pointing at the
    help of the command or group it came from; exit with click's usage exit code (2). ``--json`` refused by a group
    (no command came before it) says so rather than click's list of the group's options."""
    path = exc.ctx.command_path if exc.ctx is not None else info_name
    if isinstance(exc, NoSuchOption) and exc.option_name == "--json":
        message = ("No command before --json, which commands take after their name "
                   f"('{shown(path)} COMMAND [ARGS]... --json')")
    else:
        message = shown(exc.format_message().rstrip("."))
    see = " See" if message.endswith("?") else "; see"  # after typer's "Did you mean 'list'?"
    _fail(f"{message}{see} '{shown(path)} --help'", exc.exit_code, True)


class Typer(typer.Typer):
    """``typer.Typer`` whose groups are :class:`JsonUsageGroup` and whose commands are :class:`JsonUsageCommand`,
    unless one names another class."""

    def __init__(self, *, cls: type[typer.core.TyperGroup] | None = JsonUsageGroup, **settings: Any) -> None:
        """A group of commands, as ``typer.Typer`` makes it."""
        super().__init__(cls=cls, **settings)

    def command(self, name: str | None = None, *, cls: type[typer.core.TyperCommand] | None = JsonUsageCommand,
                **settings: Any) -> Callable[[F], F]:
        """Register a command, as ``typer.Typer.command`` does."""
        return super().command(name, cls=cls, **settings)


def _debug_traceback() -> None:
    """Under ``--debug``, print the traceback of the exception being handled on stderr (its one-line message and
    exit code follow, as without ``--debug``)."""
    if state["debug"]:
        err.print(traceback.format_exc().rstrip(), markup=False, highlight=False, soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C raises KeyboardInterrupt: the same clean-up runs."""


def terminate(_signum: int, _frame: Any) -> None:
    """The SIGTERM handler :func:`edgekd.cli.main` installs: raise :class:`Terminated`."""
    raise Terminated()


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, control characters and rich markup escaped (see :func:`shown`)."""
    return shown(" ".join(line.strip() for line in str(exc).splitlines() if line.strip()))


def print_warnings(warnings: list[str]) -> None:
    """Warnings about the figures just printed, on stderr (stdout stays the result)."""
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {shown(warning)}", soft_wrap=True)


def add_columns(table: Table, columns: Iterable[str], *, left: Collection[str] = (), no_wrap: bool = False) -> None:
    """Add a figures table's columns: right-aligned (numbers line up) except the text ones named in ``left``."""
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right", no_wrap=no_wrap)


RecipeArg = Annotated[str, typer.Argument(help="A recipe YAML path or a built-in name (see pipelines/).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", "-d", help="Device profile name or YAML path.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="KEY=VALUE",
    help="Change one of the recipe's keys (repeatable): data.train=train.tsv, stages.distill.epochs=3, "
    "teacher.model.pretrained=./my-model. VALUE is YAML; a relative path is from the working directory.")]
HostDeviceOpt = Annotated[str, typer.Option("--device", "-d", help="Device profile name or YAML path.")]
RequiredDeviceOpt = Annotated[str, typer.Option(
    "--device", "-d", help="Device profile name or YAML path (its threads, input shapes, ISA and budget).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<recipe name>).")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Ignore finished stages of an earlier run.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def _threads(text: str) -> int | str:
    """``--threads``: a positive number, or ``auto``."""
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise typer.BadParameter(f"expected a positive number of threads or 'auto', got {text!r}")


# Any: typer takes no union of int and str; the parser gives an int or "auto"
ThreadsOpt = Annotated[Any, typer.Option(
    "--threads", parser=_threads, metavar="N|auto",
    help="torch threads for training (default: the recipe's threads; auto = free physical cores).")]
BudgetOpt = Annotated[float | None, typer.Option(
    "--budget-ms", help="p90 latency budget in ms, instead of the device profile's.")]


def timing_option(setting: str, help_text: str) -> Any:
    """The ``--runs``, ``--warmup`` or ``--rounds`` option of a timing command, bounded as the API's timing arguments
    and the recipe's stages are (:data:`edgekd.config.base.MAX_RUNS` ...): a value outside is refused naming the flag
    and the range (exit code 2), and the help states the range."""
    from edgekd.config.base import MAX_ROUNDS, MAX_RUNS, MAX_WARMUP, MIN_RUNS

    low, high = {"runs": (MIN_RUNS, MAX_RUNS), "warmup": (0, MAX_WARMUP), "rounds": (1, MAX_ROUNDS)}[setting]

    def in_range(value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"expected {low} to {high}, got {value}")
        return value

    return typer.Option(f"--{setting}", callback=in_range, help=f"{help_text.rstrip('.')} ({low} to {high}).")
