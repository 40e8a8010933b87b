"""Reading the reconciliation index: one scope served to a session from one read transaction.

:class:`LmdbReconStorage` answers the reconciliation engine (:class:`~mindoo_p2p.recon.
ReconStorage`): a range's count and id sum come from two prefix sums, each found by walking down
the ``recon_agg`` levels (a few whole buckets per level, at most 64 rows each) into one leaf
bucket, whose items it scans; positions likewise, by descending counts. Where a walk stops is
decided by the stored counts (:func:`._layout.recon_is_leaf`): a leaf holds at most
``RECON_SPLIT_THRESHOLD`` items, unless they all share one millisecond.

What a walk reads is cached for the snapshot's life as "runs" (the child rows of one bucket)
summarised by at most ``_MAX_CHECKPOINTS`` checkpoints each, with an LRU bound on the total, so
a leaf of m items sharing one millisecond (crafted, or a bulk import stamped at once) is
scanned once per snapshot, then each lookup reads at most m / 4096 rows.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import lmdb

from ..errors import StoreError
from ..recon import ReconItem, fingerprint_from_sum
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
    recon_agg_key,
    unpack_recon_agg,
)

_MAX_CHECKPOINTS = 4096
"""Most checkpoints one cached run keeps; longer runs keep every 2nd, 4th, ... row."""
DEFAULT_CACHE_ROWS = 1 << 17
"""Default bound on the rows a snapshot caches (measured: about 230 bytes each, so ~30 MB)."""
_PREFIX_CACHE = 4096


def _corrupt(what: str) -> StoreError:
    return StoreError(
        f"the reconciliation index is damaged ({what}): run fsck, then"
        " EntryStore.rebuild_recon_index()"
    )


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


_K = TypeVar("_K", bound=Hashable)


class _RunCache(Generic[_K]):
    """Runs by key, least recently used first out, holding at most ``budget`` checkpoints (a
    single bigger run is still kept: the newest is never evicted). Not thread-safe."""

    __slots__ = ("_budget", "_held", "_runs")

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._held = 0
        self._runs: OrderedDict[_K, _Run] = OrderedDict()

    def get(self, key: _K) -> _Run | None:
        run = self._runs.get(key)
        if run is not None:
            self._runs.move_to_end(key)
        return run

    def put(self, key: _K, run: _Run) -> None:
        self.pop(key)
        self._runs[key] = run
        self._held += len(run.keys)
        while self._held > self._budget and len(self._runs) > 1:
            _, evicted = self._runs.popitem(last=False)
            self._held -= len(evicted.keys)

    def pop(self, key: _K) -> None:
        previous = self._runs.pop(key, None)
        if previous is not None:
            self._held -= len(previous.keys)

    @property
    def held(self) -> int:
        return self._held

    def clear(self) -> None:
        self._runs.clear()
        self._held = 0


class SharedRuns:
    """Runs kept for every snapshot of one store, so that a session does not rebuild what the
    previous one read (an idle re-sync reads the same few runs each time). A run is keyed by
    (scope, level, bucket) and handed out only when its totals equal the (count, id sum) of the
    parent row the asking snapshot reads in its own transaction: the index is append-only, so a
    bucket with unchanged totals holds the same items (the fingerprints' own assumption), and a
    stale run is rebuilt, never served. Bounded by ``budget`` checkpoints (least recently used
    out); thread-safe (snapshots of several threads share it)."""

    __slots__ = ("_lock", "_runs")

    def __init__(self, budget: int = DEFAULT_CACHE_ROWS) -> None:
        self._lock = threading.Lock()
        self._runs: _RunCache[tuple[bytes, int, int]] = _RunCache(budget)

    def get(self, scope: bytes, level: int, bucket: int, expected: tuple[int, int]) -> _Run | None:
        """The run under row (level, bucket) of ``scope`` if its totals are ``expected``."""
        key = (scope, level, bucket)
        with self._lock:
            run = self._runs.get(key)
            if run is not None and not _adds_up(run, expected):
                self._runs.pop(key)
                return None
            return run

    def put(self, scope: bytes, level: int, bucket: int, run: _Run) -> None:
        with self._lock:
            self._runs.put((scope, level, bucket), run)

    @property
    def held(self) -> int:
        return self._runs.held


def _adds_up(run: _Run, expected: tuple[int, int]) -> bool:
    """The run's totals are the (count, id sum) its parent row says."""
    return (run.counts[-1], run.sums[-1] % RECON_SUM_MODULUS) == (
        expected[0],
        expected[1] % RECON_SUM_MODULUS,
    )


def _bucket_of(agg_key: bytes) -> int:
    return int.from_bytes(agg_key[SCOPE_SIZE + 1 :], "big")


def _range_end(prefix: bytes, value: int, key_size: int) -> bytes:
    """The end of keys ``prefix + BE64(x)...`` with x < ``value`` (``value`` <= 2**64)."""
    if value < U64_LIMIT:
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
    ``lower_bound`` cost a walk down at most seven aggregate levels and one leaf, O(log n) row reads
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
        "_shared",
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
        shared: SharedRuns | None = None,
    ) -> None:
        if len(scope) != SCOPE_SIZE:
            raise ValueError(f"scope must be {SCOPE_SIZE} bytes")
        self._txn: lmdb.Transaction[bytes] | None = txn
        self._idx_db = tables.recon_idx
        self._agg_db = tables.recon_agg
        self._scope = bytes(scope)
        # Aggregate runs (at most 64 rows each) are few and on every walk: their own share.
        budget = max(cache_rows, 2 * _MAX_CHECKPOINTS)
        self._aggregates: _RunCache[tuple[int, int]] = _RunCache(budget // 4)
        self._leaves: _RunCache[tuple[int, int]] = _RunCache(budget - budget // 4)
        self._shared = shared
        self._prefix_sums: dict[int, int] = {}
        self._finger: _Finger | None = None
        top = self._scope + bytes((RECON_TOP_LEVEL,))
        self._root = self._build_aggregates(top, _range_end(top, U64_LIMIT, RECON_AGG_KEY_SIZE))
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
        for level in range(RECON_TOP_LEVEL, -1, -1):
            key, count, before, row_count, row_sum = self._row_at(run, remaining)
            remaining -= count
            id_sum += before
            run = self._children(level, _bucket_of(key), (row_count, row_sum))
            if run.leaf:
                break
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
        for level in range(RECON_TOP_LEVEL, -1, -1):
            bucket = timestamp >> RECON_SHIFTS[level]
            count, before, found = self._rows_before(run, recon_agg_key(self._scope, level, bucket))
            position += count
            id_sum += before
            if found is None:
                break
            run = self._children(level, bucket, found)
            if run.leaf:
                break
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
        """The run under row (level, bucket): its items when the row is a leaf, otherwise its
        child rows of level - 1. ``expected`` is that row's (count, id sum), which the run must
        add up to."""
        # = recon_is_leaf(level, expected[0]), inlined: on every step of every walk
        leaf = level == 0 or (level <= RECON_BASE_LEVEL and expected[0] <= RECON_SPLIT_THRESHOLD)
        cache = self._leaves if leaf else self._aggregates
        run = cache.get((level, bucket))
        if run is not None:
            return run
        shared = self._shared
        if shared is not None:
            run = shared.get(self._scope, level, bucket, expected)
            if run is not None:
                cache.put((level, bucket), run)
                return run
        if leaf:
            shift = RECON_SHIFTS[level]
            end = (bucket + 1) << shift
            start = self._scope + (bucket << shift).to_bytes(SEQ_SIZE, "big")
            run = self._build_leaf(
                start, _range_end(self._scope, end, RECON_IDX_KEY_SIZE), end >= U64_LIMIT
            )
        else:
            prefix = self._scope + bytes((level - 1,))
            start = prefix + (bucket << RECON_FAN_SHIFT).to_bytes(SEQ_SIZE, "big")
            high = _range_end(prefix, (bucket + 1) << RECON_FAN_SHIFT, RECON_AGG_KEY_SIZE)
            run = self._build_aggregates(start, high)
        if not _adds_up(run, expected):
            raise _corrupt(
                f"the bucket under {start.hex()} adds up to {run.counts[-1]} items,"
                f" its aggregate row says {expected[0]}"
            )
        cache.put((level, bucket), run)
        if shared is not None:
            shared.put(self._scope, level, bucket, run)
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
        if top and rows and rows[-1][SCOPE_SIZE:RECON_ID_OFFSET] == RECON_RESERVED_TS:
            raise _corrupt("recon_idx holds the reserved timestamp 2**64-1")
        ids = (int.from_bytes(key[RECON_ID_OFFSET:], "little") for key in rows)
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
            if (
                len(key) != RECON_IDX_KEY_SIZE
                or value
                or key[SCOPE_SIZE:RECON_ID_OFFSET] == RECON_RESERVED_TS
            ):
                raise _corrupt(f"malformed recon_idx row {key.hex()}")
            return 1, int.from_bytes(key[RECON_ID_OFFSET:], "little")
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
    return ReconItem(
        int.from_bytes(idx_key[SCOPE_SIZE:RECON_ID_OFFSET], "big"), idx_key[RECON_ID_OFFSET:]
    )
