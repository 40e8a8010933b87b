"""What the daemon's ``status`` says, assembled from two reads: the entry store (LMDB
snapshots, safe from any thread, so a large store can be read off the event loop) and the peer
table (on the loop). No I/O of its own beyond `read_store`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..chains import ForkPoint
from ..durability import DatabaseDurability
from ..node import Node
from ..tenant import Tenant
from .peer_table import PeerTable


@dataclass(frozen=True)
class StoreStatus:
    """What `status` reads from the store."""

    tenants: list[Tenant]
    databases: list[tuple[Tenant, str, dict[str, int]]]
    entries: int
    forks: list[tuple[Tenant, ForkPoint]] = field(default_factory=list)
    """Authors that forked, per tenant (`mindoo_p2p.chains`)."""
    durability: list[DatabaseDurability] = field(default_factory=list)
    busy: list[dict[str, Any]] = field(default_factory=list)
    """Long work running now, with its progress (`WorkProgress.rows`)."""
    durability_error: str | None = None
    """Why the last durability count failed (`DurabilityCounter.error`); None when it did not."""


def read_store(
    node: Node,
    durability_rows: Callable[[], list[DatabaseDurability]] | None = None,
    busy: Callable[[], list[dict[str, Any]]] | None = None,
    durability_error: Callable[[], str | None] | None = None,
) -> StoreStatus:
    """The store's part of the status (LMDB snapshots: safe from any thread); with
    ``durability_rows``, the own entries no peer is known to hold (`DurabilityCounter.rows`,
    which never waits for a long count, and ``durability_error``, why its last count failed),
    and ``busy``, the long work running (read after them, so a count they left to the
    background shows)."""
    tenants = node.tenants()
    store = node.store
    databases = [
        (tenant, name, store.stats(tenant.id, name))
        for tenant in tenants
        for name in tenant.databases()
    ]
    forks = [(tenant, fork) for tenant in tenants for fork in store.forks(tenant.id)]
    held = durability_rows() if durability_rows is not None else []
    return StoreStatus(
        tenants,
        databases,
        store.count(),
        forks,
        held,
        busy() if busy is not None else [],
        durability_error() if durability_error is not None else None,
    )


def daemon_status(
    stored: StoreStatus,
    peers: PeerTable,
    *,
    home: str,
    peer_id: str | None,
    listen_addrs: list[str],
) -> dict[str, Any]:
    """The status the control socket and the CLI show: this node, its peers and every
    database's sync state with them."""
    names = {t.id: t.name for t in stored.tenants}
    databases = []
    for tenant, name, stats in stored.databases:
        missing, caught_up = peers.database_status(tenant.id, name)
        databases.append(
            {
                "tenant": tenant.name,
                "tenant_id": tenant.id_hex,
                "database": name,
                "entries": stats["entries"],
                "documents": stats["documents"],
                "missing": missing,
                "caught_up": caught_up,
                "sync": peers.database_completion(tenant.id, name),
            }
        )
    return {
        "peer_id": peer_id,
        "listen_addrs": listen_addrs,
        "home": home,
        "entries": stored.entries,
        "peers": [
            {**row, "databases": peers.completion(row["peer_id"], names)}
            for row in peers.peers_status(names)
        ],
        "databases": databases,
        "forks": [
            {
                "tenant": tenant.name,
                "tenant_id": tenant.id_hex,
                "author": fork.author.hex(),
                "seq": fork.seq,
                "evidence": [entry_id.hex() for entry_id in fork.evidence],
            }
            for tenant, fork in stored.forks
        ],
        "durability": [row.to_dict() for row in stored.durability],
        "busy": stored.busy,
        "durability_error": stored.durability_error,
    }
