"""What peers are known to hold, as sessions end (`mindoo_p2p.durability`).

Before a session the daemon reads each database's feed position (`feed_positions`: what a
session starting now leaves the peer holding). When the session ended well, `confirmed` (pure)
says which databases it reconciled completely, so the peer holds them up to that position:

==========  ==================================================================================
role        a database counts when
==========  ==================================================================================
initiator   the peer refused none of our pushes (else: none counts), and the database
            settled with nothing unavailable and nothing rejected
responder   it went through reconciliation (the initiator then pushed what we lacked), or
            (version 3) both summaries showed it held alike, with nothing unavailable and
            nothing rejected
==========  ==================================================================================

`HeldLedger.confirm` records them and saves ``durability.json`` (in a worker thread, one save
at a time) when that moved anything.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from ..durability import DurabilityLedger, load_ledger, save_ledger
from ..entry import TENANT_LOG
from ..node import Node
from ..sync.protocol import SyncReport


def feed_positions(node: Node, tenant_id: bytes) -> dict[str, int]:
    """Each database's feed position now (the tenant log first); empty for a tenant this
    node does not hold."""
    tenant = node.tenant_or_none(tenant_id)
    if tenant is None:
        return {}
    store = node.store
    return {db: store.last_seq(tenant_id, db) for db in [TENANT_LOG, *tenant.databases()]}


def confirmed(report: SyncReport, positions: dict[str, int]) -> list[tuple[str, int]]:
    """The (database, position) pairs a session that ended well leaves the peer holding; see
    the module docstring."""
    if report.role == "initiator" and report.peer_refused:
        return []  # the peer did not take everything we pushed
    held = []
    for database, seq in positions.items():
        db = report.databases.get(database)
        if db is None or db.unavailable or db.rejected:
            continue
        if not (db.settled if report.role == "initiator" else db.recon_rounds > 0 or db.alike):
            continue
        held.append((database, seq))
    return held


class HeldLedger:
    """The node's durability ledger, loaded at start and saved after every change."""

    def __init__(self, home: Path) -> None:
        self._home = home
        self.ledger: DurabilityLedger = load_ledger(home)
        self._save_lock = trio.Lock()

    async def confirm(self, peer_id: str, report: SyncReport, positions: dict[str, int]) -> None:
        """Record what ``report`` (a session with ``peer_id`` that ended well) confirmed; save
        the ledger if that moved."""
        at = int(time.time() * 1000)
        moved = False
        for database, seq in confirmed(report, positions):
            moved |= self.ledger.confirm(report.tenant_id, database, seq, peer_id, at)
        if moved:
            async with self._save_lock:
                await trio.to_thread.run_sync(save_ledger, self._home, self.ledger)


__all__ = ["HeldLedger", "confirmed", "feed_positions"]
