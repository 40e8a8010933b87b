"""In-memory doubles of the sync protocol's collaborators, for tests and tools.

- :class:`MemorySyncStore`: a :class:`~mindoo_p2p.sync.protocol.SyncStore` held in memory.
- :class:`MemoryFrameStream` / :func:`memory_frame_pair`: a framed stream over trio memory
  channels, so the driver runs with no sockets.

They live here, not beside the protocol, so the library's own modules hold only what a node
runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import trio

from .. import admission
from ..entry import TENANT_ID_SIZE, Entry
from ..recon import MAX_TIMESTAMP, ReconItem, ReconStorage, VectorStorage
from ..rejection import Rejected, RejectionKind
from ..sync.protocol import IngestOutcome


class MemorySyncStore:
    """A :class:`SyncStore` held in memory, for tests and tools.

    :meth:`ingest` decodes each entry (`admission.decode`), rejects other tenants' entries and
    the reserved timestamp 2**64-1, checks signatures (`admission.verify_all`), then asks
    ``authorize`` (None accepts; a `Rejected` refuses). Rejections whose kind blames the sender
    are ``rejected``, the others ``refused`` (`RejectionKind.sender_at_fault`).
    Reconciliation snapshots are immutable :class:`VectorStorage` objects, rebuilt after a
    change.
    """

    def __init__(
        self, tenant_id: bytes, *, authorize: Callable[[Entry], Rejected | None] | None = None
    ) -> None:
        if type(tenant_id) is not bytes or len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        self._tenant_id = tenant_id
        self._authorize = authorize
        self._raw: dict[bytes, bytes] = {}
        self._items: dict[str, list[ReconItem]] = {}
        self._snapshots: dict[str, VectorStorage] = {}
        self.declined: set[str] = set()
        """Databases `replicates` declines (a forgotten database)."""

    @property
    def tenant_id(self) -> bytes:
        return self._tenant_id

    def __len__(self) -> int:
        return len(self._raw)

    def ids(self, database: str | None = None) -> frozenset[bytes]:
        """Every stored id (of one database when given)."""
        if database is None:
            return frozenset(self._raw)
        return frozenset(item.id for item in self._items.get(database, ()))

    def databases(self) -> list[str]:
        return sorted(self._items)

    def replicates(self, database: str) -> bool:
        return database not in self.declined

    @contextmanager
    def recon_storage(self, database: str) -> Iterator[ReconStorage]:
        snapshot = self._snapshots.get(database)
        if snapshot is None:
            snapshot = VectorStorage(self._items.get(database, ()))
            self._snapshots[database] = snapshot
        yield snapshot

    def missing(self, ids: Sequence[bytes]) -> list[bytes]:
        return [item_id for item_id in ids if item_id not in self._raw]

    def get_raw(self, ids: Sequence[bytes]) -> list[bytes]:
        return [self._raw[item_id] for item_id in ids if item_id in self._raw]

    def ingest(self, raws: Sequence[bytes]) -> IngestOutcome:
        problems: list[Rejected] = []
        fresh: list[Entry] = []
        seen: set[bytes] = set()
        for raw in raws:
            entry = admission.decode(raw)
            if isinstance(entry, Rejected):
                problems.append(entry)
            elif entry.tenant_id != self._tenant_id:
                problems.append(
                    Rejected(entry.id, RejectionKind.MISROUTED, "entry of another tenant")
                )
            elif entry.timestamp_ms >= MAX_TIMESTAMP:
                problems.append(
                    Rejected(entry.id, RejectionKind.RESERVED_TIMESTAMP, "reserved timestamp")
                )
            elif entry.id not in self._raw and entry.id not in seen:
                seen.add(entry.id)
                fresh.append(entry)
        added: list[bytes] = []
        for verified in admission.verify_all(fresh):
            if isinstance(verified, Rejected):
                problems.append(verified)
                continue
            refusal = self._authorize(verified.entry) if self._authorize is not None else None
            if refusal is not None:
                problems.append(refusal)
                continue
            self._store(verified.entry)
            added.append(verified.id)
        return IngestOutcome(
            tuple(added),
            tuple(r for r in problems if r.sender_at_fault),
            tuple(r for r in problems if not r.sender_at_fault),
        )

    def add_own(self, entries: Iterable[Entry]) -> None:
        """Store entries sealed here (or test fixtures) without verifying them again."""
        for entry in entries:
            if entry.tenant_id != self._tenant_id:
                raise ValueError("an entry of another tenant")
            if entry.id not in self._raw:
                self._store(entry)

    def _store(self, entry: Entry) -> None:
        self._raw[entry.id] = entry.raw
        self._items.setdefault(entry.database, []).append(ReconItem(entry.timestamp_ms, entry.id))
        self._snapshots.pop(entry.database, None)


class MemoryFrameStream:
    """One end of an in-memory framed stream (trio memory channels), for tests and tools.

    Frames are delivered whole and in order; nothing limits their size (the driver checks).
    After the other end closed, :meth:`receive_frame` raises ``trio.EndOfChannel``.
    """

    def __init__(
        self, outgoing: trio.MemorySendChannel[bytes], incoming: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        self._outgoing = outgoing
        self._incoming = incoming

    async def send_frame(self, data: bytes) -> None:
        await self._outgoing.send(bytes(data))

    async def receive_frame(self) -> bytes:
        return await self._incoming.receive()

    async def close(self) -> None:
        await self._outgoing.aclose()
        await self._incoming.aclose()


def memory_frame_pair(buffer: int = 0) -> tuple[MemoryFrameStream, MemoryFrameStream]:
    """Two connected :class:`MemoryFrameStream` ends holding up to ``buffer`` frames in flight
    each way (0: every send waits for the matching receive)."""
    a_to_b_send, a_to_b_receive = trio.open_memory_channel[bytes](buffer)
    b_to_a_send, b_to_a_receive = trio.open_memory_channel[bytes](buffer)
    return (
        MemoryFrameStream(a_to_b_send, b_to_a_receive),
        MemoryFrameStream(b_to_a_send, a_to_b_receive),
    )
