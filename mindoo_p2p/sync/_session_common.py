"""What both roles of a sync session share: the agreed database order, our database list,
packing entries into frames, decoding a frame in a phase, reassembling a fragmented entry, and
counting what the store did with a batch."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence

from ..entry import TENANT_LOG
from ..errors import DecodeError
from ._session_api import IngestJob, IngestOutcome, SyncStore
from ._session_report import DatabaseReport
from .messages import (
    MAX_DATABASES,
    MAX_ENTRIES_PER_FRAME,
    MAX_FRAME_SIZE,
    DatabaseInfo,
    DatabaseSummary,
    Entries,
    EntryFragment,
    Message,
    ProtocolViolation,
    decode_message,
    encode_message,
    len_varint,
)

ENTRIES_BUDGET = MAX_FRAME_SIZE - 8
"""Bytes of (length-prefixed) entries in one ENTRIES frame: the type byte and count fit in 8."""
FRAGMENT_CHUNK = MAX_FRAME_SIZE - 32
"""Data bytes in one ENTRY_FRAGMENT frame (type byte and three varints fit in 32)."""
READ_CHUNK = 64
"""Ids per `SyncStore.get_raw` call while building frames."""


def database_order(names: Iterable[str]) -> list[str]:
    """The agreed sync order: the tenant log first (membership before what it authorizes),
    then by name; each name once."""
    return sorted(set(names), key=lambda name: (name != TENANT_LOG, name))


def local_databases(store: SyncStore) -> tuple[DatabaseInfo, ...]:
    """Our database list for the peer: every database of ``store`` with its entry count."""
    return tuple(info for info, _ in _local(store, fingerprints=False))


def local_summary(store: SyncStore) -> DatabaseSummary:
    """Our database summary for the peer (version 3): every database of ``store`` with its
    entry count and the fingerprint of all its items, each read from one snapshot (a sum the
    store keeps and one SHA-256: no walk over the items)."""
    rows = _local(store, fingerprints=True)
    return DatabaseSummary(tuple(info for info, _ in rows), tuple(fp for _, fp in rows))


def _local(store: SyncStore, *, fingerprints: bool) -> list[tuple[DatabaseInfo, bytes]]:
    rows = []
    for name in sorted(set(store.databases())):
        with store.recon_storage(name) as storage:
            size = storage.size()
            rows.append(
                (DatabaseInfo(name, size), storage.fingerprint(0, size) if fingerprints else b"")
            )
    if len(rows) > MAX_DATABASES:
        raise ValueError(f"a tenant syncs at most {MAX_DATABASES} databases, not {len(rows)}")
    return rows


def entry_frames(raws: Iterable[bytes]) -> Iterator[bytes]:
    """ENTRIES frames packing ``raws`` in order, and ENTRY_FRAGMENT frames for an entry too
    large for one frame."""
    batch: list[bytes] = []
    size = 0
    for raw in raws:
        cost = len_varint(len(raw)) + len(raw)
        if batch and (size + cost > ENTRIES_BUDGET or len(batch) == MAX_ENTRIES_PER_FRAME):
            yield encode_message(Entries(tuple(batch)))
            batch, size = [], 0
        if cost > ENTRIES_BUDGET:
            for offset in range(0, len(raw), FRAGMENT_CHUNK):
                piece = raw[offset : offset + FRAGMENT_CHUNK]
                yield encode_message(EntryFragment(len(raw), offset, piece))
            continue
        batch.append(raw)
        size += cost
    if batch:
        yield encode_message(Entries(tuple(batch)))


def decode_frame(frame: bytes, phase: enum.Enum, accepted: tuple[type, ...]) -> Message:
    try:
        message = decode_message(frame)
    except DecodeError as exc:
        raise ProtocolViolation(f"undecodable frame: {exc}") from None
    if not isinstance(message, accepted):
        raise ProtocolViolation(f"unexpected {type(message).__name__} while {phase.value}")
    return message


def problem_summary(problems: Sequence[str]) -> str:
    return f"{len(problems)} invalid entries from the peer (first: {problems[0]})"


class FragmentAssembly:
    """An entry arriving in ENTRY_FRAGMENT pieces (at most one at a time)."""

    __slots__ = ("_buffer", "_total")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._total = 0

    @property
    def active(self) -> bool:
        return self._total > 0

    def add(self, fragment: EntryFragment) -> bytes | None:
        """The whole entry once its last piece arrived, else None."""
        if not self.active:
            if fragment.offset != 0:
                raise ProtocolViolation("an entry fragment that does not start at offset 0")
            self._total = fragment.total_size
        elif fragment.total_size != self._total or fragment.offset != len(self._buffer):
            raise ProtocolViolation("entry fragments out of order or of differing sizes")
        self._buffer += fragment.data
        if len(self._buffer) < self._total:
            return None
        raw = bytes(self._buffer)
        self._buffer = bytearray()
        self._total = 0
        return raw


def record_outcome(report: DatabaseReport, job: IngestJob, outcome: IngestOutcome) -> list[str]:
    """Count ``outcome`` in ``report``; the invalid entries of the job, described."""
    report.received += len(outcome.added)
    report.refused += len(outcome.refused)
    report.rejected += len(job.problems) + len(outcome.rejected)
    problems = list(job.problems)
    problems += [f"entry {each.entry_id.hex()[:16]}: {each.reason}" for each in outcome.rejected]
    return problems
