"""Which ``recon_agg`` rows a set of reconciliation items calls for (pure, no I/O).

The rule (schema 5, see :mod:`._layout`): every non-empty bucket of levels
``RECON_BASE_LEVEL``..``RECON_TOP_LEVEL`` has a row; a bucket of a level below has a row exactly
when its parent holds more than ``RECON_SPLIT_THRESHOLD`` items (``recon_is_leaf`` is false for
the parent). Rows are computed here from items given as ``(timestamp_ms, id value)`` pairs
(the id as its little-endian integer), in (timestamp, id) order:

- :func:`subtree_rows`: the rows under one split bucket, from its items summed per millisecond
  (:func:`millisecond_slots`; the writer calls it when a bucket crosses the threshold);
- :class:`ExpectedRows`: every row of a whole index, fed item by item in index order with
  memory bounded by the items of one base bucket (rebuild, fsck).

Rows are returned as ``key -> [count, id sum]`` with the sum not reduced (callers reduce it mod
2**256 when they pack or compare it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from operator import itemgetter

from ._layout import (
    RECON_BASE_LEVEL,
    RECON_SHIFTS,
    RECON_TOP_LEVEL,
    recon_agg_key,
    recon_is_leaf,
)

Item = tuple[int, int]
"""(timestamp_ms, id as a little-endian integer)."""
Rows = dict[bytes, list[int]]


Slot = tuple[int, int, int]
"""(timestamp_ms, count, id sum) of the items of one millisecond."""


def millisecond_slots(items: Iterable[Item]) -> list[Slot]:
    """``items`` (in timestamp order) summed per millisecond."""
    slots: list[Slot] = []
    for timestamp, group in itertools.groupby(items, key=itemgetter(0)):
        values = [value for _, value in group]
        slots.append((timestamp, len(values), sum(values)))
    return slots


def subtree_rows(scope: bytes, level: int, slots: Sequence[Slot]) -> Rows:
    """The rows strictly below a bucket of ``level`` whose items, summed per millisecond, are
    ``slots`` (in timestamp order; no rows when the bucket is a leaf). A millisecond's items
    fall in one child bucket at every level, and a row and the leaf rule need only counts and
    sums, so these are the rows its items call for (as `ExpectedRows` computes them)."""
    rows: Rows = {}
    if not recon_is_leaf(level, sum(count for _, count, _ in slots)):
        _add_child_slots(rows, scope, level, slots)
    return rows


def _add_child_slots(rows: Rows, scope: bytes, level: int, slots: Sequence[Slot]) -> None:
    child_level = level - 1
    shift = RECON_SHIFTS[child_level]
    for child, group in itertools.groupby(slots, key=lambda slot: slot[0] >> shift):
        members = list(group)
        count = sum(member_count for _, member_count, _ in members)
        rows[recon_agg_key(scope, child_level, child)] = [count, sum(s for _, _, s in members)]
        if not recon_is_leaf(child_level, count):
            _add_child_slots(rows, scope, child_level, members)


class ExpectedRows:
    """Every ``recon_agg`` row of an index, computed from its items fed in index order (scope
    by scope, each in (timestamp, id) order). Holds the items of one base bucket at a time, plus
    the rows."""

    __slots__ = ("_bucket", "_items", "_rows", "_scope")

    def __init__(self) -> None:
        self._rows: Rows = {}
        self._scope = b""
        self._bucket = -1
        self._items: list[Item] = []

    def add(self, scope: bytes, timestamp: int, value: int) -> None:
        bucket = timestamp >> RECON_SHIFTS[RECON_BASE_LEVEL]
        if scope != self._scope or bucket != self._bucket:
            self._flush()
            self._scope, self._bucket = scope, bucket
        self._items.append((timestamp, value))

    def rows(self) -> Rows:
        """The rows of everything added so far (call once, at the end)."""
        self._flush()
        return self._rows

    def _flush(self) -> None:
        items = self._items
        if not items:
            return
        scope, bucket = self._scope, self._bucket
        count = len(items)
        id_sum = sum(value for _, value in items)
        rows = self._rows
        for level in range(RECON_BASE_LEVEL, RECON_TOP_LEVEL + 1):
            shift = RECON_SHIFTS[level] - RECON_SHIFTS[RECON_BASE_LEVEL]
            key = recon_agg_key(scope, level, bucket >> shift)
            accumulated = rows.get(key)
            if accumulated is None:
                rows[key] = [count, id_sum]
            else:
                accumulated[0] += count
                accumulated[1] += id_sum
        if not recon_is_leaf(RECON_BASE_LEVEL, count):
            _add_child_slots(rows, scope, RECON_BASE_LEVEL, millisecond_slots(items))
        self._items = []
