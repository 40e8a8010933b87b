"""The reconciliation index of the entry store: kept up to date on append, checked by fsck.

Rows (encodings and the level rule in :mod:`._layout`), per scope (= tenant and database, the
tenant log included):

- ``recon_idx``: a DUPSORT table whose key ``scope`` holds one 40-byte value
  ``BE64(timestamp_ms) ‖ id`` per stored entry, so one scope's values are its items in
  Negentropy's (timestamp, id) order (fsck's check digests them as 72-byte keys
  ``scope ‖ value``, :func:`recon_idx_key`, which sort the same way). An entry whose
  timestamp is 2**64-1 (Negentropy's "infinity") is not indexed: it cannot be reconciled.
- ``recon_agg``: ``scope ‖ level ‖ BE64(ts >> RECON_SHIFTS[level])`` -> ``BE64(count) ‖ sum``,
  the number of items of the bucket and the sum of their ids (little-endian integers, mod
  2**256): every non-empty bucket of the levels from ``RECON_BASE_LEVEL`` up, and the children
  of every bucket holding more than ``RECON_SPLIT_THRESHOLD`` items (so no reader ever scans a
  leaf of more than that many items, unless they share one millisecond).

What this module does with them:

- :func:`index_values` adds a write's items, given per scope as their values, inside the
  append's write transaction (:func:`index_items` takes ``(scope, timestamp, id)`` items; no
  overwrite: an item already there is not counted twice; each touched aggregate row is
  rewritten once per call; a bucket that crosses the split threshold gets its child rows from
  the write's own per-millisecond sums when it was empty before, else from one scan of its
  items);
  :func:`unindex_items` is its inverse (retraction; a bucket falling to the threshold loses
  its child rows);
- :func:`rebuild_recon_index` drops both and rebuilds them from the stored entries by one scan
  (schema upgrade from 1-3, repair after fsck); :func:`rebuild_aggregates` rebuilds
  ``recon_agg`` alone from ``recon_idx`` (upgrade from schema 4);
- :class:`ReconIndexCheck` verifies them for fsck (the index against the entries, the aggregates
  against the rows :class:`._recon_levels.ExpectedRows` derives from the index).

Sessions read the index through :class:`._recon_snapshot.LmdbReconStorage`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from itertools import groupby, repeat
from operator import itemgetter

import lmdb

from ..entry import ID_SIZE, Entry
from ..errors import DecodeError, StoreError
from ..recon import MAX_TIMESTAMP
from ._layout import (
    RECON_AGG_KEY_SIZE,
    RECON_BASE_LEVEL,
    RECON_FAN_SHIFT,
    RECON_ID_OFFSET,
    RECON_IDX_KEY_SIZE,
    RECON_RESERVED_TS,
    RECON_SHIFTS,
    RECON_SPLIT_THRESHOLD,
    RECON_SUM_MODULUS,
    RECON_TOP_LEVEL,
    SCOPE_SIZE,
    SEQ_SIZE,
    U64_LIMIT,
    Tables,
    is_evidence_mark,
    pack_recon_agg,
    pack_seq,
    recon_agg_key,
    recon_idx_key,
    recon_is_leaf,
    scope_key,
    unpack_recon_agg,
)
from ._recon_levels import ExpectedRows, Item, Slot, millisecond_slots, subtree_rows

_REBUILD_CHUNK = 65_536

Problem = Callable[[bytes | None, str, str], None]
"""fsck's reporting callback: (entry id or None, where, reason)."""


def _corrupt(what: str) -> StoreError:
    return StoreError(
        f"the reconciliation index is damaged ({what}): run fsck, then"
        " EntryStore.rebuild_recon_index()"
    )


# -- writing -------------------------------------------------------------------------------


def index_items(
    txn: lmdb.Transaction[bytes], tables: Tables, items: Iterable[tuple[bytes, int, bytes]]
) -> int:
    """Add ``(scope, timestamp_ms, id)`` items to the index in the caller's write transaction.

    An item already indexed is left alone and not counted again; an item with the reserved
    timestamp 2**64-1 is not indexed. Every aggregate row the new items touch is read, updated
    and written once. Returns how many items were added. Raises StoreError when a touched
    aggregate row is malformed (then nothing should be committed: the caller's transaction
    aborts on the exception).
    """
    return index_values(txn, tables, _values_by_scope(items))


