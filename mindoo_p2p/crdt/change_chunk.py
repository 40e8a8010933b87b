"""Defensive parsing of Automerge change chunks (the bytes of one change).

A chunk is::

    magic       4 bytes  85 6f 4a 83
    checksum    4 bytes  first 4 bytes of SHA-256(type + length + body)
    type        1 byte   1 = change, 2 = compressed change (raw DEFLATE of the body)
    length      uLEB128  length of the (possibly compressed) body that follows
    body

The change hash is SHA-256 of ``type + length + body`` of the *uncompressed* form, so for a
type-1 chunk it is ``sha256(chunk[8:])``. The body of a change is::

    deps          uLEB count, then count x 32-byte change hashes
    actor         uLEB length + bytes
    seq           uLEB
    start_op      uLEB
    time          sLEB (milliseconds; 0 in changes made by the binding)
    message       uLEB length + UTF-8
    other actors  uLEB count, then uLEB length + bytes each
    columns       uLEB count, then (uLEB spec, uLEB data length) pairs, specs ascending
    column data   the columns' bytes, in order
    extra bytes   whatever remains

Every function here bounds what it reads and raises :class:`DecodeError` and nothing else on bad
bytes. Validation goes as far as Automerge needs to stay safe: besides the layout, every
actor-index column is checked against the number of actors, because Automerge panics (rather
than failing) when an op names an actor the change does not list.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from ..codec import Reader, encode_varint
from ..errors import DecodeError
from .rle import decode_uint_runs, read_sleb, read_uleb, run_total

CHUNK_MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_TYPE_CHANGE = 1
CHUNK_TYPE_COMPRESSED_CHANGE = 2
HASH_SIZE = 32
CHECKSUM_SIZE = 4
HEADER_PREFIX_SIZE = len(CHUNK_MAGIC) + CHECKSUM_SIZE

MAX_CHANGE_SIZE = 64 * 1024 * 1024
"""Upper bound of a change body, compressed or not (entries carry at most 16 MiB)."""
MAX_ACTOR_ID_SIZE = 128
MAX_MESSAGE_SIZE = 1024 * 1024
MAX_COLUMNS = 64

COLUMN_TYPE_MASK = 0x07
COLUMN_DEFLATE_FLAG = 0x08
COLUMN_TYPE_ACTOR = 1
ACTION_SPEC = 0x42
"""Column 4 (action), type 2 (uLEB RLE): one value per op."""

VALUE_META_SPEC = 0x56
"""Column 5 (value), type 6 (value metadata): RLE of ``(length << 4) | value type``."""
VALUE_TYPE_MASK = 0x0F
VALUE_TYPE_INT = 4
VALUE_TYPE_COUNTER = 8
VALUE_TYPE_FIRST_UNKNOWN = 10


class Column(NamedTuple):
    """One column of a change: its spec and where its data lies in the body."""

    spec: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ChangeChunk:
    """A parsed, uncompressed change. Offsets index into ``body``."""

    hash: bytes
    body: bytes
    deps: tuple[bytes, ...]
    actor: bytes
    seq: int
    start_op: int
    other_actors: tuple[bytes, ...]
    columns_offset: int
    """Offset of the column count in ``body``."""
    columns: tuple[Column, ...]
    data_end: int
    """Offset of the first extra byte (the end of the column data)."""
    op_count: int
    """Number of ops (the length of the action column)."""

    @property
    def max_op(self) -> int:
        """Counter of the change's last op (``start_op - 1`` if it has none)."""
        return self.start_op + self.op_count - 1

    def column(self, spec: int) -> Column | None:
        """The column with ``spec``, or None if the change has none."""
        for column in self.columns:
            if column.spec == spec:
                return column
        return None


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(data, MAX_CHANGE_SIZE + 1)
    except zlib.error as exc:
        raise DecodeError(f"automerge change: bad compressed body ({exc})") from exc
    if len(body) > MAX_CHANGE_SIZE:
        raise DecodeError(f"automerge change: body inflates past {MAX_CHANGE_SIZE} bytes")
    if not inflater.eof:
        raise DecodeError("automerge change: truncated compressed body")
    if inflater.unused_data:
        raise DecodeError("automerge change: bytes after the compressed body")
    return body


