"""Gossip of sealed entries over GossipSub: the fast, best-effort push path.

Each (tenant, database) has one topic, named by `topic_name`: an HMAC under a secret the daemon
takes from the tenant's membership key, so a name says nothing about its tenant or database.
Gossip is best effort; periodic reconciliation (`sync.driver`) repairs whatever it loses.

Wire format of a gossip message (the pubsub ``Message.data``), version 1::

    version  u8   1
    kind     u8   1 = inline entry, 2 = announcement
    payload       inline entry: the sealed entry, 1 .. MAX_INLINE_ENTRY bytes
                  announcement: the 32-byte entry id of an entry too large to inline

Message id (gossipsub's seen-cache and validation-cache key), from `message_id`: the SHA-256 of
the sealed entry (= the entry id) for an inline entry, SHA-256(ANNOUNCE_DOMAIN + entry id) for
an announcement, and SHA-256(INVALID_DOMAIN + data) for bytes that do not decode. So every copy
of an entry, from any forwarder, is one message, and garbage never takes a real entry's id.

Admission (`admit(peer_id, topic)`, from the daemon: "has this peer proven it may replicate
the topic's tenant"). py-libp2p tells every connected peer every topic we subscribe to, and
sends messages to whoever subscribes, so a peer we only share another tenant with could learn
our topic names and read entry headers and ids it may not see. Here, per peer and topic:
- we announce our subscription only to an admitted peer (none in the hello packet);
- a peer's subscription, its GRAFT and the messages it forwards count only while it is
  admitted; its subscriptions are remembered (bounded) so they take effect once it is;
- messages are only ever queued to effective subscribers of their topic (publish, forward and
  IWANT replies alike: the IWANT cache key, origin + seqno, is guessable).
`refresh_admission` re-applies ``admit`` when a peer's rights change. A message dropped for
admission is not marked seen or invalid, so an admitted peer's copy still counts.

What happens to a message that reaches this node, in order:
1. Admission of its forwarder, as above.
2. Validation, before delivery or forwarding: exactly one topic, one we subscribe to; a frame
   that decodes strictly within its bounds; for an inline entry, the caller's
   ``validate(raw_entry)`` (hash, signature, membership). A rejected message is neither
   delivered nor forwarded; ``on_invalid(peer_id, reason)`` hears of malformed frames and
   failed validation (``validate`` returned False) so the daemon can score the forwarder.
   ``validate`` returns None for an authentic entry this node does not accept that is not the
   forwarder's fault (e.g. by an author revoked after the forwarder stored it): it is dropped
   the same way, and nobody is scored. ``validate`` may return, instead of True, the value it
   made while validating (the daemon's verified entry): delivery hands that value to
   ``on_entry`` in place of the raw bytes, so the entry is not decoded or verified again.
   Every input is bounded before work is done on it: RPCs at 1 MiB, frames at
   MAX_INLINE_ENTRY + 2 bytes, and ``validate`` only sees a strictly decoded inline entry.
   Our own publishes are not passed to ``validate`` (the daemon has just sealed them).
3. Delivery: a dedicated task drains a bounded queue and calls ``on_entry(item, peer)`` (``item``
   is what ``validate`` returned, or the raw entry when it returned True) or
   ``on_announce(entry_id, peer)``; ``peer`` is the neighbour that forwarded the message (for
   an announcement it may not hold the entry yet). Our own publishes are not delivered back.

py-libp2p 0.8.1 GossipSub settings, and why (shared/notes/py-libp2p.md, defect 3: its defaults
drop messages silently):
- Spam protection off. Its cap (10 messages/s per topic per forwarder, our own publishes
  included) runs after validation and local delivery, so it saves no work; it only stops valid
  messages from being forwarded (6.7 % of a 300-message burst arrived with it on).
- Per-peer outbound queues hold `GossipTuning.peer_queue_size` RPCs, not 32, and
  `publish_entry` paces itself: it waits while a mesh peer's queue is over 3/4 full. A peer
  whose queue stays full for `publish_wait` seconds is marked congested and not waited for
  again until its queue drains below 1/4, so one stuck peer cannot stall publishing.
- The library's 32-message subscription channel is bypassed: accepted messages go straight
  into this service's delivery queue (`delivery_queue` messages and `delivery_queue_bytes`),
  drained by its own task; overflow is counted in `GossipStats.dropped_deliveries`.
- Pubsub starts in `run`, which the daemon awaits before it dials anyone; peers connected
  before that are registered explicitly (Pubsub only hears of connections made after it).
- Protocol /meshsub/1.1.0 only. 1.2 adds IDONTWANT, which this implementation sends for every
  message to every mesh peer (no size threshold), doubling the RPCs per small entry; 1.3 adds
  topic observation, which would hand message ids (= entry ids) to any peer that asks.
- Heartbeat every `heartbeat_interval` s (1 s; the library's default is 120 s): mesh repair,
  IHAVE gossip and the message-cache shift run on it. Adaptive gossip off: with few peers it
  rates the network unhealthy and stretches the heartbeat to 30 s; its per-message delivery
  log, which it would otherwise trim, is cleared on every heartbeat. IP-diversity (eclipse)
  grafting off: peers on one LAN or on loopback share addresses.
- The equivocation check is skipped: it keeps every message for a heartbeat to compare
  (origin, seqno) pairs, and with content-addressed ids a reused seqno changes nothing.
- Published and forwarded RPCs go without our signed peer record, which py-libp2p attaches to
  every RPC and every receiver verifies (one more Ed25519 check per message, ~15 % of a
  burst's CPU) for addresses a `PeerHost` never dials.
- Messages are signed by their origin's peer key (strict signing), validation results are
  cached for 30 s (a rejection caused by a membership log that is behind should not stick),
  inbound RPCs are capped at 1 MiB (the size outbound RPCs are split to), a peer's
  subscriptions are capped at `max_remote_topics`, identify-pending messages at 64 per peer
  for 10 s, and this node subscribes to at most `max_topics` topics.

These settings reach into py-libp2p internals (`_GossipPubsub`, `_GossipRouter`); the version
pin in `net.host` guards them.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple

import trio
from libp2p.host.basic_host import BasicHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, TopicValidator
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.tools.anyio_service import background_trio_service

from ..entry import ID_SIZE, MAX_ENTRY_SIZE, TENANT_ID_SIZE, TENANT_LOG, validate_database_name
from ..errors import DecodeError, MindooError
from .host import PeerHost
from .peer_identity import to_libp2p_id

logger = logging.getLogger(__name__)

FRAME_VERSION = 1
MAX_INLINE_ENTRY = 256 * 1024
"""The largest inline entry this node accepts (and the largest `inline_limit` it may use)."""
DEFAULT_INLINE_LIMIT = 64 * 1024
MAX_RPC_SIZE = 1024 * 1024
"""Inbound pubsub RPC cap; outbound RPCs are split to the same size, so peers agree."""
MAX_TOPIC_LENGTH = 128
TOPIC_PREFIX = "mindoo/"
TOPIC_DOMAIN = b"mindoo/gossip-topic/v1\x00"
ANNOUNCE_DOMAIN = b"mindoo/gossip-announce/v1\x00"
INVALID_DOMAIN = b"mindoo/gossip-invalid/v1\x00"

_HEADER_SIZE = 2
_PACE_POLL_S = 0.001
_VALIDATION_CACHE_TTL_S = 30
_SEEN_TTL_S = 120
_REGISTER_TIMEOUT_S = 15.0


class GossipError(MindooError):
    """A gossip operation that cannot be done (not subscribed, too many topics, not running)."""


# ---------------------------------------------------------------------------------------------
# Topic names


def topic_name(secret: bytes, tenant_id: bytes, database: str) -> str:
    """The opaque gossip topic of ``database`` in tenant ``tenant_id``.

    ``"mindoo/"`` + the first 128 bits, in hex, of HMAC-SHA256(secret, domain + tenant id +
    database). Without ``secret`` (the daemon passes the tenant's membership key) the name
    cannot be computed, and it reveals neither the tenant nor the database.
    """
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ValueError("the topic secret must be at least 16 bytes")
    if not isinstance(tenant_id, bytes) or len(tenant_id) != TENANT_ID_SIZE:
        raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
    if database != TENANT_LOG:
        validate_database_name(database)
    mac = hmac.new(secret, TOPIC_DOMAIN + tenant_id + database.encode("ascii"), hashlib.sha256)
    return TOPIC_PREFIX + mac.hexdigest()[:32]


def is_valid_topic(topic: object) -> bool:
    """Whether ``topic`` is a string this node will subscribe to or track for a peer."""
    return (
        isinstance(topic, str)
        and 0 < len(topic) <= MAX_TOPIC_LENGTH
        and topic.isascii()
        and topic.isprintable()
    )


# ---------------------------------------------------------------------------------------------
# Frames


class FrameKind(enum.IntEnum):
    ENTRY = 1
    """The payload is a whole sealed entry."""
    ANNOUNCEMENT = 2
    """The payload is the 32-byte id of an entry too large to inline."""


@dataclass(frozen=True, slots=True)
class GossipFrame:
    """One decoded gossip message."""

    kind: FrameKind
    payload: bytes

    @property
    def entry_id(self) -> bytes:
        """The id of the entry this frame carries or announces."""
        if self.kind is FrameKind.ENTRY:
            return hashlib.sha256(self.payload).digest()
        return self.payload


def encode_frame(kind: FrameKind, payload: bytes) -> bytes:
    """The wire bytes of a frame; ValueError if ``payload`` does not fit ``kind``."""
    if kind is FrameKind.ENTRY and not 0 < len(payload) <= MAX_INLINE_ENTRY:
        raise ValueError(f"an inline entry must be 1..{MAX_INLINE_ENTRY} bytes")
    if kind is FrameKind.ANNOUNCEMENT and len(payload) != ID_SIZE:
        raise ValueError(f"an announcement carries a {ID_SIZE}-byte entry id")
    return bytes((FRAME_VERSION, int(kind))) + payload


def _split_frame(data: bytes) -> tuple[FrameKind, memoryview] | str:
    """(kind, payload view) of a well-formed frame, else the reason it is malformed."""
    if len(data) < _HEADER_SIZE:
        return f"{len(data)} bytes is shorter than a frame header"
    if data[0] != FRAME_VERSION:
        return f"unsupported frame version {data[0]}"
    size = len(data) - _HEADER_SIZE
    if data[1] == FrameKind.ENTRY:
        if not 0 < size <= MAX_INLINE_ENTRY:
            return f"inline entry of {size} bytes (allowed 1..{MAX_INLINE_ENTRY})"
        return FrameKind.ENTRY, memoryview(data)[_HEADER_SIZE:]
    if data[1] == FrameKind.ANNOUNCEMENT:
        if size != ID_SIZE:
            return f"announcement of {size} bytes (expected {ID_SIZE})"
        return FrameKind.ANNOUNCEMENT, memoryview(data)[_HEADER_SIZE:]
    return f"unknown frame kind {data[1]}"


def decode_frame(data: bytes) -> GossipFrame:
    """Strictly decode a gossip message. Raises DecodeError, and only DecodeError."""
    if not isinstance(data, bytes):
        raise DecodeError(f"gossip frame: expected bytes, got {type(data).__name__}")
    split = _split_frame(data)
    if isinstance(split, str):
        raise DecodeError(f"gossip frame: {split}")
    kind, payload = split
    return GossipFrame(kind, bytes(payload))


def message_id(data: bytes) -> bytes:
    """The gossipsub message id of ``data`` (see the module docstring). Never raises."""
    split = _split_frame(data)
    if isinstance(split, str):
        return hashlib.sha256(INVALID_DOMAIN + data).digest()
    kind, payload = split
    if kind is FrameKind.ENTRY:
        return hashlib.sha256(payload).digest()
    return hashlib.sha256(ANNOUNCE_DOMAIN + payload).digest()


def _pubsub_message_id(msg: rpc_pb2.Message) -> bytes:
    return message_id(msg.data)


# ---------------------------------------------------------------------------------------------
# Tuning and status


@dataclass(frozen=True)
class GossipTuning:
    """Bounds and pacing of a `GossipService`; see the module docstring for the reasons."""

    max_topics: int = 1024
    """Topics this node subscribes to at most."""
    max_remote_topics: int = 4096
    """Subscriptions remembered per peer (topics we may subscribe to later included)."""
    max_unadmitted_remote_topics: int = 128
    """Subscriptions remembered per peer while it is admitted to none of our topics (it has
    proven no shared tenant yet): a stranger cannot make us hold thousands of names."""
    peer_queue_size: int = 512
    """Outbound RPCs queued per peer (py-libp2p's default is 32)."""
    delivery_queue: int = 1024
    """Accepted messages waiting for `on_entry` / `on_announce`."""
    delivery_queue_bytes: int = 32 * 1024 * 1024
    """Bytes of accepted messages waiting for delivery."""
    publish_wait: float = 2.0
    """Seconds `publish_entry` waits for room in a full mesh peer's queue."""
    heartbeat_interval: int = 1
    """Seconds between GossipSub heartbeats."""
    mesh_degree: int = 6
    mesh_degree_low: int = 4
    mesh_degree_high: int = 12
    validate_in_thread: bool = False
    """Run ``validate`` in a worker thread (for a validator that may block, e.g. on disk)."""

    def __post_init__(self) -> None:
        positive = (
            "max_topics",
            "max_remote_topics",
            "max_unadmitted_remote_topics",
            "peer_queue_size",
            "delivery_queue",
            "delivery_queue_bytes",
            "heartbeat_interval",
            "mesh_degree_low",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.publish_wait > 0:
            raise ValueError("publish_wait must be positive")
        if not self.mesh_degree_low <= self.mesh_degree <= self.mesh_degree_high:
            raise ValueError("mesh degrees must satisfy low <= degree <= high")
        if self.peer_queue_size < 4:
            raise ValueError("peer_queue_size must be at least 4")


@dataclass
class GossipStats:
    """Counters of one `GossipService`, for status and tests."""

    published_entries: int = 0
    published_announcements: int = 0
    delivered_entries: int = 0
    delivered_announcements: int = 0
    rejected: int = 0
    """Messages refused by validation (malformed, wrong topic, failed ``validate``)."""
    dropped_unadmitted: int = 0
    """Messages dropped because their forwarder is not admitted to the topic."""
    dropped_deliveries: int = 0
    """Accepted messages dropped because the delivery queue was full."""
    publish_stalls: int = 0
    """Publishes that gave up waiting for a congested peer's queue."""


EntryCallback = Callable[[Any, str], Awaitable[None] | None]
"""``on_entry(item, peer_id)``: ``item`` is what the validator returned for the entry, or its
raw bytes when the validator returned True."""
AnnounceCallback = Callable[[bytes, str], None]
Validator = Callable[[bytes, str], object]
"""``validate(raw_entry, topic)``: True: accept; False: invalid (the forwarder is scored); None:
not accepted here, nobody's fault (dropped, not scored); any other value: accept and hand that
value to ``on_entry``."""
_VALIDATED_KEEP = 4096
"""Validated values kept for delivery at most (older ones are dropped: ``on_entry`` then gets
the raw bytes)."""
AdmitCallback = Callable[[str, str], bool]
InvalidCallback = Callable[[str, str], None]


# ---------------------------------------------------------------------------------------------
# py-libp2p Pubsub and GossipSub, adjusted (re-check every override on a libp2p upgrade)

_FORWARDER: ContextVar[ID | None] = ContextVar("mindoo_gossip_forwarder", default=None)
"""The peer that forwarded the message `Pubsub.push_msg` is handling in this task."""


class _ResizingQueues(dict[ID, RpcQueue]):
    """`Pubsub.peer_queues` whose queues hold ``size`` RPCs instead of the hard-coded 32."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __setitem__(self, peer_id: ID, queue: RpcQueue) -> None:
        queue._queue.max_size = self._size
        super().__setitem__(peer_id, queue)


class _GossipRouter(GossipSub):
    """GossipSub that sends messages only to effective (admitted) subscribers of their topic."""

    def __init__(self, tuning: GossipTuning) -> None:
        super().__init__(
            protocols=[PROTOCOL_ID_V11],
            degree=tuning.mesh_degree,
            degree_low=tuning.mesh_degree_low,
            degree_high=tuning.mesh_degree_high,
            heartbeat_interval=tuning.heartbeat_interval,
            gossip_window=3,
            gossip_history=5,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            max_pending_messages_per_peer=64,
            pending_messages_ttl=10.0,
        )

    def _subscribers(self, topic: str) -> set[ID]:
        pubsub = self.pubsub
        return pubsub.peer_topics.get(topic, set()) if pubsub is not None else set()

    def send_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        # The one path by which messages reach a peer's queue (publish, forward, IWANT replies).
        if rpc.publish:
            # py-libp2p attaches our signed peer record to every RPC and each receiver verifies
            # it: one more Ed25519 check and multiaddr parse per message, for addresses a
            # PeerHost never dials. Hello and subscription RPCs still carry it.
            rpc.ClearField("senderRecord")
            allowed = [
                msg
                for msg in rpc.publish
                if msg.topicIDs and all(peer_id in self._subscribers(t) for t in msg.topicIDs)
            ]
            if len(allowed) != len(rpc.publish):
                filtered = rpc_pb2.RPC()
                filtered.CopyFrom(rpc)
                del filtered.publish[:]
                filtered.publish.extend(allowed)
                if not allowed and not filtered.subscriptions and not filtered.HasField("control"):
                    return
                rpc = filtered
        super().send_rpc(peer_id, rpc, priority)

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        # A peer not admitted to the topic gets no mesh slot. No PRUNE either: that would make
        # it back off for a minute, and it may be admitted in a moment. (An admitted peer's
        # GRAFT may overtake its subscription: control RPCs jump its queue.)
        pubsub = self.pubsub
        if not isinstance(pubsub, _GossipPubsub) or not pubsub.admits(
            sender_peer_id, graft_msg.topicID
        ):
            return
        await super().handle_graft(graft_msg, sender_peer_id)

    def _check_equivocation(self, msg: rpc_pb2.Message) -> bool:
        return True

    def _periodic_security_cleanup(self) -> None:
        super()._periodic_security_cleanup()
        self.recent_message_deliveries.clear()  # adaptive gossip (its only reader) is off

    def forget_peer_in_topic(self, peer_id: ID, topic: str) -> None:
        mesh = self.mesh.get(topic)
        if mesh is not None and peer_id in mesh:
            mesh.discard(peer_id)
            if self.scorer is not None:
                self.scorer.on_leave_mesh(peer_id, topic)
        fanout = self.fanout.get(topic)
        if fanout is not None:
            fanout.discard(peer_id)


class _GossipPubsub(Pubsub):
    """Pubsub with admission, one validator for every topic and direct delivery."""

    router: _GossipRouter

    def __init__(
        self,
        host: BasicHost,
        router: _GossipRouter,
        *,
        validator: TopicValidator,
        admits: Callable[[ID, str], bool],
        deliver: Callable[[str, bytes, ID], None],
        tuning: GossipTuning,
        stats: GossipStats,
    ) -> None:
        super().__init__(
            host,
            router,
            strict_signing=True,
            msg_id_constructor=_pubsub_message_id,
            seen_ttl=_SEEN_TTL_S,
            validation_cache_ttl=_VALIDATION_CACHE_TTL_S,
            max_subscriptions_per_peer=tuning.max_topics,
            max_inbound_rpc_size=MAX_RPC_SIZE,
        )
        self.peer_queues = _ResizingQueues(tuning.peer_queue_size)
        self._validator = validator
        self.admits = admits
        """Whether a peer is admitted to a topic we subscribe to."""
        self._deliver = deliver
        self._max_remote_topics = tuning.max_remote_topics
        self._max_unadmitted_remote_topics = tuning.max_unadmitted_remote_topics
        self.remote_subscriptions: dict[ID, set[str]] = {}
        """Every topic each connected peer announced, admitted or not (bounded per peer)."""
        self._announced: dict[ID, set[str]] = {}
        """Our topics each peer was told of (those it is admitted to)."""
        self._stats = stats

    def get_msg_validators(self, msg: rpc_pb2.Message) -> tuple[TopicValidator, ...]:
        # Every message, on any topic, meets our validator, even one in flight while we
        # unsubscribe from its topic (whose per-topic validator would already be gone).
        return (self._validator,)

    def handle_subscription(self, origin_id: ID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
        topic = sub_message.topicid
        if not sub_message.subscribe:
            self.remote_subscriptions.get(origin_id, set()).discard(topic)
            super().handle_subscription(origin_id, sub_message)
            return
        topics = self.remote_subscriptions.setdefault(origin_id, set())
        if topic not in topics:
            admitted = self.admits(origin_id, topic) or bool(self._announced.get(origin_id))
            limit = self._max_remote_topics if admitted else self._max_unadmitted_remote_topics
            if len(topics) >= limit or not is_valid_topic(topic):
                return
            topics.add(topic)
        if self.admits(origin_id, topic):
            super().handle_subscription(origin_id, sub_message)

    def reconcile_admission(self, peers: Iterable[ID]) -> None:
        """For each of ``peers``: its remembered subscriptions take effect exactly when it is
        admitted to their topics, and it is told exactly our topics it is admitted to."""
        for peer_id in peers:
            for topic in tuple(self.remote_subscriptions.get(peer_id, ())):
                active = peer_id in self.peer_topics.get(topic, ())
                wanted = self.admits(peer_id, topic)
                if wanted and not active:
                    sub = rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic)
                    super().handle_subscription(peer_id, sub)
                elif active and not wanted:
                    self._forget_subscription(peer_id, topic)
                    self.router.forget_peer_in_topic(peer_id, topic)
            self._announce_topics(peer_id)

    # Our own subscriptions are announced per peer, only to peers admitted to the topic, so a
    # peer we share no tenant with never learns our topic names (py-libp2p tells every peer).

    def get_hello_packet(self) -> rpc_pb2.RPC:
        packet = super().get_hello_packet()
        del packet.subscriptions[:]  # sent by _announce_topics once the stream is registered
        return packet

    async def _handle_new_peer(self, peer_id: ID) -> None:
        await super()._handle_new_peer(peer_id)
        self._announce_topics(peer_id)

    async def message_all_peers(
        self, raw_msg: bytes, announce: rpc_pb2.RPC.SubOpts | None = None
    ) -> None:
        if announce is None:
            await super().message_all_peers(raw_msg, announce)
            return
        for peer_id in tuple(self.peers):  # our subscribe() or unsubscribe()
            self._announce_topics(peer_id, [announce.topicid])

    def _announce_topics(self, peer_id: ID, topics: Iterable[str] | None = None) -> None:
        queue = self.peer_queues.get(peer_id)
        if queue is None:
            return  # not registered yet: _handle_new_peer announces
        told = self._announced.setdefault(peer_id, set())
        candidates = set(self.topic_ids) | told if topics is None else set(topics)
        for topic in candidates:
            subscribe = self.admits(peer_id, topic)
            if subscribe == (topic in told):
                continue
            packet, subopt = self._build_announce_rpc(topic, subscribe)
            self._enqueue_or_retry_announce(peer_id, queue, packet, subopt)
            if subscribe:
                told.add(topic)
            else:
                told.discard(topic)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder != self.my_id and not all(
            self.admits(msg_forwarder, topic) for topic in msg.topicIDs
        ):
            self._stats.dropped_unadmitted += 1
            return
        token = _FORWARDER.set(msg_forwarder)
        try:
            await super().push_msg(msg_forwarder, msg)
        finally:
            _FORWARDER.reset(token)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        forwarder = _FORWARDER.get()
        if forwarder is None or forwarder == self.my_id:
            return  # our own publish
        for topic in publish_message.topicIDs:
            if topic in self.topic_ids:
                self._deliver(topic, publish_message.data, forwarder)

    def _handle_dead_peer(self, peer_id: ID) -> None:
        super()._handle_dead_peer(peer_id)
        self._announced.pop(peer_id, None)  # a new stream starts from a new hello
        if self._peer_is_connected(peer_id):
            # Only a stream died: the library forgot the peer's subscriptions, which the
            # peer will not announce again on its live stream. Restore the admitted ones.
            self.reconcile_admission([peer_id])
        else:
            self.remote_subscriptions.pop(peer_id, None)


# ---------------------------------------------------------------------------------------------
# The service


class _Delivery(NamedTuple):
    topic: str
    data: bytes
    from_peer: str
    validated: object
    """What ``validate`` returned for the entry (None: nothing kept, deliver the raw bytes)."""


class GossipService:
    """Publishes sealed entries to, and receives them from, per-database gossip topics.

    Use::

        gossip = GossipService(host, on_entry=store, validate=check, on_announce=want)
        async with host.run(), trio.open_nursery() as nursery:
            await nursery.start(gossip.run)      # before dialing anyone
            await gossip.subscribe(topic_name(key, tenant_id, "notes"))
            ...
            await gossip.publish_entry(topic, entry.raw)

    Callbacks run in this service's tasks and must not block for long: ``validate(raw_entry,
    topic)`` (the topic the message came on) runs for every inline entry before it is
    forwarded (in the event loop, or in a worker thread with ``tuning.validate_in_thread``);
    ``on_entry(item, peer_id)`` (may be async; ``item`` is the raw entry, or the value
    ``validate`` returned when not just True) and ``on_announce(entry_id, peer_id)`` run one
    at a time in the delivery task;
    ``admit(peer_id, topic)`` runs per subscription and per received message, so it must be
    a cheap lookup (default: every peer is admitted); ``on_invalid(peer_id, reason)`` hears
    of peers that forwarded malformed or invalid messages. An exception raised by a callback
    is logged and counts as "no" (``validate``, ``admit``) or as done (the others).

    A `GossipService` runs once, inside its host's ``run()``.
    """

    def __init__(
        self,
        host: PeerHost,
        *,
        on_entry: EntryCallback,
        validate: Validator,
        on_announce: AnnounceCallback,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
        admit: AdmitCallback | None = None,
        on_invalid: InvalidCallback | None = None,
        tuning: GossipTuning | None = None,
    ) -> None:
        if not 0 < inline_limit <= MAX_INLINE_ENTRY:
            raise ValueError(f"inline_limit must be 1..{MAX_INLINE_ENTRY} bytes")
        self._host = host
        self._on_entry = on_entry
        self._validate = validate
        self._on_announce = on_announce
        self._admit = admit
        self._on_invalid = on_invalid
        self._inline_limit = inline_limit
        self._tuning = tuning or GossipTuning()
        self._stats = GossipStats()
        self._my_id = to_libp2p_id(host.peer_id)
        self._subscribed: set[str] = set()
        self._congested: set[ID] = set()
        self._pubsub: _GossipPubsub | None = None
        self._router: _GossipRouter | None = None
        self._delivery_send: trio.MemorySendChannel[_Delivery] | None = None
        self._queued_bytes = 0
        self._validate_limiter = trio.CapacityLimiter(2)
        self._validated: OrderedDict[bytes, object] = OrderedDict()
        """Message id -> the value ``validate`` returned, until the message is delivered."""
        self._started = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def inline_limit(self) -> int:
        return self._inline_limit

    @property
    def stats(self) -> GossipStats:
        """Live counters (the object is updated in place)."""
        return self._stats

    @property
    def running(self) -> bool:
        return self._pubsub is not None

    def topics(self) -> frozenset[str]:
        """The topics this node subscribes to."""
        return frozenset(self._subscribed)

    def topic_peers(self, topic: str) -> frozenset[str]:
        """Peers whose subscription to ``topic`` is in effect (connected and admitted)."""
        pubsub = self._pubsub
        if pubsub is None:
            return frozenset()
        return frozenset(peer.to_base58() for peer in pubsub.peer_topics.get(topic, ()))

    def mesh_peers(self, topic: str) -> frozenset[str]:
        """Peers this node forwards ``topic``'s messages to (its GossipSub mesh)."""
        router = self._router
        if router is None:
            return frozenset()
        return frozenset(peer.to_base58() for peer in router.mesh.get(topic, ()))

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run GossipSub on the host until cancelled; ``task_status.started(self)`` when ready.

        Start it inside the host's ``run()`` and before dialing: peers connected earlier are
        registered explicitly, but only once, when this starts.
        """
        if self._started:
            raise RuntimeError("a GossipService runs once; build a new one to restart")
        self._started = True
        libp2p_host = self._host.libp2p_host
        validator = (
            TopicValidator(self._validate_message_async, True)
            if self._tuning.validate_in_thread
            else TopicValidator(self._validate_message, False)
        )
        router = _GossipRouter(self._tuning)
        pubsub = _GossipPubsub(
            libp2p_host,
            router,
            validator=validator,
            admits=self._admits,
            deliver=self._enqueue_delivery,
            tuning=self._tuning,
            stats=self._stats,
        )
        send, receive = trio.open_memory_channel[_Delivery](self._tuning.delivery_queue)
        try:
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                async with trio.open_nursery() as nursery:
                    self._pubsub, self._router, self._delivery_send = pubsub, router, send
                    nursery.start_soon(self._deliver_forever, receive)
                    for peer_id in self._host.connected_peers():
                        nursery.start_soon(self._register_peer, pubsub, peer_id)
                    logger.info("gossip running on %s", self._host.peer_id)
                    task_status.started(self)
                    await trio.sleep_forever()
        finally:
            self._pubsub = self._router = self._delivery_send = None
            self._subscribed.clear()
            self._validated.clear()
            send.close()
            # Pubsub's connection notifee outlives it and must never block the swarm.
            pubsub.peer_receive_channel.close()
            pubsub.dead_peer_receive_channel.close()
            for protocol in router.get_protocols():
                libp2p_host.remove_stream_handler(protocol)

    async def _register_peer(self, pubsub: _GossipPubsub, peer_id: str) -> None:
        await pubsub.ensure_peer_stream(to_libp2p_id(peer_id), timeout=_REGISTER_TIMEOUT_S)

    # -- topics --------------------------------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Receive and forward ``topic``'s messages. Idempotent.

        Raises GossipError when not running or at `GossipTuning.max_topics` topics, and
        ValueError for a topic that is not printable ASCII of 1..128 characters.
        """
        pubsub = self._require_running()
        if not is_valid_topic(topic):
            raise ValueError(f"invalid gossip topic {topic!r}")
        if topic in self._subscribed:
            return
        if len(self._subscribed) >= self._tuning.max_topics:
            raise GossipError(f"already subscribed to {self._tuning.max_topics} topics")
        self._subscribed.add(topic)
        await pubsub.subscribe(topic)
        # Peers that announced the topic before we joined it: their subscriptions take effect
        # now (which also grafts them into the mesh).
        pubsub.reconcile_admission(
            peer for peer, topics in pubsub.remote_subscriptions.items() if topic in topics
        )

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving and forwarding ``topic``. No-op when not subscribed."""
        pubsub = self._pubsub
        if pubsub is None or topic not in self._subscribed:
            return
        self._subscribed.discard(topic)
        await pubsub.unsubscribe(topic)

    def refresh_admission(self, peer_id: str | None = None) -> None:
        """Re-ask ``admit`` about ``peer_id``'s subscriptions (every peer's when None).

        Call it when a peer's rights change (authenticated, membership granted or revoked):
        an admitted peer's subscriptions take effect, a refused one's stop.
        """
        pubsub = self._pubsub
        if pubsub is None:
            return
        peers = (
            set(pubsub.peers) | set(pubsub.remote_subscriptions)
            if peer_id is None
            else {to_libp2p_id(peer_id)}
        )
        pubsub.reconcile_admission(peers)

    # -- publishing ----------------------------------------------------------------------------

    async def publish_entry(self, topic: str, raw_entry: bytes) -> None:
        """Gossip a sealed entry on ``topic``: inline if it is at most `inline_limit` bytes,
        else as an announcement of its id (SHA-256 of ``raw_entry``).

        Best effort: returns once the message is queued for the mesh peers, after waiting
        (at most `GossipTuning.publish_wait` s) while a mesh peer's queue is nearly full.
        Publishing an entry already seen within two minutes sends nothing. Raises
        GossipError when not running or not subscribed to ``topic``, and ValueError for an
        empty or oversized entry.
        """
        pubsub = self._require_running()
        if topic not in self._subscribed:
            raise GossipError(f"not subscribed to gossip topic {topic!r}")
        if not isinstance(raw_entry, bytes) or not 0 < len(raw_entry) <= MAX_ENTRY_SIZE:
            raise ValueError(f"a sealed entry must be 1..{MAX_ENTRY_SIZE} bytes")
        if len(raw_entry) <= self._inline_limit:
            frame = encode_frame(FrameKind.ENTRY, raw_entry)
        else:
            frame = encode_frame(FrameKind.ANNOUNCEMENT, hashlib.sha256(raw_entry).digest())
        await self._wait_for_room(topic)
        await pubsub.publish(topic, frame)
        if len(raw_entry) <= self._inline_limit:
            self._stats.published_entries += 1
        else:
            self._stats.published_announcements += 1

    async def _wait_for_room(self, topic: str) -> None:
        pubsub, router = self._pubsub, self._router
        if pubsub is None or router is None:
            return
        size = self._tuning.peer_queue_size
        high, low = size * 3 // 4, size // 4

        def queued(peer_id: ID) -> int:
            queue = pubsub.peer_queues.get(peer_id)
            return len(queue) if queue is not None else 0

        self._congested = {p for p in self._congested if p in pubsub.peers and queued(p) > low}
        deadline = trio.current_time() + self._tuning.publish_wait
        while True:
            full = [
                peer
                for peer in router.mesh.get(topic, ())
                if peer not in self._congested and queued(peer) >= high
            ]
            if not full:
                return
            if trio.current_time() >= deadline:
                self._congested.update(full)
                self._stats.publish_stalls += 1
                logger.info("gossip: %d peer(s) congested on %s", len(full), topic)
                return
            await trio.sleep(_PACE_POLL_S)

    # -- admission and validation --------------------------------------------------------------

    def _admits(self, peer_id: ID, topic: str) -> bool:
        if topic not in self._subscribed:
            return False
        if self._admit is None:
            return True
        try:
            return bool(self._admit(peer_id.to_base58(), topic))
        except Exception:
            logger.exception("gossip admit callback failed")
            return False

    def _screen(self, forwarder: ID, msg: rpc_pb2.Message) -> GossipFrame | None:
        """The frame of a message that may be accepted, or None (counted as rejected)."""
        if len(msg.topicIDs) != 1 or msg.topicIDs[0] not in self._subscribed:
            self._stats.rejected += 1
            return None
        try:
            return decode_frame(msg.data)
        except DecodeError as exc:
            self._reject(forwarder, str(exc))
            return None

    def _validate_message(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        frame = self._screen(forwarder, msg)
        if frame is None:
            return False
        if frame.kind is FrameKind.ANNOUNCEMENT or forwarder == self._my_id:
            return True
        return self._verdict(forwarder, msg, self._run_validate(frame.payload, msg.topicIDs[0]))

    async def _validate_message_async(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        frame = self._screen(forwarder, msg)
        if frame is None:
            return False
        if frame.kind is FrameKind.ANNOUNCEMENT or forwarder == self._my_id:
            return True
        verdict = await trio.to_thread.run_sync(
            self._run_validate, frame.payload, msg.topicIDs[0], limiter=self._validate_limiter
        )
        return self._verdict(forwarder, msg, verdict)

    def _run_validate(self, raw_entry: bytes, topic: str) -> object:
        try:
            return self._validate(raw_entry, topic)
        except Exception:
            logger.exception("gossip validate callback failed")
            return False

    def _verdict(self, forwarder: ID, msg: rpc_pb2.Message, verdict: object) -> bool:
        if verdict is None:
            self._stats.rejected += 1  # not the forwarder's fault: dropped, nobody scored
            return False
        if verdict is False:
            self._reject(forwarder, "entry failed validation")
            return False
        if verdict is not True:  # the validator's own value: keep it for delivery
            self._validated[message_id(msg.data)] = verdict
            while len(self._validated) > _VALIDATED_KEEP:
                self._validated.popitem(last=False)
        return True

    def _reject(self, forwarder: ID, reason: str) -> None:
        self._stats.rejected += 1
        if forwarder == self._my_id:
            return
        peer_id = forwarder.to_base58()
        logger.debug("gossip from %s rejected: %s", peer_id, reason)
        if self._on_invalid is not None:
            try:
                self._on_invalid(peer_id, reason)
            except Exception:
                logger.exception("gossip on_invalid callback failed")

    # -- delivery ------------------------------------------------------------------------------

    def _enqueue_delivery(self, topic: str, data: bytes, forwarder: ID) -> None:
        send = self._delivery_send
        budget = self._tuning.delivery_queue_bytes
        validated = self._validated.pop(message_id(data), None) if self._validated else None
        if send is None or self._queued_bytes + len(data) > budget:
            self._stats.dropped_deliveries += 1
            return
        try:
            send.send_nowait(_Delivery(topic, data, forwarder.to_base58(), validated))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._stats.dropped_deliveries += 1
        else:
            self._queued_bytes += len(data)

    async def _deliver_forever(self, receive: trio.MemoryReceiveChannel[_Delivery]) -> None:
        async for delivery in receive:
            self._queued_bytes -= len(delivery.data)
            if delivery.topic not in self._subscribed:
                continue
            try:
                frame = decode_frame(delivery.data)
                if frame.kind is FrameKind.ENTRY:
                    item = frame.payload if delivery.validated is None else delivery.validated
                    result = self._on_entry(item, delivery.from_peer)
                    if inspect.isawaitable(result):
                        await result
                    self._stats.delivered_entries += 1
                else:
                    self._on_announce(frame.payload, delivery.from_peer)
                    self._stats.delivered_announcements += 1
            except Exception:
                logger.exception("gossip delivery from %s failed", delivery.from_peer)

    def _require_running(self) -> _GossipPubsub:
        if self._pubsub is None:
            raise GossipError("the gossip service is not running")
        return self._pubsub

    def __repr__(self) -> str:
        return f"GossipService({self._host.peer_id}, topics={len(self._subscribed)})"


__all__ = [
    "ANNOUNCE_DOMAIN",
    "DEFAULT_INLINE_LIMIT",
    "MAX_INLINE_ENTRY",
    "FrameKind",
    "GossipError",
    "GossipFrame",
    "GossipService",
    "GossipStats",
    "GossipTuning",
    "decode_frame",
    "encode_frame",
    "is_valid_topic",
    "message_id",
    "topic_name",
]
