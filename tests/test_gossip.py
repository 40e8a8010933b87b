"""Gossip over real py-libp2p GossipSub on loopback: delivery, validation, bursts, admission.

Every host listens on 127.0.0.1 only; each test is bounded with trio.fail_after. Entries are
real sealed entries; each node's validator decodes and checks the signature, as the daemon's
will. Figures (latency, delivery rates) are printed: run with -s to see them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from operator import contains

import pytest
import trio
from helpers import eventually, seal_entry
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from mindoo_p2p.crypto.signing import SigningKeyPair
from mindoo_p2p.entry import MAX_ENTRY_SIZE, Entry, EntryKind
from mindoo_p2p.errors import DecodeError, VerificationError
from mindoo_p2p.net.gossip import (
    ANNOUNCE_DOMAIN,
    MAX_INLINE_ENTRY,
    FrameKind,
    GossipError,
    GossipService,
    GossipTuning,
    decode_frame,
    encode_frame,
    message_id,
    topic_name,
)
from mindoo_p2p.net.host import HostConfig, PeerHost
from mindoo_p2p.net.peer_identity import to_libp2p_id

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
FAST = HostConfig(dial_timeout=3.0, stream_timeout=5.0, close_timeout=3.0)
TENANT = bytes(range(16))
SECRET = b"membership-key-0123456789abcdef"
TOPIC = topic_name(SECRET, TENANT, "notes")
AUTHOR = SigningKeyPair(bytes(32))
DOC_KEY = bytes(32)
_seq = iter(range(1, 1 << 62))


def seal(payload: bytes, *, database: str = "notes") -> Entry:
    return seal_entry(
        kind=EntryKind.CHANGE,
        tenant_id=TENANT,
        database=database,
        document_id=os.urandom(16),
        author=AUTHOR,
        author_seq=next(_seq),
        timestamp_ms=int(time.time() * 1000),
        key_id=bytes(16),
        key=DOC_KEY,
        payload=payload,
    )


def entry_is_valid(raw: bytes) -> bool:
    """What the daemon's validator checks, minus membership: decodes, signature holds."""
    try:
        Entry.decode(raw).verify_signature()
    except (DecodeError, VerificationError):
        return False
    return True


@dataclass
class Node:
    """A host, its gossip service and everything its callbacks saw."""

    host: PeerHost
    gossip: GossipService
    entries: list[tuple[bytes, str]] = field(default_factory=list)
    announcements: list[tuple[bytes, str]] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    arrival: dict[bytes, float] = field(default_factory=dict)
    validated: list[bytes] = field(default_factory=list)
    received_ids: set[bytes] = field(default_factory=set)

    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    def entry_ids(self) -> set[bytes]:
        return self.received_ids


def make_node(
    *,
    inline_limit: int = 64 * 1024,
    reject: Callable[[bytes], bool] = lambda raw: False,
    admit: Callable[[str, str], bool] | None = None,
    tuning: GossipTuning | None = None,
) -> Node:
    host = PeerHost(os.urandom(32), [LOOPBACK], config=FAST)
    node: Node

    def validate(raw: bytes, topic: str) -> bool:
        node.validated.append(raw)
        return entry_is_valid(raw) and not reject(raw)

    def on_entry(raw: bytes, peer: str) -> None:
        entry_id = Entry.decode(raw).id
        node.entries.append((raw, peer))
        node.received_ids.add(entry_id)
        node.arrival[entry_id] = time.perf_counter()

    def on_announce(entry_id: bytes, peer: str) -> None:
        node.announcements.append((entry_id, peer))
        node.arrival[entry_id] = time.perf_counter()

    gossip = GossipService(
        host,
        on_entry=on_entry,
        validate=validate,
        on_announce=on_announce,
        inline_limit=inline_limit,
        admit=admit,
        on_invalid=lambda peer, reason: node.invalid.append((peer, reason)),
        tuning=tuning,
    )
    node = Node(host, gossip)
    return node


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    """Run every node's host, then its gossip service (before any dial)."""
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        for node in nodes:
            await stack.enter_async_context(node.host.run())
            await nursery.start(node.gossip.run)
        yield
        nursery.cancel_scope.cancel()


