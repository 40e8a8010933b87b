"""Writing accepted entries and all their index rows inside one LMDB write transaction.

The caller owns the transaction (and commits it); this module only decides which rows to put.
Every entry gets the next store-wide arrival number: ``sealed`` is written in LMDB's append
mode, and each database feed, document feed and author list appends to the end of its key's
value list (MDB_APPENDDUP), so pages fill up and a commit touches pages in proportion to what
it writes. Nothing is ever overwritten: an entry id that another writer stored since the batch
was checked is reported back as a duplicate and gets no rows. The reconciliation index
(:mod:`._recon_index`) is updated in the same transaction, and so are the authors' chains: a
batch that shows an author forked withdraws its entries from the fork point on (:mod:`._chains`).
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Set as AbstractSet
from itertools import groupby, repeat
from operator import attrgetter, itemgetter
from typing import NamedTuple

import lmdb

from ..entry import Entry
from ..errors import StoreError
from ..recon import MAX_TIMESTAMP
from ._chains import plain_run_entries, settle_new_entries
from ._layout import (
    DUP_SIZE,
    SCOPE_NUMBER_SIZE,
    SEQ_SIZE,
    Tables,
    pack_dup,
    pack_scope_number,
    pack_seq,
    scope_key,
    unpack_seq,
)
from ._recon_index import index_values


def last_arrival(txn: lmdb.Transaction[bytes], tables: Tables) -> int:
    """The highest arrival number stored (0 in an empty store)."""
    cursor = txn.cursor(tables.sealed)
    if not cursor.last():
        return 0
    key = cursor.key()
    if len(key) != SEQ_SIZE:
        raise StoreError(f"malformed sealed key {key.hex()}: run fsck")
    return unpack_seq(key)


def last_dup_seq(txn: lmdb.Transaction[bytes], db: lmdb._Database, key: bytes) -> int:
    """The sequence number (first BE64) of the last value under ``key`` in a DUPSORT table
    (0 when the key is absent)."""
    cursor = txn.cursor(db)
    if not cursor.set_key(key):
        return 0
    cursor.last_dup()
    value = cursor.value()
    if len(value) != DUP_SIZE:
        raise StoreError(f"malformed row under {key.hex()}: run fsck")
    return unpack_seq(value[:SEQ_SIZE])


def scope_number(txn: lmdb.Transaction[bytes], tables: Tables, scope: bytes) -> bytes | None:
    """The 4-byte number of a database scope in ``scopes``, or None when it has none."""
    stored = txn.get(scope, db=tables.scopes)
    if stored is not None and len(stored) != SCOPE_NUMBER_SIZE:
        raise StoreError(f"malformed scopes row {scope.hex()}: run fsck")
    return stored


def number_scope(txn: lmdb.Transaction[bytes], tables: Tables, scope: bytes) -> bytes:
    """The number of a database scope, given one (the highest so far plus one) when it has
    none; only in a write transaction."""
    stored = scope_number(txn, tables, scope)
    if stored is not None:
        return stored
    # A new database: rare, and the table has one row per database, so a scan is cheap.
    highest = max(
        (
            int.from_bytes(value, "big")
            for value in txn.cursor(tables.scopes).iternext(keys=False, values=True)
        ),
        default=0,
    )
    if highest >= (1 << 32) - 1:
        raise StoreError("no database number left: run fsck")
    number = pack_scope_number(highest + 1)
    txn.put(scope, number, db=tables.scopes)
    return number


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


def _new_documents(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    doc_scopes: dict[bytes, bytes],
    tops: dict[bytes, int | None] | None = None,
) -> dict[bytes, int]:
    """scope -> how many of the ``doc_feed`` keys of ``doc_scopes`` (key -> its scope) are not
    stored yet: the documents a batch creates (looked up in key order, before it is written).
    With ``tops``, also fills it with the last feed seq of each key that has rows (None when
    that row is malformed)."""
    added: dict[bytes, int] = {}
    cursor = txn.cursor(tables.doc_feed)
    for doc_key in sorted(doc_scopes):
        if not cursor.set_key(doc_key):
            scope = doc_scopes[doc_key]
            added[scope] = added.get(scope, 0) + 1
        elif tops is not None:
            value = cursor.value() if cursor.last_dup() else b""
            tops[doc_key] = unpack_seq(value[:SEQ_SIZE]) if len(value) == DUP_SIZE else None
    return added


DocumentName = tuple[bytes, str, bytes]
"""A document: (tenant id, database name, document id)."""


class WrittenRows(NamedTuple):
    """The rows one write added to a document's feed."""

    key: bytes
    """The document's ``doc_feed`` key."""
    first: bytes
    """The first row (seq + arrival)."""
    last: bytes
    """The last row."""
    after_seq: int | None
    """The document's last feed seq before the write (0: it had no row; None: not known)."""


