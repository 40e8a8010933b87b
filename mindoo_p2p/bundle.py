"""Bundles: a file of sealed entries, for sneakernet, backup and restore.

Format, version 1::

    magic b"MDBN", version u8 = 1
    then for each entry: varint(length >= 1) + the sealed entry bytes
    then varint(0) as terminator, then u64 (big-endian) count of entries

A bundle holds only sealed entries (ciphertext): it is as safe to carry around as the store.
Reading is streaming and bounded; a truncated or corrupted bundle raises DecodeError before
anything is imported. `check_bundle` decodes every entry and verifies every signature (the
admission pipeline's steps) before anything lands; `import_bundle` then ingests, without
verifying again, and the tenants' membership decides entry by entry like for any arrival.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import admission
from .admission import VerifiedEntry
from .codec import encode_varint
from .entry import MAX_ENTRY_SIZE, TENANT_LOG, Entry
from .errors import DecodeError, VerificationError
from .rejection import Rejected, RejectionKind
from .store import AppendResult, EntryStore

MAGIC = b"MDBN"
VERSION = 1
IMPORT_BATCH = 250
"""Entries per `Node.ingest` call of an import: a daemon running the import lets peers and
``status`` have the Node between two calls, so this bounds how long they wait."""
VERIFY_CHUNK_ENTRIES = 1024
VERIFY_CHUNK_BYTES = 64 * 1024 * 1024


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


@dataclass(frozen=True, slots=True)
class DamagedEntry:
    """An entry of a bundle that does not decode or whose signature does not verify."""

    position: int
    """1-based position in the bundle."""
    entry_id: str
    """Hex SHA-256 of the bytes as found in the bundle."""
    kind: RejectionKind
    reason: str


@dataclass(frozen=True)
class CheckedBundle:
    """What `check_bundle` found: the damaged entries, and the ids whose bytes decoded and
    whose signatures verified (so `import_bundle` does not verify them again)."""

    path: Path
    count: int
    damaged: list[DamagedEntry]
    verified_ids: frozenset[bytes]

    @property
    def ok(self) -> bool:
        return not self.damaged


def check_bundle(path: Path | str) -> CheckedBundle:
    """Check a whole bundle before importing any of it: a bundle is a file the user carries,
    so one flipped byte means the file is damaged, and the user should learn it before
    anything lands. One streaming pass: the framing (DecodeError when broken), then every
    entry decoded and its signature verified by the admission pipeline, in bounded chunks."""
    path = Path(path)
    damaged: list[DamagedEntry] = []
    verified: set[bytes] = set()
    pending: list[tuple[int, Entry]] = []
    pending_bytes = 0
    count = 0

    def flush() -> None:
        nonlocal pending_bytes
        results = admission.verify_all([entry for _, entry in pending])
        for (position, entry), result in zip(pending, results, strict=True):
            if isinstance(result, Rejected):
                damaged.append(DamagedEntry(position, entry.id.hex(), result.kind, result.message))
            else:
                verified.add(entry.id)
        pending.clear()
        pending_bytes = 0

    with open(path, "rb") as fh:
        for count, raw in enumerate(read_bundle(fh), start=1):
            decoded = admission.decode(raw, f"entry {count}")
            if isinstance(decoded, Rejected):
                damaged.append(
                    DamagedEntry(count, decoded.entry_id.hex(), decoded.kind, decoded.message)
                )
                continue
            pending.append((count, decoded))
            pending_bytes += len(raw)
            if len(pending) >= VERIFY_CHUNK_ENTRIES or pending_bytes >= VERIFY_CHUNK_BYTES:
                flush()
    if pending:
        flush()
    return CheckedBundle(path, count, damaged, frozenset(verified))


def import_bundle(
    path: Path | str,
    ingest: Callable[[Sequence[Entry | bytes | VerifiedEntry]], AppendResult],
    checked: CheckedBundle | None = None,
) -> AppendResult:
    """Import a bundle in batches, all or nothing against damage: `check_bundle` first (or
    ``checked``, its result for this file), and nothing is ingested when an entry is damaged
    (VerificationError naming the first). Entries the tenants' membership refuses are
    rejected one by one by ``ingest``. An entry whose signature the check verified is handed
    over as a `VerifiedEntry` and not verified again; bytes that changed on disk since the
    check are verified like any others."""
    if checked is None or checked.path != Path(path):
        checked = check_bundle(path)
    if checked.damaged:
        first = checked.damaged[0]
        raise VerificationError(
            f"bundle {path} is damaged, nothing was imported: {len(checked.damaged)} bad"
            f" entries, first at position {first.position} ({first.entry_id}): {first.reason}"
        )
    added: list[bytes] = []
    duplicates: list[bytes] = []
    rejected: list[Rejected] = []
    with open(path, "rb") as fh:
        batch: list[Entry | bytes | VerifiedEntry] = []
        for raw in read_bundle(fh):
            batch.append(admission.checked_earlier(raw, checked.verified_ids))
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
