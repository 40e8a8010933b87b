"""Bundles: a file of sealed entries, for sneakernet, backup and restore.

Format, version 1::

    magic b"MDBN", version u8 = 1
    then for each entry: varint(length >= 1) + the sealed entry bytes
    then varint(0) as terminator, then u64 (big-endian) count of entries

A bundle holds only sealed entries (ciphertext): it is as safe to carry around as the store.
Reading is streaming and bounded; a truncated or corrupted bundle raises DecodeError before
anything is imported, and every entry is verified on import like any entry from a peer.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .codec import encode_varint
from .entry import MAX_ENTRY_SIZE, TENANT_LOG, Entry
from .errors import DecodeError
from .store import AppendResult, EntryStore, Rejected

MAGIC = b"MDBN"
VERSION = 1
IMPORT_BATCH = 250
"""Entries per `Node.ingest` call of an import: a daemon running the import lets peers and
``status`` have the Node between two calls, so this bounds how long they wait."""


def write_bundle(path: Path | str, entries: Iterable[Entry]) -> int:
    """Write ``entries`` to a new bundle file, durably; returns how many were written.

    The bundle is written beside ``path`` and renamed into place once complete and synced, so
    ``path`` never holds a partial bundle; on failure nothing is left behind.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    count = 0
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + bytes([VERSION]))
            for entry in entries:
                fh.write(encode_varint(len(entry.raw)))
                fh.write(entry.raw)
                count += 1
            fh.write(encode_varint(0))
            fh.write(struct.pack(">Q", count))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def export_entries(
    store: EntryStore, tenant_id: bytes, database: str | None = None, since: int = 0
) -> Iterator[Entry]:
    """The entries to export: the tenant log first (so importers learn members first)."""
    yield from store.iter_entries(tenant_id, TENANT_LOG)
    databases = [database] if database else store.databases(tenant_id)
    for name in databases:
        if name != TENANT_LOG:
            yield from store.iter_entries(tenant_id, name, since_seq=since)


def _read_varint(fh: BinaryIO, what: str) -> int:
    result = 0
    for index in range(10):
        byte = fh.read(1)
        if not byte:
            raise DecodeError(f"bundle: truncated at {what}")
        value = byte[0]
        result |= (value & 0x7F) << (7 * index)
        if not value & 0x80:
            return result
    raise DecodeError(f"bundle: varint too long at {what}")


def read_bundle(fh: BinaryIO) -> Iterator[bytes]:
    """Yield the raw entries of a bundle; DecodeError on anything malformed (checked to the end)."""
    head = fh.read(len(MAGIC) + 1)
    if head[: len(MAGIC)] != MAGIC:
        raise DecodeError("bundle: not a mindoo bundle (bad magic)")
    if len(head) < len(MAGIC) + 1 or head[-1] != VERSION:
        raise DecodeError("bundle: unsupported version")
    count = 0
    while True:
        size = _read_varint(fh, f"entry {count + 1} length")
        if size == 0:
            break
        if size > MAX_ENTRY_SIZE:
            raise DecodeError(f"bundle: entry {count + 1} claims {size} bytes, over the limit")
        raw = fh.read(size)
        if len(raw) != size:
            raise DecodeError(f"bundle: truncated in entry {count + 1}")
        count += 1
        yield raw
    trailer = fh.read(8)
    if len(trailer) != 8 or struct.unpack(">Q", trailer)[0] != count:
        raise DecodeError("bundle: bad trailer (truncated or corrupted file)")
    if fh.read(1):
        raise DecodeError("bundle: trailing bytes after the end")


def validate_bundle(path: Path | str) -> int:
    """Read a whole bundle without importing it; returns its entry count."""
    with open(path, "rb") as fh:
        return sum(1 for _ in read_bundle(fh))


def import_bundle(
    path: Path | str, ingest: Callable[[Sequence[Entry | bytes]], AppendResult]
) -> AppendResult:
    """Verify the bundle's framing, then ingest its entries in batches."""
    validate_bundle(path)
    added: list[bytes] = []
    duplicates: list[bytes] = []
    rejected: list[Rejected] = []
    with open(path, "rb") as fh:
        batch: list[bytes] = []
        for raw in read_bundle(fh):
            batch.append(raw)
            if len(batch) >= IMPORT_BATCH:
                _merge(ingest(batch), added, duplicates, rejected)
                batch = []
        if batch:
            _merge(ingest(batch), added, duplicates, rejected)
    return AppendResult(added=added, duplicates=duplicates, rejected=rejected)


def _merge(
    result: AppendResult, added: list[bytes], duplicates: list[bytes], rejected: list[Rejected]
) -> None:
    added.extend(result.added)
    duplicates.extend(result.duplicates)
    rejected.extend(result.rejected)
