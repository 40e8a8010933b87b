"""Helpers shared by the sync protocol tests (test_sync_protocol, test_sync_rounds,
test_sync_version_fallback, test_sync_snapshot_budget): one tenant, sealed entries, two members
that may replicate, one session between two memory stores over the trio driver, and a memory
stream with latency."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio
import trio.testing
from helpers import seal_entry

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import Entry
from mindoo_p2p.errors import DecodeError
from mindoo_p2p.sync.driver import (
    run_initiator,
    run_responder,
)
from mindoo_p2p.sync.protocol import (
    IngestOutcome,
    SyncLimits,
    SyncReport,
)
from mindoo_p2p.testing.memory_sync import MemorySyncStore, memory_frame_pair

TENANT = os.urandom(16)
DOC_KEY = os.urandom(32)
AUTHORS = [SigningKeyPair.generate() for _ in range(3)]
BASE_MS = 1_760_000_000_000
PEER_A = b"peer-A"
PEER_B = b"peer-B"
_seq = iter(range(1, 1 << 40))


def seal(database: str, timestamp: int, size: int = 48) -> Entry:
    return seal_entry(
        tenant_id=TENANT,
        database=database,
        author=AUTHORS[timestamp % len(AUTHORS)],
        author_seq=next(_seq),
        timestamp_ms=timestamp,
        key_id=bytes(16),
        key=DOC_KEY,
        payload=os.urandom(size),
    )


@dataclass
class Member:
    """A TenantAuthority where everyone in ``members`` may replicate."""

    tenant_id: bytes
    member_key: SigningKeyPair
    members: set[bytes]

    def may_replicate(self, member_key: bytes) -> bool:
        return member_key in self.members

    def membership_evidence(self) -> bytes:
        return b""

    def admit(self, member_key: bytes, evidence: bytes) -> bool:
        return False


KEY_A, KEY_B = SigningKeyPair.generate(), SigningKeyPair.generate()
MEMBERS = {KEY_A.public_key, KEY_B.public_key}
AUTHORITY_A = Member(TENANT, KEY_A, MEMBERS)
AUTHORITY_B = Member(TENANT, KEY_B, MEMBERS)


class RecordingStore(MemorySyncStore):
    """Remembers the database of every entry it was asked to ingest, in order."""

    def __init__(self, tenant_id: bytes) -> None:
        super().__init__(tenant_id)
        self.ingest_order: list[str] = []

    def ingest(self, raws: Sequence[bytes]) -> IngestOutcome:
        for raw in raws:
            try:
                self.ingest_order.append(Entry.decode(raw).database)
            except DecodeError:
                self.ingest_order.append("?")
        return super().ingest(raws)


@dataclass
class Outcome:
    initiator: SyncReport | BaseException | None = None
    responder: SyncReport | BaseException | None = None
    penalties: dict[str, list[tuple[bytes, int, str]]] = field(
        default_factory=lambda: {"initiator": [], "responder": []}
    )


async def sync(
    initiator_store: MemorySyncStore,
    responder_store: MemorySyncStore,
    *,
    limits: SyncLimits | None = None,
    seconds: float = 60,
) -> Outcome:
    """One session between the two stores; errors are returned, not raised."""
    initiator_end, responder_end = memory_frame_pair()
    outcome = Outcome()
    limits = limits or SyncLimits()

    async def respond() -> None:
        try:
            outcome.responder = await run_responder(
                responder_end,
                PEER_B,
                PEER_A,
                {TENANT: (AUTHORITY_B, responder_store)},
                on_penalty=lambda *a: outcome.penalties["responder"].append(a),
                limits=limits,
            )
        except Exception as exc:
            outcome.responder = exc
            await responder_end.close()

    with trio.fail_after(seconds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            try:
                outcome.initiator = await run_initiator(
                    initiator_end,
                    PEER_A,
                    PEER_B,
                    AUTHORITY_A,
                    initiator_store,
                    on_penalty=lambda *a: outcome.penalties["initiator"].append(a),
                    limits=limits,
                )
            except Exception as exc:
                outcome.initiator = exc
                await initiator_end.close()
    return outcome


def report_of(value: object) -> SyncReport:
    assert isinstance(value, SyncReport), value
    return value


def store_with(entries: Sequence[Entry], store: MemorySyncStore | None = None) -> MemorySyncStore:
    target = store if store is not None else MemorySyncStore(TENANT)
    target.add_own(entries)
    return target


class DelayedFrameStream:
    """A memory stream end that delivers each frame ``delay`` seconds after it was sent."""

    def __init__(
        self,
        outgoing: trio.MemorySendChannel[tuple[float, bytes]],
        incoming: trio.MemoryReceiveChannel[tuple[float, bytes]],
        delay: float,
    ) -> None:
        self.outgoing, self.incoming, self.delay = outgoing, incoming, delay

    async def send_frame(self, data: bytes) -> None:
        await self.outgoing.send((trio.current_time() + self.delay, bytes(data)))

    async def receive_frame(self) -> bytes:
        due, data = await self.incoming.receive()
        await trio.sleep_until(due)
        return data

    async def close(self) -> None:
        await self.outgoing.aclose()
        await self.incoming.aclose()
