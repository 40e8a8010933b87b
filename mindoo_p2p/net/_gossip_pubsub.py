"""py-libp2p's Pubsub and GossipSub, adjusted for mindoo: admission per peer and topic, one
validator for every topic, direct delivery, bounded queues. The libp2p side of `GossipService`
(re-check every override here on a libp2p upgrade: `_libp2p_pin` guards the version).

Admission (:mod:`.gossip_subscriptions` holds the bookkeeping and the reasons): our
subscriptions are announced per peer, only to peers admitted to the topic, never in the hello
packet; a peer's subscription, its GRAFT and the messages it forwards count only while it is
admitted; messages are only ever queued to effective subscribers of their topic (publish,
forward and IWANT replies alike: the IWANT cache key, origin + seqno, is guessable). A message
dropped for admission is not marked seen or invalid, so an admitted peer's copy still counts.

py-libp2p 0.8.1 GossipSub settings, and why (shared/notes/py-libp2p.md, defect 3: its defaults
drop messages silently):
- Spam protection off. Its cap (10 messages/s per topic per forwarder, our own publishes
  included) runs after validation and local delivery, so it saves no work; it only stops valid
  messages from being forwarded (6.7 % of a 300-message burst arrived with it on).
- Per-peer outbound queues hold `GossipTuning.peer_queue_size` RPCs, not 32 (`ResizingQueues`),
  and publishing paces itself (:mod:`.gossip_pacing`).
- The library's 32-message subscription channel is bypassed: accepted messages go straight to
  the service's ``deliver`` (its bounded delivery queue, drained by its own task).
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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar

from libp2p.host.basic_host import BasicHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, TopicValidator
from libp2p.pubsub.rpc_queue import RpcQueue

from . import _libp2p_pin  # noqa: F401  (refuses a py-libp2p release these patches do not fit)
from .gossip_codec import message_id
from .gossip_subscriptions import SubscriptionBook
from .gossip_tuning import GossipStats, GossipTuning

MAX_RPC_SIZE = 1024 * 1024
"""Inbound pubsub RPC cap; outbound RPCs are split to the same size, so peers agree."""
VALIDATION_CACHE_TTL_S = 30
SEEN_TTL_S = 120


def _pubsub_message_id(msg: rpc_pb2.Message) -> bytes:
    return message_id(msg.data)


_FORWARDER: ContextVar[ID | None] = ContextVar("mindoo_gossip_forwarder", default=None)
"""The peer that forwarded the message `Pubsub.push_msg` is handling in this task."""


class ResizingQueues(dict[ID, RpcQueue]):
    """`Pubsub.peer_queues` whose queues hold ``size`` RPCs instead of the hard-coded 32."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __setitem__(self, peer_id: ID, queue: RpcQueue) -> None:
        queue._queue.max_size = self._size
        super().__setitem__(peer_id, queue)


class GossipRouter(GossipSub):
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
        if not isinstance(pubsub, GossipPubsub) or not pubsub.admits(
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


class GossipPubsub(Pubsub):
    """Pubsub with admission, one validator for every topic and direct delivery."""

    router: GossipRouter

    def __init__(
        self,
        host: BasicHost,
        router: GossipRouter,
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
            seen_ttl=SEEN_TTL_S,
            validation_cache_ttl=VALIDATION_CACHE_TTL_S,
            max_subscriptions_per_peer=tuning.max_topics,
            max_inbound_rpc_size=MAX_RPC_SIZE,
        )
        self.peer_queues = ResizingQueues(tuning.peer_queue_size)
        self._validator = validator
        self.admits = admits
        """Whether a peer is admitted to a topic we subscribe to."""
        self._deliver = deliver
        self.subscriptions = SubscriptionBook[ID](
            max_remembered=tuning.max_remote_topics,
            max_unadmitted=tuning.max_unadmitted_remote_topics,
        )
        """What each peer announced (bounded), and which of our topics it was told."""
        self._stats = stats

    def get_msg_validators(self, msg: rpc_pb2.Message) -> tuple[TopicValidator, ...]:
        # Every message, on any topic, meets our validator, even one in flight while we
        # unsubscribe from its topic (whose per-topic validator would already be gone).
        return (self._validator,)

    def handle_subscription(self, origin_id: ID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
        topic = sub_message.topicid
        if not sub_message.subscribe:
            self.subscriptions.forget(origin_id, topic)
            super().handle_subscription(origin_id, sub_message)
            return
        admitted = self.admits(origin_id, topic)
        if self.subscriptions.remember(origin_id, topic, admitted=admitted) and admitted:
            super().handle_subscription(origin_id, sub_message)

    @property
    def remote_subscriptions(self) -> dict[ID, set[str]]:
        """Every topic each connected peer announced, admitted or not (bounded per peer)."""
        return self.subscriptions.remembered

    def reconcile_admission(self, peers: Iterable[ID]) -> None:
        """For each of ``peers``: its remembered subscriptions take effect exactly when it is
        admitted to their topics, and it is told exactly our topics it is admitted to."""
        for peer_id in peers:
            for topic in self.subscriptions.topics_of(peer_id):
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
        changes = self.subscriptions.announcements(
            peer_id, self.topic_ids, lambda topic: self.admits(peer_id, topic), topics
        )
        for topic, subscribe in changes:
            packet, subopt = self._build_announce_rpc(topic, subscribe)
            self._enqueue_or_retry_announce(peer_id, queue, packet, subopt)

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
        self.subscriptions.forget_told(peer_id)  # a new stream starts from a new hello
        if self._peer_is_connected(peer_id):
            # Only a stream died: the library forgot the peer's subscriptions, which the
            # peer will not announce again on its live stream. Restore the admitted ones.
            self.reconcile_admission([peer_id])
        else:
            self.subscriptions.drop_peer(peer_id)


__all__ = ["MAX_RPC_SIZE", "GossipPubsub", "GossipRouter", "ResizingQueues"]
