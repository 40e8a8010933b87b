"""What the reconciliation engine needs from an index of items, and an in-memory one.

A storage is a sorted, duplicate-free sequence of :class:`ReconItem` addressed by index
0..size()-1. It must not change while a message is being processed (an LMDB storage answers one
message inside one read transaction).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from typing import Protocol

from ._fingerprint import fingerprint_from_sum
from ._item import MAX_TIMESTAMP, ReconItem, item_from_sort_key


class ReconStorage(Protocol):
    """A sorted set of items with range fingerprints."""

    def size(self) -> int:
        """Number of items."""
        ...

    def item(self, i: int) -> ReconItem:
        """The item at index ``i`` (0 <= i < size())."""
        ...

    def items(self, begin: int, end: int) -> Iterator[ReconItem]:
        """The items at indexes [begin, end), in order."""
        ...

    def lower_bound(self, begin: int, end: int, bound: ReconItem) -> int:
        """The first index in [begin, end) whose item is >= ``bound``, or ``end``."""
        ...

    def fingerprint(self, begin: int, end: int) -> bytes:
        """The 16-byte Negentropy fingerprint of the items [begin, end); O(log n) or better."""
        ...


class VectorStorage(ReconStorage):
    """An immutable in-memory :class:`ReconStorage`: sorted 40-byte keys and prefix sums of the
    ids, so a fingerprint costs one subtraction and one SHA-256 (O(1)), and a lower bound one
    binary search over bytes (in C).

    ``ValueError`` if an item is given twice or has the reserved timestamp ``MAX_TIMESTAMP``.
    """

    __slots__ = ("_keys", "_sums")

    def __init__(self, items: Iterable[ReconItem]) -> None:
        keys = sorted(item.sort_key() for item in items)
        for previous, current in itertools.pairwise(keys):
            if previous == current:
                raise ValueError(f"duplicate item {item_from_sort_key(current)!r}")
        if keys and keys[-1][:8] == b"\xff" * 8:
            raise ValueError(f"timestamp {MAX_TIMESTAMP} is reserved for the infinite bound")
        self._keys = keys
        sums = [0]
        sums += itertools.accumulate(int.from_bytes(key[8:], "little") for key in keys)
        self._sums = sums

    def size(self) -> int:
        return len(self._keys)

    def item(self, i: int) -> ReconItem:
        if not 0 <= i < len(self._keys):
            raise IndexError(f"item index {i} out of range")
        return item_from_sort_key(self._keys[i])

    def items(self, begin: int, end: int) -> Iterator[ReconItem]:
        self._check_range(begin, end)
        return map(item_from_sort_key, self._keys[begin:end])

    def lower_bound(self, begin: int, end: int, bound: ReconItem) -> int:
        self._check_range(begin, end)
        return bisect.bisect_left(self._keys, bound.sort_key(), begin, end)

    def fingerprint(self, begin: int, end: int) -> bytes:
        self._check_range(begin, end)
        return fingerprint_from_sum(self._sums[end] - self._sums[begin], end - begin)

    def _check_range(self, begin: int, end: int) -> None:
        if not 0 <= begin <= end <= len(self._keys):
            raise IndexError(f"range [{begin}, {end}) out of [0, {len(self._keys)}]")
