"""When a sync session lifts a tenant's restore mark (`mindoo_p2p.restore_guard`). Pure.

A node restored from a recovery kit refuses own writes in a tenant until a session for it has
brought what a peer holds of the user's entries. A session counts when it ended well and
reconciled every database of the tenant (the tenant log and each document database both sides
listed): as initiator, each database settled with nothing we asked for missing; as responder,
each database went through reconciliation (the initiator then pushed what we lacked, before
FINISH). A database's entries that failed verification leave it doubtful: the session does not
count. The chain check (no gap in the user's chains) is `Node.settle_restored`'s.
"""

from __future__ import annotations

from ..sync.protocol import SyncReport


def session_completes_restore(report: SyncReport) -> bool:
    """Whether ``report`` (a session that ended well) reconciled every database completely."""
    if not report.databases:
        return False
    for db in report.databases.values():
        if db.rejected or db.unavailable:
            return False
        if not (db.settled if report.role == "initiator" else db.recon_rounds > 0):
            return False
    return True


__all__ = ["session_completes_restore"]
