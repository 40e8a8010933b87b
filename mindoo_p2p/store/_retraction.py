"""Retraction: withdrawing stored entries that a revocation no longer accepts.

A revocation names, for each signing key it revokes, the last ``author_seq`` it accepts. Every
node must end with the same accepted set whatever order entries and revocations arrived in, so
an entry by that key with a higher sequence number is rejected when it arrives after the
revocation, and *retracted* when it was stored before: its bytes stay in ``entries`` (the log is
append-only; audit may read them) and its feed and document rows stay, but it is marked in
``retracted``, removed from the reconciliation index (so peers reconcile the accepted set), and
the snapshots of its documents are dropped (they may include it). Reads of `EntryStore` skip
retracted entries.

This module also builds ``author_idx`` for stores written before it existed. Everything here
runs in the caller's write transaction.
"""

from __future__ import annotations

import lmdb

from ..entry import DOCUMENT_ID_SIZE, ID_SIZE, TENANT_ID_SIZE, Entry
from ..errors import DecodeError, StoreError
from ._layout import (
    AUTHOR_IDX_KEY_SIZE,
    AUTHOR_KEY_SIZE,
    SEQ_SIZE,
    Tables,
    author_idx_key,
    pack_seq,
    scope_key,
)
from ._recon_index import unindex_items

_BUILD_CHUNK = 4096


def build_author_index(txn: lmdb.Transaction[bytes], tables: Tables) -> int:
    """Empty ``author_idx`` and list again every entry the feed names (one scan). Entries that
    are missing or do not decode are left out (fsck reports them). Returns the rows written."""
    txn.drop(tables.author_idx, delete=False)
    written = 0
    rows: list[tuple[bytes, bytes]] = []
    for entry_id in txn.cursor(tables.feed).iternext(keys=False, values=True):
        raw = txn.get(entry_id, db=tables.entries)
        if raw is None:
            continue
        try:
            entry = Entry.decode(raw, "stored entry")
        except DecodeError:
            continue
        header = entry.header
        rows.append(
            (author_idx_key(header.tenant_id, header.author, header.author_seq, entry_id), b"")
        )
        if len(rows) >= _BUILD_CHUNK:
            written += _put_rows(txn, tables, rows)
            rows = []
    return written + _put_rows(txn, tables, rows)


def _put_rows(txn: lmdb.Transaction[bytes], tables: Tables, rows: list[tuple[bytes, bytes]]) -> int:
    rows.sort()
    _, added = txn.cursor(tables.author_idx).putmulti(rows, dupdata=False, overwrite=False)
    return int(added)


def authored_after(
    txn: lmdb.Transaction[bytes], tables: Tables, tenant_id: bytes, author: bytes, after_seq: int
) -> list[bytes]:
    """Ids of the stored entries by ``author`` in the tenant with ``author_seq > after_seq``
    that are not retracted yet, in (author_seq, id) order."""
    prefix = tenant_id + author
    if len(prefix) != AUTHOR_KEY_SIZE:
        raise ValueError("tenant_id must be 16 bytes and author 32 bytes")
    if after_seq >= (1 << 64) - 1:
        return []
    found: list[bytes] = []
    cursor = txn.cursor(tables.author_idx)
    if cursor.set_range(prefix + pack_seq(max(after_seq, 0) + 1)):
        for key in cursor.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                break
            if len(key) != AUTHOR_IDX_KEY_SIZE:
                raise StoreError(f"malformed author_idx row {key.hex()}: run fsck")
            entry_id = key[AUTHOR_KEY_SIZE + SEQ_SIZE :]
            if txn.get(entry_id, db=tables.retracted) is None:
                found.append(entry_id)
    return found


def retract(txn: lmdb.Transaction[bytes], tables: Tables, entries: list[Entry]) -> None:
    """Mark ``entries`` (stored, not yet retracted, all of one tenant) retracted: remove them
    from the reconciliation index and drop the snapshots of their documents."""
    recon_items: list[tuple[bytes, int, bytes]] = []
    documents: set[bytes] = set()
    for entry in entries:
        header = entry.header
        if len(entry.id) != ID_SIZE or len(header.tenant_id) != TENANT_ID_SIZE:
            raise ValueError("retract takes stored entries")
        if not txn.put(entry.id, header.tenant_id, overwrite=False, db=tables.retracted):
            continue
        scope = scope_key(header.tenant_id, header.database)
        recon_items.append((scope, header.timestamp_ms, entry.id))
        if len(header.document_id) == DOCUMENT_ID_SIZE:
            documents.add(scope + header.document_id)
    unindex_items(txn, tables, recon_items)
    for document_key in documents:
        txn.delete(document_key, db=tables.snapshots)
