"""The durability count's position, kept across restarts, so a start reads only what is new.

`durability` counts, per tenant and database, the own entries above the confirmed position by
reading the database's feed; its `DurabilityCache` keeps what it counted so the next call reads
only newer feed items. Kept in memory only, every daemon start read the whole feed again: at
10^6 entries about 40 s of a core before the first ``status`` could answer. The cache is
saved in ``HOME/durability-count.json`` (0600, written atomically) and loaded at start:

=============  =============================================================================
field          meaning
=============  =============================================================================
version        `FORMAT_VERSION` (1); another version is not read (the count starts over)
rows[]         one per (tenant, database) counted
  tenant       tenant id, hex
  database     database name (`validate_database_name`; the tenant log's name too)
  confirmed    the confirmed feed position the count started from (`DurabilityLedger`)
  through      the feed position counted through
  count        own entries in (confirmed, through]
  oldest_ms    the oldest of them (author time, ms), or null
  anchor       hex id of the entry at feed position ``through`` (null when ``through`` is 0)
=============  =============================================================================

A row is used only if the store still holds that entry at that position (one short read per
database), so a store replaced or restored under the file, or an entry retracted at the
anchor, makes that database count again from its confirmed position: the file can make a
start slower, never the count wrong for a store it was not written for. A missing, damaged or
oversized file is ignored the same way (with a warning for damage). It holds counts, feed
positions, database names (as ``durability.json`` does) and entry ids: no document content,
no key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .durability import DurabilityCache
from .entry import TENANT_LOG, validate_database_name
from .errors import MindooError
from .home_files import write_private
from .store import EntryStore

logger = logging.getLogger(__name__)

COUNT_FILE = "durability-count.json"
FORMAT_VERSION = 1
MAX_COUNT_BYTES = 8 * 1024 * 1024
MAX_COUNT_ROWS = 65536
_TENANT_ID_HEX = 32
_ENTRY_ID_HEX = 64


def anchor_at(store: EntryStore, tenant_id: bytes, database: str, seq: int) -> bytes | None:
    """The id of the entry at feed position ``seq`` of the database (None when ``seq`` is 0
    or no entry is there: a gap left by a retraction, or a shorter store)."""
    if seq <= 0:
        return None
    items, _ = store.changes_since(tenant_id, database, seq - 1, 1)
    if not items or items[0].seq != seq:
        return None
    return items[0].entry_id


def save_count(home: Path, store: EntryStore, cache: DurabilityCache) -> None:
    """Write ``cache`` (the daemon's count) to ``HOME/durability-count.json``."""
    rows = []
    for (tenant_id, database), (confirmed, through, count, oldest) in list(cache.items()):
        anchor = anchor_at(store, tenant_id, database, through)
        if through > 0 and anchor is None:
            continue  # nothing to check it against at load: count that database again
        rows.append(
            {
                "tenant": tenant_id.hex(),
                "database": database,
                "confirmed": confirmed,
                "through": through,
                "count": count,
                "oldest_ms": oldest,
                "anchor": anchor.hex() if anchor is not None else None,
            }
        )
    data = json.dumps({"version": FORMAT_VERSION, "rows": rows[:MAX_COUNT_ROWS]})
    write_private(home / COUNT_FILE, data.encode("utf-8"))


def load_count(home: Path, store: EntryStore) -> DurabilityCache:
    """The saved count, keeping only the rows that match ``store`` (see the module
    docstring); empty when there is none or it cannot be read."""
    path = home / COUNT_FILE
    try:
        if path.stat().st_size > MAX_COUNT_BYTES:
            logger.warning("%s is larger than %d bytes: counting again", path, MAX_COUNT_BYTES)
            return {}
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s (%s): counting again", path, exc)
        return {}
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        logger.warning("%s has an unknown format: counting again", path)
        return {}
    rows = document.get("rows")
    cache: DurabilityCache = {}
    for row in rows[:MAX_COUNT_ROWS] if isinstance(rows, list) else []:
        try:
            key, value, anchor = _parse_row(row)
        except (ValueError, TypeError, MindooError) as exc:
            logger.warning("%s: skipping an invalid row (%s)", path, exc)
            continue
        if anchor_at(store, key[0], key[1], value[1]) == anchor:
            cache[key] = value
    return cache


def _parse_row(
    row: Any,
) -> tuple[tuple[bytes, str], tuple[int, int, int, int | None], bytes | None]:
    if not isinstance(row, dict):
        raise ValueError("not an object")
    tenant, database, anchor = row.get("tenant"), row.get("database"), row.get("anchor")
    if not isinstance(tenant, str) or len(tenant) != _TENANT_ID_HEX:
        raise ValueError("tenant is not a tenant id")
    if not isinstance(database, str):
        raise ValueError("database is not a name")
    if database != TENANT_LOG:
        validate_database_name(database)
    confirmed, through, count = (_count_field(row, k) for k in ("confirmed", "through", "count"))
    oldest = row.get("oldest_ms")
    if oldest is not None and type(oldest) is not int:
        raise ValueError("oldest_ms must be an integer or null")
    if through < confirmed or count > through - confirmed:
        raise ValueError("the count does not fit its positions")
    if (anchor is None) != (through == 0):
        raise ValueError("anchor must be given exactly when through > 0")
    if anchor is not None and (not isinstance(anchor, str) or len(anchor) != _ENTRY_ID_HEX):
        raise ValueError("anchor is not an entry id")
    anchor_id = bytes.fromhex(anchor) if anchor is not None else None
    return (bytes.fromhex(tenant), database), (confirmed, through, count, oldest), anchor_id


def _count_field(row: dict[str, Any], name: str) -> int:
    value = row.get(name)
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be an integer >= 0")
    return value


__all__ = ["COUNT_FILE", "FORMAT_VERSION", "anchor_at", "load_count", "save_count"]