MAX_REMEMBERED_ROWS = 8192
"""`WrittenDocuments` keeps the rows of a write of at most this many entries (a larger own
write is remembered as nothing: the caches read its entries back, as before)."""


class WrittenDocuments:
    """The ``doc_feed`` rows one write added (empty until `write_entries` fills it), looked up
    by document: what lets a cache that knows the write's entries skip reading them back
    (`_feed_reads.document_updates`, `_feed_reads.last_if_nothing_since`). Rows of one write
    are contiguous in each document's feed (feed seqs grow with each write, so no other
    write's row sorts between two of them)."""

    __slots__ = ("_documents", "txn_id")

    def __init__(self) -> None:
        self._documents: dict[DocumentName, tuple[WrittenRows, frozenset[bytes]]] = {}
        """(tenant id, database, document id) -> its rows and the ids of their entries."""
        self.txn_id = 0
        """The write transaction's id (0: nothing filled in)."""

    def fill(
        self,
        txn_id: int,
        numbers: dict[tuple[bytes, str], bytes],
        sorted_rows: list[tuple[bytes, bytes]],
        id_of_row: dict[bytes, bytes],
        tops: dict[bytes, int | None],
    ) -> None:
        """Remember the ``doc_feed`` rows (sorted: each document's rows together, in feed
        order) of write transaction ``txn_id``, given each database's number by (tenant id,
        database name), each row's entry id and each document's last seq before the write
        (`_new_documents`: absent for a document that had none); at most
        `MAX_REMEMBERED_ROWS` rows."""
        self.txn_id = txn_id
        names = {number: name for name, number in numbers.items()}
        documents = self._documents
        for doc_key, rows in groupby(sorted_rows, _first):
            dups = list(map(_second, rows))
            tenant_id, database = names[doc_key[:SCOPE_NUMBER_SIZE]]
            documents[tenant_id, database, doc_key[SCOPE_NUMBER_SIZE:]] = (
                WrittenRows(doc_key, dups[0], dups[-1], tops.get(doc_key, 0)),
                frozenset(map(id_of_row.__getitem__, dups)),
            )

    def known_rows(
        self, tenant_id: bytes, database: str, document_id: bytes, known_ids: AbstractSet[bytes]
    ) -> WrittenRows | None:
        """The rows the write added to the document, when the entry of each of them is in
        ``known_ids``; else None."""
        found = self._documents.get((tenant_id, database, document_id))
        if found is None or not found[1].issubset(known_ids):
            return None
        return found[0]


def count_documents(txn: lmdb.Transaction[bytes], tables: Tables) -> dict[bytes, int]:
    """scope -> the number of distinct ``doc_feed`` keys under its number (one scan of the
    keys): what ``scope_docs`` must hold. Keys under a number no scope owns are left out."""
    scopes = {
        number: scope
        for scope, number in txn.cursor(tables.scopes)
        if len(number) == SCOPE_NUMBER_SIZE
    }
    counts: dict[bytes, int] = {}
    cursor = txn.cursor(tables.doc_feed)
    found = cursor.first()
    while found:
        scope = scopes.get(cursor.key()[:SCOPE_NUMBER_SIZE])
        if scope is not None:
            counts[scope] = counts.get(scope, 0) + 1
        found = cursor.next_nodup()
    return counts


def rebuild_document_counts(txn: lmdb.Transaction[bytes], tables: Tables) -> None:
    """Refill ``scope_docs`` from ``doc_feed`` (the schema 7 upgrade)."""
    txn.drop(tables.scope_docs, delete=False)
    for scope, count in sorted(count_documents(txn, tables).items()):
        txn.put(scope, pack_seq(count), db=tables.scope_docs)


