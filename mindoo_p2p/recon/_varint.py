"""Negentropy's varint: base-128 digits, most significant first, high bit set on all but the last.

This is *not* the LEB128 of :mod:`mindoo_p2p.codec` (that one puts the least significant digit
first). Values are u64; we always write the minimal encoding, and read any encoding the reference
implementation reads (see `decode_varint`).
"""

from __future__ import annotations

from ..errors import DecodeError

MAX_VARINT_SIZE = 10
"""Bytes in the longest u64 varint."""

_U64_LIMIT = 1 << 64
_U64_MASK = _U64_LIMIT - 1
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

    Decodes as the reference implementation (hoytech/negentropy, C++) does, so that every
    encoding it accepts is accepted here: leading zero digits (a non-minimal encoding) are
    allowed, and a value past 64 bits keeps its low 64 bits (the reference shifts a u64). The
    length is bounded only by the data, which the caller bounds. Raises DecodeError when the
    data ends before the last digit.
    """
    end = len(data)
    value = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        value = ((value << 7) | (byte & 0x7F)) & _U64_MASK
        if byte < 0x80:
            return value, pos
    raise DecodeError(f"negentropy message: truncated at {field}")
