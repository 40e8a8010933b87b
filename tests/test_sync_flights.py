"""Flights (perf-idle): the driver sends every frame a machine has ready in one write, and the
responder's proof leads the first flight of the sync phase. The frames are the same, in the
same order; only how many transport writes carry them changes. Over framed memory streams
whose writes are recorded, no sockets."""

from __future__ import annotations

import struct

import trio
from sync_helpers import (
    AUTHORITY_A,
    AUTHORITY_B,
    KEY_A,
    PEER_A,
    PEER_B,
    TENANT,
    Member,
    seal,
    store_with,
)

from mindoo_p2p.net.framing import FramedStream, TrioByteStream
from mindoo_p2p.sync.auth import AuthDenied
from mindoo_p2p.sync.driver import run_initiator, run_responder
from mindoo_p2p.sync.messages import MessageType
from mindoo_p2p.testing.memory_sync import MemorySyncStore

_HEADER = struct.Struct(">I")


class RecordingBytes(TrioByteStream):
    """A trio byte stream that records the frames' type bytes of every write."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        super().__init__(stream)
        self.writes: list[list[MessageType]] = []

    async def send_all(self, data: bytes) -> None:
        types, offset = [], 0
        while offset < len(data):
            (size,) = _HEADER.unpack_from(data, offset)
            types.append(MessageType(data[offset + 4]))
            offset += 4 + size
        self.writes.append(types)
        await super().send_all(data)


async def session(
    initiator_store: MemorySyncStore,
    responder_store: MemorySyncStore,
    responder_authority: Member = AUTHORITY_B,
) -> tuple[list[list[MessageType]], list[list[MessageType]], object, object]:
    left, right = trio.testing.memory_stream_pair()
    initiator_bytes, responder_bytes = RecordingBytes(left), RecordingBytes(right)
    initiator_end = FramedStream(initiator_bytes, "responder")
    responder_end = FramedStream(responder_bytes, "initiator")
    results: dict[str, object] = {}

    async def respond() -> None:
        try:
            results["responder"] = await run_responder(
                responder_end, PEER_B, PEER_A, {TENANT: (responder_authority, responder_store)}
            )
        except Exception as exc:
            results["responder"] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            try:
                results["initiator"] = await run_initiator(
                    initiator_end, PEER_A, PEER_B, AUTHORITY_A, initiator_store
                )
            except Exception as exc:
                results["initiator"] = exc
            await initiator_end.close()
    return (
        initiator_bytes.writes,
        responder_bytes.writes,
        results["initiator"],
        results["responder"],
    )


M = MessageType


async def test_an_idle_session_leaves_in_flights() -> None:
    """The frames of an idle session, in order, and how they group: the responder's proof and
    its database summary share one write (the proof leads the first flight), nothing but the
    challenge leaves the responder before the initiator's proof arrived. Version 3: the
    summary shows both databases held alike, so the initiator's list and FINISH leave in one
    write, with no reconciliation and no FINISHED: three writes each way from the initiator,
    two from the responder, two round trips."""
    entries = [seal("notes", 1_000 + i) for i in range(5)] + [seal("_tenant", 500)]
    initiator, responder, i_report, r_report = await session(
        store_with(entries), store_with(entries)
    )
    assert not isinstance(i_report, BaseException) and not isinstance(r_report, BaseException)
    assert initiator == [[M.HELLO], [M.INITIATOR_PROOF], [M.DATABASE_SUMMARY, M.FINISH]]
    assert responder == [[M.CHALLENGE], [M.RESPONDER_PROOF, M.DATABASE_SUMMARY]]
    assert i_report.protocol_version == 3  # type: ignore[attr-defined]
    assert i_report.recon_round_trips == 0  # type: ignore[attr-defined]
    assert i_report.peer_added == i_report.peer_refused == 0  # type: ignore[attr-defined]


async def test_a_session_that_reconciles_groups_its_list_with_the_requests() -> None:
    """One entry more on each side: the initiator's list leaves with the reconciliation
    request (version 3 waits for the summary, so the grouping is fixed), and FINISHED answers
    the FINISH because the initiator pushed its entry."""
    entries = [seal("notes", 5_000 + i) for i in range(5)] + [seal("_tenant", 400)]
    mine, theirs = (
        store_with([*entries, seal("notes", 6_000)]),
        store_with([*entries, seal("notes", 7_000)]),
    )
    initiator, responder, i_report, r_report = await session(mine, theirs)
    assert not isinstance(i_report, BaseException) and not isinstance(r_report, BaseException)
    assert initiator[:3] == [
        [M.HELLO],
        [M.INITIATOR_PROOF],
        [M.DATABASE_SUMMARY, M.RECON_REQUEST],
    ]
    assert [t for write in responder for t in write][-1] is M.FINISHED
    assert mine.ids() == theirs.ids()


async def test_entries_still_move_and_every_frame_is_counted() -> None:
    mine = [seal("notes", 2_000 + i) for i in range(40)]
    theirs = [seal("notes", 3_000 + i) for i in range(40)]
    initiator_store, responder_store = store_with(mine), store_with(theirs)
    initiator, responder, i_report, r_report = await session(initiator_store, responder_store)
    assert not isinstance(i_report, BaseException) and not isinstance(r_report, BaseException)
    assert initiator_store.ids() == responder_store.ids()
    # The initiator pushed: FINISHED (version 3 too) reports what its pushes did.
    assert [t for write in responder for t in write][-1] is M.FINISHED
    assert i_report.peer_added == 40  # type: ignore[attr-defined]
    assert i_report.frames_sent == sum(len(w) for w in initiator)  # type: ignore[attr-defined]
    assert r_report.frames_sent == sum(len(w) for w in responder)  # type: ignore[attr-defined]


async def test_an_unproven_initiator_gets_only_the_challenge_and_the_denial() -> None:
    """The proof and the database list lead the sync phase only once the initiator proved
    itself: a stranger (not a member) gets the challenge, then the one generic denial."""
    stranger = Member(TENANT, AUTHORITY_B.member_key, {AUTHORITY_B.member_key.public_key})
    assert KEY_A.public_key not in stranger.members
    entries = [seal("notes", 4_000)]
    _, responder, i_report, r_report = await session(
        store_with(entries), store_with(entries), responder_authority=stranger
    )
    assert isinstance(i_report, AuthDenied)
    assert r_report is None
    assert responder == [[M.CHALLENGE], [M.DENIED]]
