"""sync wait: block until this node is caught up with its connected peers (needs the daemon)."""

from __future__ import annotations

import time
from typing import Any

import click

from mindoo_p2p.control import ControlClient, ControlError, control_socket, daemon_running
from mindoo_p2p.tenant_secrets import now_ms

from ..params import MindooGroup, cli_context

POLL_SECONDS = 0.2


@click.group(cls=MindooGroup)
def sync() -> None:
    """Sync with the connected peers now, and wait until caught up."""


@sync.command("wait")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after this many seconds (exit 1). Default: wait as long as it takes.",
)
def sync_wait(timeout: float | None) -> None:
    """Wake every connected peer and wait until a session with each has reconciled every
    database (a progress bar on a terminal; one line, or JSON with --json, at the end)."""
    c = cli_context()
    if c.daemon is not None:
        raise click.ClickException("'sync wait' cannot run inside the daemon")
    if not daemon_running(c.home):
        raise click.ClickException("no daemon is running on this home: start 'mindoo node run'")
    client = ControlClient(control_socket(c.home), timeout=10)
    since = now_ms()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        client.call("sync")
        if c.invocation.interactive and not c.json_output:
            state = _wait_with_bar(client, since, deadline, c.invocation.err)
        else:
            state = _wait(client, since, deadline)
    except ControlError as exc:
        raise click.ClickException(f"the daemon stopped answering: {exc}") from None
    if not state["done"]:
        raise click.ClickException(
            f"not caught up after {timeout:g} s: waiting for {len(state['waiting'])} of"
            f" {state['peers']} peers, {state['percent']:.1f} % held, {state['lacking']} entries"
            " known to be missing"
        )
    text = (
        "no connected peers"
        if state["peers"] == 0
        else f"caught up with {state['peers']} peer{'s' if state['peers'] != 1 else ''}"
    )
    c.emit(state, text)


def _progress(client: ControlClient, since: int) -> dict[str, Any]:
    state: dict[str, Any] = client.call("sync.progress", {"since_ms": since})
    return state


def _wait(client: ControlClient, since: int, deadline: float | None) -> dict[str, Any]:
    while True:
        state = _progress(client, since)
        if state["done"] or (deadline is not None and time.monotonic() >= deadline):
            return state
        time.sleep(POLL_SECONDS)


def _wait_with_bar(
    client: ControlClient, since: int, deadline: float | None, stream: Any
) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("syncing"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f} %"),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=stream), transient=True) as bar:
        task = bar.add_task("sync", total=100.0, detail="")
        while True:
            state = _progress(client, since)
            waiting = len(state["waiting"])
            bar.update(
                task,
                completed=state["percent"],
                detail=f"{state['lacking']} to fetch, waiting for {waiting} peer(s)",
            )
            if state["done"] or (deadline is not None and time.monotonic() >= deadline):
                return state
            time.sleep(POLL_SECONDS)


COMMANDS: list[click.Command] = [sync]
