"""Daemons on loopback: two nodes sync over libp2p, offline writes, restarts, denial."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from helpers import LOOPBACK, eventually
from helpers import running_daemon as running

from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.node import Node

MakeNode = Callable[[str], Node]


def ids(node: Node) -> set[bytes]:
    return {e.id for e in node.store.iter_entries()}


async def test_two_daemons_sync_both_ways(make_node: MakeNode) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    a_db = alice.tenant("acme").open_db("contacts")
    offline_doc = a_db.create_document({"written": "offline"})
    async with running(alice) as a, running(bob) as b:
        await b.add_peer(a.listen_addrs()[0])
        await eventually(lambda: ids(alice) == ids(bob))
        b_db = bob.tenant("acme").open_db("contacts")
        assert b_db.get(offline_doc) == {"written": "offline"}
        # A write on either side reaches the other while connected.
        with b_db.change(offline_doc) as doc:
            doc["by_bob"] = True
        await eventually(lambda: a_db.exists(offline_doc) and a_db.get(offline_doc).get("by_bob"))
        new_doc = a_db.create_document({"live": 1})
        await eventually(lambda: b_db.exists(new_doc))
        status = a.status()
        assert status["peer_id"] == a.peer_id
        assert all(addr.endswith("/p2p/" + a.peer_id) for addr in status["listen_addrs"])
        (peer,) = status["peers"]
        assert peer["connected"] and peer["last_sync_ms"] is not None
        assert "acme" in peer["tenants"]


async def test_unauthorized_peer_learns_nothing(make_node: MakeNode) -> None:
    alice, mallory = make_node("alice"), make_node("mallory")
    alice.create_tenant("acme").open_db("secrets").create_document({"x": 1})
    mallory.create_tenant("acme")  # same name, different tenant
    before = ids(mallory)
    async with running(alice) as a, running(mallory) as m:
        await m.add_peer(a.listen_addrs()[0])
        await trio.sleep(1.0)
        await m.sync_with_peer(a.peer_id)
        assert ids(mallory) == before
        assert not any(e.tenant_id == alice.tenants()[0].id for e in mallory.store.iter_entries())
        assert m.peers[a.peer_id].shared_tenants == set()


def test_the_peer_table_is_bounded(make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    import mindoo_p2p.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "MAX_PEER_STATES", 10)
    daemon = NodeDaemon(make_node("n"), LOOPBACK, control=False)
    daemon._peer("connected").connected = True
    for i in range(100):
        daemon._peer(f"peer{i}")
    assert len(daemon.peers) <= 10
    assert "connected" in daemon.peers  # live peers are never forgotten
