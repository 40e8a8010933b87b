"""The daemon's gossip bridge without sockets: what the validator accepts, scores or drops,
and what delivery does (stores holding the Node, tagged gossip; a gap or an announce of an
entry we lack wakes a session with the sender)."""

from __future__ import annotations

import os
from collections.abc import Callable

from mindoo_p2p.admission import VerifiedEntry
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.daemon import GOSSIP_PENALTY, GossipBridge, NodeAccess, Origin, PeerTable
from mindoo_p2p.entry import NO_PREV, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.keyring import DEFAULT_KEY
from mindoo_p2p.node import Node
from mindoo_p2p.writer import seal_drafts

MakeNode = Callable[[str], Node]


class Recorder:
    def __init__(self) -> None:
        self.woken: list[str] = []
        self.penalties: list[tuple[str, int, str]] = []

    def wake(self, peer_id: str) -> None:
        self.woken.append(peer_id)

    def penalize(self, peer_id: str, points: int, reason: str) -> None:
        self.penalties.append((peer_id, points, reason))


def bridge_for(node: Node, recorder: Recorder) -> GossipBridge:
    return GossipBridge(
        NodeAccess(node), PeerTable(), wake=recorder.wake, penalize=recorder.penalize
    )


def two_changes(node: Node) -> list[Entry]:
    """A document's first change and a second one whose parent is the first."""
    db = node.tenants()[0].create_db("notes")
    doc = db.create_document({"n": 0})
    with db.change(doc) as d:
        d["n"] = 1
    return list(node.store.iter_entries(node.tenants()[0].id, "notes"))


class NobodyWroteYet:
    """Author positions of a store where the author has written nothing."""

    def last_seq(self, tenant_id: bytes, author: bytes) -> int:
        return 0

    def last_entry_id(self, tenant_id: bytes, author: bytes) -> bytes:
        return NO_PREV


async def test_the_validator_accepts_members_drops_refused_and_fails_forgeries(
    make_node: MakeNode,
) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    first, _ = two_changes(bob)
    bridge = bridge_for(alice, Recorder())
    validated = bridge._validate_gossip(first.raw)
    assert isinstance(validated, VerifiedEntry) and validated.id == first.id
    assert bridge._validate_gossip(b"garbage") is False
    log_entry = next(iter(alice.store.iter_entries(tenant.id, TENANT_LOG)))
    assert bridge._validate_gossip(log_entry.raw) is False  # travels by reconciliation only
    forged = bytearray(first.raw)
    forged[-1] ^= 1
    assert bridge._validate_gossip(bytes(forged)) is False
    stranger_draft = tenant.draft(
        kind=EntryKind.CHANGE,
        database="notes",
        document_id=os.urandom(16),
        deps=(),
        key=tenant.keyring.current(DEFAULT_KEY),
        payload=b"x",
        author=SigningKeyPair.generate(),
    )
    (stranger,) = seal_drafts([stranger_draft], NobodyWroteYet())  # sealed, never stored
    assert bridge._validate_gossip(stranger.raw) is None  # authentic, refused: nobody scored
    carol = make_node("carol")
    carol.create_tenant("other")
    assert bridge._validate_gossip(two_changes(carol)[0].raw) is False


async def test_a_delivered_entry_is_stored_as_gossip_and_a_gap_wakes_the_sender(
    make_node: MakeNode,
) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    first, second = two_changes(bob)
    recorder = Recorder()
    bridge = bridge_for(alice, recorder)
    origins: list[Origin | None] = []
    access = bridge._access
    alice.add_listener(lambda entries, local: origins.append(access.origin_of_current_thread()))
    await bridge._on_gossip_entry(second.raw, "bob")  # its parent never reached us
    assert alice.store.has(second.id)
    assert recorder.woken == ["bob"]
    await bridge._on_gossip_entry(first.raw, "bob")  # no gap: nobody is woken
    assert recorder.woken == ["bob"]
    assert origins == [Origin.GOSSIP, Origin.GOSSIP]


async def test_an_announce_of_an_entry_we_lack_wakes_the_sender(make_node: MakeNode) -> None:
    alice = make_node("alice")
    alice.create_tenant("acme")
    held = two_changes(alice)[0]
    recorder = Recorder()
    bridge = bridge_for(alice, recorder)
    bridge._on_announce(held.id, "p1")
    bridge._on_announce(os.urandom(32), "p2")
    assert recorder.woken == ["p2"]


