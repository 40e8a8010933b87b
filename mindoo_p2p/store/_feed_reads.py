"""The store's ordered reads: per-document and per-database feeds, the arrival log.

One-transaction reads take the transaction; paging reads (`iter_database`, `iter_document_keys`,
`iter_log`) take ``reading`` (opens a short read transaction) and read `ITER_PAGE` rows per
transaction, so a slow consumer holds no transaction open. Entries a revocation retracted are
left out, except by `entries_after`, which reads what was stored. Every entry is loaded and
checked by `_entry_reads`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from typing import TypeAlias, TypeVar

import lmdb

from ..entry import DOCUMENT_ID_SIZE, Entry, EntryKind
from ..entry_fields import document_key_of_raw, tenant_id_of_raw
from ..errors import DecodeError, StoreError
from ._cursors import MAX_SEQ, dups_from
from ._entry_reads import doc_feed_key, load_arrival, retraction_check
from ._layout import SEQ_SIZE, Tables, pack_seq, scope_key, unpack_seq
from ._writer import WrittenRows, scope_number
from .results import FeedItem

_T = TypeVar("_T")

ITER_PAGE = 512
"""Rows a paging read scans per read transaction."""

Reading: TypeAlias = Callable[[], "AbstractContextManager[lmdb.Transaction[bytes]]"]
"""Opens a short read transaction (the store's ``_reading``)."""


def document_entries(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_id: bytes,
    after_seq: int,
) -> list[tuple[int, Entry]]:
    """``(feed seq, entry)`` of the document's entries with seq > ``after_seq``, in order."""
    return document_updates(txn, tables, tenant_id, database, document_id, after_seq, frozenset())[
        0
    ]


def document_updates(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_id: bytes,
    after_seq: int,
    known_ids: AbstractSet[bytes],
    own: WrittenRows | None = None,
) -> tuple[list[tuple[int, Entry]], int]:
    """`document_entries` without loading the entries whose id is in ``known_ids``, and the
    highest seq seen (``after_seq`` when none).

    ``known_ids`` are entries the caller holds (a cache's own writes since it last read).
    When ``own`` (the rows an own write added to the document, all of them known: see
    `WrittenDocuments.known_rows`) are all the document's rows after ``after_seq`` (the
    first of them is the first row after ``after_seq``, and the last of them the document's
    last), nothing is read: the usual refresh of a cache after its own write costs two cursor
    moves (and `EntryStore.document_updates` not even a read transaction when nothing was
    committed since the write: `last_if_nothing_since`). Otherwise, when the rows
    after ``after_seq`` are exactly the known entries (as many rows, and each known id's
    arrival, from the ``ids`` index, among them), none is read either. Otherwise every row
    not retracted is read, and those whose bytes hash to a known id are left out."""
    own_last = None if own is None else _last_if_only(txn, tables, own, after_seq)
    if own_last is not None:
        return [], own_last
    key = doc_feed_key(txn, tables, tenant_id, database, document_id)
    if key is None:
        return [], after_seq
    rows = list(dups_from(txn, tables.doc_feed, key, after_seq + 1))
    if not rows:
        return [], after_seq
    last = rows[-1][0]
    if len(rows) == len(known_ids):
        arrivals = {arrival for _, arrival in rows}
        ids = tables.ids
        if all(txn.get(entry_id, db=ids) in arrivals for entry_id in known_ids):
            return [], last
    found: list[tuple[int, Entry]] = []
    sealed = tables.sealed
    retracted = retraction_check(txn, tables)
    for seq, arrival in rows:
        if retracted is not None and retracted(arrival):
            continue
        if known_ids:
            raw = txn.get(arrival, db=sealed)
            if raw is not None and hashlib.sha256(raw).digest() in known_ids:
                continue  # the caller has it (a corrupt copy would not hash to it)
        found.append((seq, load_arrival(txn, tables, arrival)))
    return found, last


def last_if_nothing_since(
    env: lmdb.Environment, rows: WrittenRows, txn_id: int, after_seq: int
) -> int | None:
    """The seq of the last of ``rows`` (one write's rows of a document) when the write found
    the document's last row at ``after_seq`` and nothing was committed since (LMDB's last
    committed transaction is still the write's, ``txn_id``): then they are all the
    document's rows after ``after_seq``, known without a read transaction. Else None."""
    if rows.after_seq == after_seq and env.info()["last_txnid"] == txn_id:
        return unpack_seq(rows.last[:SEQ_SIZE])
    return None


def _last_if_only(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    rows: WrittenRows,
    after_seq: int,
) -> int | None:
    """The seq of the last of ``rows`` (one write's rows of a document) when they are all
    the document's rows after ``after_seq``; else None."""
    cursor = txn.cursor(tables.doc_feed)
    if (
        cursor.set_range_dup(rows.key, pack_seq(max(after_seq + 1, 0)))
        and cursor.value() == rows.first
        and cursor.last_dup()
        and cursor.value() == rows.last
    ):
        return unpack_seq(rows.last[:SEQ_SIZE])
    return None


class _TooMany(Exception):
    """A document has more entries than `documents_entries` was asked to load."""


def documents_entries(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_ids: Sequence[bytes],
    max_entries: int,
) -> list[list[tuple[int, Entry]] | None]:
    """`document_entries` (from seq 1) of each of ``document_ids``, in the order given; None
    for a document with more than ``max_entries`` entries or a stored entry that does not check
    out (the caller reads that one on its own, which raises the error)."""
    number = scope_number(txn, tables, scope_key(tenant_id, database))
    retracted = retraction_check(txn, tables)
    found: list[list[tuple[int, Entry]] | None] = []
    for document_id in document_ids:
        if number is None or len(document_id) != DOCUMENT_ID_SIZE:
            found.append([])
            continue
        key = number + bytes(document_id)
        rows: list[tuple[int, Entry]] = []
        try:
            for seq, arrival in dups_from(txn, tables.doc_feed, key, 1):
                if retracted is not None and retracted(arrival):
                    continue
                if len(rows) == max_entries:
                    raise _TooMany
                rows.append((seq, load_arrival(txn, tables, arrival)))
        except (_TooMany, StoreError):
            found.append(None)
        else:
            found.append(rows)
    return found


def document_entry_count(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_id: bytes,
) -> int:
    """How many entries the document has (retracted ones left out)."""
    key = doc_feed_key(txn, tables, tenant_id, database, document_id)
    if key is None:
        return 0
    retracted = retraction_check(txn, tables)
    if retracted is None:
        cursor = txn.cursor(tables.doc_feed)
        return int(cursor.count()) if cursor.set_key(key) else 0
    return sum(
        1 for _, arrival in dups_from(txn, tables.doc_feed, key, 1) if not retracted(arrival)
    )


def changes_since(
    txn: lmdb.Transaction[bytes], tables: Tables, scope: bytes, cursor: int, limit: int
) -> list[FeedItem]:
    """Up to ``limit`` feed items of the database ``scope`` with seq > ``cursor``, ascending."""
    items: list[FeedItem] = []
    retracted = retraction_check(txn, tables)
    for seq, arrival in dups_from(txn, tables.db_feed, scope, cursor + 1):
        if len(items) >= limit:
            break
        if retracted is not None and retracted(arrival):
            continue
        entry = load_arrival(txn, tables, arrival)
        header = entry.header
        items.append(
            FeedItem(
                seq=seq,
                entry_id=entry.id,
                document_id=header.document_id,
                kind=header.kind,
                author=header.author,
                author_seq=header.author_seq,
                timestamp_ms=header.timestamp_ms,
            )
        )
    return items


def entries_after(
    txn: lmdb.Transaction[bytes], tables: Tables, arrival: int, limit: int
) -> tuple[list[Entry], int]:
    """Up to ``limit`` stored entries with an arrival number above ``arrival`` (retracted ones
    included), and the last arrival number read (``arrival`` when none)."""
    entries: list[Entry] = []
    last = arrival
    cursor = txn.cursor(tables.sealed)
    if cursor.set_range(pack_seq(arrival + 1)):
        for key, _raw in cursor:
            if len(entries) >= limit:
                break
            entries.append(load_arrival(txn, tables, key))
            last = unpack_seq(key)
    return entries, last


def raws_after(
    txn: lmdb.Transaction[bytes], tables: Tables, arrival: int, limit: int
) -> tuple[list[bytes], int]:
    """Up to ``limit`` sealed entries stored after ``arrival``, as bytes (neither decoded nor
    checked), and the arrival of the last one (``arrival`` when none)."""
    raws: list[bytes] = []
    last = arrival
    cursor = txn.cursor(tables.sealed)
    if cursor.set_range(pack_seq(arrival + 1)):
        for key, raw in cursor:
            if len(raws) >= limit:
                break
            raws.append(bytes(raw))
            last = unpack_seq(key)
    return raws, last


def _feed_pages(
    reading: Reading,
    tables: Tables,
    scope: bytes,
    since_seq: int,
    read: Callable[[lmdb.Transaction[bytes], bytes], _T],
) -> Iterator[_T]:
    """``read(txn, arrival)`` of each of the database's entries with feed seq > ``since_seq``
    that no revocation retracted, in feed order, `ITER_PAGE` feed rows per read transaction."""
    next_seq = since_seq + 1
    while next_seq <= MAX_SEQ:
        page: list[_T] = []
        scanned = 0
        with reading() as txn:
            retracted = retraction_check(txn, tables)
            for seq, arrival in dups_from(txn, tables.db_feed, scope, next_seq):
                if scanned >= ITER_PAGE:
                    break
                scanned += 1
                next_seq = seq + 1
                if retracted is None or not retracted(arrival):
                    page.append(read(txn, arrival))
        yield from page
        if scanned < ITER_PAGE:
            return


def iter_database(
    reading: Reading, tables: Tables, scope: bytes, since_seq: int
) -> Iterator[Entry]:
    """The database's entries with feed seq > ``since_seq``, in feed order, paged."""
    return _feed_pages(
        reading, tables, scope, since_seq, lambda txn, arrival: load_arrival(txn, tables, arrival)
    )


def iter_document_keys(
    reading: Reading, tables: Tables, scope: bytes, since_seq: int
) -> Iterator[tuple[EntryKind, bytes, bytes]]:
    """``(kind, document id, key id)`` of the database's entries with feed seq > ``since_seq``,
    in feed order, read from the stored bytes' fixed places without decoding them, paged."""

    def document_key(
        txn: lmdb.Transaction[bytes], arrival: bytes
    ) -> tuple[EntryKind, bytes, bytes]:
        raw = txn.get(arrival, db=tables.sealed)
        try:
            return document_key_of_raw(bytes(raw or b""))
        except DecodeError as exc:
            where = f"arrival {unpack_seq(arrival)}"
            raise StoreError(f"stored entry at {where}: {exc}: run fsck") from None

    return _feed_pages(reading, tables, scope, since_seq, document_key)


def iter_log(reading: Reading, tables: Tables, tenant_id: bytes | None) -> Iterator[Entry]:
    """Every stored entry (or one tenant's) in arrival order, paged."""
    next_arrival = 1
    while True:
        page: list[Entry] = []
        scanned = 0
        with reading() as txn:
            retracted = retraction_check(txn, tables)
            cursor = txn.cursor(tables.sealed)
            if cursor.set_range(pack_seq(next_arrival)):
                for arrival, raw in cursor:
                    if scanned >= ITER_PAGE:
                        break
                    scanned += 1
                    if len(arrival) != SEQ_SIZE:
                        raise StoreError("malformed sealed key: run fsck")
                    next_arrival = unpack_seq(arrival) + 1
                    if tenant_id is not None and tenant_id_of_raw(raw) != tenant_id:
                        continue
                    if retracted is None or not retracted(arrival):
                        page.append(load_arrival(txn, tables, arrival))
        yield from page
        if scanned < ITER_PAGE or next_arrival > MAX_SEQ:
            return


__all__ = [
    "ITER_PAGE",
    "Reading",
    "changes_since",
    "document_entries",
    "document_entry_count",
    "document_updates",
    "documents_entries",
    "entries_after",
    "iter_database",
    "iter_document_keys",
    "iter_log",
    "last_if_nothing_since",
    "raws_after",
]