def put_dups(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, rows: list[tuple[bytes, bytes]], what: str
) -> None:
    """Add new ``(key, value)`` rows to a DUPSORT table (``rows`` is sorted in place): appended
    to the end of their key's list when they sort last there (the usual case: one
    ``putmulti``), inserted in place otherwise. StoreError when a row is already there."""
    rows.sort()
    cursor = txn.cursor(db)
    # MDB_APPENDDUP puts each row that sorts after its key's last value; a row that does not
    # (it belongs further up the list, or it is already there) is left out and counted so.
    _, appended = cursor.putmulti(rows, append=True)
    if appended != len(rows):
        # Insert the rows left out; a row that is there now was appended just above or was
        # there before, so the rows put in both passes add up only when none was there before.
        _, inserted = cursor.putmulti(rows, dupdata=False)
        if appended + inserted != len(rows):
            raise StoreError(f"index {what} already holds a row of this batch: run fsck")


_first = itemgetter(0)
_second = itemgetter(1)
_scope_name = attrgetter("tenant_id", "database")
_document_id = attrgetter("document_id")
_timestamp = attrgetter("timestamp_ms")
_author_seq = attrgetter("author_seq")


def write_entries(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    accepted: list[Entry],
    *,
    sealed_here: Collection[bytes] = (),
    written_documents: WrittenDocuments | None = None,
) -> list[Entry]:
    """Store ``accepted`` (in order) with every index row; return the entries actually added.

    An entry whose id is already stored (written by another process since it was checked) is
    skipped. Raises StoreError when an index row that must be new already exists.

    ``sealed_here`` (own writes, `_local_append`): author keys (tenant_id + author) whose
    entries were sealed in this transaction continuing the author's stored head (see
    `_chains.settle_new_entries`). When every entry is such an own entry, ids are not looked
    up first (fresh nonces make them new; ``ids`` refuses a repeat with StoreError all the same).

    ``written_documents`` (own writes, `_local_append`) is filled with the ``doc_feed`` rows
    the write adds.

    The rows are built a column at a time (each entry's fields read once, the rows of a run of
    entries of one database made together) and each table's rows are put sorted, in one call
    where they extend the end of the table or of their key's list.
    """
    headers = [entry.header for entry in accepted]
    author_keys = [header.tenant_id + header.author for header in headers]
    own_only = bool(sealed_here) and all(map(sealed_here.__contains__, author_keys))
    added = list(accepted)
    if not own_only:
        # Look ids up in id order with one cursor (a cache-friendly B-tree walk, each seek
        # starting from the current page); arrivals follow ``accepted``.
        seek = txn.cursor(tables.ids).set_key
        raced = {entry.id for entry in sorted(accepted, key=_entry_id) if seek(entry.id)}
        if raced:
            kept = [i for i, entry in enumerate(accepted) if entry.id not in raced]
            added = [accepted[i] for i in kept]
            headers = [headers[i] for i in kept]
            author_keys = [author_keys[i] for i in kept]
    if not added:
        return added
    # Read before the author rows are put: which new entries extend their author's stored top
    # one after another (a catch-up's runs), so that the fork check need not look at them.
    # Own entries (all in ``sealed_here``) are not looked at: nothing to find.
    plain = set() if own_only else plain_run_entries(txn, tables, added, sealed_here)

    first_arrival = last_arrival(txn, tables) + 1
    arrival_numbers = range(first_arrival, first_arrival + len(added))
    arrivals = list(map(pack_seq, arrival_numbers))
    ids = [entry.id for entry in added]
    raws = [entry.raw for entry in added]
    arrival_of = dict(zip(ids, arrivals, strict=True))
    author_rows = sorted(
        zip(author_keys, map(pack_dup, map(_author_seq, headers), arrival_numbers), strict=True)
    )

    scopes: dict[tuple[bytes, str], bytes] = {}
    number_of: dict[tuple[bytes, str], bytes] = {}
    next_seq: dict[bytes, int] = {}
    size_added: dict[bytes, int] = {}
    doc_scopes: dict[bytes, bytes] = {}
    database_keys: set[bytes] = set()
    feed_rows: list[tuple[bytes, bytes]] = []
    doc_rows: list[tuple[bytes, bytes]] = []
    recon_values: dict[bytes, list[bytes]] = {}
    start = 0
    # Runs of consecutive entries of one database (usually the whole write): feed sequence
    # numbers go on per database in arrival order.
    for scope_id, run_of in groupby(map(_scope_name, headers)):
        end = start + len(list(run_of))
        scope = scopes.get(scope_id)
        if scope is None:
            tenant_id, database = scope_id
            scope = scopes[scope_id] = scope_key(tenant_id, database)
            next_seq[scope] = last_dup_seq(txn, tables.db_feed, scope) + 1
            number_of[scope_id] = number_scope(txn, tables, scope)
            size_added[scope] = 0
            database_keys.add(tenant_id + database.encode("utf-8"))
        seq = next_seq[scope]
        next_seq[scope] = seq + end - start
        run = headers[start:end]
        dups = list(map(pack_dup, range(seq, seq + end - start), arrival_numbers[start:end]))
        feed_rows += zip(repeat(scope), dups)
        doc_keys = list(map(number_of[scope_id].__add__, map(_document_id, run)))
        doc_rows += zip(doc_keys, dups, strict=True)
        doc_scopes.update(dict.fromkeys(doc_keys, scope))
        size_added[scope] += sum(map(len, raws[start:end]))
        timestamps = list(map(_timestamp, run))
        run_ids = ids[start:end]
        if MAX_TIMESTAMP in timestamps:  # Negentropy's infinity: not reconciled, not indexed
            kept_items = [i for i, t in enumerate(timestamps) if t != MAX_TIMESTAMP]
            timestamps = [timestamps[i] for i in kept_items]
            run_ids = [run_ids[i] for i in kept_items]
        recon_values.setdefault(scope, []).extend(
            map(bytes.__add__, map(pack_seq, timestamps), run_ids)
        )
        start = end

    # Rows handed to LMDB as they are made (no list of row tuples kept alive for the GC).
    sealed_put = txn.cursor(tables.sealed).putmulti
    _, appended = sealed_put(zip(arrivals, raws, strict=True), overwrite=False, append=True)
    if appended != len(arrivals):
        raise StoreError("sealed already holds an arrival number of this batch: run fsck")
    sorted_ids = sorted(ids)
    id_rows = zip(sorted_ids, map(arrival_of.__getitem__, sorted_ids), strict=True)
    _, new_ids = txn.cursor(tables.ids).putmulti(id_rows, dupdata=False, overwrite=False)
    if new_ids != len(ids):
        raise StoreError("ids already holds an id of this batch: run fsck")
    put_dups(txn, tables.db_feed, feed_rows, "db_feed")
    if written_documents is None or len(doc_rows) > MAX_REMEMBERED_ROWS:
        if written_documents is not None:  # a large write is remembered as nothing
            written_documents.txn_id = txn.id()
        docs_added = _new_documents(txn, tables, doc_scopes)
        put_dups(txn, tables.doc_feed, doc_rows, "doc_feed")
    else:
        tops: dict[bytes, int | None] = {}
        docs_added = _new_documents(txn, tables, doc_scopes, tops)
        # ``doc_rows`` is in entry order (as ``ids``) until `put_dups` sorts it.
        id_of_row = dict(zip(map(_second, doc_rows), ids, strict=True))
        put_dups(txn, tables.doc_feed, doc_rows, "doc_feed")
        written_documents.fill(txn.id(), number_of, doc_rows, id_of_row, tops)
    put_dups(txn, tables.by_author, author_rows, "by_author")
    for database_key in database_keys:
        txn.put(database_key, b"", overwrite=False, db=tables.databases)
    # ``author_rows`` is sorted: each author's last row holds its highest new author_seq.
    for author_key, top_row in dict(author_rows).items():
        author_seq = unpack_seq(top_row[:SEQ_SIZE])
        stored_seq = _stored_counter(txn, tables.author_seq, author_key, "author_seq")
        if stored_seq < author_seq:
            txn.put(author_key, pack_seq(author_seq), db=tables.author_seq)
    for scope, size in size_added.items():
        total = _stored_counter(txn, tables.scope_bytes, scope, "scope_bytes") + size
        txn.put(scope, pack_seq(min(total, (1 << 64) - 1)), db=tables.scope_bytes)
    for scope, count in docs_added.items():
        total = _stored_counter(txn, tables.scope_docs, scope, "scope_docs") + count
        txn.put(scope, pack_seq(total), db=tables.scope_docs)
    index_values(txn, tables, recon_values)
    settle_new_entries(txn, tables, added, arrival_of, sealed_here, plain)
    return added
