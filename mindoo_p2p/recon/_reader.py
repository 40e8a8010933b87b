"""Strict, bounded decoding of Negentropy V1 messages (the format is in :mod:`._writer`).

Every malformed input raises :class:`~mindoo_p2p.errors.DecodeError` and nothing else: an empty
or oversized message, a version other than V1, a truncated field, an id prefix over 32 bytes, an
unknown mode, or an id count larger than the bytes that follow. Nothing is allocated before its
size is checked against the bytes actually present.

Everything the reference decoder (hoytech/negentropy, C++; the V1 specification) accepts is
accepted, read the way it reads it, so independent implementations interoperate in both roles:
- varints may be non-minimal (see :func:`._varint.decode_varint`);
- timestamps saturate: a delta that would pass 2**64-1 gives infinity, and every bound after an
  infinite one is infinite too;
- an infinite bound may carry an id prefix, which means nothing (no item sorts after infinity)
  and is dropped;
- bounds need not increase: a bound at or below the previous one closes an empty range (the
  reference finds its upper index from the previous one's), so it is read as the previous bound;
- an id listed twice in one range counts once.
"""

from __future__ import annotations

from ..errors import DecodeError
from ._fingerprint import FINGERPRINT_SIZE
from ._item import ID_SIZE, MAX_TIMESTAMP
from ._messages import (
    PROTOCOL_VERSION,
    Bound,
    FingerprintRange,
    IdListRange,
    Message,
    Mode,
    Range,
    SkipRange,
)
from ._varint import decode_varint

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
"""The largest message accepted by default (a peer's frame limit may differ from ours)."""

_START = Bound(0)


def decode_message(data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Message:
    """Decode one whole message of at most ``max_size`` bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("negentropy message: not bytes")
    data = bytes(data)
    size = len(data)
    if size > max_size:
        raise DecodeError(
            f"negentropy message: {size} bytes, over the limit of {max_size} this side accepts"
            " (a peer that sets no frame size limit must be given one)"
        )
    if size == 0:
        raise DecodeError("negentropy message: empty")
    if data[0] != PROTOCOL_VERSION:
        raise DecodeError(f"negentropy message: unsupported protocol version byte 0x{data[0]:02x}")

    ranges: list[Range] = []
    pos = 1
    last_timestamp = 0
    previous = _START
    while pos < size:
        encoded, pos = decode_varint(data, pos, "bound timestamp")
        timestamp = _add_saturating(last_timestamp, encoded)
        last_timestamp = timestamp
        prefix_size, pos = decode_varint(data, pos, "bound id prefix length")
        if prefix_size > ID_SIZE:
            raise DecodeError(f"negentropy message: bound id prefix of {prefix_size} bytes")
        if pos + prefix_size > size:
            raise DecodeError("negentropy message: truncated at bound id prefix")
        prefix = data[pos : pos + prefix_size]
        pos += prefix_size
        bound = Bound(timestamp, b"" if timestamp == MAX_TIMESTAMP else prefix)
        if bound.sort_key() <= previous.sort_key():
            bound = previous  # an empty range
        previous = bound

        mode, pos = decode_varint(data, pos, "range mode")
        if mode == Mode.FINGERPRINT:
            if pos + FINGERPRINT_SIZE > size:
                raise DecodeError("negentropy message: truncated at fingerprint")
            ranges.append(FingerprintRange(bound, data[pos : pos + FINGERPRINT_SIZE]))
            pos += FINGERPRINT_SIZE
        elif mode == Mode.ID_LIST:
            count, pos = decode_varint(data, pos, "id count")
            if count * ID_SIZE > size - pos:
                raise DecodeError(
                    f"negentropy message: {count} ids announced, {size - pos} bytes left"
                )
            end = pos + count * ID_SIZE
            ids = dict.fromkeys(data[start : start + ID_SIZE] for start in range(pos, end, ID_SIZE))
            pos = end
            ranges.append(IdListRange(bound, tuple(ids)))
        elif mode == Mode.SKIP:
            ranges.append(SkipRange(bound))
        else:
            raise DecodeError(f"negentropy message: unknown range mode {mode}")
    return Message(tuple(ranges))


def _add_saturating(last: int, encoded: int) -> int:
    """The reference's ``decodeTimestampIn``: 0 is infinity, else ``last + encoded - 1``, and
    any sum past the u64 range (an infinite ``last`` included) is infinity."""
    if encoded == 0 or last == MAX_TIMESTAMP:
        return MAX_TIMESTAMP
    return min(last + encoded - 1, MAX_TIMESTAMP)
