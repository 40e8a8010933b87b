"""The daemon's side of gossip: topics, admission, validation, delivery and publishing.

`GossipBridge` owns the `GossipService` and everything the daemon decides about it:

- one topic per (tenant, database) held here, named under the tenant's membership key;
- admission: gossip only with peers that proved, in a sync session, that they share the tenant
  (the peer table says so);
- validation of an arriving message (hash, signature, membership; tenant-log entries travel by
  reconciliation only), delivery (ingest through the Node access, tagged `Origin.GOSSIP`; a gap,
  an entry whose parents are missing, wakes a session with the sender; an announce of an entry
  we lack does too), scoring of forwarders of invalid messages;
- publishing this node's own new entries, through a bounded queue drained by one task (when it
  is full the rest are left to reconciliation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from .. import admission
from ..admission import TenantView, VerifiedEntry
from ..entry import TENANT_LOG, Entry
from ..net.framing import TransportError
from ..net.gossip import GossipError, GossipService, topic_name
from ..net.host import PeerHost
from ..rejection import Rejected
from ..tenant import Tenant
from .entry_events import Origin
from .node_access import NodeAccess
from .peer_table import PeerTable

if TYPE_CHECKING:
    from ..http.metrics import DaemonMetrics

logger = logging.getLogger(__name__)

GOSSIP_PENALTY = 5
"""Score points for a forwarder of an invalid gossip message."""
PUBLISH_QUEUE = 4096
"""Entries waiting to be published, at most."""


class GossipBridge:
    """Gossip as the daemon uses it; see the module docstring. Run it with `run` (in the
    daemon's nursery, before any connection is made)."""

    def __init__(
        self,
        access: NodeAccess,
        peers: PeerTable,
        *,
        wake: Callable[[str], None],
        penalize: Callable[[str, int, str], None],
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._access = access
        self._node = access.node
        self._peers = peers
        self._wake = wake
        self._penalize = penalize
        self.service: GossipService | None = None
        self._topics: dict[str, tuple[bytes, str]] = {}
        self._publish_send, self._publish_receive = trio.open_memory_channel[tuple[str, bytes]](
            PUBLISH_QUEUE
        )

    async def run(self, host: PeerHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start pubsub, subscribe to every topic held here, then publish until cancelled."""
        service = GossipService(
            host,
            on_entry=self._on_gossip_entry,
            validate=self._validate_gossip,
            on_announce=self._on_announce,
            admit=self._admit,
            on_invalid=self._on_gossip_invalid,
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                self.service = service
                await self.refresh_topics()
                task_status.started()
                await self._publisher()
        finally:
            self.service = None

    # -- topics and admission ----------------------------------------------------------------
    def _topic(self, tenant: Tenant, database: str) -> str:
        # The membership key version the tenant log is sealed under (after a rotation on a
        # revocation, the newest one granted and announced), the same on every holder.
        secret = tenant.access.membership_key_for_writing().secret
        return topic_name(secret, tenant.id, database)

    def holds(self, scopes: set[tuple[bytes, str]]) -> bool:
        """Whether every (tenant id, database) of ``scopes`` has its topic subscribed."""
        return scopes <= set(self._topics.values())

    async def refresh_topics(self) -> None:
        """Subscribe to the topic of every (tenant, database) held here."""
        if self.service is None:
            return
        async with self._access.hold() as node:
            wanted = {
                self._topic(tenant, database): (tenant.id, database)
                for tenant in node.tenants()
                for database in tenant.databases()
            }
        for topic, scope in wanted.items():
            if topic not in self._topics and self.service is not None:
                self._topics[topic] = scope
                await self.service.subscribe(topic)

    def _admit(self, peer_id: str, topic: str) -> bool:
        """Gossip only with peers that proved, in a sync session, that they share the tenant."""
        found = self._topics.get(topic)
        return found is not None and self._peers.shares(peer_id, found[0])

    def refresh_admission(self, peer_id: str) -> None:
        if self.service is not None:
            self.service.refresh_admission(peer_id)

    # -- arriving messages -------------------------------------------------------------------
    def _validate_gossip(self, raw: bytes, topic: str | None = None) -> VerifiedEntry | bool | None:
        """The admission pipeline for one gossiped entry (`admission.check_gossip`: decode,
        signature, membership and known forks against the tenant's immutable snapshots (an
        entry above a known fork is dropped, not forwarded, nobody scored); tenant-log entries
        travel by reconciliation only), and the topic it came on must be its own (tenant and
        database): a forwarder that sends an entry on another database's topic misbehaved.
        May run in a worker thread: it reads only immutable snapshots (and one dict lookup).
        Returns the `VerifiedEntry` (handed to `_on_gossip_entry` as it is), False when the
        forwarder misbehaved (it is scored), None when the entry is refused through nobody's
        fault (`RejectionKind.sender_at_fault`), e.g. an author revoked after the forwarder
        stored it."""
        checked = admission.check_gossip(raw, self._view_of)
        if isinstance(checked, Rejected):
            if self._metrics is not None:
                self._metrics.note_gossip_rejected(checked.kind.value)
            return False if checked.sender_at_fault else None
        if topic is not None and self._topics.get(topic) != (checked.tenant_id, checked.database):
            if self._metrics is not None:
                self._metrics.note_gossip_rejected("wrong topic")
            return False
        return checked

    def _view_of(self, tenant_id: bytes) -> TenantView | None:
        """The tenant's membership and known forks, from published snapshots (no store read:
        this may run in a worker thread)."""
        tenant = self._node.tenant_or_none(tenant_id)
        return tenant.access.published_view() if tenant is not None else None

    async def _on_gossip_entry(self, item: VerifiedEntry | bytes, peer_id: str) -> None:
        """Store a gossiped entry: the `VerifiedEntry` the validator made (not decoded or
        verified again; membership is checked again against the snapshot of now), or raw
        bytes when the validator's result was not kept."""
        async with self._access.hold(Origin.GOSSIP) as node:
            result = node.ingest([item])
        if not result.added:
            return
        if self._metrics is not None:
            size = len(item.entry.raw) if isinstance(item, VerifiedEntry) else len(item)
            self._metrics.note_gossip_in(size)
        entry = (
            item.entry if isinstance(item, VerifiedEntry) else self._node.store.get(result.added[0])
        )
        if entry is not None and self._node.store.missing(entry.deps):
            # A gap: its causal parents never reached us. Reconcile with the sender.
            self._wake(peer_id)

    def _on_announce(self, entry_id: bytes, peer_id: str) -> None:
        if not self._node.store.has(entry_id):
            self._wake(peer_id)

    def _on_gossip_invalid(self, peer_id: str, reason: str) -> None:
        self._penalize(peer_id, GOSSIP_PENALTY, f"invalid gossip: {reason}")

    # -- publishing --------------------------------------------------------------------------
    async def _publisher(self) -> None:
        async for topic, raw in self._publish_receive:
            service = self.service
            if service is None:
                continue
            try:
                await service.publish_entry(topic, raw)
            except (GossipError, TransportError) as exc:
                logger.info("gossip publish failed (reconciliation will deliver it): %s", exc)
                if self._metrics is not None:
                    self._metrics.note_gossip_dropped("publish_failed")
                continue
            if self._metrics is not None:
                self._metrics.note_gossip_out(len(raw))

    def publish(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Queue this node's new entries for their topics (never blocks)."""
        if self.service is None:
            return
        for entry in entries:
            if entry.database == TENANT_LOG:
                continue
            tenant = self._node.tenant_or_none(entry.tenant_id)
            if tenant is None:
                continue
            try:
                self._publish_send.send_nowait((self._topic(tenant, entry.database), entry.raw))
            except trio.WouldBlock:
                logger.info("gossip queue full: reconciliation will deliver the rest")
                if self._metrics is not None:
                    self._metrics.note_gossip_dropped("queue_full")
                return
