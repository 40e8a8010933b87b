"""The snapshot cache (``snapshots`` in `_layout`: scope + document id -> covered feed seq +
the caller-encrypted materialized state of one document).

The one table this API ever replaces or deletes rows of: it holds derived data, rebuilt from
the entries whenever it is missing. `EntryStore` checks arguments here before it takes the
write lock, then reads and writes the rows in its transactions.
"""

from __future__ import annotations

from collections.abc import Iterable

import lmdb

from ..entry import DOCUMENT_ID_SIZE
from ..errors import StoreError
from ._cursors import MAX_SEQ
from ._layout import SEQ_SIZE, Tables, pack_seq, scope_key, unpack_seq

MAX_SNAPSHOT_SIZE = 256 * 1024 * 1024
"""Largest snapshot blob `put_snapshot` accepts."""


def check_snapshot(document_id: bytes, covered_seq: int, blob: bytes) -> None:
    """ValueError unless the snapshot can be stored."""
    if len(document_id) != DOCUMENT_ID_SIZE:
        raise ValueError(f"document_id must be {DOCUMENT_ID_SIZE} bytes")
    if not 0 <= covered_seq <= MAX_SEQ:
        raise ValueError("covered_seq must fit in 64 bits")
    if len(blob) > MAX_SNAPSHOT_SIZE:
        raise ValueError(f"snapshot of {len(blob)} bytes, over {MAX_SNAPSHOT_SIZE}")


def checked_document_ids(document_ids: Iterable[bytes]) -> list[bytes]:
    """The ids as bytes, sorted and once each; ValueError if one is malformed."""
    wanted = [bytes(document_id) for document_id in document_ids]
    if any(len(document_id) != DOCUMENT_ID_SIZE for document_id in wanted):
        raise ValueError(f"document ids must be {DOCUMENT_ID_SIZE} bytes")
    return sorted(set(wanted))


def put_snapshot(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_id: bytes,
    covered_seq: int,
    blob: bytes,
) -> None:
    """Store (or replace) the row of a snapshot `check_snapshot` accepted."""
    key = scope_key(tenant_id, database) + document_id
    txn.put(key, pack_seq(covered_seq) + bytes(blob), db=tables.snapshots)


def get_snapshot(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_id: bytes,
) -> tuple[int, bytes] | None:
    """``(covered_seq, blob)`` of the document's snapshot, or None; StoreError on a malformed
    row."""
    value = txn.get(scope_key(tenant_id, database) + document_id, db=tables.snapshots)
    if value is None:
        return None
    if len(value) < SEQ_SIZE:
        raise StoreError(f"malformed snapshot row for document {document_id.hex()}: run fsck")
    return unpack_seq(value[:SEQ_SIZE]), value[SEQ_SIZE:]


def delete_snapshots(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_ids: list[bytes],
) -> int:
    """Delete the rows of ``document_ids`` (from `checked_document_ids`); how many existed."""
    scope = scope_key(tenant_id, database)
    return sum(
        1 for document_id in document_ids if txn.delete(scope + document_id, db=tables.snapshots)
    )
