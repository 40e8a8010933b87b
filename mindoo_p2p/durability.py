"""The durability ledger: which of this node's entries exist only here (issue 10).

"Is it safe to wipe this laptop?" needs to know, per tenant and database, how many entries
written here no other peer or mirror is known to hold, and the oldest of them: "3 entries
exist only on this device, oldest 2 h ago".

What is known, and how:

* A sync session that reconciled a database completely (reconciliation settled, nothing the
  peer offered was unavailable or invalid, none of our pushes refused by the peer) leaves the
  peer holding every entry this node held when the session started: the daemon reads the
  database's feed position (`EntryStore.last_seq`) before the session (for a session the peer
  started: once the peer proved its membership, before any reconciliation request), and
  `DurabilityLedger.confirm` records it with the peer and the time. Entries stored after that
  position are not counted as held anywhere until a later session.
* The entries that count are this node's own: signed by its identity in the tenant (its
  per-tenant member or device key, or the node identity for older tenants), or by the tenant admin
  key when this node holds it (another process on this home writes as the same identity).
  Entries received from a peer are held by that peer.

The ledger is kept in ``HOME/durability.json`` (0600, written atomically), so a restart does
not forget what peers acknowledged. A damaged or unreadable file is set aside with a warning
and the node starts with an empty ledger: that is conservative (everything own counts as only
here until the next session), never optimistic.

A member that lies about holding what it was sent makes entries look held: the ledger trusts
a peer that completed a session, as reconciliation does. It answers "did my peers receive
this", not "will they keep it".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .entry import TENANT_LOG, validate_database_name
from .errors import DecodeError, MindooError
from .home_files import write_private
from .node import Node

logger = logging.getLogger(__name__)

LEDGER_FILE = "durability.json"
FORMAT_VERSION = 1
MAX_LEDGER_ROWS = 65536
MAX_LEDGER_BYTES = 16 * 1024 * 1024
_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Every entry of a database up to feed position ``seq`` was held by ``peer_id`` at
    ``at_ms`` (wall clock, ms), the last time a session confirmed it."""

    seq: int
    peer_id: str
    at_ms: int


class DurabilityLedger:
    """Per (tenant id hex, database): the highest confirmed feed position. Pure data."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], Confirmation] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def confirmed(self, tenant_id: bytes, database: str) -> Confirmation | None:
        return self._rows.get((tenant_id.hex(), database))

    def confirm(self, tenant_id: bytes, database: str, seq: int, peer_id: str, at_ms: int) -> bool:
        """Record that ``peer_id`` holds the database up to ``seq``; True when that moved
        the confirmed position (a lower one is kept as it is)."""
        if seq <= 0:
            return False
        key = (tenant_id.hex(), database)
        known = self._rows.get(key)
        if known is not None and known.seq >= seq:
            return False
        if known is None and len(self._rows) >= MAX_LEDGER_ROWS:
            return False  # bounded; a database beyond the bound counts as unconfirmed
        self._rows[key] = Confirmation(seq, peer_id, at_ms)
        return True

    def to_json(self) -> str:
        rows = [
            {"tenant": t, "database": d, "seq": c.seq, "peer_id": c.peer_id, "at_ms": c.at_ms}
            for (t, d), c in sorted(self._rows.items())
        ]
        return json.dumps({"version": FORMAT_VERSION, "confirmed": rows}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DurabilityLedger:
        """Parse and validate `to_json` output; `DecodeError` naming the problem otherwise."""
        if len(text) > MAX_LEDGER_BYTES:
            raise DecodeError("durability ledger: file too large")
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"durability ledger: not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise DecodeError("durability ledger: not a version 1 ledger")
        rows = document.get("confirmed")
        if not isinstance(rows, list) or len(rows) > MAX_LEDGER_ROWS:
            raise DecodeError("durability ledger: 'confirmed' is not a bounded list")
        ledger = cls()
        for row in rows:
            ledger._load_row(row)
        return ledger

    def _load_row(self, row: Any) -> None:
        if not isinstance(row, dict) or set(row) != {
            "tenant",
            "database",
            "seq",
            "peer_id",
            "at_ms",
        }:
            raise DecodeError("durability ledger: a row has missing or unknown fields")
        tenant, database, seq = row["tenant"], row["database"], row["seq"]
        peer_id, at_ms = row["peer_id"], row["at_ms"]
        try:
            tenant_id = bytes.fromhex(tenant) if isinstance(tenant, str) else b""
            if len(tenant_id) != 16:
                raise ValueError("tenant is not a 16-byte id in hex")
            if not isinstance(database, str) or (
                database != TENANT_LOG and validate_database_name(database) != database
            ):
                raise ValueError("bad database name")
            for name, value in (("seq", seq), ("at_ms", at_ms)):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{name} is not a count")
            if not isinstance(peer_id, str) or len(peer_id) > 128:
                raise ValueError("peer_id is not a short string")
        except (ValueError, MindooError) as exc:
            raise DecodeError(f"durability ledger: invalid row: {exc}") from None
        self._rows[(tenant, database)] = Confirmation(seq, peer_id, at_ms)


def load_ledger(home: Path) -> DurabilityLedger:
    """The saved ledger; empty when missing, or (with a warning) when damaged: the damaged
    file is moved aside, never deleted."""
    path = home / LEDGER_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return DurabilityLedger()
    except OSError as exc:
        logger.warning("cannot read the durability ledger %s (%s): starting empty", path, exc)
        return DurabilityLedger()
    try:
        return DurabilityLedger.from_json(data)
    except DecodeError as exc:
        aside = path.with_name(f"{LEDGER_FILE}.damaged-{os.getpid()}")
        os.replace(path, aside)
        logger.warning(
            "the durability ledger %s is damaged (%s): moved to %s; every own entry counts as"
            " held only here until the next session with a peer",
            path,
            exc,
            aside,
        )
        return DurabilityLedger()


def save_ledger(home: Path, ledger: DurabilityLedger) -> None:
    """Write the ledger atomically and durably, readable by its owner only."""
    write_private(home / LEDGER_FILE, ledger.to_json().encode("utf-8"))


@dataclass(frozen=True, slots=True)
class DatabaseDurability:
    """One database's own entries that no other peer or mirror is known to hold."""

    tenant: str
    tenant_id: str
    database: str
    only_here: int
    oldest_ms: int | None
    """The author time of the oldest of them (None when there is none)."""
    confirmed_by: str | None
    """The peer that last confirmed holding the database (up to some position)."""
    confirmed_at_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "tenant_id": self.tenant_id,
            "database": self.database,
            "only_here": self.only_here,
            "oldest_ms": self.oldest_ms,
            "confirmed_by": self.confirmed_by,
            "confirmed_at_ms": self.confirmed_at_ms,
        }


