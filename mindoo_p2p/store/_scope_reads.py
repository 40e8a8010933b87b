"""What the store holds, per tenant and database: tenants, databases, documents, counters,
authors. One read transaction each; every row is checked for its size (StoreError: run fsck).
"""

from __future__ import annotations

import lmdb

from ..entry import TENANT_ID_SIZE
from ..errors import StoreError
from ._cursors import firsts_with_prefix, keys_with_prefix, rows_with_prefix
from ._layout import (
    AUTHOR_KEY_SIZE,
    DOC_FEED_KEY_SIZE,
    DUP_SIZE,
    SCOPE_NUMBER_SIZE,
    SEQ_SIZE,
    Tables,
    prefix_successor,
    unpack_seq,
)
from ._writer import last_dup_seq, scope_number


def tenants(txn: lmdb.Transaction[bytes], tables: Tables) -> list[bytes]:
    """The ids of every tenant with at least one stored entry, sorted."""
    found: list[bytes] = []
    cursor = txn.cursor(tables.databases)
    positioned = cursor.first()
    while positioned:
        tenant = cursor.key()[:TENANT_ID_SIZE]
        found.append(tenant)
        successor = prefix_successor(tenant)
        positioned = successor is not None and cursor.set_range(successor)
    return found


def databases(txn: lmdb.Transaction[bytes], tables: Tables, tenant_id: bytes) -> list[str]:
    """The names of the tenant's databases with stored entries (the tenant log too), sorted."""
    names: list[str] = []
    for key in keys_with_prefix(txn, tables.databases, tenant_id):
        try:
            name = key[TENANT_ID_SIZE:].decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError("malformed databases row: run fsck") from None
        names.append(name)
    return sorted(names)


def documents(txn: lmdb.Transaction[bytes], tables: Tables, scope: bytes) -> list[bytes]:
    """The distinct document ids of the database ``scope``, in order of their first entry's
    arrival."""
    number = scope_number(txn, tables, scope)
    if number is None:
        return []
    firsts: list[tuple[int, bytes]] = []
    for key, first in firsts_with_prefix(txn, tables.doc_feed, number):
        if len(key) != DOC_FEED_KEY_SIZE or len(first) != DUP_SIZE:
            raise StoreError("malformed doc_feed row: run fsck")
        firsts.append((unpack_seq(first[:SEQ_SIZE]), key[SCOPE_NUMBER_SIZE:]))
    firsts.sort()
    return [document_id for _, document_id in firsts]


def database_stats(txn: lmdb.Transaction[bytes], tables: Tables, scope: bytes) -> dict[str, int]:
    """``{"entries", "documents", "last_seq", "bytes"}`` of the database ``scope``."""
    last = last_dup_seq(txn, tables.db_feed, scope)
    documents = txn.get(scope, db=tables.scope_docs)
    size = txn.get(scope, db=tables.scope_bytes)
    if size is not None and len(size) != SEQ_SIZE:
        raise StoreError("malformed scope_bytes row: run fsck")
    if documents is not None and len(documents) != SEQ_SIZE:
        raise StoreError("malformed scope_docs row: run fsck")
    return {
        "entries": last,  # feed sequences are dense: 1..last
        "documents": 0 if documents is None else unpack_seq(documents),
        "last_seq": last,
        "bytes": 0 if size is None else unpack_seq(size),
    }


def authors(txn: lmdb.Transaction[bytes], tables: Tables, tenant_id: bytes) -> dict[bytes, int]:
    """Every author with stored entries in the tenant -> the highest author_seq stored."""
    found: dict[bytes, int] = {}
    for key, value in rows_with_prefix(txn, tables.author_seq, tenant_id):
        if len(key) != AUTHOR_KEY_SIZE or len(value) != SEQ_SIZE:
            raise StoreError("malformed author_seq row: run fsck")
        found[key[TENANT_ID_SIZE:]] = unpack_seq(value)
    return found


__all__ = ["authors", "database_stats", "databases", "documents", "tenants"]
