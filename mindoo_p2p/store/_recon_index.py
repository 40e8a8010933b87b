"""The reconciliation index of the entry store: kept up to date on append, read by sessions.

Rows (encodings in :mod:`._layout`), per scope (= tenant and database, the tenant log included):

- ``recon_idx``: a DUPSORT table whose key ``scope`` holds one 40-byte value
  ``BE64(timestamp_ms) ‖ id`` per stored entry, so one scope's values are its items in
  Negentropy's (timestamp, id) order. This module handles its rows as 72-byte *keys*
  ``scope ‖ value`` (:func:`recon_idx_key`), which sort the same way. An entry whose
  timestamp is 2**64-1 (Negentropy's "infinity") is not indexed: it cannot be reconciled.
- ``recon_agg``: ``scope ‖ level ‖ BE64(ts >> RECON_SHIFTS[level])`` -> ``BE64(count) ‖ sum``,
  the number of items of the bucket and the sum of their ids (little-endian integers, mod
  2**256). Each bucket of level L splits into 2**6 buckets of level L-1; a level-0 bucket (a
  "leaf", ~4.4 minutes) holds items.

What this module does with them:

- :func:`index_items` adds items inside the append's write transaction (no overwrite: an item
  already there is not counted twice; each touched aggregate row is rewritten once per call);
- :func:`rebuild_recon_index` drops both and rebuilds them from the stored entries by one scan
  (schema upgrade, repair after fsck);
- :class:`ReconIndexCheck` verifies them for fsck (the index against the entries, the aggregates
  against the index);
- :class:`LmdbReconStorage` serves one scope to the reconciliation engine from ONE read
  transaction: a range's count and id sum come from two prefix sums, each found by walking down
  the levels (a few whole buckets per level) and then into one leaf; positions likewise, by
  descending counts. What a walk reads is cached for the snapshot's life as "runs" (the
  child rows of one bucket) summarised by at most ``_MAX_CHECKPOINTS`` checkpoints each, with an
  LRU bound on the total: a leaf of m items (a hot bucket: a bulk import, equal timestamps) is
  scanned once per snapshot, then each lookup reads at most m / 4096 rows. (The design notes
  suggested splitting hot leaves further by id byte on disk; this per-snapshot sampling gives
  bounded lookups without more rows per append, at the price of one scan of a hot leaf per
  session that touches it.)
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import lmdb

from ..entry import Entry
from ..errors import DecodeError, StoreError
from ..recon import MAX_TIMESTAMP, ReconItem, fingerprint_from_sum
from ._layout import (
    RECON_AGG_KEY_SIZE,
    RECON_IDX_KEY_SIZE,
    RECON_SHIFTS,
    SCOPE_SIZE,
    SEQ_SIZE,
    Tables,
    pack_recon_agg,
    pack_seq,
    recon_agg_key,
    recon_idx_key,
    scope_key,
    unpack_recon_agg,
)

_TS_END = SCOPE_SIZE + SEQ_SIZE
"""Offset of the id in a ``recon_idx`` key."""
_SUM_MODULUS = 1 << 256
_U64_LIMIT = 1 << 64
_LEAF_SHIFT = RECON_SHIFTS[0]
_TOP_LEVEL = len(RECON_SHIFTS) - 1
_RESERVED_TS = b"\xff" * SEQ_SIZE
_REBUILD_CHUNK = 65_536

_MAX_CHECKPOINTS = 4096
"""Most checkpoints one cached run keeps; longer runs keep every 2nd, 4th, ... row."""
DEFAULT_CACHE_ROWS = 1 << 17
"""Default bound on the rows a snapshot caches (measured: about 230 bytes each, so ~30 MB)."""
_PREFIX_CACHE = 4096

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
    keys = sorted(
        [
            scope + pack_seq(timestamp) + entry_id  # = recon_idx_key(...), inlined: hot loop
            for scope, timestamp, entry_id in items
            if timestamp != MAX_TIMESTAMP
        ]
    )
    if not keys:
        return 0
    if any(len(key) != RECON_IDX_KEY_SIZE for key in keys):
        raise ValueError("index_items takes 32-byte scopes and 32-byte ids")
    put = txn.cursor(tables.recon_idx).put
    # Usually appended to the end of the scope's list (new timestamps are the latest).
    added = [
        key
        for key in keys
        if put(key[:SCOPE_SIZE], key[SCOPE_SIZE:], append=True)
        or put(key[:SCOPE_SIZE], key[SCOPE_SIZE:], dupdata=False)
    ]
    rows = aggregate_rows(leaf_sums(added))
    agg_db = tables.recon_agg
    for row_key in sorted(rows):
        count, id_sum = rows[row_key]
        stored = txn.get(row_key, db=agg_db)
        if stored is not None:
            parsed = unpack_recon_agg(stored)
            if parsed is None:
                raise _corrupt(f"malformed recon_agg row {row_key.hex()}")
            count += parsed[0]
            id_sum += parsed[1]
        if count >= _U64_LIMIT:
            raise _corrupt(f"recon_agg row {row_key.hex()} overflows")
        txn.put(row_key, pack_recon_agg(count, id_sum), db=agg_db)
    return len(added)


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
    keys = sorted(
        scope + pack_seq(timestamp) + entry_id
        for scope, timestamp, entry_id in items
        if timestamp != MAX_TIMESTAMP
    )
    idx_db = tables.recon_idx
    removed = [key for key in keys if txn.delete(key[:SCOPE_SIZE], key[SCOPE_SIZE:], db=idx_db)]
    rows = aggregate_rows(leaf_sums(removed))
    agg_db = tables.recon_agg
    for row_key in sorted(rows):
        count, id_sum = rows[row_key]
        stored = txn.get(row_key, db=agg_db)
        parsed = None if stored is None else unpack_recon_agg(stored)
        if parsed is None or parsed[0] < count:
            raise _corrupt(f"recon_agg row {row_key.hex()} does not cover the removed items")
        left = parsed[0] - count
        if left == 0:
            txn.delete(row_key, db=agg_db)
        else:
            txn.put(row_key, pack_recon_agg(left, parsed[1] - id_sum), db=agg_db)
    return len(removed)


def leaf_sums(idx_keys: Iterable[bytes]) -> dict[tuple[bytes, int], list[int]]:
    """``(scope, leaf bucket) -> [count, id sum]`` of well-formed ``recon_idx`` keys."""
    leaves: dict[tuple[bytes, int], list[int]] = {}
    for key in idx_keys:
        slot = (key[:SCOPE_SIZE], int.from_bytes(key[SCOPE_SIZE:_TS_END], "big") >> _LEAF_SHIFT)
        value = int.from_bytes(key[_TS_END:], "little")
        accumulated = leaves.get(slot)
        if accumulated is None:
            leaves[slot] = [1, value]
        else:
            accumulated[0] += 1
            accumulated[1] += value
    return leaves


def aggregate_rows(leaves: dict[tuple[bytes, int], list[int]]) -> dict[bytes, list[int]]:
    """Every ``recon_agg`` row key of every level that ``leaves`` add to -> [count, id sum]."""
    rows: dict[bytes, list[int]] = {}
    for (scope, leaf), (count, id_sum) in leaves.items():
        for level, shift in enumerate(RECON_SHIFTS):
            key = recon_agg_key(scope, level, leaf >> (shift - _LEAF_SHIFT))
            accumulated = rows.get(key)
            if accumulated is None:
                rows[key] = [count, id_sum]
            else:
                accumulated[0] += count
                accumulated[1] += id_sum
    return rows


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
    revocation retracted (one scan of ``sealed``, in the caller's write transaction), as the
    appends (and retractions) did. Entries that do not decode or whose id ``ids`` does not map
    back to them are left out (fsck reports them). Returns the number of items indexed."""
    txn.drop(tables.recon_idx, delete=False)
    txn.drop(tables.recon_agg, delete=False)
    scopes = _ScopeCache()
    indexed = 0
    chunk: list[tuple[bytes, int, bytes]] = []
    for arrival in txn.cursor(tables.sealed).iternext(keys=True, values=False):
        if txn.get(arrival, db=tables.retracted) is not None:
            continue  # withdrawn by a revocation: not part of the reconciled set
        entry = stored_at(txn, tables, arrival)
        if entry is None:
            continue
        chunk.append((scopes.of(entry), entry.header.timestamp_ms, entry.id))
        if len(chunk) >= _REBUILD_CHUNK:
            indexed += index_items(txn, tables, chunk)
            chunk = []
    return indexed + index_items(txn, tables, chunk)


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
        leaves: dict[tuple[bytes, int], list[int]] = {}
        valid: list[bytes] = []
        for scope, value in txn.cursor(tables.recon_idx):
            key = scope + value
            if (
                len(key) != RECON_IDX_KEY_SIZE
                or len(scope) != SCOPE_SIZE
                or value[:8] == _RESERVED_TS
            ):
                problem(None, "recon_idx", f"malformed row {key.hex()}")
                continue
            valid.append(key)
            if key[_TS_END:] in self._tolerated:
                continue
            accumulated = found.setdefault(key[:SCOPE_SIZE], [0, 0])
            accumulated[0] += 1
            accumulated[1] += _key_digest(key)
            if len(valid) >= _REBUILD_CHUNK:
                _merge_leaves(leaves, leaf_sums(valid))
                valid.clear()
        _merge_leaves(leaves, leaf_sums(valid))
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
        _check_aggregates(txn, tables, aggregate_rows(leaves), problem)

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
                entry_id = key[_TS_END:]
                if entry_id in self._tolerated:
                    continue
                entry = stored_entry(txn, tables, entry_id)
                if entry is None:
                    problem(entry_id, "recon_idx", "row names an entry that is not stored")
                elif self._scopes.of(entry) != scope or (
                    entry.header.timestamp_ms != int.from_bytes(key[SCOPE_SIZE:_TS_END], "big")
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


def _merge_leaves(
    into: dict[tuple[bytes, int], list[int]], more: dict[tuple[bytes, int], list[int]]
) -> None:
    for slot, (count, id_sum) in more.items():
        accumulated = into.setdefault(slot, [0, 0])
        accumulated[0] += count
        accumulated[1] += id_sum


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
        if len(key) != RECON_AGG_KEY_SIZE or key[SCOPE_SIZE] > _TOP_LEVEL or parsed is None:
            problem(None, "recon_agg", f"malformed row {key.hex()}")
        elif want is None:
            problem(None, "recon_agg", f"row without items {key.hex()}")
        elif parsed != (want[0], want[1] % _SUM_MODULUS):
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


# -- reading ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """Consecutive index rows: the child rows of one aggregate bucket, or the items of one leaf.

    Kept as checkpoints: the key of every ``stride``-th row with the count and id sum of the rows
    before it (``counts``/``sums`` have one more element: the run's totals). With stride 1 every
    row is a checkpoint and lookups read nothing more; otherwise a lookup scans at most
    ``stride`` rows from the checkpoint before it.
    """

    leaf: bool
    low: bytes
    high: bytes
    """The run's keys are in [low, high) (and share a prefix with it: the scope, plus the level byte
    for aggregates)."""
    keys: list[bytes]
    counts: list[int]
    sums: list[int]
    stride: int


@dataclass(slots=True)
class _Finger:
    """A leaf found by a walk down: ``first`` is the position of its first item, ``before`` the
    id sum of the items before it."""

    run: _Run
    first: int
    before: int


class _RunCache:
    """Runs by (level, bucket), least recently used first out, holding at most ``budget``
    checkpoints (a single bigger run is still kept: the newest is never evicted)."""

    __slots__ = ("_budget", "_held", "_runs")

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._held = 0
        self._runs: OrderedDict[tuple[int, int], _Run] = OrderedDict()

    def get(self, bucket: int, level: int) -> _Run | None:
        run = self._runs.get((level, bucket))
        if run is not None:
            self._runs.move_to_end((level, bucket))
        return run

    def put(self, bucket: int, level: int, run: _Run) -> None:
        self._runs[(level, bucket)] = run
        self._held += len(run.keys)
        while self._held > self._budget and len(self._runs) > 1:
            _, evicted = self._runs.popitem(last=False)
            self._held -= len(evicted.keys)

    @property
    def held(self) -> int:
        return self._held

    def clear(self) -> None:
        self._runs.clear()
        self._held = 0


def _bucket_of(agg_key: bytes) -> int:
    return int.from_bytes(agg_key[SCOPE_SIZE + 1 :], "big")


def _range_end(prefix: bytes, value: int, key_size: int) -> bytes:
    """The end of keys ``prefix + BE64(x)...`` with x < ``value`` (``value`` <= 2**64)."""
    if value < _U64_LIMIT:
        return prefix + value.to_bytes(SEQ_SIZE, "big")
    # Above every key with this prefix: its successor, or (prefix all 0xff) a longer 0xff run.
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\xff" * (key_size + 1)
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _sampled(rows: list[bytes]) -> tuple[list[bytes], int]:
    """Every ``stride``-th of ``rows``, with the smallest power-of-two stride that keeps at most
    ``_MAX_CHECKPOINTS`` of them."""
    stride = 1
    while (len(rows) + stride - 1) // stride > _MAX_CHECKPOINTS:
        stride *= 2
    return (rows if stride == 1 else rows[::stride]), stride


class LmdbReconStorage:
    """One scope's reconciliation items as a :class:`~mindoo_p2p.recon.ReconStorage`, read
    from the index inside one LMDB read transaction (obtain it from
    ``EntryStore.recon_snapshot``; it is closed when that block ends, and every call then raises
    StoreError).

    Contract, as for ``VectorStorage``: items sorted by (timestamp, id), addressed 0..size()-1;
    ``items`` iterators are valid while the snapshot is open. ``fingerprint`` and
    ``lower_bound`` cost a walk down four aggregate levels and one leaf, O(log n) row reads
    (none once cached); ``item(i)`` likewise. Rows read are checked: a malformed row, or a
    bucket whose rows disagree with its aggregate, raises StoreError. Memory is bounded by
    ``cache_rows`` cached checkpoints. Not thread-safe: use it from one thread at a time.
    """

    __slots__ = (
        "_agg_db",
        "_aggregates",
        "_finger",
        "_idx_db",
        "_leaves",
        "_prefix_sums",
        "_root",
        "_scope",
        "_size",
        "_total",
        "_txn",
    )

    def __init__(
        self,
        txn: lmdb.Transaction[bytes],
        tables: Tables,
        scope: bytes,
        *,
        cache_rows: int = DEFAULT_CACHE_ROWS,
    ) -> None:
        if len(scope) != SCOPE_SIZE:
            raise ValueError(f"scope must be {SCOPE_SIZE} bytes")
        self._txn: lmdb.Transaction[bytes] | None = txn
        self._idx_db = tables.recon_idx
        self._agg_db = tables.recon_agg
        self._scope = bytes(scope)
        # Aggregate runs (at most 64 rows each) are few and on every walk: their own share.
        budget = max(cache_rows, 2 * _MAX_CHECKPOINTS)
        self._aggregates = _RunCache(budget // 4)
        self._leaves = _RunCache(budget - budget // 4)
        self._prefix_sums: dict[int, int] = {}
        self._finger: _Finger | None = None
        top = self._scope + bytes((_TOP_LEVEL,))
        self._root = self._build_aggregates(top, _range_end(top, _U64_LIMIT, RECON_AGG_KEY_SIZE))
        self._size = self._root.counts[-1]
        self._total = self._root.sums[-1]

    def close(self) -> None:
        """Forget the transaction (its owner ends it) and the caches. Idempotent."""
        self._txn = None
        self._finger = None
        self._aggregates.clear()
        self._leaves.clear()
        self._prefix_sums.clear()

    # -- the ReconStorage protocol --------------------------------------------------------------
    def size(self) -> int:
        self._live()
        return self._size

    def item(self, i: int) -> ReconItem:
        self._live()
        if not 0 <= i < self._size:
            raise IndexError(f"item index {i} out of range")
        key, _ = self._locate(i)
        return _item_of(key)

    def items(self, begin: int, end: int) -> Iterator[ReconItem]:
        self._check_range(begin, end)
        return self._iter_items(begin, end)

    def lower_bound(self, begin: int, end: int, bound: ReconItem) -> int:
        self._check_range(begin, end)
        position = self._rank(bound.sort_key())
        return min(max(position, begin), end)

    def fingerprint(self, begin: int, end: int) -> bytes:
        self._check_range(begin, end)
        return fingerprint_from_sum(self._prefix_sum(end) - self._prefix_sum(begin), end - begin)

    # -- checks --------------------------------------------------------------------------------
    def _live(self) -> lmdb.Transaction[bytes]:
        if self._txn is None:
            raise StoreError("the reconciliation snapshot is closed")
        return self._txn

    def _check_range(self, begin: int, end: int) -> None:
        self._live()
        if not 0 <= begin <= end <= self._size:
            raise IndexError(f"range [{begin}, {end}) out of [0, {self._size}]")

    # -- walking down ----------------------------------------------------------------------------
    def _leaf_of(self, position: int) -> _Finger:
        """The leaf holding item ``position`` (< size), by descending counts; the last leaf
        found answers first (the engine mostly moves forward through nearby positions)."""
        finger = self._finger
        if finger is not None and 0 <= position - finger.first < finger.run.counts[-1]:
            return finger
        run = self._root
        remaining = position
        id_sum = 0
        for level in range(_TOP_LEVEL, -1, -1):
            key, count, before, row_count, row_sum = self._row_at(run, remaining)
            remaining -= count
            id_sum += before
            run = self._children(level, _bucket_of(key), (row_count, row_sum))
        finger = self._finger = _Finger(run, position - remaining, id_sum)
        return finger

    def _locate(self, position: int) -> tuple[bytes, int]:
        """The ``recon_idx`` key of item ``position`` (< size) and the id sum of the items
        before it."""
        finger = self._leaf_of(position)
        key, _, before, _, _ = self._row_at(finger.run, position - finger.first)
        return key, finger.before + before

    def _rank(self, sort_key: bytes) -> int:
        """How many items sort below ``sort_key`` (40 bytes: BE64 timestamp + id); also caches
        the id sum of those items."""
        target = self._scope + sort_key
        finger = self._finger
        if finger is not None and finger.run.low <= target < finger.run.high:
            count, before, _ = self._rows_before(finger.run, target)
            position, id_sum = finger.first + count, finger.before + before
            self._remember(position, id_sum)
            return position
        timestamp = int.from_bytes(sort_key[:SEQ_SIZE], "big")
        run = self._root
        position = 0
        id_sum = 0
        found: tuple[int, int] | None = None
        for level in range(_TOP_LEVEL, -1, -1):
            bucket = timestamp >> RECON_SHIFTS[level]
            count, before, found = self._rows_before(run, recon_agg_key(self._scope, level, bucket))
            position += count
            id_sum += before
            if found is None:
                break
            run = self._children(level, bucket, found)
        if found is not None:
            self._finger = _Finger(run, position, id_sum)
            count, before, _ = self._rows_before(run, target)
            position += count
            id_sum += before
        self._remember(position, id_sum)
        return position

    def _prefix_sum(self, position: int) -> int:
        """The id sum of items [0, position)."""
        if position == 0:
            return 0
        if position == self._size:
            return self._total
        cached = self._prefix_sums.get(position)
        if cached is None:
            cached = self._locate(position)[1]
            self._remember(position, cached)
        return cached

    def _remember(self, position: int, id_sum: int) -> None:
        if len(self._prefix_sums) >= _PREFIX_CACHE:
            self._prefix_sums.clear()
        self._prefix_sums[position] = id_sum

    def _iter_items(self, begin: int, end: int) -> Iterator[ReconItem]:
        """Items [begin, end), leaf by leaf."""
        position = begin
        while position < end:
            self._live()
            finger = self._leaf_of(position)
            run, offset = finger.run, position - finger.first
            stop = min(end - finger.first, run.counts[-1])
            if run.stride == 1:
                for key in run.keys[offset:stop]:
                    yield _item_of(key)
            else:
                first, _, _, _, _ = self._row_at(run, offset)
                remaining = stop - offset
                for key, value in self._scan(True, first, run.high):
                    self._parse(True, key, value)
                    yield _item_of(key)
                    remaining -= 1
                    if remaining == 0:
                        break
                else:
                    raise _corrupt("a leaf holds fewer items than its aggregate counts")
            position = finger.first + stop

    # -- runs ----------------------------------------------------------------------------------
    def _children(self, level: int, bucket: int, expected: tuple[int, int]) -> _Run:
        """The run under row (level, bucket): level-(level-1) rows, or items for level 0.
        ``expected`` is that row's (count, id sum), which the run must add up to."""
        cache = self._leaves if level == 0 else self._aggregates
        run = cache.get(bucket, level)
        if run is not None:
            return run
        if level == 0:
            end = (bucket + 1) << _LEAF_SHIFT
            start = self._scope + (bucket << _LEAF_SHIFT).to_bytes(SEQ_SIZE, "big")
            run = self._build_leaf(
                start, _range_end(self._scope, end, RECON_IDX_KEY_SIZE), end >= _U64_LIMIT
            )
        else:
            fan = RECON_SHIFTS[level] - RECON_SHIFTS[level - 1]
            prefix = self._scope + bytes((level - 1,))
            start = prefix + (bucket << fan).to_bytes(SEQ_SIZE, "big")
            high = _range_end(prefix, (bucket + 1) << fan, RECON_AGG_KEY_SIZE)
            run = self._build_aggregates(start, high)
        if (run.counts[-1], run.sums[-1] % _SUM_MODULUS) != (
            expected[0],
            expected[1] % _SUM_MODULUS,
        ):
            raise _corrupt(
                f"the bucket under {start.hex()} adds up to {run.counts[-1]} items,"
                f" its aggregate row says {expected[0]}"
            )
        cache.put(bucket, level, run)
        return run

    def _build_leaf(self, start: bytes, high: bytes, top: bool) -> _Run:
        """The items of one leaf bucket (the hot loop of a snapshot: kept tight)."""
        rows: list[bytes] = []
        append = rows.append
        scope = start[:SCOPE_SIZE]
        cursor = self._live().cursor(self._idx_db)
        if cursor.set_range_dup(scope, start[SCOPE_SIZE:]):
            for value in cursor.iternext_dup(keys=False, values=True):
                key = scope + value
                if key >= high:
                    break
                if len(key) != RECON_IDX_KEY_SIZE:
                    raise _corrupt(f"malformed recon_idx row {key.hex()}")
                append(key)
        if top and rows and rows[-1][SCOPE_SIZE:_TS_END] == _RESERVED_TS:
            raise _corrupt("recon_idx holds the reserved timestamp 2**64-1")
        ids = (int.from_bytes(key[_TS_END:], "little") for key in rows)
        id_sums = [0, *itertools.accumulate(ids)]
        keys, stride = _sampled(rows)
        counts = list(range(0, len(rows), stride))
        counts.append(len(rows))
        sums = id_sums[:-1:stride] if stride > 1 else id_sums[:-1]
        sums.append(id_sums[-1])
        return _Run(True, start, high, keys, counts, sums, stride)

    def _build_aggregates(self, start: bytes, high: bytes) -> _Run:
        """The aggregate rows in [start, high): one bucket's children, or the scope's top level."""
        rows: list[bytes] = []
        counts = [0]
        sums = [0]
        count = id_sum = 0
        for key, value in self._scan(False, start, high):
            row_count, row_sum = self._parse(False, key, value)
            rows.append(key)
            count += row_count
            id_sum += row_sum
            counts.append(count)
            sums.append(id_sum)
        keys, stride = _sampled(rows)
        if stride > 1:
            counts = [*counts[:-1:stride], count]
            sums = [*sums[:-1:stride], id_sum]
        return _Run(False, start, high, keys, counts, sums, stride)

    def _scan(self, leaf: bool, start: bytes, high: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Rows of recon_idx (``leaf``: as ``(scope ‖ item, b"")``, within ``start``'s scope) or
        recon_agg in [start, high)."""
        if leaf:
            scope = start[:SCOPE_SIZE]
            cursor = self._live().cursor(self._idx_db)
            if not cursor.set_range_dup(scope, start[SCOPE_SIZE:]):
                return
            for item in cursor.iternext_dup(keys=False, values=True):
                key = scope + item
                if key >= high:
                    return
                yield key, b""
            return
        cursor = self._live().cursor(self._agg_db)
        if not cursor.set_range(start):
            return
        for key, value in cursor:
            if key >= high:
                return
            yield key, value

    @staticmethod
    def _parse(leaf: bool, key: bytes, value: bytes) -> tuple[int, int]:
        """(count, id sum) of one row; StoreError when it is malformed."""
        if leaf:
            if len(key) != RECON_IDX_KEY_SIZE or value or key[SCOPE_SIZE:_TS_END] == _RESERVED_TS:
                raise _corrupt(f"malformed recon_idx row {key.hex()}")
            return 1, int.from_bytes(key[_TS_END:], "little")
        parsed = unpack_recon_agg(value) if len(key) == RECON_AGG_KEY_SIZE else None
        if parsed is None or parsed[0] == 0:
            raise _corrupt(f"malformed recon_agg row {key.hex()}")
        return parsed

    def _row_at(self, run: _Run, position: int) -> tuple[bytes, int, int, int, int]:
        """The run's row holding its ``position``-th item (< the run's count): its key, the
        count and id sum of the rows before it, its own count and id sum."""
        keys, counts, sums = run.keys, run.counts, run.sums
        if not 0 <= position < counts[-1]:
            raise _corrupt(f"position {position} beyond a bucket of {counts[-1]} items")
        j = bisect.bisect_right(counts, position, 0, len(keys)) - 1
        if run.stride == 1:
            return keys[j], counts[j], sums[j], counts[j + 1] - counts[j], sums[j + 1] - sums[j]
        count, id_sum = counts[j], sums[j]
        for key, value in self._scan(run.leaf, keys[j], run.high):
            row_count, row_sum = self._parse(run.leaf, key, value)
            if count + row_count > position:
                return key, count, id_sum, row_count, row_sum
            count += row_count
            id_sum += row_sum
        raise _corrupt("a bucket changed under a read transaction")

    def _rows_before(self, run: _Run, target: bytes) -> tuple[int, int, tuple[int, int] | None]:
        """Count and id sum of the run's rows with keys below ``target``, and the (count, id sum)
        of the row whose key is ``target`` (None when there is none)."""
        keys, counts, sums = run.keys, run.counts, run.sums
        j = bisect.bisect_right(keys, target) - 1
        if j < 0:
            return 0, 0, None
        if run.stride == 1:
            if keys[j] == target:
                return counts[j], sums[j], (counts[j + 1] - counts[j], sums[j + 1] - sums[j])
            return counts[j + 1], sums[j + 1], None
        count, id_sum = counts[j], sums[j]
        for key, value in self._scan(run.leaf, keys[j], run.high):
            if key >= target:
                if key == target:
                    return count, id_sum, self._parse(run.leaf, key, value)
                break
            row_count, row_sum = self._parse(run.leaf, key, value)
            count += row_count
            id_sum += row_sum
        return count, id_sum, None


def _item_of(idx_key: bytes) -> ReconItem:
    return ReconItem(int.from_bytes(idx_key[SCOPE_SIZE:_TS_END], "big"), idx_key[_TS_END:])
