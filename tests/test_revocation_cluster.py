"""Revocation on a live cluster: a revoked author's backdated entry is rejected on every node,
including the one that accepted it before the revocation reached it."""

from __future__ import annotations

import pytest
import trio

import mindoo_p2p.writer as writer_module
from mindoo_p2p.testing import Cluster


async def _until(predicate: object, what: str, timeout: float = 20.0) -> None:
    assert callable(predicate)
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting until {what}")


async def test_a_revoked_authors_backdated_entry_is_rejected_on_all_nodes(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, mallory, bob, carol = 0, 1, 2, 3
    with trio.fail_after(120):
        await cluster.start(4, names=["admin", "mallory", "bob", "carol"])
        cluster.create_tenant("acme")
        await cluster.connect_topology("full")
        mdb = cluster.db(mallory, "acme", "notes")
        doc = mdb.create_document({"items": ["before"]})
        await cluster.wait_converged(timeout=30)

        # Mallory and Bob are cut off from the admin and Carol; the admin revokes Mallory.
        await cluster.partition([admin, carol], [mallory, bob])
        admin_tenant = cluster.nodes[admin].require().tenant("acme")
        admin_tenant.revoke_member(cluster.nodes[mallory].require().public_identity())

        # Mallory, not told, writes on, backdating the change to before the revocation.
        monkeypatch.setattr(
            writer_module, "now_ms", lambda: 1_000_000_000_000
        )  # the writer's clock
        with mdb.change(doc) as d:
            d["items"].append("backdated")
        monkeypatch.undo()
        mallory_node = cluster.nodes[mallory].require()
        tenant_id = admin_tenant.id
        late = max(
            mallory_node.store.iter_entries(tenant_id, "notes"), key=lambda e: e.header.author_seq
        )
        assert late.timestamp_ms == 1_000_000_000_000
        bob_node = cluster.nodes[bob].require()
        await _until(lambda: bob_node.store.has(late.id), "Bob accepted the backdated entry")
        assert cluster.db(bob, "acme", "notes").get(doc) == {"items": ["before", "backdated"]}

        mallory_key = mallory_node.public_identity().signing_key
        carol_tenant = cluster.nodes[carol].require().tenant("acme")
        await _until(
            lambda: not carol_tenant.membership.is_member(mallory_key), "Carol got the revocation"
        )
        await cluster.heal()
        await cluster.wait_converged(timeout=30, among=[admin, bob, carol])
        for index in (admin, bob, carol):
            node = cluster.nodes[index].require()
            accepted = {e.id for e in node.store.iter_entries(tenant_id)}
            assert late.id not in accepted, cluster.nodes[index].name
            assert cluster.db(index, "acme", "notes").get(doc) == {"items": ["before"]}
        assert bob_node.store.is_retracted(late.id)  # stored before the revocation: withdrawn
        for index in (admin, carol):
            assert not cluster.nodes[index].require().store.has(late.id)  # refused on arrival
        assert bob_node.fsck().ok
        # Mallory is no longer a member: nobody replicates with her any more.
        assert not bob_node.tenant("acme").membership.is_member(mallory_key)
