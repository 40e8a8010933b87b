"""Retraction: withdrawing stored entries that a revocation no longer accepts.

A revocation names, for each signing key it revokes, the last ``author_seq`` it accepts. Every
node must end with the same accepted set whatever order entries and revocations arrived in, so
an entry by that key with a higher sequence number is rejected when it arrives after the
revocation, and *retracted* when it was stored before: its bytes stay in ``sealed`` (the log is
append-only; audit may read them) and its feed and document rows stay, but it is marked in
``retracted``, removed from the reconciliation index (so peers reconcile the accepted set), and
the snapshots of its documents are dropped (they may include it). Reads of `EntryStore` skip
retracted entries.

This module also builds ``by_author`` for stores written before it existed. Everything here
runs in the caller's write transaction.
"""

from __future__ import annotations

import lmdb

from ..entry import Entry
from ..errors import DecodeError, StoreError
from ._chains import withdraw
from ._layout import AUTHOR_KEY_SIZE, DUP_SIZE, SEQ_SIZE, Tables, is_evidence_mark, pack_seq

_BUILD_CHUNK = 65_536


def build_author_index(txn: lmdb.Transaction[bytes], tables: Tables) -> int:
    """Empty ``by_author`` and list again every stored entry (one scan of ``sealed``). Entries
    that do not decode are left out (fsck reports them). Returns the rows written."""
    txn.drop(tables.by_author, delete=False)
    written = 0
    rows: list[tuple[bytes, bytes]] = []
    for arrival, raw in txn.cursor(tables.sealed):
        try:
            header = Entry.decode(raw, "stored entry").header
        except DecodeError:
            continue
        rows.append((header.tenant_id + header.author, pack_seq(header.author_seq) + arrival))
        if len(rows) >= _BUILD_CHUNK:
            written += _put_rows(txn, tables, rows)
            rows = []
    return written + _put_rows(txn, tables, rows)


def _put_rows(txn: lmdb.Transaction[bytes], tables: Tables, rows: list[tuple[bytes, bytes]]) -> int:
    rows.sort()
    _, added = txn.cursor(tables.by_author).putmulti(rows, dupdata=False)
    return int(added)


def authored_after(
    txn: lmdb.Transaction[bytes], tables: Tables, tenant_id: bytes, author: bytes, after_seq: int
) -> list[bytes]:
    """Arrival numbers (BE64) of the stored entries by ``author`` in the tenant with
    ``author_seq > after_seq`` that are not retracted yet (fork evidence, still reconciled,
    included), in (author_seq, arrival) order."""
    key = tenant_id + author
    if len(key) != AUTHOR_KEY_SIZE:
        raise ValueError("tenant_id must be 16 bytes and author 32 bytes")
    if after_seq >= (1 << 64) - 1:
        return []
    found: list[bytes] = []
    cursor = txn.cursor(tables.by_author)
    if cursor.set_key(key) and cursor.set_range_dup(key, pack_seq(max(after_seq, 0) + 1)):
        for value in cursor.iternext_dup(keys=False, values=True):
            if len(value) != DUP_SIZE:
                raise StoreError(f"malformed by_author row under {key.hex()}: run fsck")
            arrival = value[SEQ_SIZE:]
            mark = txn.get(arrival, db=tables.retracted)
            if mark is None or is_evidence_mark(bytes(mark)):
                found.append(arrival)
    return found


def retract(
    txn: lmdb.Transaction[bytes], tables: Tables, entries: list[tuple[bytes, Entry]]
) -> None:
    """Mark ``entries`` ((arrival BE64, entry) pairs: stored, not yet retracted, all of one
    tenant) retracted: remove them from the reconciliation index and drop the snapshots of
    their documents (fork evidence above a cut loses its evidence mark: `_chains.withdraw`)."""
    withdraw(txn, tables, entries)
