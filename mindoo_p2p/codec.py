"""Bounded binary reading and writing: the building blocks of every canonical encoding.

`Reader` never reads past its buffer and never allocates more than a caller-given bound, and
every failure is a :class:`~mindoo_p2p.errors.DecodeError`. `Writer` produces exactly the bytes
`Reader` accepts. Integers are fixed-width big-endian unless the method says varint (unsigned
LEB128, at most 10 bytes, minimal encoding required so every value has one encoding).
"""

from __future__ import annotations

import struct

from .errors import DecodeError

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


_ONE_BYTE_VARINTS = tuple(bytes((value,)) for value in range(0x80))


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 of ``value`` (0 <= value < 2**64)."""
    if 0 <= value < 0x80:  # the usual case (lengths, counts): one byte
        return _ONE_BYTE_VARINTS[value]
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Writer:
    """Appends fields to a growing buffer."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def u8(self, value: int) -> Writer:
        self._buf.append(value)
        return self

    def u16(self, value: int) -> Writer:
        self._buf += _U16.pack(value)
        return self

    def u32(self, value: int) -> Writer:
        self._buf += _U32.pack(value)
        return self

    def u64(self, value: int) -> Writer:
        self._buf += _U64.pack(value)
        return self

    def varint(self, value: int) -> Writer:
        self._buf += encode_varint(value)
        return self

    def raw(self, data: bytes) -> Writer:
        self._buf += data
        return self

    def fixed(self, data: bytes, size: int) -> Writer:
        if len(data) != size:
            raise ValueError(f"expected {size} bytes, got {len(data)}")
        self._buf += data
        return self

    def blob(self, data: bytes) -> Writer:
        """A varint length, then the bytes."""
        self._buf += encode_varint(len(data))
        self._buf += data
        return self

    def text(self, value: str) -> Writer:
        return self.blob(value.encode("utf-8"))

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)


def _minimal_varint(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int] | None:
    """The varint at ``data[pos:]`` and the position after it, or None when it is not one
    `Reader.varint` accepts (it runs past ``end``, is over ten bytes, or is not minimal): the
    one loop of the fast readers, whose caller then falls back to `Reader.varint`."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            return None  # over ten bytes
    if byte == 0 and shift:
        return None  # a trailing zero byte: not minimal
    return value, pos


class Reader:
    """Reads fields from ``data``; every read is bounds-checked."""

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, data: bytes, what: str = "data") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.what = what

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, size: int, field: str) -> memoryview:
        if size < 0 or self._pos + size > len(self._data):
            raise DecodeError(
                f"{self.what}: truncated at {field} (need {size} bytes at offset {self._pos},"
                f" have {self.remaining})"
            )
        view = self._data[self._pos : self._pos + size]
        self._pos += size
        return view

    def u8(self, field: str) -> int:
        return self._take(1, field)[0]

    def u16(self, field: str) -> int:
        return int(_U16.unpack(self._take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(_U32.unpack(self._take(4, field))[0])

    def u64(self, field: str) -> int:
        return int(_U64.unpack(self._take(8, field))[0])

    def varint(self, field: str, max_value: int = (1 << 64) - 1) -> int:
        # Byte by byte from the buffer (not through `_take`: index pages and entry frames
        # hold one varint per item, issue 8).
        data = self._data
        size = len(data)
        result = 0
        shift = 0
        for index in range(10):
            pos = self._pos
            if pos >= size:
                self._take(1, field)  # raises: truncated
            byte = data[pos]
            self._pos = pos + 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and index > 0:
                    raise DecodeError(f"{self.what}: non-minimal varint in {field}")
                if result > max_value:
                    raise DecodeError(
                        f"{self.what}: {field} is {result}, over the limit {max_value}"
                    )
                return result
            shift += 7
        raise DecodeError(f"{self.what}: varint too long in {field}")

    def fixed(self, size: int, field: str) -> bytes:
        return bytes(self._take(size, field))

    def varints_with_fixed(
        self, count: int, size: int, max_value: int
    ) -> list[tuple[int, bytes]] | None:
        """``count`` pairs of a varint of at most ``max_value`` and ``size`` bytes (an index
        page's items), read in one loop: what ``count`` calls of `varint` then `fixed` return.
        None, with nothing read, when any pair is not valid (or the data ends first): the caller
        then reads field by field, which names what is wrong."""
        # A copy (bytes index faster than a memoryview), of at most what ``count`` pairs can
        # take (a varint is at most ten bytes), not of the rest of the buffer.
        data = bytes(self._data[self._pos : self._pos + count * (10 + size)])
        end = len(data)
        pos = 0
        pairs: list[tuple[int, bytes]] = []
        append = pairs.append
        for _ in range(count):
            read = _minimal_varint(data, pos, end)
            if read is None:
                return None
            value, pos = read
            if value > max_value or pos + size > end:
                return None
            append((value, data[pos : pos + size]))
            pos += size
        self._pos += pos
        return pairs

    def blobs(self, count: int, max_size: int) -> list[bytes] | None:
        """``count`` blobs of at most ``max_size`` bytes each (an entry frame's entries), read
        in one loop: what ``count`` calls of `blob` return. None, with nothing read, when any is
        not valid (or the data ends first): the caller then reads them one by one, which names
        what is wrong."""
        data = self._data  # no copy of the buffer: each blob is copied out of the view
        end = len(data)
        pos = self._pos
        out: list[bytes] = []
        append = out.append
        for _ in range(count):
            read = _minimal_varint(data, pos, end)
            if read is None:
                return None
            size, pos = read
            if size > max_size or pos + size > end:
                return None
            append(bytes(data[pos : pos + size]))
            pos += size
        self._pos = pos
        return out

    def blob(self, field: str, max_size: int) -> bytes:
        size = self.varint(field, max_value=max_size)
        return bytes(self._take(size, field))

    def text(self, field: str, max_size: int) -> str:
        raw = self.blob(field, max_size)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{self.what}: {field} is not valid UTF-8") from exc

    def end(self) -> None:
        """Require that every byte was consumed."""
        if self.remaining:
            raise DecodeError(f"{self.what}: {self.remaining} trailing bytes")
