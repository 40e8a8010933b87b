"""Shared CLI state: the node home, output mode, password sources, opening the node."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mindoo_p2p.node import Node, default_home, is_initialized

if TYPE_CHECKING:
    from mindoo_p2p.daemon import NodeDaemon

PASSWORD_ENV = "MINDOO_PASSWORD"
MAX_PASSWORD_FILE_SIZE = 64 * 1024


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a small input file; click.ClickException (exit 1) if unreadable or over
    ``limit`` bytes (never reads more than ``limit + 1`` bytes)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise click.ClickException(f"{what} {path} is over the limit of {limit} bytes")
    return data


@dataclass
class CliContext:
    """What every command needs: where the node lives, how to print, how to get the password.

    The node is opened lazily (once) by `node()` and closed by `close()` when the command ends.
    """

    home: Path
    json_output: bool
    password_file: Path | None
    _node: Node | None = field(default=None, repr=False)
    daemon: NodeDaemon | None = field(default=None, repr=False)
    """Set when the command runs inside a daemon (forwarded over its control socket)."""
    _owns_node: bool = field(default=True, repr=False)

    def password(self, *, confirm: bool = False) -> str:
        """From --password-file, else MINDOO_PASSWORD, else a hidden prompt on a terminal."""
        if self.password_file is not None:
            data = read_bounded(self.password_file, MAX_PASSWORD_FILE_SIZE, "password file")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise click.ClickException(
                    f"password file {self.password_file} is not UTF-8 text"
                ) from None
            password = text.rstrip("\r\n")
        elif os.environ.get(PASSWORD_ENV):
            password = os.environ[PASSWORD_ENV]
        elif sys.stdin.isatty():
            password = click.prompt(
                "Node password", hide_input=True, confirmation_prompt=confirm, err=True
            )
        else:
            raise click.ClickException(
                f"a password is needed: set {PASSWORD_ENV}, use --password-file,"
                " or run in a terminal"
            )
        if not password:
            raise click.ClickException("the password must not be empty")
        return password

    def node(self) -> Node:
        """The node in ``home``, opened on first use; ClickException if there is none."""
        if self._node is None:
            if not is_initialized(self.home):
                raise click.ClickException(f"no node in {self.home}: run 'mindoo init' first")
            self._node = Node.open(self.home, self.password())
        return self._node

    def close(self) -> None:
        if self._node is not None and self._owns_node:
            self._node.close()
        self._node = None

    def emit(self, data: Any, text: str | None = None) -> None:
        """Print ``data`` as JSON with --json, else ``text`` (or a readable rendering)."""
        if self.json_output:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
        elif text is not None:
            click.echo(text)
        else:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def resolve_home(home: str | None) -> Path:
    """--home, else the default home; made absolute so that printed paths are unambiguous."""
    return (Path(home).expanduser() if home else default_home()).absolute()