async def connect(a: Node, b: Node) -> None:
    await a.host.connect(b.host.listen_addrs()[0])


wait_until = partial(eventually, timeout=None, poll=0.005)
"""Unbounded here: every test bounds itself with trio.fail_after."""


async def wait_meshed(a: Node, b: Node, topic: str = TOPIC) -> None:
    """Until a and b forward ``topic`` to each other."""
    await wait_until(
        lambda: b.peer_id in a.gossip.mesh_peers(topic) and a.peer_id in b.gossip.mesh_peers(topic)
    )


async def line(nodes: list[Node], topic: str = TOPIC) -> None:
    """Subscribe every node, connect them in a line and wait for the meshes."""
    for node in nodes:
        await node.gossip.subscribe(topic)
    for left, right in itertools.pairwise(nodes):
        await connect(left, right)
    for left, right in itertools.pairwise(nodes):
        await wait_meshed(left, right, topic)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(seconds: list[float]) -> str:
    return (
        f"median {statistics.median(seconds) * 1e3:.2f} p99 {percentile(seconds, 0.99) * 1e3:.2f}"
    )


# ---------------------------------------------------------------------------------------------
# Pure parts: topic names, frames, message ids


def test_topic_names_are_opaque_and_differ_per_secret_tenant_and_database() -> None:
    other_secret = b"another-membership-key-0123456789"
    other_tenant = bytes(16)
    names = {
        topic_name(SECRET, TENANT, "notes"),
        topic_name(other_secret, TENANT, "notes"),
        topic_name(SECRET, other_tenant, "notes"),
        topic_name(SECRET, TENANT, "tasks"),
        topic_name(SECRET, TENANT, "_tenant"),
    }
    assert len(names) == 5
    assert topic_name(SECRET, TENANT, "notes") == TOPIC  # deterministic
    for name in names:
        assert name.startswith("mindoo/") and len(name) == len("mindoo/") + 32
        int(name.removeprefix("mindoo/"), 16)  # hex only
        assert "notes" not in name and TENANT.hex() not in name and SECRET.hex() not in name
    with pytest.raises(ValueError):
        topic_name(b"short", TENANT, "notes")
    with pytest.raises(ValueError):
        topic_name(SECRET, b"\x00" * 15, "notes")
    with pytest.raises(ValueError):
        topic_name(SECRET, TENANT, "Not A Name")


def test_frames_round_trip_and_garbage_is_rejected() -> None:
    raw = seal(b"hello").raw
    inline = encode_frame(FrameKind.ENTRY, raw)
    assert decode_frame(inline).payload == raw
    assert decode_frame(inline).entry_id == Entry.decode(raw).id
    entry_id = Entry.decode(raw).id
    announce = encode_frame(FrameKind.ANNOUNCEMENT, entry_id)
    assert decode_frame(announce).kind is FrameKind.ANNOUNCEMENT
    assert decode_frame(announce).entry_id == entry_id

    # Message ids: the entry id inline, a domain-separated id for an announcement.
    assert message_id(inline) == entry_id
    assert message_id(announce) != entry_id
    assert message_id(announce) == hashlib.sha256(ANNOUNCE_DOMAIN + entry_id).digest()

    garbage = [
        b"",
        b"\x01",
        b"\x02\x01" + raw,  # unknown version
        b"\x01\x03" + raw,  # unknown kind
        b"\x01\x01",  # empty inline entry
        b"\x01\x02" + entry_id[:31],  # short announcement
        b"\x01\x02" + entry_id + b"\x00",  # long announcement
        b"\x01\x01" + bytes(MAX_INLINE_ENTRY + 1),  # oversized inline entry
    ]
    for data in garbage:
        with pytest.raises(DecodeError):
            decode_frame(data)
        assert message_id(data) not in (entry_id, message_id(announce))
    with pytest.raises(ValueError):
        encode_frame(FrameKind.ANNOUNCEMENT, b"\x00" * 31)
    with pytest.raises(ValueError):
        encode_frame(FrameKind.ENTRY, b"")


