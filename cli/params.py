"""The CLI's command classes and shared parameters.

- `MindooCommand` / `MindooGroup`: every command and group accepts the global options
  (``--home``, ``--json``, ``--password-file``) wherever they appear, prints ``--help`` to the
  invocation's output, and, just before a command runs, builds its `CliContext` and decides
  whether a running daemon should run it instead (`Forward`).
- `UserFile`: a file argument resolved against the invocation's working directory (the
  client's, when a daemon runs the command), shown to the user as typed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from mindoo_p2p.control import daemon_running

from .context import CliContext, invocation, resolve_home

GLOBALS_KEY = "mindoo.globals"
"""``ctx.meta`` key: the global options given so far (shared by the whole context chain)."""
STATE_KEY = "mindoo.state"
"""``ctx.meta`` key: the running command's `CliContext`."""

LOCAL_ONLY = frozenset({"init", "node", "watch", "sync", "view watch"})
"""Commands never forwarded to a running daemon: top-level ones, or a group's subcommand."""


class Forward(Exception):
    """Raised instead of running a command: the daemon on ``home`` should run it."""

    def __init__(self, home: Path) -> None:
        super().__init__(str(home))
        self.home = home


def cli_context() -> CliContext:
    """The running command's state."""
    state = click.get_current_context().meta.get(STATE_KEY)
    if not isinstance(state, CliContext):  # only when a callback runs outside MindooCommand
        raise RuntimeError("mindoo command invoked outside the mindoo group")
    return state


# -- global options --------------------------------------------------------------------------
def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Record a global option given on any level; the same option twice must agree.

    ``--home`` and ``--password-file`` are parsed as repeatable so that a repetition on one
    level is seen too (click would keep only the last)."""
    if param.name is None:
        return
    values = list(value) if isinstance(value, tuple) else [value] if value else []
    given: dict[str, Any] = ctx.meta.setdefault(GLOBALS_KEY, {})
    for item in values:
        previous = given.get(param.name)
        if previous is not None and previous != item:
            raise click.BadParameter(f"given twice: {previous!r} and {item!r}", ctx, param)
        given[param.name] = item


def global_options() -> list[click.Parameter]:
    """Fresh ``--home``, ``--json`` and ``--password-file`` options (one set per command)."""
    return [
        click.Option(
            ["--home"],
            metavar="DIRECTORY",
            multiple=True,
            expose_value=False,
            callback=_remember,
            help="Node home directory (default: $MINDOO_HOME or ~/.local/share/mindoo).",
        ),
        click.Option(
            ["--json", "json_output"],
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Machine-readable JSON output.",
        ),
        click.Option(
            ["--password-file"],
            metavar="FILE",
            multiple=True,
            expose_value=False,
            callback=_remember,
            help="Read the node password from this file (else $MINDOO_PASSWORD or a prompt).",
        ),
    ]


def _show_help(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        invocation().out.write(ctx.get_help() + "\n")
        ctx.exit()


def _top_level_name(ctx: click.Context) -> str | None:
    while ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent
    return ctx.info_name if ctx.parent is not None else None


def _local_only(ctx: click.Context) -> bool:
    subcommand = " ".join(ctx.command_path.split()[1:])
    return _top_level_name(ctx) in LOCAL_ONLY or subcommand in LOCAL_ONLY


class MindooCommand(click.Command):
    """A command taking the global options; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_options())

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.callback = _show_help
        return option

    def invoke(self, ctx: click.Context) -> Any:
        inv = invocation()
        given = ctx.meta.get(GLOBALS_KEY, {})
        home = resolve_home(given.get("home"), inv)
        if inv.daemon is not None:
            home = inv.daemon.node.home
        elif not _local_only(ctx) and daemon_running(home):
            # A daemon owns this home: let it run the command (it holds the unlocked keys, and
            # what it writes reaches the peers at once).
            raise Forward(home)
        state = CliContext(inv, home, bool(given.get("json_output")), given.get("password_file"))
        ctx.meta[STATE_KEY] = state
        ctx.call_on_close(state.close)
        return super().invoke(ctx)


class MindooGroup(click.Group):
    """A group taking the global options, whose commands and subgroups are Mindoo ones."""

    command_class = MindooCommand
    group_class = type

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_options())

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.callback = _show_help
        return option


# -- file parameters -------------------------------------------------------------------------
@dataclass(frozen=True)
class UserPath:
    """A path the user gave: ``path`` (absolute, for I/O) and ``given`` (to show)."""

    given: str
    path: Path

    def __str__(self) -> str:
        return self.given


class UserFile(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.5 on
    """A file path resolved against the invocation's directory (`UserPath`); refuses a
    directory or an unreadable file, and with ``exists`` a missing one (click.Path's
    messages)."""

    name = "file"

    def __init__(self, *, exists: bool = False) -> None:
        self.exists = exists

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, UserPath):
            return value
        given = str(Path(value))
        path = invocation().path(given)
        try:
            st = os.stat(path)
        except OSError:
            if self.exists:
                self.fail(f"File {given!r} does not exist.", param, ctx)
            return UserPath(given, path)
        if stat.S_ISDIR(st.st_mode):
            self.fail(f"File {given!r} is a directory.", param, ctx)
        if not os.access(path, os.R_OK):
            self.fail(f"File {given!r} is not readable.", param, ctx)
        return UserPath(given, path)


F = TypeVar("F", bound=Callable[..., Any])


def sealed_file_options(to_help: str, out_help: str) -> Callable[[F], F]:
    """``--to IDENTITY_FILE --out FILE``, for commands that seal a file to someone."""

    def decorate(command: F) -> F:
        command = click.option("--out", required=True, type=UserFile(), help=out_help)(command)
        return click.option("--to", "to", required=True, type=UserFile(exists=True), help=to_help)(
            command
        )

    return decorate