def _values_by_scope(items: Iterable[tuple[bytes, int, bytes]]) -> dict[bytes, list[bytes]]:
    """scope -> the ``recon_idx`` values (BE64(timestamp) + id) of ``items``, leaving out the
    reserved timestamp; ValueError for a scope or id that is not 32 bytes."""
    by_scope: dict[bytes, list[bytes]] = {}
    for scope, timestamp, entry_id in items:
        if timestamp == MAX_TIMESTAMP:
            continue
        if len(scope) != SCOPE_SIZE or len(entry_id) != ID_SIZE:
            raise ValueError("index items take 32-byte scopes and 32-byte ids")
        by_scope.setdefault(scope, []).append(pack_seq(timestamp) + entry_id)
    return by_scope


def index_values(
    txn: lmdb.Transaction[bytes], tables: Tables, values_by_scope: Mapping[bytes, list[bytes]]
) -> int:
    """`index_items` for items given per scope as their ``recon_idx`` values (BE64(timestamp)
    + id: well-formed, none with the reserved timestamp; each list is sorted in place): what
    the append builds for a whole write at once."""
    cursor = txn.cursor(tables.recon_idx)
    sums: dict[tuple[bytes, int], list[int]] = {}
    added = 0
    for scope, values in values_by_scope.items():
        if values:
            values.sort()
            new = _put_scope_values(cursor, scope, values)
            _add_millisecond_sums(sums, scope, new)
            added += len(new)
    if sums:
        _apply_deltas(txn, tables, sums, 1)
    return added


_stamp_of = itemgetter(slice(None, SEQ_SIZE))
_id_of = itemgetter(slice(SEQ_SIZE, None))
_little_endian = partial(int.from_bytes, byteorder="little")


def _put_scope_values(cursor: lmdb.Cursor[bytes], scope: bytes, values: list[bytes]) -> list[bytes]:
    """Put one scope's sorted well-formed ``recon_idx`` values with the table's ``cursor``;
    the ones that were not there yet (in order).

    When the first sorts after the scope's last stored value (new timestamps are the latest:
    the usual case), they are all appended in one call; otherwise each is appended or inserted
    in its place, one by one."""
    if not cursor.set_key(scope) or (cursor.last_dup() and cursor.value() < values[0]):
        _, appended = cursor.putmulti(zip(repeat(scope), values), append=True)
        # Sorted and above everything stored: only a repeat of the value before is left out.
        return values if appended == len(values) else list(dict.fromkeys(values))
    put = cursor.put
    return [
        value
        for value in values
        if put(scope, value, append=True) or put(scope, value, dupdata=False)
    ]


def unindex_items(
    txn: lmdb.Transaction[bytes], tables: Tables, items: Iterable[tuple[bytes, int, bytes]]
) -> int:
    """Remove ``(scope, timestamp_ms, id)`` items from the index (the inverse of
    :func:`index_items`), in the caller's write transaction; items not indexed are ignored.

    Only retraction (a revocation withdrawing stored entries) removes items. Every aggregate row
    the removed items touch is updated once, and deleted when its count reaches zero. Returns how
    many items were removed; StoreError when a touched aggregate row is malformed or would go
    negative (the caller's transaction then aborts).
    """
    idx_db = tables.recon_idx
    sums: dict[tuple[bytes, int], list[int]] = {}
    removed = 0
    for scope, values in _values_by_scope(items).items():
        values.sort()
        gone = [value for value in values if txn.delete(scope, value, db=idx_db)]
        _add_millisecond_sums(sums, scope, gone)
        removed += len(gone)
    _apply_deltas(txn, tables, sums, -1)
    return removed


def _add_millisecond_sums(
    sums: dict[tuple[bytes, int], list[int]], scope: bytes, values: Iterable[bytes]
) -> None:
    """Add to ``sums`` (``(scope, timestamp) -> [count, id sum]``) one scope's well-formed
    ``recon_idx`` values (sorted, so that the values of one millisecond are summed together)."""
    for stamp, group in groupby(values, _stamp_of):
        ids = list(map(_id_of, group))
        slot = (scope, int.from_bytes(stamp, "big"))
        value = sum(map(_little_endian, ids))
        accumulated = sums.get(slot)
        if accumulated is None:
            sums[slot] = [len(ids), value]
        else:
            accumulated[0] += len(ids)
            accumulated[1] += value


