"""Storing this node's own entries, sealed inside the write transaction that stores them.

Every entry header carries its author's sequence number (``author_seq``, per tenant) and is
signed, and an entry's id is the hash of its sealed bytes: the number must be known when the
entry is sealed. Numbers taken from a per-process cache fork the author as soon as two processes
write to one home (each numbers from its own cache). So local writes are sealed *inside* the
LMDB write transaction: LMDB serialises writers across processes, and the transaction sees
every commit before it, so the ``author_seq`` table it reads is the truth of the moment.

Contract of :func:`append_local` (called by `EntryStore.append_local` inside its write
transaction; nothing here opens or commits a transaction):

1. ``seal(positions)`` seals the entries, asking ``positions`` (:class:`AuthorPositions`,
   reading the write transaction) where each author stands. It may raise: nothing is written.
2. Each author's new entries must continue its stored chain without a gap or a repeat:
   ``last + 1, last + 2, ...`` in the order sealed, each naming the one before as ``prev``
   (the first one the stored last entry, `AuthorPositions.last_entry_id`): StoreError
   otherwise, nothing written.
3. ``authorize(entries)`` sees the whole write at once, tenant-log entries first, then the
   others, each group in the order sealed (the order the application made them, which is
   causal), and returns the refusals (`Rejected`, with a `RejectionKind`). `LocalWriter`
   passes the admission pipeline's membership step (`admission.admit`). Own entries are all or
   nothing: one refusal raises :class:`~mindoo_p2p.errors.OwnEntryRefusedError` and nothing
   is written, so a refused write leaves no gap in the numbers. Signatures are not checked
   again (the caller has just made them); membership is, exactly as for entries from elsewhere.
4. Every entry and its index rows are written (`write_entries`); an id already stored raises
   StoreError (fresh nonces make that impossible for honest sealing). The fork check of the
   same transaction (`_chains.settle_new_entries`) is told which authors' entries step 2 found
   extending the top of their stored ``by_author`` rows: those cannot show a fork (nothing is
   stored at their numbers or above, and their links are the ones step 2 checked), so they are
   not compared with their neighbours; a fork point already recorded for the author (its key
   was used elsewhere) still withdraws them. An author whose rows go above ``last_seq`` (a
   damaged ``author_seq`` row) gets the full comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

import lmdb

from ..entry import NO_PREV, TENANT_LOG, Entry
from ..errors import OwnEntryRefusedError, StoreError
from ._layout import AUTHOR_KEY_SIZE, DUP_SIZE, SEQ_SIZE, Tables, unpack_seq
from ._writer import WrittenDocuments, write_entries
from .results import Rejected


class AuthorPositions(Protocol):
    """Where each author stands in the store, as the write transaction sees it.

    Handed to a sealer inside the write transaction; valid only during that call. Each new
    entry continues its author's chain: number ``last_seq + 1``, ``prev`` = ``last_entry_id``.
    """

    def last_seq(self, tenant_id: bytes, author: bytes) -> int:
        """The highest ``author_seq`` stored for ``author`` in the tenant (0 when none)."""
        ...

    def last_entry_id(self, tenant_id: bytes, author: bytes) -> bytes:
        """The id of ``author``'s entry at `last_seq` (`entry.NO_PREV` when it has none): the
        ``prev`` of its next entry."""
        ...


SealInTransaction = Callable[[AuthorPositions], Sequence[Entry]]
"""Seals a write's entries given the authors' positions; called inside the write transaction."""

OwnAuthorizer = Callable[[Sequence[Entry]], Sequence[Rejected]]
"""Checks a write's own entries as a whole (tenant-log entries first, then the others, each
group in the order sealed) inside the write transaction: the refusals, none to accept all."""


def read_last_author_seq(txn: lmdb.Transaction[bytes], tables: Tables, key: bytes) -> int:
    """The ``author_seq`` row for ``key`` (tenant_id + author), 0 when absent."""
    if len(key) != AUTHOR_KEY_SIZE:
        raise ValueError("tenant_id must be 16 bytes and author 32 bytes")
    value = txn.get(key, db=tables.author_seq)
    if value is None:
        return 0
    if len(value) != SEQ_SIZE:
        raise StoreError("malformed author_seq row: run fsck")
    return unpack_seq(value)


class _TransactionPositions:
    """`AuthorPositions` read from one write transaction.

    Also notes, per author asked about, the highest ``author_seq`` among its ``by_author`` rows
    (`head_seq`): `append_local` compares it with `last_seq` to know whether the author's new
    entries extend the top of everything stored for it."""

    __slots__ = ("_heads", "_tables", "_txn")

    def __init__(self, txn: lmdb.Transaction[bytes], tables: Tables) -> None:
        self._txn = txn
        self._tables = tables
        self._heads: dict[bytes, tuple[int, bytes]] = {}

    def last_seq(self, tenant_id: bytes, author: bytes) -> int:
        return read_last_author_seq(self._txn, self._tables, bytes(tenant_id) + bytes(author))

    def last_entry_id(self, tenant_id: bytes, author: bytes) -> bytes:
        return self._head(bytes(tenant_id) + bytes(author))[1]

    def head_seq(self, author_key: bytes) -> int:
        """The highest ``author_seq`` of ``author_key``'s ``by_author`` rows (0 when none)."""
        return self._head(author_key)[0]

    def _head(self, key: bytes) -> tuple[int, bytes]:
        found = self._heads.get(key)
        if found is None:  # asked by the sealer, then by the check: read (and hash) once
            found = self._heads[key] = read_head(self._txn, self._tables, key)
        return found


