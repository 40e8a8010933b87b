"""What a command runs with: the caller's surroundings (`Invocation`) and the per-command state
(`CliContext`: home, output mode, passwords, the node).

Nothing here reads process-wide state: the working directory, the environment, the output
streams and whether a terminal may be used all come from the `Invocation`, so a daemon can run
commands for several clients at once, each in its own thread.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from mindoo_p2p.commands import NODE_PASSWORD, PasswordPolicy, PromptFn
from mindoo_p2p.node import Node, default_home, is_initialized

if TYPE_CHECKING:
    from mindoo_p2p.daemon import NodeDaemon

MAX_PASSWORD_FILE_SIZE = 64 * 1024


@dataclass(frozen=True)
class DaemonHook:
    """The daemon running a forwarded command: its unlocked node and itself."""

    node: Node
    daemon: NodeDaemon


@dataclass(frozen=True)
class Invocation:
    """The surroundings of one CLI run, passed explicitly.

    ``cwd`` resolves relative paths, ``env`` provides MINDOO_* settings and passwords, ``out``
    and ``err`` receive everything printed, ``interactive`` allows prompting on the terminal.
    ``stdin`` answers yes/no questions (None: nobody to ask). ``daemon`` is set when a
    daemon runs the command on a client's behalf.
    """

    cwd: Path
    env: Mapping[str, str]
    out: TextIO
    err: TextIO
    interactive: bool = False
    stdin: TextIO | None = None
    daemon: DaemonHook | None = None
    json_errors: bool = False
    """Errors are printed as one JSON line (``--json`` was given)."""

    def __post_init__(self) -> None:
        if not self.cwd.is_absolute():
            raise ValueError(f"the working directory must be absolute, not {self.cwd}")

    @classmethod
    def of_this_process(cls) -> Invocation:
        """This process's directory, environment, standard streams and terminal."""
        return cls(Path.cwd(), os.environ, sys.stdout, sys.stderr, sys.stdin.isatty(), sys.stdin)

    def path(self, given: str | Path) -> Path:
        """``given`` (``~`` expanded) resolved against ``cwd``."""
        return self.cwd / Path(given).expanduser()


def invocation() -> Invocation:
    """The `Invocation` of the running command (click's ``obj``)."""
    found = click.get_current_context().find_object(Invocation)
    if found is None:  # only when a command is invoked outside `cli.main.run`
        raise RuntimeError("mindoo command invoked without an Invocation")
    return found


def read_bounded(path: Path, limit: int, what: str, shown: object = None) -> bytes:
    """The bytes of a small input file; click.ClickException (exit 1) if unreadable or over
    ``limit`` bytes (never reads more than ``limit + 1`` bytes). Messages name the file as
    ``shown`` (default: ``path``)."""
    name = path if shown is None else shown
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise click.ClickException(f"{what} {name} is over the limit of {limit} bytes")
    return data


@dataclass
class CliContext:
    """What every command needs: where the node lives, how to print, how to get passwords.

    The node is opened lazily (once) by `node()` and closed by `close()` when the command ends
    (unless it is the daemon's).
    """

    invocation: Invocation
    home: Path
    json_output: bool
    password_file: str | None
    _node: Node | None = field(default=None, repr=False)

    @property
    def daemon(self) -> NodeDaemon | None:
        """The daemon running this command on a client's behalf, if any."""
        hook = self.invocation.daemon
        return None if hook is None else hook.daemon

    def prompt(self) -> PromptFn | None:
        """A hidden-input prompt when a terminal may be used, else None."""
        if not self.invocation.interactive or self.daemon is not None:
            return None

        def ask(text: str, confirm: bool) -> str:
            value = click.prompt(text, hide_input=True, confirmation_prompt=confirm, err=True)
            return str(value)

        return ask

    def secret(self, policy: PasswordPolicy, *, new: bool) -> str:
        """A password other than the node's (key file, recovery kit), by ``policy``."""
        return policy.obtain(
            self.invocation.env, new=new, prompt=self.prompt(), remote=self.daemon is not None
        )

    def password(self, *, confirm: bool = False) -> str:
        """The node password: from --password-file, else MINDOO_PASSWORD, else a prompt."""
        if self.password_file is None:
            return NODE_PASSWORD.obtain(
                self.invocation.env,
                new=confirm,
                prompt=self.prompt(),
                other_sources="use --password-file",
            )
        data = read_bounded(
            self.invocation.path(self.password_file),
            MAX_PASSWORD_FILE_SIZE,
            "password file",
            self.password_file,
        )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise click.ClickException(
                f"password file {self.password_file} is not UTF-8 text"
            ) from None
        return NODE_PASSWORD.check(text.rstrip("\r\n"), new=confirm)

    def node(self) -> Node:
        """The node in ``home``, opened on first use; ClickException if there is none."""
        if self.invocation.daemon is not None:
            return self.invocation.daemon.node
        if self._node is None:
            if not is_initialized(self.home):
                raise click.ClickException(f"no node in {self.home}: run 'mindoo init' first")
            self._node = Node.open(self.home, self.password())
        return self._node

    def adopt(self, node: Node) -> None:
        """Use (and close at the end) ``node``, just created in ``home``."""
        self._node = node

    def close(self) -> None:
        if self._node is not None:
            self._node.close()
        self._node = None

    def confirm(self, question: str) -> bool:
        """Ask ``question`` on stderr and read the answer from stdin: yes or y (any case) is
        True; no, n, an empty line, end of input or nobody to ask is False."""
        stdin = self.invocation.stdin
        if stdin is None or self.daemon is not None:
            return False
        while True:
            self.invocation.err.write(f"{question} [y/N]: ")
            self.invocation.err.flush()
            line = stdin.readline()
            if not line:
                self.invocation.err.write("\n")
                return False
            answer = line.strip().lower()
            if answer in ("y", "yes"):
                return True
            if answer in ("", "n", "no"):
                return False
            self.invocation.err.write("Error: invalid input\n")

    def echo(self, text: str, *, err: bool = False) -> None:
        """Print one line (or several) to the invocation's stdout, or stderr with ``err``."""
        stream = self.invocation.err if err else self.invocation.out
        stream.write(text + "\n")

    def emit(self, data: Any, text: str | None = None) -> None:
        """Print ``data`` as JSON with --json, else ``text`` (or a readable rendering)."""
        if self.json_output or text is None:
            self.echo(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
        else:
            self.echo(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def resolve_home(home: str | None, inv: Invocation) -> Path:
    """--home (against the invocation's directory), else the default home from its
    environment; absolute, so that printed paths are unambiguous."""
    if home:
        return inv.path(home)
    return inv.path(default_home(inv.env))
