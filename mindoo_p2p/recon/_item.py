"""The reconciled item: an author timestamp and a 32-byte entry id, ordered by (timestamp, id)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ID_SIZE = 32
"""Bytes in an id (an entry id is a SHA-256)."""

MAX_TIMESTAMP = (1 << 64) - 1
"""The largest u64. Negentropy reserves it as "infinity": a bound, never an item's timestamp."""

_TIMESTAMP_BYTES = 8


@dataclass(frozen=True, slots=True, order=True)
class ReconItem:
    """One element of a reconciled set: ``timestamp`` (ms, u64) and ``id`` (32 bytes).

    Items order by timestamp, then by id compared bytewise, which is Negentropy's order. A stored
    item's timestamp is below :data:`MAX_TIMESTAMP`; only a bound (see ``Bound.as_item``) may use
    it. Construction validates both fields and raises ``ValueError`` (or ``TypeError``).
    """

    timestamp: int
    id: bytes

    def __post_init__(self) -> None:
        if type(self.timestamp) is not int:
            raise TypeError(f"timestamp must be an int, not {type(self.timestamp).__name__}")
        if not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp out of the u64 range: {self.timestamp}")
        if type(self.id) is not bytes:
            raise TypeError(f"id must be bytes, not {type(self.id).__name__}")
        if len(self.id) != ID_SIZE:
            raise ValueError(f"id must be {ID_SIZE} bytes, got {len(self.id)}")

    def sort_key(self) -> bytes:
        """40 bytes, big-endian timestamp then id: bytewise order equals item order."""
        return self.timestamp.to_bytes(_TIMESTAMP_BYTES, "big") + self.id


_new_item = object.__new__
_set_timestamp = ReconItem.__dict__["timestamp"].__set__
_set_id = ReconItem.__dict__["id"].__set__


def checked_items(pairs: Iterable[tuple[int, bytes]]) -> tuple[ReconItem, ...]:
    """Items from ``(timestamp, id)`` pairs that a decoder has checked already: each timestamp
    an int in ``0 .. MAX_TIMESTAMP``, each id `ID_SIZE` bytes. Built through the slots with two
    cheap exact-type checks instead of `ReconItem`'s full ones (an index page of thousands of
    items); the same items as `ReconItem(...)`, and a pair that breaks the contract is refused
    with ValueError rather than made into an item `ReconItem` would refuse."""
    items = []
    for timestamp, item_id in pairs:
        if not (
            type(timestamp) is int
            and 0 <= timestamp <= MAX_TIMESTAMP
            and type(item_id) is bytes
            and len(item_id) == ID_SIZE
        ):
            raise ValueError(f"not a checked (timestamp, id) pair: {timestamp!r}, {item_id!r}")
        item: ReconItem = _new_item(ReconItem)
        _set_timestamp(item, timestamp)
        _set_id(item, item_id)
        items.append(item)
    return tuple(items)


def item_from_sort_key(key: bytes) -> ReconItem:
    """The inverse of :meth:`ReconItem.sort_key`."""
    return ReconItem(int.from_bytes(key[:_TIMESTAMP_BYTES], "big"), key[_TIMESTAMP_BYTES:])
