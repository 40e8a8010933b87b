"""Failure containment of the daemon (review finding: "watching a poisoned view kills the whole
daemon"): a control method or a stream that raises something unexpected (a raw sqlcipher
OperationalError, a RecursionError from a deeply nested definition, a bug) answers its client a
one-line error naming the method, is logged with its traceback, and leaves the daemon, its other
clients and its other tasks running. The same for the HTTP API, the stored-entries task and the
sessions a peer worker runs."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import eventually, running_daemon
from http_helpers import api_client, http_daemon

import mindoo_p2p.daemon.node_daemon as node_daemon_module
import mindoo_p2p.daemon.stored_entries as stored_entries_module
import mindoo_p2p.daemon.sync_sessions as sync_sessions_module
from mindoo_p2p.control import (
    ControlClient,
    ControlError,
    ControlServer,
    EventHub,
    StreamOpener,
    control_socket,
)
from mindoo_p2p.daemon import PeerTable
from mindoo_p2p.node import Node

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
Items = AsyncIterator[dict[str, Any]]


async def _raw_database_error(params: dict[str, Any]) -> Any:
    raise sqlite3.OperationalError("database disk image is malformed")


async def _ping(params: dict[str, Any]) -> Any:
    return "pong"


@asynccontextmanager
async def _failing_open(params: dict[str, Any]) -> AsyncIterator[tuple[Any, Items]]:
    raise RecursionError("maximum recursion depth exceeded")
    yield  # pragma: no cover  (makes this an async generator)


@asynccontextmanager
async def _failing_items(params: dict[str, Any]) -> AsyncIterator[tuple[Any, Items]]:
    async def items() -> Items:
        yield {"type": "first"}
        raise RuntimeError("the index broke\nacross lines")

    yield {"watching": True}, items()


FAILING_STREAMS: dict[str, StreamOpener] = {
    "broken.open": _failing_open,
    "broken.items": _failing_items,
}


def _read_stream(path: Path, method: str) -> list[Any]:
    return list(ControlClient(path, timeout=10).stream(method))


async def test_unexpected_errors_answer_the_client_and_keep_the_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: a request whose handler raises a raw sqlite3 OperationalError, a stream whose
    opening raises RecursionError and a stream whose items raise RuntimeError (the exceptions a
    poisoned view produced). Before the fix each escaped `serve_listeners` and ended the
    server (and the daemon's nursery with it)."""
    path = tmp_path / "control.sock"
    handlers = {"broken": _raw_database_error, "ping": _ping}
    caplog.set_level(logging.ERROR, logger="mindoo_p2p.control")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(path, handlers, EventHub(), FAILING_STREAMS).serve)
            client = ControlClient(path, timeout=10)
            with pytest.raises(ControlError) as failed:
                await trio.to_thread.run_sync(client.call, "broken")
            assert str(failed.value) == (
                "broken failed: OperationalError: database disk image is malformed"
            )
            with pytest.raises(ControlError, match=r"^broken.open failed: RecursionError: max"):
                await trio.to_thread.run_sync(_read_stream, path, "broken.open")
            got = await trio.to_thread.run_sync(_read_stream, path, "broken.items")
            assert got == [
                {"watching": True},
                {"type": "first"},
                {
                    "type": "error",
                    "error": "internal_error",
                    "message": "broken.items failed: RuntimeError: the index broke across lines",
                },
            ]  # and the stream ended: `list` returned
            assert await trio.to_thread.run_sync(client.call, "ping") == "pong"
            nursery.cancel_scope.cancel()
    failures = [r for r in caplog.records if r.name == "mindoo_p2p.control"]
    assert [r.levelno for r in failures] == [logging.ERROR] * 3
    assert [r.exc_info[0] for r in failures if r.exc_info] == [
        sqlite3.OperationalError,
        RecursionError,
        RuntimeError,
    ]


