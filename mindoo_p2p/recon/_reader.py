"""Strict, bounded decoding of Negentropy V1 messages (the format is in :mod:`._writer`).

Every malformed input raises :class:`~mindoo_p2p.errors.DecodeError` and nothing else: an empty
or oversized message, a version other than V1, a truncated field, a non-minimal or over-long
varint, a timestamp past the u64 range, an id prefix over 32 bytes, an infinite bound with a
prefix, bounds that do not strictly increase, an unknown mode, an id count larger than the bytes
that follow, or an id listed twice in one range. Nothing is allocated before its size is checked
against the bytes actually present.
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

_PADDING = bytes(ID_SIZE)
_START_KEY = bytes(8 + ID_SIZE)


def decode_message(data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Message:
    """Decode one whole message of at most ``max_size`` bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("negentropy message: not bytes")
    data = bytes(data)
    size = len(data)
    if size > max_size:
        raise DecodeError(f"negentropy message: {size} bytes, over the limit of {max_size}")
    if size == 0:
        raise DecodeError("negentropy message: empty")
    if data[0] != PROTOCOL_VERSION:
        raise DecodeError(f"negentropy message: unsupported protocol version byte 0x{data[0]:02x}")

    ranges: list[Range] = []
    pos = 1
    last_timestamp = 0
    previous_key = _START_KEY
    while pos < size:
        encoded, pos = decode_varint(data, pos, "bound timestamp")
        if encoded == 0:
            timestamp = MAX_TIMESTAMP
        else:
            timestamp = last_timestamp + encoded - 1
            if timestamp >= MAX_TIMESTAMP:
                raise DecodeError("negentropy message: bound timestamp past the u64 range")
        last_timestamp = timestamp
        prefix_size, pos = decode_varint(data, pos, "bound id prefix length")
        if prefix_size > ID_SIZE:
            raise DecodeError(f"negentropy message: bound id prefix of {prefix_size} bytes")
        if pos + prefix_size > size:
            raise DecodeError("negentropy message: truncated at bound id prefix")
        prefix = data[pos : pos + prefix_size]
        pos += prefix_size
        if timestamp == MAX_TIMESTAMP and prefix_size:
            raise DecodeError("negentropy message: infinite bound with an id prefix")
        key = timestamp.to_bytes(8, "big") + prefix + _PADDING[prefix_size:]
        if key <= previous_key:
            raise DecodeError("negentropy message: range bounds do not strictly increase")
        previous_key = key
        bound = Bound(timestamp, prefix)

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
            ids = tuple(data[start : start + ID_SIZE] for start in range(pos, end, ID_SIZE))
            pos = end
            if len(set(ids)) != count:
                raise DecodeError("negentropy message: an id is listed twice in one range")
            ranges.append(IdListRange(bound, ids))
        elif mode == Mode.SKIP:
            ranges.append(SkipRange(bound))
        else:
            raise DecodeError(f"negentropy message: unknown range mode {mode}")
    return Message(tuple(ranges))