DurabilityCache = dict[tuple[bytes, str], tuple[int, int, int, int | None]]
"""(tenant id, database) -> (confirmed position, feed position counted through, count,
oldest): what `durability` counted before, so the next call reads only newer entries."""


def durability(
    node: Node,
    ledger: DurabilityLedger,
    cache: DurabilityCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[DatabaseDurability]:
    """Per tenant and database (the tenant log included), the own entries above the
    confirmed position (one read of the feed above it; with ``cache``, of what arrived since
    the last call while the confirmed position stayed). ``progress(n)`` hears of every page
    of ``n`` feed items read (`durability_backlog` says how many there are to read)."""
    me = node.identity.signing.public_key
    found = []
    for tenant in node.tenants():
        own = {me, tenant.identity.signing.public_key} | (
            {tenant.admin_key} if tenant.is_admin else set()
        )
        for database in [TENANT_LOG, *tenant.databases()]:
            confirmation = ledger.confirmed(tenant.id, database)
            confirmed = confirmation.seq if confirmation is not None else 0
            start, count, oldest = confirmed, 0, None
            known = cache.get((tenant.id, database)) if cache is not None else None
            if known is not None and known[0] == confirmed:
                _, start, count, oldest = known
            more, newest, through = _own_after(node, tenant.id, database, own, start, progress)
            count += more
            if newest is not None:
                oldest = newest if oldest is None else min(oldest, newest)
            if cache is not None:
                cache[(tenant.id, database)] = (confirmed, through, count, oldest)
            found.append(
                DatabaseDurability(
                    tenant=tenant.name,
                    tenant_id=tenant.id_hex,
                    database=database,
                    only_here=count,
                    oldest_ms=oldest,
                    confirmed_by=confirmation.peer_id if confirmation else None,
                    confirmed_at_ms=confirmation.at_ms if confirmation else None,
                )
            )
    return found


def durability_backlog(
    node: Node, ledger: DurabilityLedger, cache: DurabilityCache | None = None
) -> int:
    """How many feed positions the next `durability` call with ``cache`` reads (at most: a
    retracted entry leaves a gap): cheap, one position per database."""
    backlog = 0
    for tenant in node.tenants():
        for database in [TENANT_LOG, *tenant.databases()]:
            confirmation = ledger.confirmed(tenant.id, database)
            start = confirmation.seq if confirmation is not None else 0
            known = cache.get((tenant.id, database)) if cache is not None else None
            if known is not None and known[0] == start:
                start = known[1]
            backlog += max(0, node.store.last_seq(tenant.id, database) - start)
    return backlog


def _own_after(
    node: Node,
    tenant_id: bytes,
    database: str,
    own: Iterable[bytes],
    cursor: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int | None, int]:
    """Own entries after feed position ``cursor``: how many, the oldest author time, and
    the feed position read through."""
    authors = set(own)
    count = 0
    oldest: int | None = None
    while True:
        items, next_cursor = node.store.changes_since(tenant_id, database, cursor, _PAGE)
        if progress is not None and items:
            progress(len(items))
        for item in items:
            if item.author in authors:
                count += 1
                oldest = item.timestamp_ms if oldest is None else min(oldest, item.timestamp_ms)
        if next_cursor == cursor:
            return count, oldest, cursor
        cursor = next_cursor


def only_here_text(row: DatabaseDurability, now_ms: int) -> str:
    """ "3 entries exist only on this device, oldest 2 h ago" (or that none do)."""
    if row.only_here == 0:
        return "every entry written here is held by a peer too"
    noun = "entry exists" if row.only_here == 1 else "entries exist"
    age = "" if row.oldest_ms is None else f", oldest {_age(now_ms - row.oldest_ms)} ago"
    return f"{row.only_here} {noun} only on this device{age}"


def _age(ms: int) -> str:
    seconds = max(0, ms // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


__all__ = [
    "LEDGER_FILE",
    "Confirmation",
    "DatabaseDurability",
    "DurabilityCache",
    "DurabilityLedger",
    "durability",
    "durability_backlog",
    "load_ledger",
    "only_here_text",
    "save_ledger",
]