def test_tuning_and_inline_limit_are_bounded() -> None:
    host = PeerHost(os.urandom(32), [LOOPBACK], config=FAST)
    with pytest.raises(ValueError):
        GossipService(
            host,
            on_entry=lambda raw, peer: None,
            validate=lambda raw, topic: True,
            on_announce=lambda entry_id, peer: None,
            inline_limit=MAX_INLINE_ENTRY + 1,
        )
    with pytest.raises(ValueError):
        GossipTuning(peer_queue_size=2)
    with pytest.raises(ValueError):
        GossipTuning(mesh_degree=20)


# ---------------------------------------------------------------------------------------------
# Three nodes in a line


@pytest.mark.parametrize("in_thread", [False, True], ids=["inline-validate", "thread-validate"])
async def test_line_inline_announcement_and_validator_stops_at_first_hop(in_thread: bool) -> None:
    b_rejects: set[bytes] = set()
    a = make_node(inline_limit=4096)
    b = make_node(
        reject=lambda raw: raw in b_rejects, tuning=GossipTuning(validate_in_thread=in_thread)
    )
    c = make_node()
    with trio.fail_after(30):
        async with running(a, b, c):
            await line([a, b, c])

            # Inline: a small entry reaches the far end whole, each hop from its neighbour.
            small = seal(b"small change")
            await a.gossip.publish_entry(TOPIC, small.raw)
            await wait_until(lambda: small.id in c.entry_ids())
            assert b.entries == [(small.raw, a.peer_id)]
            assert c.entries == [(small.raw, b.peer_id)]

            # Over the limit: only its id travels, as an announcement.
            big = seal(os.urandom(10_000))
            await a.gossip.publish_entry(TOPIC, big.raw)
            await wait_until(lambda: big.id in c.arrival)
            assert b.announcements == [(big.id, a.peer_id)]
            assert c.announcements == [(big.id, b.peer_id)]
            assert big.id not in c.entry_ids()

            # A message b's validator rejects is stopped at b: c never sees it, though a
            # valid entry published after it does arrive.
            poisoned = seal(b"b's validator refuses this one")
            b_rejects.add(poisoned.raw)
            await a.gossip.publish_entry(TOPIC, poisoned.raw)
            after = seal(b"after the poisoned one")
            await a.gossip.publish_entry(TOPIC, after.raw)
            await wait_until(lambda: after.id in c.entry_ids())
            # Validated in a thread, the poisoned message's verdict may be reported after the
            # next message has gone through: wait for it, then check nothing got past b.
            await wait_until(lambda: bool(b.invalid))
            assert poisoned.id not in b.entry_ids() | c.entry_ids()
            assert poisoned.raw not in c.validated  # never reached c at all
            assert b.invalid == [(a.peer_id, "entry failed validation")]
            assert b.gossip.stats.rejected == 1 and c.gossip.stats.rejected == 0

            # Our own publishes never come back to us, and are not re-validated.
            assert a.entries == [] and a.announcements == [] and a.validated == []
            assert a.gossip.stats.published_entries == 3
            assert a.gossip.stats.published_announcements == 1


@pytest.mark.parametrize("in_thread", [False, True], ids=["inline-validate", "thread-validate"])
async def test_what_the_validator_made_is_handed_to_on_entry(in_thread: bool) -> None:
    """A validator may return its own value (the daemon's verified entry) instead of True:
    delivery hands that value over instead of the raw bytes, so what is delivered is never
    checked again. (py-libp2p may itself validate one message twice: a second copy that
    arrives while the first is being validated in a thread is not in its seen-cache yet; a
    clean-clone run of the suite saw it once. That is the library's, not this hand-over's.)"""
    a = make_node()
    host = PeerHost(os.urandom(32), [LOOPBACK], config=FAST)
    validated: list[bytes] = []
    delivered: list[tuple[object, str]] = []

    @dataclass(frozen=True)
    class Checked:
        raw: bytes

    def validate(raw: bytes, topic: str) -> Checked | bool:
        validated.append(raw)
        return Checked(raw) if entry_is_valid(raw) else False

    def on_entry(item: object, peer: str) -> None:
        delivered.append((item, peer))

    gossip = GossipService(
        host,
        on_entry=on_entry,
        validate=validate,
        on_announce=lambda entry_id, peer: None,
        tuning=GossipTuning(validate_in_thread=in_thread),
    )
    b = Node(host, gossip)
    with trio.fail_after(30):
        async with running(a, b):
            await line([a, b])
            entry = seal(b"checked once")
            await a.gossip.publish_entry(TOPIC, entry.raw)
            await wait_until(lambda: bool(delivered))
    assert set(validated) == {entry.raw} and len(validated) <= 2
    assert delivered[0] == (Checked(entry.raw), a.peer_id)
    assert all(item == Checked(entry.raw) for item, _ in delivered)  # never the raw bytes