def encode_change_chunk(body: bytes) -> bytes:
    """An uncompressed change chunk around ``body``, with its checksum."""
    hashed = bytes([CHUNK_TYPE_CHANGE]) + encode_varint(len(body)) + body
    return CHUNK_MAGIC + hashlib.sha256(hashed).digest()[:CHECKSUM_SIZE] + hashed


def read_chunk(data: bytes) -> tuple[bytes, bytes]:
    """Check a change chunk's header and checksum; return ``(hash, uncompressed body)``.

    ``data`` must be exactly one change chunk, compressed or not.
    """
    if not isinstance(data, bytes):
        raise DecodeError(f"automerge change must be bytes, not {type(data).__name__}")
    reader = Reader(data, "automerge change")
    if reader.fixed(len(CHUNK_MAGIC), "magic") != CHUNK_MAGIC:
        raise DecodeError("automerge change: bad magic")
    checksum = reader.fixed(CHECKSUM_SIZE, "checksum")
    chunk_type = reader.u8("chunk type")
    if chunk_type not in (CHUNK_TYPE_CHANGE, CHUNK_TYPE_COMPRESSED_CHANGE):
        raise DecodeError(f"automerge change: chunk type {chunk_type} is not a change")
    length = reader.varint("chunk length", max_value=MAX_CHANGE_SIZE)
    if length != reader.remaining:
        raise DecodeError(
            f"automerge change: chunk length {length} but {reader.remaining} bytes follow"
        )
    if chunk_type == CHUNK_TYPE_CHANGE:
        body = data[reader.pos :]
        hashed = data[HEADER_PREFIX_SIZE:]
    else:
        body = _inflate(data[reader.pos :])
        hashed = bytes([CHUNK_TYPE_CHANGE]) + encode_varint(len(body)) + body
    digest = hashlib.sha256(hashed).digest()
    if digest[:CHECKSUM_SIZE] != checksum:
        raise DecodeError("automerge change: checksum mismatch")
    return digest, body


def change_hash(change_bytes: bytes) -> bytes:
    """The 32-byte Automerge hash of one change chunk (checksum verified)."""
    return read_chunk(change_bytes)[0]


class _Cursor:
    """Bounded reads over a change body (faster than the generic codec.Reader here)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def uleb(self, field: str, max_value: int = (1 << 64) - 1) -> int:
        value, self.pos = read_uleb(self.data, self.pos, _WHAT, field)
        if value > max_value:
            raise DecodeError(f"{_WHAT}: {field} is {value}, over the limit {max_value}")
        return value

    def sleb(self, field: str) -> int:
        value, self.pos = read_sleb(self.data, self.pos, _WHAT, field)
        return value

    def take(self, size: int, field: str) -> bytes:
        if size > self.remaining:
            raise DecodeError(f"{_WHAT}: truncated at {field}")
        start = self.pos
        self.pos += size
        return self.data[start : self.pos]

    def blob(self, field: str, max_size: int) -> bytes:
        return self.take(self.uleb(field, max_size), field)


_WHAT = "automerge change"


def _read_deps(cursor: _Cursor) -> tuple[bytes, ...]:
    count = cursor.uleb("dependency count", cursor.remaining // HASH_SIZE)
    return tuple(cursor.take(HASH_SIZE, "dependency") for _ in range(count))


def change_deps(change_bytes: bytes) -> tuple[bytes, ...]:
    """The hashes of the changes ``change_bytes`` depends on (checksum verified)."""
    _, body = read_chunk(change_bytes)
    return _read_deps(_Cursor(body))


class ChangeIdentity(NamedTuple):
    """Who a change says it is: its hash, and the (actor, seq) it writes as."""

    hash: bytes
    actor: bytes
    """The actor of the change's own ops (not the other actors it refers to)."""
    seq: int


def change_identity(change_bytes: bytes) -> ChangeIdentity:
    """The hash of one change chunk (checksum verified) and the (actor, seq) it writes as,
    read without parsing its columns."""
    digest, body = read_chunk(change_bytes)
    cursor = _Cursor(body)
    _read_deps(cursor)
    actor = cursor.blob("actor", MAX_ACTOR_ID_SIZE)
    if not actor:
        raise DecodeError("automerge change: empty actor id")
    seq = cursor.uleb("seq")
    if seq == 0:
        raise DecodeError("automerge change: seq 0")
    return ChangeIdentity(digest, actor, seq)


