"""What the daemon does with stored entries, whoever stored them.

Three ways in, one way through:

- `StoredEntries.on_entries` is the Node's listener (any thread): the batch becomes an
  `EntryEvent` with its origin (`NodeAccess` knows which of the daemon's own uses stored it)
  offered to the bounded `EntryEventQueue` without blocking; then the worker thread that holds
  the Node checkpoints (the batch is complete: waiting uses go first).
- `stored_elsewhere` hears the `store_watch` task: entries another process with this home open
  stored. Tenant-log records among them bring membership up to date first.
- `consume` is the one task that reads the queue, on the loop. For each event: activity and
  metrics; an ``entry`` message per entry to event subscribers (`entry_messages`); a tenant-log
  record re-reads membership in the peer table (peers denied before may be members now); gossip
  topics follow new databases, and local entries are published; the scheduler hears the
  origin; subscribers hear of conflicts. A `Resync` (events were dropped) assumes anything
  changed: membership, topics, every peer woken.

An event whose handling fails (entries from peers or other processes reach library code: the
conflict scan reads their documents) is logged (`containment.log_failure`) and `consume` goes
on with the next: the entries are stored either way, and the periodic sessions and the next
event repeat what was skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..control import EventHub
from ..entry import TENANT_LOG, Entry
from ..node import Node
from .activity import Activity
from .conflict_events import conflict_events
from .containment import log_failure
from .entry_events import EntryEvent, EntryEventQueue, Origin, Resync
from .gossip_bridge import GossipBridge
from .node_access import NodeAccess
from .peer_table import PeerTable
from .scheduler import SyncScheduler
from .store_watch import StoreWatch

logger = logging.getLogger(__name__)

ConflictsKnown = dict[tuple[bytes, str, bytes], tuple[str, ...]]
"""Documents with conflicts when last looked at (`conflict_events`)."""


def entry_messages(
    entries: Sequence[Entry], tenant_names: dict[bytes, str], *, local: bool
) -> list[dict[str, Any]]:
    """The event stream's ``entry`` message for each of ``entries`` (no content: ids, kind,
    time, and where it came from)."""
    return [
        {
            "type": "entry",
            "origin": "local" if local else "peer",
            "tenant": entry.tenant_id.hex(),
            "tenant_name": tenant_names.get(entry.tenant_id),
            "database": entry.database,
            "document_id": entry.document_id.hex(),
            "entry_id": entry.id.hex(),
            "kind": entry.kind.name.lower(),
            "timestamp_ms": entry.timestamp_ms,
        }
        for entry in entries
    ]


class StoredEntries:
    """Stored entries, from the Node's listener to peers and subscribers; see the module
    docstring. ``bridge`` is set once gossip runs (None without gossip)."""

    def __init__(
        self,
        node: Node,
        access: NodeAccess,
        queue: EntryEventQueue,
        watch: StoreWatch,
        *,
        events: EventHub,
        activity: Activity,
        peer_table: PeerTable,
        scheduler: SyncScheduler,
        conflicts_known: ConflictsKnown,
    ) -> None:
        self._node = node
        self._access = access
        self._queue = queue
        self._watch = watch
        self._events = events
        self._activity = activity
        self._peer_table = peer_table
        self._scheduler = scheduler
        self._conflicts_known = conflicts_known
        self.bridge: GossipBridge | None = None

    def on_entries(self, entries: list[Entry], local: bool) -> None:
        """The Node's listener (any thread); never blocks."""
        access = self._access
        self._watch.claim(entry.id for entry in entries)
        origin = Origin.LOCAL if local else access.origin_of_current_thread() or Origin.OTHER
        self._queue.offer(EntryEvent(tuple(entries), origin, access.peer_of_current_thread()))
        access.checkpoint()

    async def stored_elsewhere(self, entries: list[Entry]) -> None:
        """Entries another process that has this home open stored (`store_watch`)."""
        logs = {e.tenant_id for e in entries if e.database == TENANT_LOG}
        if logs:
            async with self._access.hold() as node:
                for tenant_id in logs:
                    tenant = node.tenant_or_none(tenant_id)
                    if tenant is not None:
                        tenant.refresh_membership()
        self._queue.offer(EntryEvent(tuple(entries), Origin.ELSEWHERE))

    async def consume(self) -> None:
        """Handle the queue's events until it is closed."""
        async for item in self._queue.events():
            try:
                if isinstance(item, Resync):
                    await self._resync(item)
                else:
                    await self._entries_stored(item)
            except Exception as exc:  # contained: the next event is handled
                log_failure(logger, "handling stored entries", exc)

    async def _entries_stored(self, event: EntryEvent) -> None:
        entries = event.entries
        self._activity.entries_stored(event.origin.value, len(entries))
        if self._events.subscriber_count:
            names = {t.id: t.name for t in self._node.tenants()}
            for message in entry_messages(entries, names, local=event.local):
                self._events.publish(message)
        if any(entry.database == TENANT_LOG for entry in entries):
            # Membership changed: peers denied before may be members now.
            self._peer_table.membership_changed()
        bridge = self.bridge
        if bridge is not None:
            fresh = {(e.tenant_id, e.database) for e in entries if e.database != TENANT_LOG}
            if not bridge.holds(fresh):
                await bridge.refresh_topics()
            if event.local:
                bridge.publish(entries)
        self._scheduler.entries_stored(event.origin, source=event.peer)
        if self._events.subscriber_count:
            known = self._conflicts_known
            found = await self._access.run(lambda node: conflict_events(node, entries, known))
            self._activity.conflicts(found)

    async def _resync(self, resync: Resync) -> None:
        logger.info("%d entry events dropped: resyncing with every peer", resync.dropped)
        self._peer_table.membership_changed()
        if self._events.subscriber_count:
            self._events.publish({"type": "resync", "dropped": resync.dropped})
        if self.bridge is not None:
            await self.bridge.refresh_topics()
        self._scheduler.resync()


__all__ = ["ConflictsKnown", "StoredEntries", "entry_messages"]
