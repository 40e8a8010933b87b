"""Cursor walks over the store's tables that several read paths share (no policy, no decoding).

The DUPSORT tables (``db_feed``, ``doc_feed``, ``by_author``) hold, under each key, a sorted
list of 16-byte values: sequence number (BE64) + arrival number (BE64); see `_layout`.
"""

from __future__ import annotations

from collections.abc import Iterator

import lmdb

from ..errors import StoreError
from ._layout import DUP_SIZE, SEQ_SIZE, pack_seq, unpack_seq

MAX_SEQ = (1 << 64) - 1
"""The largest sequence or arrival number (BE64)."""


def dups_from(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, key: bytes, first_seq: int
) -> Iterator[tuple[int, bytes]]:
    """``(seq, arrival BE64)`` of the values under ``key`` in a DUPSORT table, from the first
    with seq >= ``first_seq`` on."""
    if first_seq > MAX_SEQ:
        return
    cursor = txn.cursor(db)
    if not cursor.set_key(key) or not cursor.set_range_dup(key, pack_seq(max(first_seq, 0))):
        return
    for value in cursor.iternext_dup(keys=False, values=True):
        if len(value) != DUP_SIZE:
            raise StoreError(f"malformed row under {key.hex()}: run fsck")
        yield unpack_seq(value[:SEQ_SIZE]), value[SEQ_SIZE:]


def firsts_with_prefix(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """Every key starting with ``prefix`` in a DUPSORT table, with its first value."""
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor.iternext_nodup(keys=True, values=True):
        if not key.startswith(prefix):
            return
        yield key, value


def keys_with_prefix(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes
) -> Iterator[bytes]:
    """Every key starting with ``prefix``, in order."""
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key


def rows_with_prefix(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) whose key starts with ``prefix``, in order."""
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


__all__ = ["MAX_SEQ", "dups_from", "firsts_with_prefix", "keys_with_prefix", "rows_with_prefix"]
