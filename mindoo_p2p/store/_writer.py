"""Writing accepted entries and all their index rows inside one LMDB write transaction.

The caller owns the transaction (and commits it); this module only decides which rows to put.
Keys that only grow (the global log, and a database's feed when its scope sorts last) are put
with LMDB's append mode; everything else goes in sorted order through ``putmulti``. Nothing is
ever overwritten: an entry id that another writer stored since the batch was checked is
reported back as a duplicate and gets no index rows. The reconciliation index
(:mod:`._recon_index`) is updated in the same transaction.
"""

from __future__ import annotations

import lmdb

from ..entry import Entry
from ..errors import StoreError
from ._layout import SEQ_SIZE, Tables, author_idx_key, pack_seq, scope_key, unpack_seq
from ._recon_index import index_items


def last_seq_in(txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes) -> int:
    """The highest BE64 suffix of keys ``prefix + BE64`` in ``db`` (0 when there is none)."""
    cursor = txn.cursor(db)
    if cursor.set_range(prefix + b"\xff" * 8):
        if cursor.key() == prefix + b"\xff" * 8:
            return (1 << 64) - 1
        found = cursor.prev()
    else:
        found = cursor.last()
    if not found:
        return 0
    key = cursor.key()
    if len(key) != len(prefix) + 8 or not key.startswith(prefix):
        return 0
    return unpack_seq(key[len(prefix) :])


def _entry_id(entry: Entry) -> bytes:
    return entry.id


def _stored_counter(txn: lmdb.Transaction[bytes], db: lmdb._Database, key: bytes, what: str) -> int:
    """A BE64 counter row (0 when absent); StoreError when the stored value is malformed."""
    stored = txn.get(key, db=db)
    if stored is None:
        return 0
    if len(stored) != SEQ_SIZE:
        raise StoreError(f"index {what} holds a malformed row: run fsck")
    return unpack_seq(stored)


def _put_sorted(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, rows: list[tuple[bytes, bytes]], what: str
) -> None:
    """Insert new ``rows`` (no key may exist yet), appending when they all sort after the db."""
    if not rows:
        return
    rows.sort()
    cursor = txn.cursor(db)
    can_append = not cursor.last() or cursor.key() < rows[0][0]
    _, added = cursor.putmulti(rows, dupdata=False, overwrite=False, append=can_append)
    if added != len(rows):
        raise StoreError(f"index {what} already holds a key of this batch: run fsck")


def write_entries(
    txn: lmdb.Transaction[bytes], tables: Tables, accepted: list[Entry]
) -> list[Entry]:
    """Store ``accepted`` (in order) with every index row; return the entries actually added.

    An entry whose id is already stored (written by another process since it was checked) is
    skipped. Raises StoreError when an index row that must be new already exists.
    """
    # Insert in id order (cache-friendly B-tree walk); the feed order stays ``accepted``'s.
    cursor = txn.cursor(tables.entries)
    raced = {
        entry.id
        for entry in sorted(accepted, key=_entry_id)
        if not cursor.put(entry.id, entry.raw, overwrite=False)
    }
    added = [e for e in accepted if e.id not in raced] if raced else list(accepted)
    if not added:
        return added

    scopes: dict[tuple[bytes, str], bytes] = {}
    next_seq: dict[bytes, int] = {}
    log_seq = last_seq_in(txn, tables.log, b"")
    feed_rows: list[tuple[bytes, bytes]] = []
    doc_rows: list[tuple[bytes, bytes]] = []
    log_rows: list[tuple[bytes, bytes]] = []
    first_seq: dict[bytes, bytes] = {}
    author_max: dict[bytes, int] = {}
    size_added: dict[bytes, int] = {}
    database_keys: set[bytes] = set()
    recon_items: list[tuple[bytes, int, bytes]] = []
    author_rows: list[tuple[bytes, bytes]] = []

    for entry in added:
        header = entry.header
        scope_id = (header.tenant_id, header.database)
        scope = scopes.get(scope_id)
        if scope is None:
            scope = scopes[scope_id] = scope_key(header.tenant_id, header.database)
            next_seq[scope] = last_seq_in(txn, tables.feed, scope) + 1
            size_added[scope] = 0
            database_keys.add(header.tenant_id + header.database.encode("utf-8"))
        seq = next_seq[scope]
        next_seq[scope] = seq + 1
        seq_bytes = pack_seq(seq)
        feed_rows.append((scope + seq_bytes, entry.id))
        doc_key = scope + header.document_id
        doc_rows.append((doc_key + seq_bytes, entry.id))
        first_seq.setdefault(doc_key, seq_bytes)
        log_seq += 1
        log_rows.append((pack_seq(log_seq), header.tenant_id + entry.id))
        author_key = header.tenant_id + header.author
        if author_max.get(author_key, 0) < header.author_seq:
            author_max[author_key] = header.author_seq
        author_rows.append(
            (author_idx_key(header.tenant_id, header.author, header.author_seq, entry.id), b"")
        )
        size_added[scope] += len(entry.raw)
        recon_items.append((scope, header.timestamp_ms, entry.id))

    _put_sorted(txn, tables.feed, feed_rows, "feed")
    _put_sorted(txn, tables.doc_idx, doc_rows, "doc_idx")
    _put_sorted(txn, tables.log, log_rows, "log")
    _put_sorted(txn, tables.author_idx, author_rows, "author_idx")
    for doc_key, seq_bytes in first_seq.items():
        txn.put(doc_key, seq_bytes, overwrite=False, db=tables.documents)
    for database_key in database_keys:
        txn.put(database_key, b"", overwrite=False, db=tables.databases)
    for author_key, author_seq in author_max.items():
        stored_seq = _stored_counter(txn, tables.author_seq, author_key, "author_seq")
        if stored_seq < author_seq:
            txn.put(author_key, pack_seq(author_seq), db=tables.author_seq)
    for scope, size in size_added.items():
        total = _stored_counter(txn, tables.scope_bytes, scope, "scope_bytes") + size
        txn.put(scope, pack_seq(min(total, (1 << 64) - 1)), db=tables.scope_bytes)
    index_items(txn, tables, recon_items)
    return added
