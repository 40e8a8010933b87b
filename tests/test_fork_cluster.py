"""A fork travels: a thief hands a second entry at a member's sequence number to one node only;
reconciliation carries the evidence, and every node withdraws the member from the fork point."""

from __future__ import annotations

import os
import time

import trio

from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.testing import Cluster


async def test_fork_evidence_given_to_one_node_reaches_the_others(cluster: Cluster) -> None:
    admin, mallory, bob = 0, 1, 2
    with trio.fail_after(90):
        await cluster.start(3, names=["admin", "mallory", "bob"])
        cluster.create_tenant("acme")
        await cluster.connect_topology("full")
        mdb = cluster.db(mallory, "acme", "notes")
        doc = mdb.create_document({"n": 1})
        mdb.update(doc, {"n": 2})
        mdb.update(doc, {"n": 3})
        await cluster.wait_converged(timeout=30)

        thief = cluster.nodes[mallory].require()
        tenant = thief.tenant("acme")
        key = tenant.keyring.current("default")
        me = thief.identity.signing
        chain = sorted(
            (e for e in thief.store.iter_entries(tenant.id, "notes") if e.author == me.public_key),
            key=lambda e: e.author_seq,
        )
        second = Entry.seal(  # another #3, made by hand with Mallory's key
            kind=EntryKind.CHANGE,
            tenant_id=tenant.id,
            database="notes",
            document_id=os.urandom(16),
            author=me,
            author_seq=3,
            timestamp_ms=int(time.time() * 1000),
            deps=[],
            key_id=key.key_id,
            key=key.secret,
            payload=b"the other branch",
            prev=chain[1].id,
        )
        await cluster.partition([mallory], [admin, bob])  # the thief reaches the admin only
        admin_node = cluster.nodes[admin].require()
        assert admin_node.ingest([second.raw]).added == [second.id]
        await cluster.wait_converged(timeout=30, among=[admin, bob])
        for index in (admin, bob):
            node = cluster.nodes[index].require()
            forks = node.store.forks(tenant.id)
            assert [(f.author, f.seq) for f in forks] == [(me.public_key, 3)], index
            assert set(forks[0].evidence) == {chain[2].id, second.id}
            readable = {e.id for e in node.store.iter_entries(tenant.id, "notes")}
            assert readable == {chain[0].id, chain[1].id}
            assert cluster.db(index, "acme", "notes").get(doc) == {"n": 2}
            assert node.fsck().ok