def _apply_deltas(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    sums: dict[tuple[bytes, int], list[int]],
    sign: int,
) -> None:
    """Add (``sign`` 1) or remove (-1) items, summed per millisecond, to the aggregate rows,
    level by level from the top: a row of a base or higher level is always updated; a finer
    row only under a parent that was split before and still is (so the sums of the finer
    levels are only computed for items under such parents: a sparse store pays for the base
    levels alone). A bucket that crosses the threshold has its subtree rewritten from
    ``recon_idx`` (already updated) instead."""
    base_shift = RECON_SHIFTS[RECON_BASE_LEVEL]
    deltas: dict[tuple[bytes, int], list[int]] = {}
    for (scope, timestamp), (count, id_sum) in sums.items():
        _accumulate(deltas, (scope, timestamp >> base_shift), count, id_sum)
    upper = [deltas]
    for _ in range(RECON_BASE_LEVEL + 1, RECON_TOP_LEVEL + 1):
        coarser: dict[tuple[bytes, int], list[int]] = {}
        for (scope, bucket), (count, id_sum) in upper[-1].items():
            _accumulate(coarser, (scope, bucket >> RECON_FAN_SHIFT), count, id_sum)
        upper.append(coarser)
    for level in range(RECON_TOP_LEVEL, RECON_BASE_LEVEL - 1, -1):
        split = _update_level(txn, tables, level, upper[level - RECON_BASE_LEVEL], sign, sums)
    fine = list(sums.items())
    for level in range(RECON_BASE_LEVEL - 1, -1, -1):
        if not split:
            return
        parent_shift = RECON_SHIFTS[level + 1]
        fine = [each for each in fine if (each[0][0], each[0][1] >> parent_shift) in split]
        shift = RECON_SHIFTS[level]
        deltas = {}
        for (scope, timestamp), (count, id_sum) in fine:
            _accumulate(deltas, (scope, timestamp >> shift), count, id_sum)
        split = _update_level(txn, tables, level, deltas, sign, sums)


def _accumulate(
    into: dict[tuple[bytes, int], list[int]], slot: tuple[bytes, int], count: int, id_sum: int
) -> None:
    accumulated = into.get(slot)
    if accumulated is None:
        into[slot] = [count, id_sum]
    else:
        accumulated[0] += count
        accumulated[1] += id_sum


def _update_level(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    level: int,
    deltas: dict[tuple[bytes, int], list[int]],
    sign: int,
    sums: dict[tuple[bytes, int], list[int]],
) -> set[tuple[bytes, int]]:
    """Apply ``deltas`` to the rows of ``level``; the buckets that were split and still are
    (their children take deltas next). A bucket that crossed the threshold either way gets its
    subtree rewritten here (``sums``: the items added or removed, per millisecond)."""
    agg_db = tables.recon_agg
    split: set[tuple[bytes, int]] = set()
    for (scope, bucket), (count, id_sum) in sorted(deltas.items()):
        row_key = recon_agg_key(scope, level, bucket)
        stored = txn.get(row_key, db=agg_db)
        parsed = (0, 0) if stored is None else unpack_recon_agg(stored)
        if parsed is None:
            raise _corrupt(f"malformed recon_agg row {row_key.hex()}")
        new_count = parsed[0] + sign * count
        if new_count < 0:
            raise _corrupt(f"recon_agg row {row_key.hex()} does not cover the removed items")
        if new_count >= U64_LIMIT:
            raise _corrupt(f"recon_agg row {row_key.hex()} overflows")
        if new_count == 0:
            txn.delete(row_key, db=agg_db)
        else:
            txn.put(row_key, pack_recon_agg(new_count, parsed[1] + sign * id_sum), db=agg_db)
        if level == 0 or level > RECON_BASE_LEVEL:
            continue
        was_split = parsed[0] > RECON_SPLIT_THRESHOLD
        is_split = new_count > RECON_SPLIT_THRESHOLD
        if was_split and is_split:
            split.add((scope, bucket))
        elif was_split != is_split:
            fresh = None
            if parsed[0] == 0:  # the bucket was empty: its items are the ones just added
                shift = RECON_SHIFTS[level]
                fresh = sorted(
                    (timestamp, slot_count, slot_sum)
                    for (slot_scope, timestamp), (slot_count, slot_sum) in sums.items()
                    if slot_scope == scope and timestamp >> shift == bucket
                )
            _rewrite_subtree(txn, tables, scope, level, bucket, new_count, fresh)
    return split


