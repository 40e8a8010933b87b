"""`mindoo_p2p.client`: a script drives a running daemon without opening the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import eventually
from http_helpers import http_daemon

from mindoo_p2p.client import ClientError, DaemonClient
from mindoo_p2p.node import Node


def script(home: Path) -> dict[str, Any]:
    """What a user's script would do, blocking, in its own thread."""
    with DaemonClient.for_home(home) as daemon:
        status = daemon.status()
        names = [t["name"] for t in daemon.tenants()]
        doc = daemon.create_document("acme", "notes", {"title": "hi"})
        daemon.set_path("acme", "notes", doc, ["tags"], ["a"])
        patched = daemon.patch(
            "acme", "notes", doc, [{"op": "add", "path": "/tags/-", "value": "b"}]
        )
        changes, cursor = daemon.changes("acme", "notes")
        with pytest.raises(ClientError) as missing:
            daemon.get("acme", "nope", doc)
        return {
            "status": status,
            "tenants": names,
            "doc": doc,
            "patched": patched,
            "read": daemon.get("acme", "notes", doc),
            "documents": daemon.documents("acme", "notes"),
            "changes": changes,
            "cursor": cursor,
            "missing": (missing.value.status, str(missing.value)),
        }


async def test_a_script_uses_the_daemon_through_the_client(
    make_node: Callable[[str], Node],
) -> None:
    node = make_node("alice")
    node.create_tenant("acme").create_db("notes")
    async with http_daemon(node, control=True) as daemon:
        done = await trio.to_thread.run_sync(script, node.home)
    assert done["status"]["peer_id"] == daemon.peer_id
    assert done["tenants"] == ["acme"]
    assert done["patched"] == done["read"] == {"title": "hi", "tags": ["a", "b"]}
    assert done["documents"] == [done["doc"]]
    assert [c["document_id"] for c in done["changes"]] == [done["doc"]] * 3
    assert done["cursor"] == done["changes"][-1]["cursor"]
    assert done["missing"][0] == 404 and "nope" in done["missing"][1]
    assert node.tenant("acme").open_db("notes").get(done["doc"]) == done["read"]


async def test_watch_sees_events_and_fails_when_the_daemon_goes_away(
    make_node: Callable[[str], Node],
) -> None:
    node = make_node("alice")
    node.create_tenant("acme").create_db("notes")
    seen: list[dict[str, Any]] = []
    ended: list[BaseException] = []

    def watch(client: DaemonClient) -> None:
        try:
            for event in client.watch(tenant="acme"):
                seen.append(event)
        except ClientError as exc:
            ended.append(exc)

    with trio.fail_after(30):
        async with http_daemon(node, control=True) as daemon:
            client = await trio.to_thread.run_sync(DaemonClient.for_home, node.home)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, watch, client)
                await eventually(lambda: daemon.events.subscriber_count == 1)
                doc = node.tenant("acme").open_db("notes").create_document({"x": 1})
                await eventually(lambda: any(e.get("document_id") == doc for e in seen))
                daemon.stop()
                await daemon.wait_stopped()
            client.close()
    assert seen[0]["type"] == "entry" and seen[0]["origin"] == "local"
    assert len(ended) == 1 and "daemon" in str(ended[0])


def test_for_home_without_a_daemon_says_so(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="no daemon answers"):
        DaemonClient.for_home(tmp_path)