async def test_latency_per_hop_and_over_a_three_node_line() -> None:
    a, b, c = make_node(), make_node(), make_node()
    rounds = 150
    hop1: list[float] = []
    hop2: list[float] = []
    whole: list[float] = []
    with trio.fail_after(60):
        async with running(a, b, c):
            await line([a, b, c])
            for index in range(rounds):
                entry = seal(b"latency probe %d" % index + bytes(200))
                sent = time.perf_counter()
                await a.gossip.publish_entry(TOPIC, entry.raw)
                await wait_until(partial(contains, c.arrival, entry.id), poll=0.0005)
                hop1.append(b.arrival[entry.id] - sent)
                hop2.append(c.arrival[entry.id] - b.arrival[entry.id])
                whole.append(c.arrival[entry.id] - sent)
    assert len(c.entries) == rounds and len(b.entries) == rounds
    print(
        f"\ngossip latency over {rounds} entries of ~400 B (ms): hop a->b {summary(hop1)};"
        f" hop b->c {summary(hop2)}; line a->c {summary(whole)}"
    )
    assert statistics.median(whole) < 0.25


# ---------------------------------------------------------------------------------------------
# Defect 3: bursts must not be dropped


async def test_burst_of_300_publishes_reaches_the_neighbour_and_the_far_end() -> None:
    a, b, c = make_node(), make_node(), make_node()
    count = 300
    entries = [seal(b"burst %d" % index + bytes(100)) for index in range(count)]
    with trio.fail_after(60):
        async with running(a, b, c):
            await line([a, b, c])
            started = time.perf_counter()
            for entry in entries:
                await a.gossip.publish_entry(TOPIC, entry.raw)
            published = time.perf_counter() - started
            want = {entry.id for entry in entries}
            with trio.move_on_after(20):
                await wait_until(lambda: want <= b.entry_ids() and want <= c.entry_ids())
            elapsed = time.perf_counter() - started
    got_b, got_c = len(want & b.entry_ids()), len(want & c.entry_ids())
    print(
        f"\nburst of {count}: neighbour got {got_b}/{count}, far end {got_c}/{count};"
        f" publish took {published * 1e3:.0f} ms, all delivered after {elapsed * 1e3:.0f} ms"
        f" ({count / elapsed:.0f} entries/s); stalls {a.gossip.stats.publish_stalls},"
        f" dropped deliveries {b.gossip.stats.dropped_deliveries}"
    )
    assert got_b == count
    assert got_c == count


async def test_paced_publishing_loses_nothing_even_with_tiny_queues() -> None:
    tuning = GossipTuning(peer_queue_size=16)  # py-libp2p's default is 32; ours 512
    a, b = make_node(tuning=tuning), make_node(tuning=tuning)
    entries = [seal(b"paced %d" % index) for index in range(300)]
    want = {entry.id for entry in entries}
    with trio.fail_after(60):
        async with running(a, b):
            await line([a, b])
            started = time.perf_counter()
            for entry in entries:
                await a.gossip.publish_entry(TOPIC, entry.raw)
            with trio.move_on_after(20):
                await wait_until(lambda: want <= b.entry_ids())
            elapsed = time.perf_counter() - started
    print(
        f"\npaced burst of 300 through 16-RPC queues: {len(want & b.entry_ids())}/300 in"
        f" {elapsed * 1e3:.0f} ms"
    )
    assert want <= b.entry_ids()
    assert a.gossip.stats.publish_stalls == 0


