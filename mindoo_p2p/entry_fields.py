"""Single fields of sealed entry bytes, read from their fixed places without decoding the rest.

For routing and bookkeeping of bytes that are already verified (read back from our own store)
or only counted (a peer's pushed entries, by database): none of these checks an entry. The
layout is `entry.py`'s: magic, version, kind, tenant id, database name (a one-byte varint
length: names are at most 64 bytes), document id, author, seq, timestamp, ``prev`` (version 2
only), deps, key id.
"""

from __future__ import annotations

from .entry import (
    _KINDS,
    _TENANT_ID_OFFSET,
    AUTHOR_SIZE,
    DOCUMENT_ID_SIZE,
    FORMAT_VERSIONS,
    ID_SIZE,
    KEY_ID_SIZE,
    LEGACY_FORMAT_VERSION,
    MAGIC,
    MAX_DATABASE_NAME,
    TENANT_ID_SIZE,
    EntryKind,
    _database_name,
)
from .errors import DecodeError

_NAME_SIZE_AT = _TENANT_ID_OFFSET + TENANT_ID_SIZE
_PREV_AFTER_DATABASE = DOCUMENT_ID_SIZE + AUTHOR_SIZE + 16  # document, author, seq, timestamp


def _is_entry(raw: bytes, shortest: int) -> bool:
    """Whether ``raw`` starts as an entry of a known version and is longer than ``shortest``."""
    return len(raw) > shortest and raw[: len(MAGIC)] == MAGIC and raw[len(MAGIC)] in FORMAT_VERSIONS


def tenant_id_of_raw(raw: bytes) -> bytes | None:
    """The tenant id of sealed bytes (None when ``raw`` is too short or not an entry of a known
    version). Only for routing bytes already verified (e.g. read back from our own store)."""
    if not _is_entry(raw, _NAME_SIZE_AT - 1):
        return None
    return raw[_TENANT_ID_OFFSET:_NAME_SIZE_AT]


def database_of_raw(raw: bytes) -> str | None:
    """The database name of sealed bytes (None when ``raw`` is not an entry of a known version
    or its name field is invalid). For bookkeeping only (which database a peer's pushed entries
    are counted under): it checks nothing about the entry."""
    if not _is_entry(raw, _NAME_SIZE_AT):
        return None
    name_size = raw[_NAME_SIZE_AT]
    if name_size > MAX_DATABASE_NAME or len(raw) < _NAME_SIZE_AT + 1 + name_size:
        return None
    return _database_name(raw[_NAME_SIZE_AT + 1 : _NAME_SIZE_AT + 1 + name_size])


def prev_of_raw(raw: bytes) -> bytes | None:
    """The ``prev`` of sealed bytes (None for a version-1 entry). Only for bytes already
    verified (read back from our own store); DecodeError when they are too short or not an
    entry."""
    if not _is_entry(raw, _NAME_SIZE_AT):
        raise DecodeError("stored entry: not an entry")
    if raw[len(MAGIC)] == LEGACY_FORMAT_VERSION:
        return None
    name_size = raw[_NAME_SIZE_AT]
    offset = _NAME_SIZE_AT + 1 + name_size + _PREV_AFTER_DATABASE
    if name_size > MAX_DATABASE_NAME or len(raw) < offset + ID_SIZE:
        raise DecodeError("stored entry: truncated before prev")
    return raw[offset : offset + ID_SIZE]


def document_key_of_raw(raw: bytes) -> tuple[EntryKind, bytes, bytes]:
    """``(kind, document id, key id)`` of sealed bytes (what the query index follows a
    database by). Only for bytes already verified (read back from our own store); DecodeError
    when they are not an entry."""
    if not _is_entry(raw, _NAME_SIZE_AT):
        raise DecodeError("stored entry: not an entry")
    kind = _KINDS.get(raw[len(MAGIC) + 1])
    name_size = raw[_NAME_SIZE_AT]
    at = _NAME_SIZE_AT + 1 + name_size
    document_id = raw[at : at + DOCUMENT_ID_SIZE]
    at += _PREV_AFTER_DATABASE + (0 if raw[len(MAGIC)] == LEGACY_FORMAT_VERSION else ID_SIZE)
    deps, shift = 0, 0
    while at < len(raw) and shift < 64:
        byte = raw[at]
        at += 1
        deps |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    at += deps * ID_SIZE
    if kind is None or name_size > MAX_DATABASE_NAME or len(raw) < at + KEY_ID_SIZE:
        raise DecodeError("stored entry: truncated header")
    return kind, document_id, raw[at : at + KEY_ID_SIZE]


__all__ = ["database_of_raw", "document_key_of_raw", "prev_of_raw", "tenant_id_of_raw"]