async def test_an_invalid_message_scores_its_forwarder(make_node: MakeNode) -> None:
    recorder = Recorder()
    bridge = bridge_for(make_node("alice"), recorder)
    bridge._on_gossip_invalid("p", "bad signature")
    assert recorder.penalties == [("p", GOSSIP_PENALTY, "invalid gossip: bad signature")]


async def test_without_a_running_service_nothing_is_published_or_subscribed(
    make_node: MakeNode,
) -> None:
    alice = make_node("alice")
    alice.create_tenant("acme")
    bridge = bridge_for(alice, Recorder())
    await bridge.refresh_topics()
    bridge.publish(two_changes(alice))
    assert not bridge.holds({(alice.tenants()[0].id, "notes")})
    assert not bridge._admit("p", "any topic")
    assert bridge._publish_receive.statistics().current_buffer_used == 0


async def test_an_entry_on_another_databases_topic_scores_its_forwarder(
    make_node: MakeNode,
) -> None:
    """Issue 9 (low): gossip validation ignored the topic. An authentic entry of database
    ``notes`` sent on the topic of ``hr`` (or on a topic this node does not know) is refused
    and blames the forwarder; on its own topic it is accepted."""
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    tenant.create_db("notes")
    tenant.create_db("hr")
    first, _ = two_changes(bob)
    bridge = bridge_for(alice, Recorder())
    own, other = (bridge._topic(tenant, name) for name in ("notes", "hr"))
    bridge._topics.update({own: (tenant.id, "notes"), other: (tenant.id, "hr")})  # subscribed
    assert isinstance(bridge._validate_gossip(first.raw, own), VerifiedEntry)
    assert bridge._validate_gossip(first.raw, other) is False
    assert bridge._validate_gossip(first.raw, "not-a-topic-we-hold") is False


async def test_a_gossiped_entry_above_a_known_fork_is_dropped_and_not_scored(
    make_node: MakeNode,
) -> None:
    """Issue 9 finding 1, follow-up: the validator saw membership only, so an entry above a
    known fork passed validation (gossip forwarded it) and was refused only at ingest. With
    the fork in the validator's snapshot it is dropped: None (not delivered, not forwarded,
    nobody scored: the forwarder may have stored it before the fork was known)."""
    admin, mallory = make_node("admin"), make_node("mallory")
    tenant = admin.create_tenant("acme")
    mallory.join(admin.invite(tenant, mallory.public_identity()))
    mdb = mallory.tenant("acme").create_db("notes")
    doc = mdb.create_document({"n": 1})
    mdb.update(doc, {"n": 2})
    me = mallory.identity.signing.public_key
    one, two = sorted(
        (e for e in mallory.store.iter_entries(tenant.id, "notes") if e.author == me),
        key=lambda e: e.author_seq,
    )
    assert not admin.ingest([one.raw]).rejected
    mdb.update(doc, {"n": 3})  # Mallory's #3, gossiped below
    three = next(e for e in mallory.store.iter_entries(tenant.id, "notes") if e.author_seq == 3)
    recorder = Recorder()
    bridge = bridge_for(admin, recorder)
    assert isinstance(bridge._validate_gossip(three.raw), VerifiedEntry)  # no fork known yet
    branch = forge_at(mallory, tenant.id, 2, one.id)  # another #2, made with Mallory's key
    assert admin.ingest([two.raw, branch.raw]).added == [two.id, branch.id]
    assert [(f.author, f.seq) for f in admin.store.forks(tenant.id)] == [(me, 2)]
    assert bridge._validate_gossip(three.raw) is None  # dropped, not forwarded, not scored
    await bridge._on_gossip_entry(three.raw, "mallory")  # and ingest refuses it as well
    assert not admin.store.has(three.id) and recorder.penalties == []


def forge_at(node: Node, tenant_id: bytes, seq: int, prev: bytes) -> Entry:
    """An entry signed by ``node``'s key at ``seq``, crafted by hand (as a thief would)."""
    key = node.tenant("acme").keyring.current(DEFAULT_KEY)
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=tenant_id,
        database="notes",
        document_id=os.urandom(16),
        author=node.identity.signing,
        author_seq=seq,
        timestamp_ms=1,
        deps=[],
        key_id=key.key_id,
        key=key.secret,
        payload=b"the other branch",
        prev=prev,
    )
