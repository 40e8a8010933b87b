"""The encrypted snapshot of a materialized document: its format and its sealing.

A snapshot (written by `materializer.DocumentMaterializer` after `SNAPSHOT_EVERY` new entries,
kept in the store's snapshot table, derived data) is ``key id (16) || nonce (24) || sealed``,
where ``sealed`` is XChaCha20-Poly1305 under that key of the document's family over:

    u8 version (1) | varint n | n x (change hash (32), entry id (32)) | varint change count
    | blob deleted-by entry id (empty: not deleted) | blob Automerge save

with the associated data ``b"mindoo/snapshot/v1\\0" || scope || document id || covered seq
(u64 BE)``: a snapshot opens only as what it was written for (that document of that database,
covering that feed position). Which key may open it is the materializer's rule.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .codec import Reader, Writer
from .crypto import aead
from .errors import DecodeError, VerificationError
from .keyring import TenantKey

SNAPSHOT_VERSION = 1
_SNAPSHOT_AAD = b"mindoo/snapshot/v1\x00"
_KEY_ID_SIZE = 16
_SEALED_START = _KEY_ID_SIZE + aead.NONCE_SIZE


class SnapshotContents(NamedTuple):
    """What an opened snapshot holds."""

    heads_to_entries: dict[bytes, bytes]
    change_count: int
    deleted_by: bytes | None
    save: bytes


def _aad(scope: bytes, document_id: bytes, covered_seq: int) -> bytes:
    return _SNAPSHOT_AAD + scope + document_id + struct.pack(">Q", covered_seq)


def seal_snapshot(
    key: TenantKey,
    scope: bytes,
    document_id: bytes,
    covered_seq: int,
    contents: SnapshotContents,
) -> bytes:
    """The stored form of ``contents``, sealed under ``key``."""
    w = Writer().u8(SNAPSHOT_VERSION).varint(len(contents.heads_to_entries))
    for hash_, entry_id in sorted(contents.heads_to_entries.items()):
        w.fixed(hash_, 32).fixed(entry_id, 32)
    w.varint(contents.change_count)
    w.blob(contents.deleted_by or b"")
    w.blob(contents.save)
    nonce = aead.random_nonce()
    sealed = aead.encrypt(key.secret, nonce, w.getvalue(), _aad(scope, document_id, covered_seq))
    return key.key_id + nonce + sealed


def snapshot_key_id(blob: bytes) -> bytes:
    """The id of the key a stored snapshot is sealed under."""
    return blob[:_KEY_ID_SIZE]


def open_snapshot(
    key: TenantKey, scope: bytes, document_id: bytes, covered_seq: int, blob: bytes
) -> SnapshotContents | None:
    """The contents of a stored snapshot of ``document_id`` covering ``covered_seq``, opened
    with ``key``; None when it does not open or does not parse (a snapshot is only a cache)."""
    nonce, sealed = blob[_KEY_ID_SIZE:_SEALED_START], blob[_SEALED_START:]
    try:
        plain = aead.decrypt(key.secret, nonce, sealed, _aad(scope, document_id, covered_seq))
        r = Reader(plain, "snapshot")
        if r.u8("version") != SNAPSHOT_VERSION:
            return None
        heads = {}
        for _ in range(r.varint("heads", max_value=4096)):
            hash_ = r.fixed(32, "head hash")
            heads[hash_] = r.fixed(32, "head entry")
        change_count = r.varint("change count")
        deleted_by = r.blob("deleted", 32) or None
        save = r.blob("save", 1 << 31)
        r.end()
    except (DecodeError, VerificationError):
        return None
    return SnapshotContents(heads, change_count, deleted_by, save)
