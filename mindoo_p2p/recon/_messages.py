"""Negentropy V1 messages as small immutable values (no encoding here: see _writer and _reader).

A message is the version byte and a list of ranges. Each range names only its exclusive upper
:class:`Bound`; its inclusive lower bound is the previous range's upper bound (the first range
starts at timestamp 0, id all zero). Bounds we write strictly increase; bounds we read never
decrease (the reader turns a bound at or below the previous one into an empty range). Ranges
left out after the last one are an implicit Skip up to infinity.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._fingerprint import FINGERPRINT_SIZE
from ._item import ID_SIZE, MAX_TIMESTAMP, ReconItem

PROTOCOL_VERSION = 0x61
"""Negentropy protocol V1."""

_PADDING = bytes(ID_SIZE)


class Mode(enum.IntEnum):
    """What a range carries."""

    SKIP = 0
    """Nothing: the sender is done with this range."""
    FINGERPRINT = 1
    """A fingerprint of the sender's ids in the range."""
    ID_LIST = 2
    """Every id the sender has in the range."""


@dataclass(frozen=True, slots=True)
class Bound:
    """A point of the (timestamp, id) order: ``timestamp`` and an id prefix of 0-32 bytes, the
    missing bytes being zero. ``timestamp == MAX_TIMESTAMP`` (with no prefix) is infinity."""

    timestamp: int
    id_prefix: bytes = b""

    def __post_init__(self) -> None:
        if type(self.timestamp) is not int or not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"bound timestamp out of the u64 range: {self.timestamp!r}")
        if type(self.id_prefix) is not bytes or len(self.id_prefix) > ID_SIZE:
            raise ValueError("bound id prefix must be at most 32 bytes")
        if self.timestamp == MAX_TIMESTAMP and self.id_prefix:
            raise ValueError("the infinite bound has no id prefix")

    @property
    def is_infinite(self) -> bool:
        return self.timestamp == MAX_TIMESTAMP

    def as_item(self) -> ReconItem:
        """The smallest item at or after this bound (the prefix padded with zero bytes)."""
        return ReconItem(self.timestamp, self.id_prefix + _PADDING[len(self.id_prefix) :])

    def sort_key(self) -> bytes:
        """Bytes whose order is the order of bounds (and of items: see ReconItem.sort_key)."""
        return self.timestamp.to_bytes(8, "big") + self.id_prefix + _PADDING[len(self.id_prefix) :]


START_BOUND = Bound(0)
"""The lower bound of a message's first range."""

INFINITE_BOUND = Bound(MAX_TIMESTAMP)
"""The end of the (timestamp, id) space."""


@dataclass(frozen=True, slots=True)
class SkipRange:
    """The sender has nothing to say about the ids up to ``upper``."""

    upper: Bound

    mode = Mode.SKIP


@dataclass(frozen=True, slots=True)
class FingerprintRange:
    """The fingerprint of the sender's ids up to ``upper``."""

    upper: Bound
    fingerprint: bytes

    mode = Mode.FINGERPRINT

    def __post_init__(self) -> None:
        if type(self.fingerprint) is not bytes or len(self.fingerprint) != FINGERPRINT_SIZE:
            raise ValueError(f"a fingerprint is {FINGERPRINT_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class IdListRange:
    """All of the sender's ids up to ``upper``, in the sender's (timestamp, id) order."""

    upper: Bound
    ids: tuple[bytes, ...]

    mode = Mode.ID_LIST

    def __post_init__(self) -> None:
        if type(self.ids) is not tuple:
            raise ValueError("ids must be a tuple")
        for item_id in self.ids:
            if type(item_id) is not bytes or len(item_id) != ID_SIZE:
                raise ValueError(f"every id is {ID_SIZE} bytes")


Range = SkipRange | FingerprintRange | IdListRange


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol V1 message: ranges in increasing order of their upper bounds."""

    ranges: tuple[Range, ...] = ()
