"""`GossipService`: gossip of sealed entries over GossipSub, the fast, best-effort push path.

Each (tenant, database) has one topic (`gossip_topics.topic_name`, an opaque HMAC name); a
message carries one sealed entry inline, or announces the id of one too large to inline
(`gossip_codec`: wire format and message ids; every copy of an entry is one message). Gossip is
best effort; periodic reconciliation (`sync.driver`) repairs whatever it loses.

The parts, one responsibility each:
- :mod:`.gossip_topics`: topic names (pure).
- :mod:`.gossip_codec`: frames and message ids (pure).
- :mod:`.gossip_validation`: the screen, the meaning of ``validate``'s verdicts, the values kept
  for delivery (pure).
- :mod:`.gossip_subscriptions`: per-peer admission bookkeeping: what each peer announced, what
  we told it (pure).
- :mod:`.gossip_pacing`: when a publish waits for congested peers (pure).
- :mod:`.gossip_tuning`: bounds and counters (data).
- :mod:`._gossip_pubsub`: py-libp2p's Pubsub and GossipSub with admission, one validator and
  direct delivery, and why each library setting is what it is.
- this module: the service that runs them on a `PeerHost`: lifecycle, topics, publishing,
  validation and delivery tasks.

Admission (`admit(peer_id, topic)`, from the daemon: "has this peer proven it may replicate
the topic's tenant") keeps our topic names, subscriptions and messages away from peers that
may not see them; `refresh_admission` re-applies it when a peer's rights change.

What happens to a message that reaches this node, in order:
1. Admission of its forwarder (`_gossip_pubsub`).
2. Validation, before delivery or forwarding (`gossip_validation`): a rejected message is
   neither delivered nor forwarded; ``on_invalid(peer_id, reason)`` hears of malformed frames
   and failed validation so the daemon can score the forwarder. Every input is bounded before
   work is done on it: RPCs at 1 MiB, frames at MAX_INLINE_ENTRY + 2 bytes, and ``validate``
   only sees a strictly decoded inline entry. Our own publishes are not passed to ``validate``
   (the daemon has just sealed them).
3. Delivery: a dedicated task drains a bounded queue (`GossipTuning.delivery_queue` messages
   and `delivery_queue_bytes`; overflow is counted in `GossipStats.dropped_deliveries`) and
   calls ``on_entry(item, peer)`` (``item`` is what ``validate`` returned, or the raw entry when
   it returned True) or ``on_announce(entry_id, peer)``; ``peer`` is the neighbour that
   forwarded the message (for an announcement it may not hold the entry yet). Our own
   publishes are not delivered back.

Pubsub starts in `run`, which the daemon awaits before it dials anyone; peers connected before
that are registered explicitly (Pubsub only hears of connections made after it).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import TopicValidator
from libp2p.tools.anyio_service import background_trio_service

from ..entry import MAX_ENTRY_SIZE
from ..errors import MindooError
from ._gossip_pubsub import GossipPubsub, GossipRouter
from .gossip_codec import (
    ANNOUNCE_DOMAIN,
    DEFAULT_INLINE_LIMIT,
    MAX_INLINE_ENTRY,
    FrameKind,
    GossipFrame,
    decode_frame,
    encode_frame,
    message_id,
)
from .gossip_pacing import PublishPacing
from .gossip_topics import is_valid_topic, topic_name
from .gossip_tuning import GossipStats, GossipTuning
from .gossip_validation import (
    Refusal,
    ValidatedValues,
    judge_verdict,
    needs_validation,
    screen_message,
)
from .host import PeerHost
from .peer_identity import to_libp2p_id

logger = logging.getLogger(__name__)

_PACE_POLL_S = 0.001
_REGISTER_TIMEOUT_S = 15.0


class GossipError(MindooError):
    """A gossip operation that cannot be done (not subscribed, too many topics, not running)."""


EntryCallback = Callable[[Any, str], Awaitable[None] | None]
"""``on_entry(item, peer_id)``: ``item`` is what the validator returned for the entry, or its
raw bytes when the validator returned True."""
AnnounceCallback = Callable[[bytes, str], None]
Validator = Callable[[bytes, str], object]
"""``validate(raw_entry, topic)``: True: accept; False: invalid (the forwarder is scored); None:
not accepted here, nobody's fault (dropped, not scored); any other value: accept and hand that
value to ``on_entry``."""
AdmitCallback = Callable[[str, str], bool]
InvalidCallback = Callable[[str, str], None]


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
        self._pacing = PublishPacing[ID](self._tuning.peer_queue_size)
        self._pubsub: GossipPubsub | None = None
        self._router: GossipRouter | None = None
        self._delivery_send: trio.MemorySendChannel[_Delivery] | None = None
        self._queued_bytes = 0
        self._validate_limiter = trio.CapacityLimiter(2)
        self._validated = ValidatedValues()
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
        router = GossipRouter(self._tuning)
        pubsub = GossipPubsub(
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

    async def _register_peer(self, pubsub: GossipPubsub, peer_id: str) -> None:
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
        pubsub.reconcile_admission(pubsub.subscriptions.subscribers(topic))

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
            set(pubsub.peers) | pubsub.subscriptions.peers()
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
        pacing = self._pacing

        def queued(peer_id: ID) -> int:
            queue = pubsub.peer_queues.get(peer_id)
            return len(queue) if queue is not None else 0

        pacing.settle(pubsub.peers, queued)
        deadline = trio.current_time() + self._tuning.publish_wait
        while True:
            full = pacing.full(router.mesh.get(topic, ()), queued)
            if not full:
                return
            if trio.current_time() >= deadline:
                pacing.give_up(full)
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
        screened = screen_message(msg.topicIDs, msg.data, self._subscribed)
        if isinstance(screened, Refusal):
            self._refuse(forwarder, screened)
            return None
        return screened

    def _validate_message(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        frame = self._screen(forwarder, msg)
        if frame is None:
            return False
        if not needs_validation(frame, from_self=forwarder == self._my_id):
            return True
        return self._verdict(forwarder, msg, self._run_validate(frame.payload, msg.topicIDs[0]))

    async def _validate_message_async(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        frame = self._screen(forwarder, msg)
        if frame is None:
            return False
        if not needs_validation(frame, from_self=forwarder == self._my_id):
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
        refusal = judge_verdict(verdict)
        if refusal is not None:
            self._refuse(forwarder, refusal)
            return False
        if verdict is not True:  # the validator's own value: keep it for delivery
            self._validated.remember(message_id(msg.data), verdict)
        return True

    def _refuse(self, forwarder: ID, refusal: Refusal) -> None:
        if refusal.blames_forwarder:
            self._reject(forwarder, refusal.reason)
        else:
            self._stats.rejected += 1  # dropped, nobody scored

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
        validated = self._validated.take(message_id(data)) if self._validated else None
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

    def _require_running(self) -> GossipPubsub:
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