async def test_a_failing_control_method_leaves_the_daemon_running(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: through a running daemon, a control method and a streamed method that raise
    unexpected exceptions (as view.watch did on a poisoned view). The daemon must keep
    serving: other control clients get answers and its tasks keep running."""
    real_handlers = node_daemon_module.control_handlers

    def with_broken(daemon: Any) -> dict[str, Any]:
        return {**real_handlers(daemon), "broken": _raw_database_error}

    monkeypatch.setattr(node_daemon_module, "control_handlers", with_broken)
    monkeypatch.setattr(node_daemon_module, "view_streams", lambda _access: FAILING_STREAMS)
    node = make_node("n")
    path = control_socket(node.home)
    client = ControlClient(path, timeout=20)
    with trio.fail_after(45):
        async with running_daemon(node, control=True) as daemon:
            with pytest.raises(ControlError, match=r"^broken failed: OperationalError"):
                await trio.to_thread.run_sync(client.call, "broken")
            with pytest.raises(ControlError, match=r"^broken.open failed: RecursionError"):
                await trio.to_thread.run_sync(_read_stream, path, "broken.open")
            got = await trio.to_thread.run_sync(_read_stream, path, "broken.items")
            assert got[-1]["error"] == "internal_error"
            await trio.sleep(0.2)  # a crash would now have cancelled the daemon's nursery
            status = await trio.to_thread.run_sync(client.call, "status")
            assert status["peer_id"] == daemon.peer_id
            assert await trio.to_thread.run_sync(client.call, "ping") == "pong"


async def test_a_failing_http_handler_answers_500_and_leaves_the_daemon_running(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: an HTTP API request whose handler raises an unexpected exception (a raw
    OperationalError). It must answer a 500 with a JSON error, log it, and leave the HTTP
    server and the daemon serving (starlette re-raises after its handler: hypercorn keeps
    serving; this test pins that)."""
    node = make_node("n")
    caplog.set_level(logging.ERROR, logger="mindoo_p2p.http.app")
    with trio.fail_after(45):
        async with http_daemon(node, control=True) as daemon, api_client(daemon) as client:

            def broken_wake() -> None:
                raise sqlite3.OperationalError("database disk image is malformed")

            monkeypatch.setattr(daemon, "wake_peers", broken_wake)
            response = await client.post("/api/sync")
            assert response.status_code == 500
            assert response.json()["error"] == {
                "type": "internal",
                "message": "OperationalError: database disk image is malformed",
            }
            await trio.sleep(0.2)  # a crash would now have cancelled the daemon's nursery
            assert (await client.get("/api/status")).status_code == 200
            status = await trio.to_thread.run_sync(
                ControlClient(control_socket(node.home), timeout=10).call, "ping"
            )
            assert status == "pong"
    assert any(r.exc_info and r.exc_info[0] is sqlite3.OperationalError for r in caplog.records)


async def test_an_event_that_fails_to_be_handled_leaves_the_daemon_running(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: entries (from a peer or another process) whose handling raises in library code
    (here the conflict scan, which reads their documents, raises RuntimeError). That escaped
    `StoredEntries.consume`, in the daemon's main nursery, and ended the daemon. Now it is
    logged with its traceback and the next entries are handled."""
    calls: list[int] = []

    def failing_conflict_events(*args: Any) -> Any:
        calls.append(1)
        raise RuntimeError("a document that breaks the conflict scan")

    monkeypatch.setattr(stored_entries_module, "conflict_events", failing_conflict_events)
    node = make_node("n")
    caplog.set_level(logging.ERROR, logger="mindoo_p2p.daemon.stored_entries")
    with trio.fail_after(45):
        async with running_daemon(node) as daemon, daemon.events.subscribe() as events:
            for n in range(2):
                async with daemon.access.hold() as held:
                    if n == 0:
                        db = held.create_tenant("acme").create_db("notes")
                    else:
                        db = held.tenant("acme").open_db("notes")
                    db.create_document({"n": n})
                while len(calls) <= n:  # the write's event got as far as the conflict scan
                    await trio.sleep(0.01)
            assert (await events.receive())["type"] == "entry"  # subscribers still heard
            status = await daemon.status_off_loop()
            assert status["entries"] == node.store.count()
    assert len(calls) >= 2  # the second write's entries were handled after the first failed
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [RuntimeError] * len(calls)


async def test_an_initiator_session_that_fails_unexpectedly_leaves_the_daemon_syncing(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: a session with a peer raises something unexpected in library code (here the
    first initiator run raises RuntimeError, as a bug on a peer's data would). That escaped the
    peer worker into the daemon's main nursery and ended the daemon (the responder side was
    contained already). Now the failure is recorded in the peer's status and logged, and the
    next session with that peer syncs."""
    real_run_initiator = sync_sessions_module.run_initiator
    failures = [RuntimeError("a peer's entry broke something")]

    async def failing_first(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return await real_run_initiator(*args, **kwargs)

    monkeypatch.setattr(sync_sessions_module, "run_initiator", failing_first)
    recorded: list[str] = []
    real_failed = PeerTable.failed

    def record_failed(table: PeerTable, peer_id: str, error: str) -> None:
        recorded.append(error)
        real_failed(table, peer_id, error)

    monkeypatch.setattr(PeerTable, "failed", record_failed)
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    alice.tenant("acme").create_db("notes").create_document({"from": "alice"})
    caplog.set_level(logging.ERROR, logger="mindoo_p2p.daemon.sync_sessions")
    with trio.fail_after(45):
        async with running_daemon(alice) as a, running_daemon(bob) as b:
            await b.add_peer(a.listen_addrs()[0])
            await eventually(lambda: not failures)
            # shown in the peer's status (``last_error``) until a session ends well
            assert "internal error: RuntimeError: a peer's entry broke something" in recorded
            b.wake_peers()
            await eventually(lambda: ids(alice) <= ids(bob))
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def ids(node: Node) -> set[bytes]:
    return {entry.id for entry in node.store.iter_entries()}