def _check_actor_columns(chunk: ChangeChunk) -> None:
    actor_count = 1 + len(chunk.other_actors)
    for column in chunk.columns:
        if column.spec & COLUMN_TYPE_MASK != COLUMN_TYPE_ACTOR:
            continue
        what = f"automerge change column {column.spec:#x}"
        for value, _ in decode_uint_runs(chunk.body[column.start : column.end], what):
            if value is not None and value >= actor_count:
                raise DecodeError(f"{what}: actor index {value} but {actor_count} actors")


def _read_layout(cursor: _Cursor) -> list[tuple[int, int]]:
    """The (spec, length) pairs of the column metadata (inlined one-byte varints: hot path)."""
    data, pos, end = cursor.data, cursor.pos, len(cursor.data)
    column_count, pos = read_uleb(data, pos, _WHAT, "column count")
    if column_count > MAX_COLUMNS:
        raise DecodeError(f"{_WHAT}: {column_count} columns, over the limit {MAX_COLUMNS}")
    layout: list[tuple[int, int]] = []
    previous = -1
    for _ in range(column_count):
        if pos + 1 < end and data[pos] < 0x80 and data[pos + 1] < 0x80:
            spec, size = data[pos], data[pos + 1]
            pos += 2
        else:
            spec, pos = read_uleb(data, pos, _WHAT, "column spec")
            size, pos = read_uleb(data, pos, _WHAT, "column length")
        if spec > 0xFFFFFFFF or size > end - pos:
            raise DecodeError(f"{_WHAT}: bad column {spec:#x} of length {size}")
        if spec & COLUMN_DEFLATE_FLAG:
            raise DecodeError(f"{_WHAT}: column {spec:#x} is compressed")
        if spec <= previous:
            raise DecodeError(f"{_WHAT}: columns not in ascending order")
        previous = spec
        layout.append((spec, size))
    cursor.pos = pos
    return layout


def parse_change(change_bytes: bytes) -> ChangeChunk:
    """Parse and check one change chunk down to its column layout and actor indices."""
    digest, body = read_chunk(change_bytes)
    cursor = _Cursor(body)
    deps = _read_deps(cursor)
    actor = cursor.blob("actor", MAX_ACTOR_ID_SIZE)
    if not actor:
        raise DecodeError("automerge change: empty actor id")
    seq = cursor.uleb("seq")
    if seq == 0:
        raise DecodeError("automerge change: seq 0")
    start_op = cursor.uleb("start op")
    if start_op == 0:
        raise DecodeError("automerge change: start op 0")
    cursor.sleb("time")
    try:
        cursor.blob("message", MAX_MESSAGE_SIZE).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("automerge change: message is not UTF-8") from exc
    actor_count = cursor.uleb("other actor count", cursor.remaining)
    other_actors = tuple(cursor.blob("other actor", MAX_ACTOR_ID_SIZE) for _ in range(actor_count))
    columns_offset = cursor.pos
    layout = _read_layout(cursor)
    offset = cursor.pos
    columns: list[Column] = []
    op_count = 0
    for spec, size in layout:
        if size > len(body) - offset:
            raise DecodeError(f"automerge change: column {spec:#x} runs past the body")
        columns.append(Column(spec, offset, offset + size))
        if spec == ACTION_SPEC:
            op_count = run_total(decode_uint_runs(body[offset : offset + size], "action column"))
        offset += size
    chunk = ChangeChunk(
        hash=digest,
        body=body,
        deps=deps,
        actor=actor,
        seq=seq,
        start_op=start_op,
        other_actors=other_actors,
        columns_offset=columns_offset,
        columns=tuple(columns),
        data_end=offset,
        op_count=op_count,
    )
    _check_actor_columns(chunk)
    return chunk


def has_unconvertible_values(chunk: ChangeChunk) -> bool:
    """True if the change puts a counter or a value of a type unknown to Automerge today
    (values the binding cannot convert to Python)."""
    column = chunk.column(VALUE_META_SPEC)
    if column is None:
        return False
    runs = decode_uint_runs(chunk.body[column.start : column.end], "value metadata column")
    for value, _ in runs:
        if value is None:
            continue
        value_type = value & VALUE_TYPE_MASK
        if value_type == VALUE_TYPE_COUNTER or value_type >= VALUE_TYPE_FIRST_UNKNOWN:
            return True
    return False
