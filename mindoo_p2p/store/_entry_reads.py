"""Loading stored entries inside a read (or write) transaction, every byte checked.

An entry read back must decode and hash to an id that ``ids`` maps to the arrival number it was
read under, or the read raises StoreError naming the problem and saying to run fsck. Also here:
the test "is this arrival retracted" that every filtered read applies, and the ``doc_feed`` key
of a document.
"""

from __future__ import annotations

from collections.abc import Callable

import lmdb

from ..entry import Entry
from ..errors import DecodeError, StoreError
from ._layout import SEQ_SIZE, Tables, scope_key, unpack_seq
from ._writer import scope_number


def decode_stored(what: str, raw: bytes) -> Entry:
    """Decode stored sealed bytes; StoreError (naming ``what``) when they are corrupt."""
    try:
        return Entry.decode(raw, what="stored entry")
    except DecodeError as exc:
        raise StoreError(f"stored entry {what} is corrupt ({exc}): run fsck") from None


def arrival_of(txn: lmdb.Transaction[bytes], tables: Tables, entry_id: bytes) -> bytes | None:
    """The arrival number (BE64) of a stored id, or None."""
    arrival = txn.get(entry_id, db=tables.ids)
    if arrival is not None and len(arrival) != SEQ_SIZE:
        raise StoreError(f"malformed ids row for {entry_id.hex()}: run fsck")
    return arrival


def load_by_id(txn: lmdb.Transaction[bytes], tables: Tables, entry_id: bytes) -> Entry | None:
    """The stored entry with id ``entry_id`` (checked against it), or None."""
    arrival = arrival_of(txn, tables, entry_id)
    if arrival is None:
        return None
    raw = txn.get(arrival, db=tables.sealed)
    if raw is None:
        raise StoreError(f"entry {entry_id.hex()} is indexed but not stored: run fsck")
    entry = decode_stored(entry_id.hex(), raw)
    if entry.id != entry_id:
        raise StoreError(f"stored entry {entry_id.hex()} does not match its id: run fsck")
    return entry


def load_arrival(txn: lmdb.Transaction[bytes], tables: Tables, arrival: bytes) -> Entry:
    """The entry stored under ``arrival`` (BE64), checked against ``ids``."""
    raw = txn.get(arrival, db=tables.sealed)
    if raw is None:
        raise StoreError(
            f"an index names arrival {unpack_seq(arrival)}, which is not stored: run fsck"
        )
    entry = decode_stored(f"at arrival {unpack_seq(arrival)}", raw)
    if txn.get(entry.id, db=tables.ids) != arrival:
        raise StoreError(
            f"stored entry at arrival {unpack_seq(arrival)} does not match its id"
            f" (now {entry.id.hex()}): run fsck"
        )
    return entry


def retraction_check(
    txn: lmdb.Transaction[bytes], tables: Tables
) -> Callable[[bytes], bool] | None:
    """A test ``arrival (BE64) -> is it retracted`` for reads in ``txn``, or None when
    nothing is."""
    if not txn.stat(tables.retracted)["entries"]:
        return None
    db = tables.retracted
    return lambda arrival: txn.get(arrival, db=db) is not None


def doc_feed_key(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    tenant_id: bytes,
    database: str,
    document_id: bytes,
) -> bytes | None:
    """The ``doc_feed`` key of a document (None when its database has no entries)."""
    number = scope_number(txn, tables, scope_key(tenant_id, database))
    return None if number is None else number + bytes(document_id)


__all__ = [
    "arrival_of",
    "decode_stored",
    "doc_feed_key",
    "load_arrival",
    "load_by_id",
    "retraction_check",
]
