"""Negentropy's varint: base-128 digits, most significant first, high bit set on all but the last.

This is *not* the LEB128 of :mod:`mindoo_p2p.codec` (that one puts the least significant digit
first). Values are u64; decoding accepts only the minimal encoding (no leading zero digit).
"""

from __future__ import annotations

from ..errors import DecodeError

MAX_VARINT_SIZE = 10
"""Bytes in the longest u64 varint."""

_U64_LIMIT = 1 << 64
_SMALL = [bytes((value,)) for value in range(128)]


def encode_varint(value: int) -> bytes:
    """The minimal encoding of ``value`` (0 <= value < 2**64)."""
    if 0 <= value < 128:
        return _SMALL[value]
    if value < 0 or value >= _U64_LIMIT:
        raise ValueError(f"varint out of the u64 range: {value}")
    digits = bytearray()
    while value:
        digits.append(value & 0x7F)
        value >>= 7
    digits.reverse()
    for index in range(len(digits) - 1):
        digits[index] |= 0x80
    return bytes(digits)


def varint_size(value: int) -> int:
    """Bytes in the encoding of ``value``."""
    return max(1, (value.bit_length() + 6) // 7)


def decode_varint(data: bytes, pos: int, field: str) -> tuple[int, int]:
    """Read one varint of ``data`` at ``pos``; return (value, position after it).

    Raises DecodeError when the data ends first, when the encoding is not minimal, or when the
    value does not fit in a u64.
    """
    end = len(data)
    if pos >= end:
        raise DecodeError(f"negentropy message: truncated at {field}")
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    if byte == 0x80:
        raise DecodeError(f"negentropy message: non-minimal varint in {field}")
    value = byte & 0x7F
    for _ in range(MAX_VARINT_SIZE - 1):
        if pos >= end:
            raise DecodeError(f"negentropy message: truncated at {field}")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            if value >= _U64_LIMIT:
                raise DecodeError(f"negentropy message: {field} does not fit in 64 bits")
            return value, pos
    raise DecodeError(f"negentropy message: varint too long in {field}")
