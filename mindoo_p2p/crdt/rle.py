"""Run-length encoded unsigned-integer columns of the Automerge binary format.

A column is a sequence of chunks, each starting with a signed LEB128 header ``n``:

* ``n > 0``: a run, ``n`` copies of the one unsigned LEB128 value that follows;
* ``n < 0``: a literal run of ``-n`` unsigned LEB128 values;
* ``n == 0``: a run of nulls whose count (unsigned LEB128) follows.

Columns are decoded to runs, ``(value or None, count)`` pairs, so memory stays proportional to
the encoded size however long the runs claim to be. :func:`encode_uint_runs` writes the
canonical form Automerge itself writes: maximal runs of equal values of length 2 or more become
runs, the values left alone are grouped into literal runs, nulls become null runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..codec import encode_varint
from ..errors import DecodeError

Run = tuple[int | None, int]
"""A value (None for null) and how many times it repeats (>= 1)."""

MAX_LEB_BYTES = 10
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def read_uleb(data: bytes, pos: int, what: str, field: str) -> tuple[int, int]:
    """An unsigned LEB128 (minimal, at most 10 bytes, < 2**64) at ``pos``: (value, next pos)."""
    if pos >= len(data):
        raise DecodeError(f"{what}: truncated at {field}")
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = 0
    shift = 0
    for index in range(MAX_LEB_BYTES):
        if pos + index >= len(data):
            raise DecodeError(f"{what}: truncated at {field}")
        byte = data[pos + index]
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0:
                raise DecodeError(f"{what}: non-minimal varint in {field}")
            if result >= 1 << 64:
                raise DecodeError(f"{what}: {field} does not fit 64 bits")
            return result, pos + index + 1
    raise DecodeError(f"{what}: varint too long in {field}")


def read_sleb(data: bytes, pos: int, what: str, field: str) -> tuple[int, int]:
    """A signed LEB128 (at most 10 bytes, fits signed 64 bits) at ``pos``: (value, next pos)."""
    result = 0
    shift = 0
    for index in range(MAX_LEB_BYTES):
        if pos + index >= len(data):
            raise DecodeError(f"{what}: truncated at {field}")
        byte = data[pos + index]
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte & 0x40:
                result -= 1 << shift
            if not I64_MIN <= result <= I64_MAX:
                raise DecodeError(f"{what}: {field} does not fit 64 bits")
            return result, pos + index + 1
    raise DecodeError(f"{what}: signed varint too long in {field}")


def encode_sleb(value: int) -> bytes:
    """Signed LEB128 of ``value`` (a signed 64-bit integer), minimal length."""
    if not I64_MIN <= value <= I64_MAX:
        raise ValueError(f"signed varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        if done:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def decode_uint_runs(data: bytes, what: str) -> list[Run]:
    """Decode a whole RLE column of unsigned integers into runs.

    Adjacent runs are not merged. Raises :class:`DecodeError` on any malformed or truncated
    chunk, or an empty null run.
    """
    runs: list[Run] = []
    pos = 0
    end = len(data)
    while pos < end:
        first = data[pos]
        if 0 < first < 0x40 and pos + 1 < end and data[pos + 1] < 0x80:
            # Hot path: a short run of a small value, both one byte.
            runs.append((data[pos + 1], first))
            pos += 2
            continue
        header, pos = read_sleb(data, pos, what, "run header")
        if header > 0:
            value, pos = read_uleb(data, pos, what, "run value")
            runs.append((value, header))
        elif header < 0:
            for _ in range(-header):
                value, pos = read_uleb(data, pos, what, "literal value")
                runs.append((value, 1))
        else:
            count, pos = read_uleb(data, pos, what, "null run length")
            if count == 0:
                raise DecodeError(f"{what}: empty null run")
            runs.append((None, count))
    return runs


def merge_runs(runs: Iterable[Run]) -> list[Run]:
    """Merge adjacent runs of the same value; drop empty runs."""
    merged: list[Run] = []
    for value, count in runs:
        if count <= 0:
            continue
        if merged and merged[-1][0] == value:
            merged[-1] = (value, merged[-1][1] + count)
        else:
            merged.append((value, count))
    return merged


def encode_uint_runs(runs: Iterable[Run]) -> bytes:
    """The canonical RLE encoding of ``runs`` (see the module docstring)."""
    out = bytearray()
    literals: list[int] = []

    def flush_literals() -> None:
        if literals:
            out.extend(encode_sleb(-len(literals)))
            for literal in literals:
                out.extend(encode_varint(literal))
            literals.clear()

    for value, count in merge_runs(runs):
        if value is None:
            flush_literals()
            out.extend(encode_sleb(0))
            out.extend(encode_varint(count))
        elif count == 1:
            literals.append(value)
        else:
            flush_literals()
            out.extend(encode_sleb(count))
            out.extend(encode_varint(value))
    flush_literals()
    return bytes(out)


def run_total(runs: Iterable[Run]) -> int:
    """How many values ``runs`` stand for."""
    return sum(count for _, count in runs)