# ---------------------------------------------------------------------------------------------
# Hostile input


@asynccontextmanager
async def raw_gossipsub_peer(host: PeerHost) -> AsyncIterator[Pubsub]:
    """A plain py-libp2p GossipSub peer with no validator: it publishes whatever it is given."""
    router = GossipSub(
        protocols=[PROTOCOL_ID_V11],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host.libp2p_host, router, strict_signing=True)
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        yield pubsub


async def test_garbage_on_the_topic_is_dropped_and_never_forwarded() -> None:
    attacker_host = PeerHost(os.urandom(32), [LOOPBACK], config=FAST)
    b, c = make_node(), make_node()
    valid = seal(b"a fine entry")
    garbage = [
        b"",
        b"\x07\x01" + valid.raw,  # unknown frame version
        b"\x01\x09" + valid.raw,  # unknown kind
        b"\x01\x02" + b"\x00" * 5,  # short announcement
        b"\x01\x01" + b"not an entry at all",  # inline bytes that are no entry
        b"\x01\x01" + valid.raw[:-1] + bytes([valid.raw[-1] ^ 1]),  # bad signature
        os.urandom(3000),
    ]
    with trio.fail_after(30):
        async with running(b, c), attacker_host.run(), raw_gossipsub_peer(attacker_host) as evil:
            await line([b, c])
            await evil.subscribe(TOPIC)
            await attacker_host.connect(b.host.listen_addrs()[0])
            await wait_until(lambda: attacker_host.peer_id in b.gossip.topic_peers(TOPIC))
            b_id = to_libp2p_id(b.peer_id)
            await wait_until(lambda: b_id in evil.router.mesh.get(TOPIC, ()))
            for data in garbage:
                await evil.publish(TOPIC, data)
            # A message on two topics, one of them ours, is refused too.
            await evil.publish(
                [TOPIC, "mindoo/elsewhere"], encode_frame(FrameKind.ENTRY, valid.raw)
            )
            # Then a valid entry from the same peer: b takes it and forwards it to c.
            await evil.publish(TOPIC, encode_frame(FrameKind.ENTRY, valid.raw))
            await wait_until(lambda: valid.id in c.entry_ids())
    assert b.entries == [(valid.raw, attacker_host.peer_id)]
    assert c.entries == [(valid.raw, b.peer_id)]
    assert b.announcements == [] and c.announcements == []
    assert b.gossip.stats.rejected == len(garbage)
    assert b.invalid == [(attacker_host.peer_id, reason) for _, reason in b.invalid]
    assert len(b.invalid) == len(garbage)
    # The two-topic message names a topic b is not in: dropped before validation, unscored
    # (rejected counts only the garbage above). A dropped message is never marked seen, so the
    # attacker's IHAVE may make b fetch it once more within the gossip window (seen under load):
    # dropped again, never validated, never forwarded.
    assert 1 <= b.gossip.stats.dropped_unadmitted <= 3
    assert c.gossip.stats.rejected == 0 and c.invalid == []  # nothing was forwarded


# ---------------------------------------------------------------------------------------------
# Admission, subscription management and bounds