def _rewrite_subtree(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    scope: bytes,
    level: int,
    bucket: int,
    count: int,
    fresh: list[Slot] | None,
) -> None:
    """Delete every row below bucket ``bucket`` of ``level`` and write the rows its ``count``
    items call for: ``fresh`` (summed per millisecond) when the bucket held nothing before
    this write, else as ``recon_idx`` now holds them (one scan of the bucket's items)."""
    agg_db = tables.recon_agg
    cursor = txn.cursor(agg_db)
    for child_level in range(level - 1, -1, -1):
        width = RECON_SHIFTS[level] - RECON_SHIFTS[child_level]
        low = recon_agg_key(scope, child_level, bucket << width)
        high = _agg_range_end(scope, child_level, (bucket + 1) << width)
        if cursor.set_range(low):
            while cursor.key() < high and cursor.delete():
                pass
    if recon_is_leaf(level, count):
        return  # a leaf has no rows below it
    if fresh is None:
        shift = RECON_SHIFTS[level]
        fresh = millisecond_slots(
            _items_between(txn, tables, scope, bucket << shift, (bucket + 1) << shift)
        )
    for key, (row_count, id_sum) in subtree_rows(scope, level, fresh).items():
        txn.put(key, pack_recon_agg(row_count, id_sum), db=agg_db)


def _agg_range_end(scope: bytes, level: int, bucket_end: int) -> bytes:
    """A key above every ``recon_agg`` key of ``level`` whose bucket is below ``bucket_end``."""
    if bucket_end < U64_LIMIT:
        return recon_agg_key(scope, level, bucket_end)
    return scope + bytes((level + 1,))


def _items_between(
    txn: lmdb.Transaction[bytes], tables: Tables, scope: bytes, low: int, high: int
) -> Iterable[Item]:
    """The ``(timestamp, id value)`` items of ``scope`` with low <= timestamp < high."""
    cursor = txn.cursor(tables.recon_idx)
    if not cursor.set_range_dup(scope, pack_seq(min(low, U64_LIMIT - 1))):
        return
    for value in cursor.iternext_dup(keys=False, values=True):
        if len(value) != RECON_IDX_KEY_SIZE - SCOPE_SIZE:
            raise _corrupt(f"malformed recon_idx row {(scope + value).hex()}")
        timestamp = int.from_bytes(value[:SEQ_SIZE], "big")
        if timestamp >= high:
            return
        yield timestamp, int.from_bytes(value[SEQ_SIZE:], "little")


def _put_chunk(cursor: lmdb.Cursor[bytes], chunk: dict[bytes, list[bytes]]) -> int:
    """Put a rebuild's chunk of values (scope -> values); how many were new."""
    return sum(
        len(_put_scope_values(cursor, scope, sorted(values))) for scope, values in chunk.items()
    )


def rebuild_aggregates(txn: lmdb.Transaction[bytes], tables: Tables) -> int:
    """Empty ``recon_agg`` and write the rows ``recon_idx`` calls for (one scan of it, in the
    caller's write transaction; the upgrade from schema 4). Malformed index rows are skipped
    (fsck reports them). Returns the number of rows written."""
    txn.drop(tables.recon_agg, delete=False)
    expected = ExpectedRows()
    for scope, value in txn.cursor(tables.recon_idx):
        if len(scope) == SCOPE_SIZE and len(value) == RECON_IDX_KEY_SIZE - SCOPE_SIZE:
            expected.add(
                scope,
                int.from_bytes(value[:SEQ_SIZE], "big"),
                int.from_bytes(value[SEQ_SIZE:], "little"),
            )
    rows = expected.rows()
    cursor = txn.cursor(tables.recon_agg)
    for key in sorted(rows):
        count, id_sum = rows[key]
        cursor.put(key, pack_recon_agg(count, id_sum), append=True)
    return len(rows)


class _ScopeCache:
    """scope_key per (tenant, database), computed once."""

    __slots__ = ("_scopes",)

    def __init__(self) -> None:
        self._scopes: dict[tuple[bytes, str], bytes] = {}

    def of(self, entry: Entry) -> bytes:
        header = entry.header
        name = (header.tenant_id, header.database)
        scope = self._scopes.get(name)
        if scope is None:
            scope = self._scopes[name] = scope_key(header.tenant_id, header.database)
        return scope


