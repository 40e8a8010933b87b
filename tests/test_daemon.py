"""Daemons on loopback: two nodes sync over libp2p, offline writes, restarts, denial."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import trio
from helpers import LOOPBACK, eventually
from helpers import running_daemon as running

from mindoo_p2p.daemon import BAN_THRESHOLD, NodeDaemon, PeerTable
from mindoo_p2p.net.framing import TransportError
from mindoo_p2p.net.host import HostConfig
from mindoo_p2p.net.inbound_policy import InboundLimits
from mindoo_p2p.node import Node
from mindoo_p2p.sync.protocol import SyncReport
from mindoo_p2p.tenant import Tenant

MakeNode = Callable[[str], Node]


def ids(node: Node) -> set[bytes]:
    return {e.id for e in node.store.iter_entries()}


async def test_two_daemons_sync_both_ways(make_node: MakeNode) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    a_db = alice.tenant("acme").create_db("contacts")
    offline_doc = a_db.create_document({"written": "offline"})
    async with running(alice) as a, running(bob) as b:
        await b.add_peer(a.listen_addrs()[0])
        await eventually(lambda: ids(alice) == ids(bob))
        b_db = bob.tenant("acme").create_db("contacts")
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
    alice.create_tenant("acme").create_db("secrets").create_document({"x": 1})
    mallory.create_tenant("acme")  # same name, different tenant
    before = ids(mallory)
    async with running(alice) as a, running(mallory) as m:
        await m.add_peer(a.listen_addrs()[0])
        await trio.sleep(1.0)
        await m.sync_with_peer(a.peer_id)
        assert ids(mallory) == before
        assert not any(e.tenant_id == alice.tenants()[0].id for e in mallory.store.iter_entries())
        assert m.peers[a.peer_id].shared_tenants == set()


async def test_a_peer_that_connects_is_never_proven_to_until_it_proves(
    make_node: MakeNode,
) -> None:
    """Issue 9 (outsiders learn too much): the node used to start initiator sessions on an
    inbound connection, one per tenant it holds. Now it starts none toward a peer that
    dialled it and proved nothing, not even when asked to sync with it."""
    alice, mallory = make_node("alice"), make_node("mallory")
    for name in ("acme", "globex"):
        alice.create_tenant(name)
    mallory.create_tenant("acme")  # same name, another tenant: shares nothing with alice
    started: list[str] = []
    async with running(alice) as a, running(mallory) as m:
        original = a._sync_tenant

        async def recording(peer_id: str, tenant: Tenant) -> SyncReport | None:
            started.append(peer_id)
            return await original(peer_id, tenant)

        a._sync_tenant = recording  # type: ignore[method-assign]
        await m.add_peer(a.listen_addrs()[0])
        await eventually(lambda: a.host is not None and a.host.is_connected(m.peer_id))
        await trio.sleep(2.5)  # past the follower's connect delay
        await a.sync_with_peer(m.peer_id)  # `mindoo sync` too
        assert started == []
        assert a.host is not None and not a.host.dialled(m.peer_id)


def test_the_peer_table_is_bounded() -> None:
    table = PeerTable(max_peers=10)
    table.connected("connected")
    for i in range(100):
        table.peer(f"peer{i}")
    assert len(table) <= 10
    assert "connected" in table  # live peers are never forgotten


def test_the_daemon_reads_its_peers_from_the_peer_table(make_node: MakeNode) -> None:
    daemon = NodeDaemon(make_node("n"), LOOPBACK, control=False)
    daemon.peer_table.connected("somebody")
    assert daemon.peers is daemon.peer_table.states
    assert daemon.status()["peers"][0]["peer_id"] == "somebody"


async def test_peers_sharing_no_tenant_are_dropped_at_the_proof_deadline(
    make_node: MakeNode,
) -> None:
    """Issue 9 (slot exhaustion), wired end to end: a peer that dials in and proves no shared
    tenant is disconnected at the proof deadline; a member stays connected past it."""
    alice, bob, stranger = make_node("alice"), make_node("bob"), make_node("stranger")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    stranger.create_tenant("other")
    short = HostConfig(
        dial_timeout=5,
        stream_timeout=10,
        close_timeout=2,
        inbound=InboundLimits(proof_deadline=1.5),
    )
    a = NodeDaemon(alice, LOOPBACK, host_config=short, control=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        async with running(bob) as b, running(stranger) as s:
            await b.add_peer(a.listen_addrs()[0])
            await s.add_peer(a.listen_addrs()[0])
            await eventually(
                lambda: (
                    a.peers.get(b.peer_id) is not None and bool(a.peers[b.peer_id].shared_tenants)
                )
            )
            assert a.host is not None
            await eventually(lambda: not a.host.is_connected(s.peer_id), timeout=10)
            await trio.sleep(2.0)  # past the deadline (the stranger keeps redialling, and
            assert a.host.is_connected(b.peer_id)  # is dropped again each time)
        nursery.cancel_scope.cancel()


async def test_a_banned_peer_cannot_reconnect_by_redialling(make_node: MakeNode) -> None:
    """Issue 9 (bans bypassed by redialling): once banned, the peer's redials are refused at
    connection setup."""
    alice, mallory = make_node("alice"), make_node("mallory")
    tenant = alice.create_tenant("acme")
    mallory.join(alice.invite(tenant, mallory.public_identity()))
    async with running(alice) as a, running(mallory) as m:
        await m.add_peer(a.listen_addrs()[0])
        await eventually(lambda: a.host is not None and a.host.is_connected(m.peer_id))
        a._penalize(m.peer_id, BAN_THRESHOLD, "test: banned")
        assert a.host is not None and m.host is not None
        await eventually(lambda: not a.host.is_connected(m.peer_id))
        for _ in range(5):
            with contextlib.suppress(TransportError):
                await m.host.connect(a.listen_addrs()[0])
            assert not a.host.is_connected(m.peer_id)
            await trio.sleep(0.02)


@pytest.mark.slow
async def test_a_first_session_longer_than_the_proof_deadline_is_not_cut(
    make_node: MakeNode,
) -> None:
    """Found by the end-to-end clone of 10^6 entries: a member's first session was cut at the
    proof deadline because the peer counted as proven only once the session ended, so the
    clone restarted forever. The peer is proven when the handshake authenticates."""
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    db = tenant.create_db("bulk")
    with db.batch():
        for i in range(20_000):
            db.create_document({"i": i})
    short = HostConfig(
        dial_timeout=5,
        stream_timeout=10,
        close_timeout=2,
        inbound=InboundLimits(proof_deadline=0.5),
    )
    a = NodeDaemon(alice, LOOPBACK, host_config=short, control=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        async with running(bob) as b:
            await b.add_peer(a.listen_addrs()[0])
            await eventually(lambda: bob.store.count() >= alice.store.count(), timeout=120)
            assert ids(bob) == ids(alice)
        nursery.cancel_scope.cancel()