async def test_unadmitted_peer_learns_no_topic_and_gets_nothing_until_admitted() -> None:
    allowed: set[str] = set()
    a = make_node(admit=lambda peer, topic: peer in allowed)
    member, outsider = make_node(), make_node()
    with trio.fail_after(30):
        async with running(a, member, outsider):
            allowed.add(member.peer_id)
            for node in (a, member, outsider):
                await node.gossip.subscribe(TOPIC)
            await connect(member, a)
            await connect(outsider, a)
            await wait_meshed(a, member)
            first = seal(b"members only")
            await a.gossip.publish_entry(TOPIC, first.raw)
            await wait_until(lambda: first.id in member.entry_ids())
            await trio.sleep(0.3)  # give a leak time to show
            # a never told the outsider its topic, and ignores the outsider's subscription.
            assert outsider.gossip.topic_peers(TOPIC) == frozenset()
            assert a.gossip.topic_peers(TOPIC) == {member.peer_id}
            assert outsider.entries == []

            allowed.add(outsider.peer_id)
            a.gossip.refresh_admission(outsider.peer_id)
            await wait_meshed(a, outsider)
            second = seal(b"now admitted")
            await a.gossip.publish_entry(TOPIC, second.raw)
            await wait_until(lambda: second.id in outsider.entry_ids())
            # (Once admitted it may also get `first` replayed from the recent-message cache.)

            # Revoked: a stops counting the outsider and tells it it left the topic.
            allowed.discard(outsider.peer_id)
            a.gossip.refresh_admission()
            assert a.gossip.topic_peers(TOPIC) == {member.peer_id}
            assert outsider.peer_id not in a.gossip.mesh_peers(TOPIC)
            await wait_until(lambda: a.peer_id not in outsider.gossip.topic_peers(TOPIC))
            third = seal(b"members only again")
            await a.gossip.publish_entry(TOPIC, third.raw)
            await wait_until(lambda: third.id in member.entry_ids())
            await trio.sleep(0.3)
            assert third.id not in outsider.entry_ids()


async def test_unadmitted_peer_is_ignored_even_when_it_breaks_the_protocol() -> None:
    attacker_host = PeerHost(os.urandom(32), [LOOPBACK], config=FAST)
    b = make_node(admit=lambda peer, topic: peer != attacker_host.peer_id)
    b_id = to_libp2p_id(b.peer_id)
    injected = seal(b"valid, but from a peer b does not admit")
    secret = seal(b"b's own entry")
    with trio.fail_after(30):
        async with running(b), attacker_host.run(), raw_gossipsub_peer(attacker_host) as evil:
            await b.gossip.subscribe(TOPIC)
            subscription = await evil.subscribe(TOPIC)
            await attacker_host.connect(b.host.listen_addrs()[0])
            await wait_until(lambda: b_id in evil.peers)
            await trio.sleep(0.2)
            assert b_id not in evil.peer_topics.get(TOPIC, set())  # b never told it the topic

            # It acts as if b had subscribed and grafted it, and publishes: b drops it unread.
            evil.peer_topics.setdefault(TOPIC, set()).add(b_id)
            evil.router.mesh[TOPIC].add(b_id)
            await evil.publish(TOPIC, encode_frame(FrameKind.ENTRY, injected.raw))
            await wait_until(lambda: b.gossip.stats.dropped_unadmitted >= 1)

            # It asks b for b's latest message by its (guessable) origin + seqno cache key.
            await b.gossip.publish_entry(TOPIC, secret.raw)
            pubsub = b.gossip._pubsub
            assert pubsub is not None
            cache_key = b_id.to_bytes() + pubsub.counter.to_bytes(8, "big")
            assert pubsub.router.mcache.get(cache_key) is not None
            await evil.router.emit_iwant([cache_key], b_id)  # type: ignore[attr-defined]
            received: list[bytes] = []  # its own publish comes back to it locally
            with trio.move_on_after(0.5):
                while True:
                    received.append((await subscription.get()).data)
            assert encode_frame(FrameKind.ENTRY, injected.raw) in received
            assert encode_frame(FrameKind.ENTRY, secret.raw) not in received
    assert b.entries == [] and b.validated == [] and b.invalid == []


