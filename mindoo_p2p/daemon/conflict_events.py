"""Conflict events for the daemon's event stream (issue 10).

After entries arrive from elsewhere, the documents they touched are looked at once: one that
now holds competing values (`Database.conflicting_fields`) gives a ``conflict`` event, and one
that held some the last time it was looked at and holds none now gives ``conflict_resolved``
(a write here resolves too: local writes are looked at as well). Only batches of at most
`MAX_BATCH_ENTRIES` entries (live traffic: gossip, local writes, small sessions), and at most
`MAX_DOCUMENTS_PER_BATCH` documents of each, are looked at (a bulk catch-up would otherwise
materialize every document it brings); `mindoo conflicts` lists them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..entry import TENANT_LOG, Entry, EntryKind
from ..errors import MindooError
from ..node import Node

MAX_DOCUMENTS_PER_BATCH = 32
MAX_BATCH_ENTRIES = 64
"""Larger stored batches (a catch-up, an import) are not looked at: the cost would grow with
the clone; `mindoo conflicts` lists what they brought."""


def conflict_events(
    node: Node, entries: Sequence[Entry], known: dict[tuple[bytes, str, bytes], tuple[str, ...]]
) -> list[dict[str, Any]]:
    """The conflict events of the documents ``entries`` touched; ``known`` remembers which
    documents held conflicts (updated here, bounded by the documents in conflict)."""
    if len(entries) > MAX_BATCH_ENTRIES:
        return []
    touched: dict[tuple[bytes, str, bytes], None] = {}
    for entry in entries:
        if entry.database != TENANT_LOG and entry.kind is EntryKind.CHANGE:
            touched[(entry.tenant_id, entry.database, entry.document_id)] = None
            if len(touched) >= MAX_DOCUMENTS_PER_BATCH:
                break
    events: list[dict[str, Any]] = []
    for key in touched:
        tenant_id, database, document_id = key
        tenant = node.tenant_or_none(tenant_id)
        if tenant is None or not tenant.has_database(database):
            continue
        try:
            fields = tenant.open_db(database).conflicting_fields(document_id)
        except MindooError:
            continue  # unreadable here (no key, deleted): nothing to show
        before = known.pop(key, ())
        if fields:
            known[key] = fields
        if fields != before and (fields or before):
            events.append(
                {
                    "type": "conflict" if fields else "conflict_resolved",
                    "tenant": tenant_id.hex(),
                    "tenant_name": tenant.name,
                    "database": database,
                    "document_id": document_id.hex(),
                    "fields": list(fields),
                }
            )
    return events