def _decode_stored(entry_id: bytes, raw: bytes) -> Entry | None:
    """The entry of sealed bytes ``raw``, or None when they do not decode or hash to
    ``entry_id``."""
    try:
        entry = Entry.decode(raw, what="stored entry")
    except DecodeError:
        return None
    return entry if entry.id == entry_id else None


def stored_entry(txn: lmdb.Transaction[bytes], tables: Tables, entry_id: bytes) -> Entry | None:
    """The stored entry of ``entry_id`` (through ``ids``), or None when it is not stored,
    does not decode or does not hash to its id."""
    arrival = txn.get(entry_id, db=tables.ids)
    raw = None if arrival is None else txn.get(arrival, db=tables.sealed)
    return None if raw is None else _decode_stored(entry_id, raw)


def stored_at(txn: lmdb.Transaction[bytes], tables: Tables, arrival: bytes) -> Entry | None:
    """The entry stored under ``arrival`` (BE64), or None when there is none, it does not
    decode or ``ids`` does not map its id back to ``arrival`` (damaged bytes)."""
    raw = txn.get(arrival, db=tables.sealed)
    if raw is None:
        return None
    try:
        entry = Entry.decode(raw, what="stored entry")
    except DecodeError:
        return None
    return entry if txn.get(entry.id, db=tables.ids) == arrival else None


def rebuild_recon_index(txn: lmdb.Transaction[bytes], tables: Tables) -> int:
    """Empty ``recon_idx`` and ``recon_agg`` and index again every stored entry that no
    revocation retracted (one scan of ``sealed``, in the caller's write transaction), then
    write the aggregate rows (:func:`rebuild_aggregates`). Entries that do not decode or whose
    id ``ids`` does not map back to them are left out (fsck reports them). Returns the number
    of items indexed."""
    txn.drop(tables.recon_idx, delete=False)
    txn.drop(tables.recon_agg, delete=False)
    scopes = _ScopeCache()
    cursor = txn.cursor(tables.recon_idx)
    indexed = 0
    chunk: dict[bytes, list[bytes]] = {}
    in_chunk = 0
    for arrival in txn.cursor(tables.sealed).iternext(keys=True, values=False):
        mark = txn.get(arrival, db=tables.retracted)
        if mark is not None and not is_evidence_mark(bytes(mark)):
            continue  # withdrawn by a revocation: not part of the reconciled set
        # (a fork's evidence stays indexed, as `settle_fork` keeps it and fsck expects)
        entry = stored_at(txn, tables, arrival)
        if entry is None or entry.header.timestamp_ms == MAX_TIMESTAMP:
            continue
        value = pack_seq(entry.header.timestamp_ms) + entry.id
        chunk.setdefault(scopes.of(entry), []).append(value)
        in_chunk += 1
        if in_chunk >= _REBUILD_CHUNK:
            indexed += _put_chunk(cursor, chunk)
            chunk, in_chunk = {}, 0
    indexed += _put_chunk(cursor, chunk)
    rebuild_aggregates(txn, tables)
    return indexed


# -- checking (fsck) -------------------------------------------------------------------------