async def test_subscribe_is_idempotent_bounded_and_unsubscribe_stops_delivery() -> None:
    a = make_node(tuning=GossipTuning(max_topics=2))
    b = make_node()
    other = topic_name(SECRET, TENANT, "tasks")
    with trio.fail_after(30):
        async with running(a, b):
            with pytest.raises(GossipError):
                await a.gossip.publish_entry(TOPIC, seal(b"x").raw)  # not subscribed
            await a.gossip.subscribe(TOPIC)
            await a.gossip.subscribe(TOPIC)
            await a.gossip.subscribe(other)
            assert a.gossip.topics() == {TOPIC, other}
            with pytest.raises(GossipError):
                await a.gossip.subscribe(topic_name(SECRET, TENANT, "third"))
            with pytest.raises(ValueError):
                await a.gossip.subscribe("bad\ntopic")
            with pytest.raises(ValueError):
                await a.gossip.publish_entry(TOPIC, bytes(MAX_ENTRY_SIZE + 1))

            # b subscribes to both; the topic a joined first is meshed once they connect.
            await b.gossip.subscribe(TOPIC)
            await b.gossip.subscribe(other)
            await connect(a, b)
            await wait_meshed(a, b, TOPIC)
            await wait_meshed(a, b, other)
            one = seal(b"on notes")
            await b.gossip.publish_entry(TOPIC, one.raw)
            await wait_until(lambda: one.id in a.entry_ids())

            await a.gossip.unsubscribe(TOPIC)
            await a.gossip.unsubscribe(TOPIC)  # no-op
            assert a.gossip.topics() == {other}
            await wait_until(lambda: a.peer_id not in b.gossip.topic_peers(TOPIC))
            two = seal(b"notes again")
            three = seal(b"on tasks", database="tasks")
            await b.gossip.publish_entry(TOPIC, two.raw)
            await b.gossip.publish_entry(other, three.raw)
            await wait_until(lambda: three.id in a.entry_ids())
            assert two.id not in a.entry_ids()


async def test_peers_connected_before_gossip_started_are_picked_up() -> None:
    a, b = make_node(), make_node()
    with trio.fail_after(30):
        async with a.host.run(), b.host.run(), trio.open_nursery() as nursery:
            await connect(a, b)  # before either gossip service runs
            await nursery.start(a.gossip.run)
            await nursery.start(b.gossip.run)
            await a.gossip.subscribe(TOPIC)
            await b.gossip.subscribe(TOPIC)
            await wait_meshed(a, b)
            entry = seal(b"late starter")
            await a.gossip.publish_entry(TOPIC, entry.raw)
            await wait_until(lambda: entry.id in b.entry_ids())
            nursery.cancel_scope.cancel()
    assert b.entries == [(entry.raw, a.peer_id)]


async def test_gossip_resumes_after_a_reconnect() -> None:
    a, b = make_node(), make_node()
    with trio.fail_after(30):
        async with running(a, b):
            await line([a, b])
            await b.host.disconnect(a.peer_id)
            await wait_until(
                lambda: not a.gossip.topic_peers(TOPIC) and not b.gossip.topic_peers(TOPIC)
            )
            assert a.gossip.mesh_peers(TOPIC) == frozenset()
            await connect(b, a)
            await wait_meshed(a, b)
            entry = seal(b"after the reconnect")
            await a.gossip.publish_entry(TOPIC, entry.raw)
            await wait_until(lambda: entry.id in b.entry_ids())
    assert b.entries == [(entry.raw, a.peer_id)]


async def test_a_peer_admitted_to_nothing_is_remembered_for_few_subscriptions() -> None:
    """Issue 9 (low): an unadmitted peer could make a node remember 4096 topic subscriptions.
    Until it is admitted to one of our topics, only a few are kept."""
    allowed: set[str] = set()
    a = make_node(
        admit=lambda peer, topic: peer in allowed,
        tuning=GossipTuning(max_unadmitted_remote_topics=5),
    )
    member, outsider = make_node(), make_node()
    topics = [topic_name(SECRET, TENANT, f"db{i}") for i in range(12)]
    with trio.fail_after(30):
        async with running(a, member, outsider):
            allowed.add(member.peer_id)
            await a.gossip.subscribe(TOPIC)
            for node in (member, outsider):
                await node.gossip.subscribe(TOPIC)
                for topic in topics:
                    await node.gossip.subscribe(topic)
            await connect(member, a)
            await connect(outsider, a)
            await wait_meshed(a, member)
            remembered = a.gossip._pubsub.remote_subscriptions  # type: ignore[union-attr]
            await wait_until(lambda: len(remembered.get(to_libp2p_id(member.peer_id), ())) == 13)
            await trio.sleep(0.3)
            assert len(remembered.get(to_libp2p_id(outsider.peer_id), ())) <= 5
