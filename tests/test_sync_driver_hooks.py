"""The sync driver's two hooks for a daemon: ``run_ingest`` (how a received batch is stored:
here in a worker thread, as the daemon does for large ones) and ``hold_store`` (held while the
handshake handles a received frame: checking a proof may store membership evidence). Memory
streams only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.sync.driver import IngestRunner, run_initiator, run_responder
from mindoo_p2p.sync.protocol import IngestOutcome, SyncReport, SyncStore
from mindoo_p2p.testing.memory_sync import MemoryFrameStream, MemorySyncStore, memory_frame_pair

TENANT = os.urandom(16)
KEY_A, KEY_B = SigningKeyPair.generate(), SigningKeyPair.generate()
BASE_MS = 1_760_000_000_000


def sealed(
    count: int, author: SigningKeyPair, tenant_id: bytes = TENANT, payload_size: int = 32
) -> list[Entry]:
    """``count`` change entries of ``author`` in ``tenant_id``, random payloads."""
    return [
        Entry.seal(
            kind=EntryKind.CHANGE,
            tenant_id=tenant_id,
            database="notes",
            document_id=os.urandom(16),
            author=author,
            author_seq=i + 1,
            timestamp_ms=BASE_MS + i,
            deps=(),
            key_id=bytes(16),
            key=bytes(32),
            payload=os.urandom(payload_size),
        )
        for i in range(count)
    ]


class Holder:
    """A `StoreHolder` that records whether the caller is inside it."""

    def __init__(self) -> None:
        self.inside = False
        self.entered = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[object]:
        await trio.lowlevel.checkpoint()
        self.inside = True
        self.entered += 1
        try:
            yield self
        finally:
            self.inside = False


@dataclass
class CheckedAuthority:
    """Every member may replicate; checking a peer's proof must happen inside the holder."""

    tenant_id: bytes
    member_key: SigningKeyPair
    holder: Holder
    asked: list[str] = field(default_factory=list)

    def _ask(self, what: str) -> None:
        assert self.holder.inside, f"{what} asked outside hold_store()"
        self.asked.append(what)

    def may_replicate(self, member_key: bytes) -> bool:
        self._ask("may_replicate")
        return member_key in (KEY_A.public_key, KEY_B.public_key)

    def membership_evidence(self) -> bytes:
        return b""

    def admit(self, member_key: bytes, evidence: bytes) -> bool:
        self._ask("admit")
        return False


async def sync_pair(
    ends: tuple[MemoryFrameStream, MemoryFrameStream],
    initiator: tuple[CheckedAuthority, SyncStore],
    responder: tuple[CheckedAuthority, SyncStore],
    initiator_options: dict[str, Any] | None = None,
    responder_options: dict[str, Any] | None = None,
) -> SyncReport:
    """One session over ``ends``: peer-A initiates, peer-B responds; each side holds its
    authority's holder. Returns the initiator's report."""
    (authority_a, store_a), (authority_b, store_b) = initiator, responder
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                run_responder,
                ends[1],
                b"peer-B",
                b"peer-A",
                {authority_b.tenant_id: (authority_b, store_b)},
                hold_store=authority_b.holder,
                **(responder_options or {}),
            )
        )
        report = await run_initiator(
            ends[0],
            b"peer-A",
            b"peer-B",
            authority_a,
            store_a,
            hold_store=authority_a.holder,
            **(initiator_options or {}),
        )
    return report


async def test_received_batches_go_through_run_ingest_and_handshakes_through_hold_store() -> None:
    ours, theirs = sealed(300, KEY_A), sealed(300, KEY_B)
    store_a, store_b = MemorySyncStore(TENANT), MemorySyncStore(TENANT)
    store_a.add_own(ours)
    store_b.add_own(theirs)
    hold_a, hold_b = Holder(), Holder()
    authority_a = CheckedAuthority(TENANT, KEY_A, hold_a)
    authority_b = CheckedAuthority(TENANT, KEY_B, hold_b)
    ingested: dict[str, int] = {"a": 0, "b": 0}

    def in_a_thread(side: str) -> IngestRunner:
        async def run_ingest(store: SyncStore, raws: Sequence[bytes]) -> IngestOutcome:
            ingested[side] += len(raws)
            return await trio.to_thread.run_sync(store.ingest, raws)

        return run_ingest

    with trio.fail_after(30):
        report = await sync_pair(
            memory_frame_pair(),
            (authority_a, store_a),
            (authority_b, store_b),
            initiator_options={"run_ingest": in_a_thread("a")},
            responder_options={"run_ingest": in_a_thread("b")},
        )
    assert report.received == 300 and report.sent == 300
    assert ingested == {"a": 300, "b": 300}
    all_ids = {e.id for e in ours + theirs}
    assert set(store_a.missing(list(all_ids))) == set() == set(store_b.missing(list(all_ids)))
    assert authority_a.asked and authority_b.asked  # the handshakes asked, inside the holder
    assert hold_a.entered >= 1 and hold_b.entered >= 1


async def test_both_sides_hear_of_the_authentication_before_the_sync_phase() -> None:
    """``on_authenticated`` fires once per side, right after the handshake and before any entry
    moves: the daemon marks the peer proven there, so a long first session (a clone) is not
    cut by the inbound proof deadline, which the end-to-end clone of 10^6 entries hit."""
    ours = sealed(50, KEY_A)
    store_a, store_b = MemorySyncStore(TENANT), MemorySyncStore(TENANT)
    store_a.add_own(ours)
    hold_a, hold_b = Holder(), Holder()
    heard: list[tuple[str, bytes, int]] = []

    def note(side: str, store: MemorySyncStore) -> Callable[[bytes], None]:
        return lambda tenant_id: heard.append((side, tenant_id, len(store)))

    with trio.fail_after(30):
        await sync_pair(
            memory_frame_pair(),
            (CheckedAuthority(TENANT, KEY_A, hold_a), store_a),
            (CheckedAuthority(TENANT, KEY_B, hold_b), store_b),
            initiator_options={"on_authenticated": note("initiator", store_a)},
            responder_options={"on_authenticated": note("responder", store_b)},
        )
    assert sorted(heard) == [("initiator", TENANT, 50), ("responder", TENANT, 0)]
    assert len(store_b) == 50  # the entries moved after both had heard
