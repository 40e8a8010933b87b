"""The control socket: requests, errors, event streams, bounds."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from mindoo_p2p.control import (
    MAX_SOCKET_PATH,
    ControlClient,
    ControlError,
    ControlServer,
    EventHub,
)
from mindoo_p2p.errors import NotFoundError


async def _echo(params: dict[str, Any]) -> Any:
    return {"echo": params}


async def _missing(params: dict[str, Any]) -> Any:
    raise NotFoundError("no such thing")


async def _ping(params: dict[str, Any]) -> Any:
    return "pong"


async def start_server(nursery: trio.Nursery, path: Path, hub: EventHub) -> ControlServer:
    server = ControlServer(path, {"echo": _echo, "missing": _missing, "ping": _ping}, hub)
    await nursery.start(server.serve)
    return server


async def test_requests_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await start_server(nursery, path, EventHub())
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            client = ControlClient(path, timeout=10)
            assert await trio.to_thread.run_sync(client.call, "echo", {"a": 1}) == {
                "echo": {"a": 1}
            }
            with pytest.raises(ControlError, match="no such thing"):
                await trio.to_thread.run_sync(client.call, "missing")
            with pytest.raises(ControlError, match="nope"):
                await trio.to_thread.run_sync(client.call, "nope")

            def garbage() -> bytes:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(10)
                    sock.connect(str(path))
                    sock.sendall(b"this is not json\n")
                    return sock.recv(65536)

            reply = json.loads(await trio.to_thread.run_sync(garbage))
            assert reply["error"]["type"] == "bad_request"
            nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_event_stream_and_lagging_subscriber(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    hub = EventHub(queue_size=4)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await start_server(nursery, path, hub)
            received: list[dict[str, Any]] = []

            def listen() -> None:
                for event in ControlClient(path).events({"tenant": "t1"}):
                    received.append(event)
                    if len(received) == 3:
                        return

            nursery.start_soon(trio.to_thread.run_sync, listen)
            while hub.subscriber_count == 0:
                await trio.sleep(0.01)
            hub.publish({"type": "entry", "tenant": "t2"})  # filtered out
            hub.publish({"type": "entry", "tenant": "t1", "n": 1})
            hub.publish({"type": "entry", "tenant": "t1", "n": 2})
            while len(received) < 3:
                await trio.sleep(0.01)
            assert [e.get("n") for e in received] == [None, 1, 2]
            assert received[0]["type"] == "subscribed"

            # A subscriber that never reads is dropped once its queue is full.
            async with hub.subscribe():
                for i in range(10):
                    hub.publish({"type": "entry", "n": i})
                assert hub.subscriber_count == 0
            nursery.cancel_scope.cancel()


async def test_long_home_paths_use_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(str(path)) > MAX_SOCKET_PATH
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await start_server(nursery, path, EventHub())
            assert path.is_symlink()
            assert await trio.to_thread.run_sync(ControlClient(path).call, "ping") == "pong"
            nursery.cancel_scope.cancel()
    assert not path.exists()
