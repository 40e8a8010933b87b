"""Upgrading a store of an older schema version in place (first writable open).

Runs inside the write transaction that then writes the new schema version, so an upgrade
happens entirely or not at all. Three steps:

1. *Layout* (schemas 1-3 -> 4): when the legacy tables are present (``entries`` keyed by id,
   ``log``, ``feed``, ``doc_idx``, ``documents``, ``author_idx``, ``retracted`` keyed by id),
   every entry is copied to ``sealed`` under a new arrival number in the old ``log`` order
   (entries the log missed come after, so no stored byte is lost), ``ids`` is filled, the feed
   and document rows are rewritten with the same sequence numbers (cursors held by clients and
   the snapshots' covered sequence stay valid), retractions are carried over, and the legacy
   tables are dropped. Rows naming an entry that is not stored are left behind: the old
   store's fsck would have reported them.
2. *Derived indexes*: what the old version lacked, or kept in another encoding, is built from
   the stored entries: the author index and the reconciliation index after a layout conversion
   (the caller drops the old plain ``recon_idx`` before opening the DUPSORT one); on a store
   already in this layout, the author index when the version is 1 or 2 and the reconciliation
   index when it is 1.
3. *Forks* (schemas below 6): ``forks`` is filled from one scan of ``by_author``
   (`_chains.record_stored_forks`): two entries of one author at one sequence number, written
   before chains existed, are a fork like any other, and the fork rule withdraws from there.

The layout step is keyed on the tables present, not on the version number, so a store whose
layout is already version 4 is never converted twice.

3. *Reconciliation aggregates* (schema 4 -> 5): ``recon_agg`` is rebuilt from ``recon_idx`` by
   one scan (schema 5 numbers seven levels, the finer ones under dense buckets only), unless
   step 2 just rebuilt the whole reconciliation index.

4. *Document counters* (schemas below 7): ``scope_docs`` is filled from one scan of ``doc_feed``'s
   keys (`_writer.rebuild_document_counts`), after the layout step wrote them.
"""

from __future__ import annotations

from collections.abc import Callable

import lmdb

from ..entry import ID_SIZE, TENANT_ID_SIZE
from ._chains import record_stored_forks
from ._layout import (
    CHAINS_SCHEMA_VERSION,
    DOC_KEY_SIZE,
    DOCUMENT_COUNT_SCHEMA_VERSION,
    LEGACY_TABLE_NAMES,
    SCOPE_SIZE,
    SEQ_SIZE,
    Tables,
    pack_seq,
)
from ._recon_index import rebuild_aggregates, rebuild_recon_index
from ._retraction import build_author_index
from ._writer import number_scope, put_dups, rebuild_document_counts

_CHUNK = 65_536
_LOG_VALUE_SIZE = TENANT_ID_SIZE + ID_SIZE
_FEED_KEY_SIZE = SCOPE_SIZE + SEQ_SIZE
_DOC_IDX_KEY_SIZE = DOC_KEY_SIZE + SEQ_SIZE


def upgrade(
    env: lmdb.Environment,
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    version: int,
    present: set[bytes],
) -> None:
    """Bring a store of schema ``version`` (1 to 6) to the current layout, in ``txn``.

    ``present`` holds the names of the sub-databases the environment had when opened.
    """
    legacy = {
        name: env.open_db(name.encode(), txn=txn, create=False)
        for name in LEGACY_TABLE_NAMES
        if name.encode() in present
    }
    converted = "entries" in legacy
    if converted:
        _convert_layout(txn, tables, legacy)
    if converted or version <= 2:
        build_author_index(txn, tables)
    if converted or version == 1:
        rebuild_recon_index(txn, tables)
    elif version <= 4:
        rebuild_aggregates(txn, tables)
    if version < CHAINS_SCHEMA_VERSION:
        record_stored_forks(txn, tables)
    if version < DOCUMENT_COUNT_SCHEMA_VERSION:
        rebuild_document_counts(txn, tables)


def _convert_layout(
    txn: lmdb.Transaction[bytes], tables: Tables, legacy: dict[str, lmdb._Database]
) -> None:
    old_entries = legacy["entries"]
    # Old ``retracted`` rows are keyed by id: read them before the table is rewritten.
    old_retracted = [
        (key, value)
        for key, value in txn.cursor(tables.retracted)
        if len(key) == ID_SIZE and len(value) == TENANT_ID_SIZE
    ]
    txn.drop(tables.retracted, delete=False)

    ids = txn.cursor(tables.ids)
    sealed = txn.cursor(tables.sealed)
    arrival = 0

    def keep(entry_id: bytes, raw: bytes) -> None:
        nonlocal arrival
        if ids.put(entry_id, pack_seq(arrival + 1), overwrite=False):
            arrival += 1
            sealed.put(pack_seq(arrival), raw, append=True)

    if "log" in legacy:
        for key, value in txn.cursor(legacy["log"]):
            if len(key) != SEQ_SIZE or len(value) != _LOG_VALUE_SIZE:
                continue
            raw = txn.get(value[TENANT_ID_SIZE:], db=old_entries)
            if raw is not None:
                keep(value[TENANT_ID_SIZE:], raw)
    if txn.stat(old_entries)["entries"] != arrival:
        for entry_id, raw in txn.cursor(old_entries):
            if len(entry_id) == ID_SIZE and txn.get(entry_id, db=tables.ids) is None:
                keep(entry_id, raw)

    if "feed" in legacy:
        _copy_rows(txn, tables, legacy["feed"], tables.db_feed, _FEED_KEY_SIZE, lambda scope: scope)
    if "doc_idx" in legacy:
        # scope(32) + doc_id(16) -> the number of the scope (numbered in key order) + doc_id
        _copy_rows(
            txn,
            tables,
            legacy["doc_idx"],
            tables.doc_feed,
            _DOC_IDX_KEY_SIZE,
            lambda key: number_scope(txn, tables, key[:SCOPE_SIZE]) + key[SCOPE_SIZE:],
        )
    for entry_id, tenant in old_retracted:
        stored = txn.get(entry_id, db=tables.ids)
        if stored is not None:
            txn.put(stored, tenant, db=tables.retracted)
    for db in legacy.values():
        txn.drop(db, delete=True)


def _copy_rows(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    source: lmdb._Database,
    target: lmdb._Database,
    key_size: int,
    new_key: Callable[[bytes], bytes],
) -> None:
    """Rewrite ``prefix + BE64(seq) -> id`` rows as ``new_key(prefix) => BE64(seq) + arrival``."""
    rows: list[tuple[bytes, bytes]] = []
    for key, entry_id in txn.cursor(source):
        if len(key) != key_size or len(entry_id) != ID_SIZE:
            continue
        arrival = txn.get(entry_id, db=tables.ids)
        if arrival is None:
            continue
        prefix_size = key_size - SEQ_SIZE
        rows.append((new_key(key[:prefix_size]), key[prefix_size:] + arrival))
        if len(rows) >= _CHUNK:
            put_dups(txn, target, rows, "upgrade")
            rows = []
    put_dups(txn, target, rows, "upgrade")