def read_last_entry_id(txn: lmdb.Transaction[bytes], tables: Tables, key: bytes) -> bytes:
    """The id of the last ``by_author`` entry of ``key`` (tenant_id + author): the one with the
    highest author_seq (the latest arrival among several); NO_PREV when there is none."""
    return read_head(txn, tables, key)[1]


def read_head(txn: lmdb.Transaction[bytes], tables: Tables, key: bytes) -> tuple[int, bytes]:
    """``(author_seq, id)`` of the last ``by_author`` entry of ``key`` (tenant_id + author):
    the one with the highest author_seq (the latest arrival among several); ``(0, NO_PREV)``
    when there is none."""
    cursor = txn.cursor(tables.by_author)
    if not cursor.set_key(key):
        return 0, NO_PREV
    cursor.last_dup()
    value = cursor.value()
    if len(value) != DUP_SIZE:
        raise StoreError(f"malformed by_author row under {key.hex()}: run fsck")
    raw = txn.get(value[SEQ_SIZE:], db=tables.sealed)
    if raw is None:
        raise StoreError(f"by_author names an entry that is not stored under {key.hex()}: run fsck")
    return unpack_seq(value[:SEQ_SIZE]), hashlib.sha256(raw).digest()


def append_local(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    seal: SealInTransaction,
    authorize: OwnAuthorizer | None,
    written_documents: WrittenDocuments | None = None,
) -> list[Entry]:
    """Seal, check and write own entries in ``txn``; return them in commit order.

    See the module docstring for the contract. Raises whatever ``seal`` or ``authorize``
    raise, OwnEntryRefusedError, or StoreError; the caller aborts ``txn`` on any exception.
    ``written_documents`` is filled with the rows the write adds to each document's feed
    (`write_entries`).
    """
    positions = _TransactionPositions(txn, tables)
    sealed = list(seal(positions))
    if not sealed:
        return []
    heads, log_entries = _check_sequences(sealed, positions)
    ordered = sealed
    if log_entries:
        ordered = [e for e in sealed if e.database == TENANT_LOG]
        ordered += [e for e in sealed if e.database != TENANT_LOG]
    if authorize is not None:
        refused = list(authorize(ordered))
        if refused:
            raise OwnEntryRefusedError(refused)
    added = write_entries(
        txn, tables, ordered, sealed_here=heads, written_documents=written_documents
    )
    if len(added) != len(ordered):
        raise StoreError("a freshly sealed entry is already stored: refusing to write it twice")
    return ordered


def _check_sequences(
    sealed: list[Entry], positions: _TransactionPositions
) -> tuple[set[bytes], int]:
    """Each author's entries continue its stored chain: last + 1, last + 2, ..., each naming
    the one before (the stored last entry, then the previous one sealed). Returns the author
    keys (tenant_id + author) whose stored head is also the top of their ``by_author`` rows
    (nothing stored above ``last_seq``): their new entries extend the top of what is stored, so
    the store's fork check has nothing to compare them with (`settle_new_entries`'
    ``continuing``); an author whose rows go higher (a damaged ``author_seq`` row) gets the
    full check. Also returns how many of the entries are tenant-log entries."""
    expected: dict[bytes, tuple[int, bytes]] = {}
    heads: set[bytes] = set()
    log_entries = 0
    for entry in sealed:
        header = entry.header
        author_key = header.tenant_id + header.author
        position = expected.get(author_key)
        if position is None:
            last = positions.last_seq(header.tenant_id, header.author)
            position = (last + 1, positions.last_entry_id(header.tenant_id, header.author))
            if positions.head_seq(author_key) == last:
                heads.add(author_key)
        seq, prev = position
        if header.author_seq != seq:
            raise StoreError(
                f"own entry {entry.id.hex()} has author_seq {header.author_seq} where"
                f" its author's sequence continues at {seq}: it would fork the author"
            )
        if header.prev != prev:
            raise StoreError(
                f"own entry {entry.id.hex()} does not name its author's previous entry"
                f" {prev.hex()[:16]}: it would fork the author"
            )
        expected[author_key] = (seq + 1, entry.id)
        if header.database == TENANT_LOG:
            log_entries += 1
    return heads, log_entries
