"""Issue 11, "live ... (and over the control socket)": a view's changes streamed by a running
daemon (`view.watch`), and `mindoo view watch` printing them; the streaming methods of the
control socket (answer, items, errors, a client that leaves)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_helpers import PASSWORD
from helpers import running_daemon

from cli.main import Invocation, run
from mindoo_p2p.control import ControlClient, ControlError, ControlServer, EventHub, control_socket
from mindoo_p2p.errors import NotFoundError
from mindoo_p2p.node import Node

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
VIEW = {
    "sources": [{"tenant": "acme", "db": "tickets"}],
    "filter": {"status": "open"},
    "categories": ["customer"],
    "columns": ["title"],
    "totals": [{"op": "count"}],
}


class Lines(io.StringIO):
    """An output stream read from another thread while the CLI writes it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)

    def lines(self) -> list[str]:
        with self._lock:
            return self.getvalue().splitlines()


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.01)


async def test_a_write_shows_up_in_mindoo_view_watch_through_the_daemon(
    make_node: MakeNode,
) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    tickets = tenant.create_db("tickets")
    tickets.create_document({"customer": "Acme", "status": "open", "title": "before"})
    node.views.define(tenant, "open", VIEW, local=True)
    out, err = Lines(), Lines()
    invocation = Invocation(
        cwd=node.home.parent, env={"MINDOO_PASSWORD": PASSWORD}, out=out, err=err
    )
    argv = ["--home", str(node.home), "--json", "view", "watch", "acme", "open"]
    codes: list[int] = []
    with trio.fail_after(45):
        async with trio.open_nursery() as outer:  # noqa: SIM117 (the daemon stops first)
            async with running_daemon(node, control=True) as daemon:

                async def watch_in_cli() -> None:
                    codes.append(await trio.to_thread.run_sync(run, argv, invocation))

                outer.start_soon(watch_in_cli)
                await until(lambda: any("watching" in line for line in err.lines()))
                async with daemon.access.hold() as held:
                    db = held.tenant("acme").open_db("tickets")
                    new = db.create_document({"customer": "Globex", "status": "open", "title": "x"})
                    db.create_document({"customer": "Globex", "status": "closed", "title": "no"})
                await until(lambda: bool(out.lines()))
            # the daemon stopped: the watcher says so and exits 1
    assert codes == [1] and "went away" in err.getvalue()
    (change,) = [json.loads(line) for line in out.lines()]
    assert change["type"] == "view_change" and change["view"] == "open"
    assert [(r["id"], r["values"]) for r in change["added"]] == [
        (new, {"customer": "Globex", "title": "x"})
    ]
    assert not change["removed"] and not change["changed"]
    assert {(tuple(t["path"]), t["count"]) for t in change["totals"]} == {((), 2), (("Globex",), 1)}


async def test_view_watch_of_an_unknown_view_answers_an_error(make_node: MakeNode) -> None:
    node = make_node("n")
    node.create_tenant("acme")
    client = ControlClient(control_socket(node.home), timeout=20)
    with trio.fail_after(30):
        async with running_daemon(node, control=True):
            for params, message in (
                ({"tenant": "acme", "view": "nope"}, "no view 'nope'"),
                ({"tenant": "acme"}, "needs 'tenant'"),
            ):
                with pytest.raises(ControlError, match=message):
                    await trio.to_thread.run_sync(
                        lambda p=params: next(client.stream("view.watch", p))
                    )


# -- the streaming methods of the control socket, without a daemon ----------------------------
async def test_a_stream_answers_then_streams_and_ends_when_the_client_leaves(
    tmp_path: Path,
) -> None:
    path = tmp_path / "control.sock"
    send, receive = trio.open_memory_channel[dict[str, Any]](4)
    closed = trio.Event()

    @asynccontextmanager
    async def numbers(
        params: dict[str, Any],
    ) -> AsyncIterator[tuple[Any, AsyncIterator[dict[str, Any]]]]:
        if params.get("fail"):
            raise NotFoundError("nothing to stream")

        async def items() -> AsyncIterator[dict[str, Any]]:
            async for item in receive:
                yield item

        try:
            yield {"streaming": params}, items()
        finally:
            closed.set()

    got: list[Any] = []

    def read_two() -> None:
        stream = ControlClient(path, timeout=10).stream("numbers", {"n": 1})
        for item in stream:
            got.append(item)
            if len(got) == 3:
                stream.close()  # the client leaves
                return

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = ControlServer(path, {}, EventHub(), streams={"numbers": numbers})
            await nursery.start(server.serve)
            with pytest.raises(ControlError, match="nothing to stream"):
                await trio.to_thread.run_sync(
                    lambda: next(ControlClient(path, timeout=10).stream("numbers", {"fail": 1}))
                )
            closed = trio.Event()
            nursery.start_soon(trio.to_thread.run_sync, read_two)
            await send.send({"n": 1})
            await send.send({"n": 2})
            await closed.wait()  # the stream was closed once the client went, nothing queued
            nursery.cancel_scope.cancel()
    assert got == [{"streaming": {"n": 1}}, {"n": 1}, {"n": 2}]
