"""The query index as fsck reports it: present, rebuilt on open, or behind the log (stale)."""

from __future__ import annotations

from typing import Any, Protocol

from .follower import IndexedNode
from .index_store import fingerprint, index_path
from .query_index import QueryIndex


class IndexedHome(IndexedNode, Protocol):
    @property
    def home(self) -> Any: ...

    @property
    def index(self) -> QueryIndex: ...


def index_health(node: IndexedHome) -> dict[str, Any]:
    """``{"present", "stale", "behind", "rebuilt_because", "summary"}``. A stale index is not
    damage (it catches up on the next read; `mindoo index rebuild` builds it anew); a damaged
    one was rebuilt when opened here (``rebuilt_because``)."""
    if not index_path(node.home).exists():
        return {
            "present": False,
            "stale": False,
            "behind": 0,
            "rebuilt_because": None,
            "summary": "none yet (built on the first query)",
        }
    index = node.index
    cursors = {(t, db): cursor for _sid, t, db, cursor in index.store.sources()}
    behind = 0
    keys_changed = []
    for tenant in node.tenants():
        for database in tenant.databases():
            last = node.store.last_seq(tenant.id, database)
            behind += max(0, last - cursors.get((tenant.id, database), 0))
        stored_fp, _log_seq = index.store.tenant_state(tenant.id)
        if stored_fp != fingerprint([k.key_id for k in tenant.keyring]):
            keys_changed.append(tenant.name)
    stale = behind > 0 or bool(keys_changed)
    rebuilt = index.store.rebuilt_because
    if rebuilt is not None and rebuilt != "missing":
        summary = f"was {rebuilt}: rebuilt from the log"
    elif stale:
        parts = [f"{behind} entries behind the log"] if behind else []
        if keys_changed:
            parts.append(f"keys changed in {', '.join(keys_changed)}")
        summary = "stale (" + "; ".join(parts) + "): it catches up on the next query"
    else:
        summary = "up to date"
    return {
        "present": True,
        "stale": stale,
        "behind": behind,
        "rebuilt_because": rebuilt,
        "summary": summary,
    }
