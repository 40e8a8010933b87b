"""http url: the local HTTP API and web page of the running daemon."""

from __future__ import annotations

import click

from ..params import MindooGroup, cli_context


@click.group(cls=MindooGroup)
def http() -> None:
    """The daemon's local HTTP API and web page (127.0.0.1 only)."""


@http.command("url")
def http_url() -> None:
    """Print a one-time login link that opens the web page (valid 5 minutes, once), the API's
    address and the file holding its API key."""
    c = cli_context()
    daemon = c.daemon
    if daemon is None:
        raise click.ClickException(f"no daemon is running on {c.home}: start 'mindoo node run'")
    info = daemon.http_login()
    c.emit(
        info,
        f"{info['login_url']}\n(open it once, within 5 minutes; scripts use the API at"
        f" {info['base_url']} with 'Authorization: Bearer KEY', the key is in"
        f" {info['api_key_file']})",
    )


COMMANDS: list[click.Command] = [http]