def _key_digest(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")


class ReconIndexCheck:
    """fsck of the reconciliation index.

    Call :meth:`expect` with every stored entry that decodes and matches its id, and
    :meth:`tolerate` with the id of every one that does not (its own problem is reported
    elsewhere, so a row naming it is not one more), then :meth:`check` once.

    Per scope, the index rows are compared with the entries through their count and a sum of
    128-bit hashes of the expected keys (memory per scope, not per entry); only a scope that
    differs is examined row by row (its rows against the entries they name, its feed entries
    against their rows). The aggregate rows are then compared with the sums of the index rows
    themselves.
    """

    __slots__ = ("_expected", "_scopes", "_tolerated")

    def __init__(self) -> None:
        self._scopes = _ScopeCache()
        self._expected: dict[bytes, list[int]] = {}
        self._tolerated: set[bytes] = set()

    def tolerate(self, entry_id: bytes) -> None:
        self._tolerated.add(entry_id)

    def expect(self, entry: Entry) -> None:
        timestamp = entry.header.timestamp_ms
        if timestamp == MAX_TIMESTAMP:
            return
        scope = self._scopes.of(entry)
        digest = _key_digest(recon_idx_key(scope, timestamp, entry.id))
        accumulated = self._expected.setdefault(scope, [0, 0])
        accumulated[0] += 1
        accumulated[1] += digest

    def check(self, txn: lmdb.Transaction[bytes], tables: Tables, problem: Problem) -> None:
        found: dict[bytes, list[int]] = {}
        aggregates = ExpectedRows()
        for scope, value in txn.cursor(tables.recon_idx):
            key = scope + value
            if (
                len(key) != RECON_IDX_KEY_SIZE
                or len(scope) != SCOPE_SIZE
                or value[:8] == RECON_RESERVED_TS
            ):
                problem(None, "recon_idx", f"malformed row {key.hex()}")
                continue
            aggregates.add(
                scope,
                int.from_bytes(value[:SEQ_SIZE], "big"),
                int.from_bytes(value[SEQ_SIZE:], "little"),
            )
            if key[RECON_ID_OFFSET:] in self._tolerated:
                continue
            accumulated = found.setdefault(key[:SCOPE_SIZE], [0, 0])
            accumulated[0] += 1
            accumulated[1] += _key_digest(key)
        for scope in sorted(self._expected.keys() | found.keys()):
            want = self._expected.get(scope, [0, 0])
            have = found.get(scope, [0, 0])
            if have[0] != want[0] or (have[1] - want[1]) % (1 << 128):
                problem(
                    None,
                    "recon_idx",
                    f"scope {scope.hex()}: {have[0]} rows where the entries give {want[0]}"
                    " (or other rows)",
                )
                self._examine_scope(txn, tables, scope, problem)
        _check_aggregates(txn, tables, aggregates.rows(), problem)

    def _examine_scope(
        self, txn: lmdb.Transaction[bytes], tables: Tables, scope: bytes, problem: Problem
    ) -> None:
        """Name the rows and entries behind a scope's mismatch."""
        cursor = txn.cursor(tables.recon_idx)
        if cursor.set_key(scope):
            for value in cursor.iternext_dup(keys=False, values=True):
                key = scope + value
                if len(key) != RECON_IDX_KEY_SIZE:
                    continue
                entry_id = key[RECON_ID_OFFSET:]
                if entry_id in self._tolerated:
                    continue
                entry = stored_entry(txn, tables, entry_id)
                if entry is None:
                    problem(entry_id, "recon_idx", "row names an entry that is not stored")
                elif self._scopes.of(entry) != scope or (
                    entry.header.timestamp_ms
                    != int.from_bytes(key[SCOPE_SIZE:RECON_ID_OFFSET], "big")
                ):
                    problem(entry_id, "recon_idx", "row differs from its entry's database or time")
        feed = txn.cursor(tables.db_feed)
        if feed.set_key(scope):
            for value in feed.iternext_dup(keys=False, values=True):
                arrival = value[SEQ_SIZE:]
                entry = stored_at(txn, tables, arrival)
                if entry is None or entry.header.timestamp_ms == MAX_TIMESTAMP:
                    continue  # an unreadable entry is reported by the entries check
                if txn.get(arrival, db=tables.retracted) is not None:
                    continue
                timestamp = entry.header.timestamp_ms
                item = pack_seq(timestamp) + entry.id
                if not txn.cursor(tables.recon_idx).set_key_dup(self._scopes.of(entry), item):
                    problem(entry.id, "recon_idx", "entry has no row")


def _check_aggregates(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    expected: dict[bytes, list[int]],
    problem: Problem,
) -> None:
    """Each ``recon_agg`` row holds exactly the count and id sum of the index rows it covers."""
    for key, value in txn.cursor(tables.recon_agg):
        want = expected.pop(key, None)
        parsed = unpack_recon_agg(value)
        if len(key) != RECON_AGG_KEY_SIZE or key[SCOPE_SIZE] > RECON_TOP_LEVEL or parsed is None:
            problem(None, "recon_agg", f"malformed row {key.hex()}")
        elif want is None:
            problem(None, "recon_agg", f"row without items {key.hex()}")
        elif parsed != (want[0], want[1] % RECON_SUM_MODULUS):
            problem(
                None,
                "recon_agg",
                f"row {key.hex()} holds count {parsed[0]} and another id sum where the index"
                f" gives {want[0]}"
                if parsed[0] != want[0]
                else f"row {key.hex()} holds a wrong id sum",
            )
    for key in expected:
        problem(None, "recon_agg", f"missing row {key.hex()}")
