"""Sync protocol version 3, frame by frame (no sockets): the responder announces a
DATABASE_SUMMARY (each database's count and fingerprint), the initiator's list waits for it, a
database held alike needs no reconciliation, and a FINISH after a session in which the
initiator pushed nothing ends it at both ends without a FINISHED. Version 2 keeps its order and
its FINISHED; the driver ends a version-3 initiator as its FINISH leaves."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from sync_helpers import AUTHORITY_A, AUTHORITY_B, BASE_MS, PEER_A, PEER_B, TENANT, seal, store_with

from mindoo_p2p.entry import TENANT_LOG
from mindoo_p2p.errors import DecodeError
from mindoo_p2p.recon import ReconItem, ReconStorage, VectorStorage
from mindoo_p2p.sync.driver import SyncTimeout, run_initiator, run_responder
from mindoo_p2p.sync.messages import (
    DatabaseInfo,
    DatabaseList,
    DatabaseSummary,
    Entries,
    FetchRequest,
    Finish,
    Finished,
    Message,
    ProtocolViolation,
    ReconReply,
    ReconRequest,
    decode_message,
    encode_message,
)
from mindoo_p2p.sync.protocol import (
    InitiatorPhase,
    ResponderPhase,
    SyncInitiator,
    SyncResponder,
)
from mindoo_p2p.testing.memory_sync import MemoryFrameStream, MemorySyncStore, memory_frame_pair


def frames_of(machine: SyncInitiator | SyncResponder) -> list[Message]:
    """Every frame the machine has ready, decoded."""
    out = []
    while (frame := machine.next_frame()) is not None:
        out.append(decode_message(frame))
    return out


def answer_all(requests: list[Message], responder: SyncResponder) -> list[bytes]:
    for request in requests:
        responder.receive(encode_message(request))
    out = []
    while (frame := responder.next_frame()) is not None:
        out.append(frame)
    return out


def test_an_idle_version_3_session_is_the_lists_and_finish() -> None:
    """Both hold the same entries: the summaries show every database alike, so the initiator's
    summary and FINISH leave in one flight, no reconciliation, and no FINISHED comes back;
    both reports mark every database alike (the durability ledger counts them)."""
    entries = [seal("notes", BASE_MS + i) for i in range(4)] + [seal(TENANT_LOG, BASE_MS)]
    local, remote = store_with(entries), store_with(entries)
    initiator = SyncInitiator(local, version=3)
    responder = SyncResponder(remote, announce=True, version3=True)
    assert initiator.phase is InitiatorPhase.AWAIT_PEER_LIST
    assert initiator.next_frame() is None  # our list waits for the responder's summary
    announced = frames_of(responder)
    assert len(announced) == 1 and isinstance(announced[0], DatabaseSummary)
    assert announced[0].databases == (DatabaseInfo(TENANT_LOG, 1), DatabaseInfo("notes", 4))
    initiator.receive(encode_message(announced[0]))
    flight = frames_of(initiator)
    assert flight == [announced[0], Finish()]  # the same entries: the same summary
    assert initiator.finished and not initiator.receiving and not initiator.sending
    assert initiator.report.recon_round_trips == 0
    assert initiator.report.peer_added == initiator.report.peer_refused == 0
    for message in flight:
        responder.receive(encode_message(message))
    assert responder.phase is ResponderPhase.DONE and responder.finished
    assert responder.next_frame() is None  # no FINISHED: nothing was pushed
    for report in (initiator.report, responder.report):
        assert [db.alike for db in report.databases.values()] == [True, True]
    assert all(db.settled for db in initiator.report.databases.values())
    initiator.close()
    responder.close()


def test_only_the_databases_that_differ_reconcile() -> None:
    """One entry more on the responder's side in "notes": only "notes" reconciles; the tenant
    log and "tasks", held alike, start done (and a database only the peer holds reconciles)."""
    shared = [seal(db, BASE_MS + i) for db in (TENANT_LOG, "notes", "tasks") for i in range(3)]
    local = store_with(shared)
    remote = store_with([*shared, seal("notes", BASE_MS + 50), seal("zeta", BASE_MS)])
    initiator = SyncInitiator(local, version=3)
    responder = SyncResponder(remote, announce=True, version3=True)
    initiator.receive(responder.next_frame() or b"")
    flight = frames_of(initiator)
    assert isinstance(flight[0], DatabaseSummary)
    union = [TENANT_LOG, "notes", "tasks", "zeta"]
    asked = [union[m.database] for m in flight[1:] if isinstance(m, ReconRequest)]
    assert asked == ["notes", "zeta"]  # the tenant log and "tasks", held alike, are not
    assert len(flight) == 3
    responder.receive(encode_message(flight[0]))
    alike = {name: db.alike for name, db in responder.report.databases.items()}
    assert alike == {TENANT_LOG: True, "notes": False, "tasks": True, "zeta": False}
    initiator.close()
    responder.close()


def test_a_summary_fingerprint_that_differs_is_reconciled() -> None:
    """The same count but another fingerprint (another set of entries): reconciled."""
    mine = [seal("notes", BASE_MS + i) for i in range(3)]
    theirs = [*mine[:2], seal("notes", BASE_MS + 99)]
    initiator = SyncInitiator(store_with(mine), version=3)
    responder = SyncResponder(store_with(theirs), announce=True, version3=True)
    summary = decode_message(responder.next_frame() or b"")
    assert isinstance(summary, DatabaseSummary) and summary.databases[0].item_count == 3
    initiator.receive(encode_message(summary))
    flight = frames_of(initiator)
    assert isinstance(flight[1], ReconRequest) and flight[1].database == 0
    initiator.close()
    responder.close()


def test_the_summary_is_validated() -> None:
    infos = (DatabaseInfo("notes", 1),)
    with pytest.raises(ValueError, match="one fingerprint per database"):
        DatabaseSummary(infos, ())
    with pytest.raises(ValueError, match="fingerprint must be 16 bytes"):
        DatabaseSummary(infos, (bytes(15),))
    with pytest.raises(ValueError, match="strictly increase"):
        DatabaseSummary((DatabaseInfo("b", 1), DatabaseInfo("a", 1)), (bytes(16),) * 2)
    frame = encode_message(DatabaseSummary(infos, (bytes(16),)))
    with pytest.raises(DecodeError):
        decode_message(frame[:-1])  # a fingerprint cut short
    with pytest.raises(DecodeError):
        decode_message(frame[:1] + b"\x05" + frame[2:])  # five databases announced, one sent


def test_a_version_3_initiator_that_pushed_waits_for_finished() -> None:
    shared = [seal("notes", BASE_MS + i) for i in range(4)]
    extra = seal("notes", BASE_MS + 100)
    local, remote = store_with([*shared, extra]), store_with(shared)
    initiator = SyncInitiator(local, version=3)
    responder = SyncResponder(remote, announce=True, version3=True)
    initiator.receive(responder.next_frame() or b"")  # its summary: "notes" differs
    to_responder = [encode_message(m) for m in frames_of(initiator)]
    for _ in range(10):  # carry frames until the initiator has said everything
        for frame in to_responder:
            responder.receive(frame)
        for job in responder.take_jobs():
            responder.ingested(job, remote.ingest(job.raws))
        replies = frames_of(responder)
        for reply in replies:
            initiator.receive(encode_message(reply))
        to_responder = [encode_message(m) for m in frames_of(initiator)]
        if initiator.phase is InitiatorPhase.AWAIT_FINISHED:
            break
    sent = [decode_message(frame) for frame in to_responder]
    assert any(isinstance(m, Entries) for m in sent) and sent[-1] == Finish()
    assert initiator.phase is InitiatorPhase.AWAIT_FINISHED and initiator.receiving
    for frame in to_responder:
        responder.receive(frame)
    for job in responder.take_jobs():
        responder.ingested(job, remote.ingest(job.raws))
    finished = frames_of(responder)
    assert finished == [Finished(1, 0)] and responder.finished
    initiator.receive(encode_message(finished[0]))
    assert initiator.finished and initiator.report.peer_added == 1
    assert remote.ids() == local.ids()
    initiator.close()
    responder.close()


def requests_then_finish(version: int) -> tuple[SyncResponder, list[bytes], bytes]:
    """A responder of ``version`` with the initiator's list (or summary) taken in, the
    initiator's reconciliation requests of one database that differs, and a FINISH."""
    mine = [seal("notes", BASE_MS + i) for i in range(3)]
    theirs = [*mine[:2], seal("notes", BASE_MS + 99)]
    initiator = SyncInitiator(store_with(mine), version=version)
    responder = SyncResponder(store_with(theirs), announce=True, version3=version >= 3)
    initiator.receive(responder.next_frame() or b"")
    flight = [encode_message(m) for m in frames_of(initiator)]
    initiator.close()
    responder.receive(flight[0])  # its list or summary
    assert flight[1:] and all(isinstance(decode_message(f), ReconRequest) for f in flight[1:])
    return responder, flight[1:], encode_message(Finish())


def test_a_quiet_finish_before_the_requests_are_answered_is_a_violation() -> None:
    """Version 3: a FINISH after nothing was pushed ends the session at the responder, so one
    that comes while the initiator's requests are still queued (unanswered: an honest initiator
    finishes only when it has every answer) is a protocol violation, not a way to DONE."""
    responder, requests, finish = requests_then_finish(3)
    for request in requests:
        responder.receive(request)
    with pytest.raises(ProtocolViolation, match="not yet answered"):
        responder.receive(finish)
    assert not responder.finished
    responder.close()


def test_a_quiet_finish_after_the_answers_ends_the_session() -> None:
    responder, requests, finish = requests_then_finish(3)
    for request in requests:
        responder.receive(request)
    answers = frames_of(responder)
    assert answers and all(isinstance(m, ReconReply) for m in answers)
    responder.receive(finish)
    assert responder.finished and responder.next_frame() is None
    responder.close()


def test_a_version_2_finish_before_the_answers_still_gets_them_and_finished() -> None:
    """Version 2 as before: a FINISH with requests queued moves to sending FINISHED, after the
    answers still due."""
    responder, requests, finish = requests_then_finish(2)
    for request in requests:
        responder.receive(request)
    responder.receive(finish)
    assert responder.phase is ResponderPhase.SEND_FINISHED
    answers = frames_of(responder)
    assert all(isinstance(m, ReconReply) for m in answers[:-1]) and len(answers) > 1
    assert answers[-1] == Finished(0, 0) and responder.finished
    responder.close()


def test_version_2_keeps_its_order_and_its_finished() -> None:
    """An initiator of version 2 may send its list before the responder's, and a responder
    answering version 2 sends FINISHED even when nothing was pushed."""
    entries = [seal("notes", BASE_MS + i) for i in range(4)]
    local, remote = store_with(entries), store_with(entries)
    initiator = SyncInitiator(local, version=2)
    responder = SyncResponder(remote, announce=True)
    ours = initiator.next_frame()
    assert ours is not None and isinstance(decode_message(ours), DatabaseList)
    responder.receive(ours)
    initiator.receive(responder.next_frame() or b"")
    replies = answer_all(frames_of(initiator), responder)
    for reply in replies:
        initiator.receive(reply)
    finish = initiator.next_frame()
    assert finish is not None and initiator.phase is InitiatorPhase.AWAIT_FINISHED
    responder.receive(finish)
    assert decode_message(responder.next_frame() or b"") == Finished(0, 0)
    assert responder.finished


def test_a_version_3_responder_still_acknowledges_a_push_of_a_fragment_or_entries() -> None:
    """Whether FINISHED comes is decided by the frames both sides saw: one pushed ENTRIES
    frame (even of entries the store then refuses) is enough."""
    store = MemorySyncStore(TENANT)
    responder = SyncResponder(store, announce=True, version3=True)
    responder.next_frame()
    responder.receive(encode_message(DatabaseSummary((DatabaseInfo("notes", 1),), (bytes(16),))))
    responder.receive(encode_message(Entries((seal("notes", BASE_MS).raw,))))
    for job in responder.take_jobs():
        responder.ingested(job, store.ingest(job.raws))
    responder.receive(encode_message(Finish()))
    assert responder.phase is ResponderPhase.SEND_FINISHED
    assert decode_message(responder.next_frame() or b"") == Finished(1, 0)


def test_version3_needs_the_announced_list() -> None:
    with pytest.raises(ValueError, match="implies announce"):
        SyncResponder(MemorySyncStore(TENANT), version3=True)


def test_a_version_3_initiator_takes_nothing_but_the_summary_first() -> None:
    """Not a reply, and not a plain list (a version-3 responder always summarizes)."""
    for first in (ReconReply(b"\x61"), DatabaseList((DatabaseInfo("notes", 1),))):
        initiator = SyncInitiator(store_with([seal("notes", BASE_MS)]), version=3)
        with pytest.raises(ProtocolViolation, match="awaiting the peer's database list"):
            initiator.receive(encode_message(first))


async def test_the_driver_ends_an_idle_version_3_initiator_as_its_finish_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The responder keeps its end open for 100 s after the session: the initiator does not
    wait for it (no FINISHED, no end of stream), so its session ends at once (virtual time)."""
    entries = [seal("notes", BASE_MS + i) for i in range(6)]
    near, far = memory_frame_pair()
    ended: dict[str, float] = {}

    async def respond() -> None:
        report = await run_responder(
            far, PEER_B, PEER_A, {TENANT: (AUTHORITY_B, store_with(entries))}
        )
        assert report is not None and report.protocol_version == 3
        await trio.sleep(100)  # holds the stream open
        await far.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(respond)
        report = await run_initiator(near, PEER_A, PEER_B, AUTHORITY_A, store_with(entries))
        ended["initiator"] = trio.current_time()
    assert ended["initiator"] < 1.0
    assert report.protocol_version == 3 and report.received == report.sent == 0


class StopsReadingAfterSummary:
    """The responder's end of an in-memory stream whose owner stops reading once it sent its
    summary: it closes its receiving channel (every later send to it fails) and holds its end
    open without a word, like a peer that dropped the session half way."""

    def __init__(
        self, outgoing: trio.MemorySendChannel[bytes], incoming: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        self.outgoing, self.incoming = outgoing, incoming
        self.stopped = False

    async def send_frame(self, data: bytes) -> None:
        await self.outgoing.send(data)
        if isinstance(decode_message(data), DatabaseSummary):
            self.stopped = True
            await self.incoming.aclose()

    async def receive_frame(self) -> bytes:
        if self.stopped:
            await trio.sleep_forever()
        return await self.incoming.receive()

    async def close(self) -> None:
        await self.outgoing.aclose()
        await self.incoming.aclose()


async def test_an_idle_version_3_initiator_whose_finish_is_never_taken_in_does_not_succeed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The machine is done once it produced its FINISH; the driver ends the session at once
    only when that FINISH was delivered. Here the peer stopped reading after its summary: the
    send fails, and the session ends as version 2's would, on the idle bound (a SyncTimeout,
    with its penalty), not with a report of success."""
    entries = [seal("notes", BASE_MS + i) for i in range(3)]
    to_far, from_near = trio.open_memory_channel[bytes](0)
    to_near, from_far = trio.open_memory_channel[bytes](0)
    near = MemoryFrameStream(to_far, from_far)
    far = StopsReadingAfterSummary(to_near, from_near)
    penalties: list[str] = []

    async def respond() -> None:
        with contextlib.suppress(trio.ClosedResourceError, SyncTimeout):  # not under test
            await run_responder(far, PEER_B, PEER_A, {TENANT: (AUTHORITY_B, store_with(entries))})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(respond)
        with pytest.raises(SyncTimeout, match="sent nothing"):
            await run_initiator(
                near,
                PEER_A,
                PEER_B,
                AUTHORITY_A,
                store_with(entries),
                on_penalty=lambda _peer, _points, reason: penalties.append(reason),
            )
        assert far.stopped
        nursery.cancel_scope.cancel()
    assert len(penalties) == 1


class FixedItemsStore(MemorySyncStore):
    """A store whose one database "notes" reconciles over the given items (crafted ids, as an
    insider grinding entry ids would obtain with real ones); it holds none of their entries."""

    def __init__(self, items: list[ReconItem]) -> None:
        super().__init__(TENANT)
        self._fixed = VectorStorage(items)

    def databases(self) -> list[str]:
        return ["notes"]

    @contextlib.contextmanager
    def recon_storage(self, database: str) -> Iterator[ReconStorage]:
        yield self._fixed


def colliding_stores() -> tuple[FixedItemsStore, FixedItemsStore, set[bytes]]:
    """Two sets of 302 items, 300 shared, whose other two ids differ but add up to the same sum
    mod 2**256 (so the same count and fingerprint), spread over the time range; and the ids
    only the second holds."""
    rnd = random.Random(1)
    common = [ReconItem(BASE_MS + i, rnd.randbytes(32)) for i in range(300)]
    a, b, c = (rnd.randbytes(32) for _ in range(3))
    d_value = int.from_bytes(a, "little") + int.from_bytes(b, "little")
    d = ((d_value - int.from_bytes(c, "little")) % (1 << 256)).to_bytes(32, "little")
    mine = [ReconItem(BASE_MS + 10, a), ReconItem(BASE_MS + 10**6, b)]
    theirs = [ReconItem(BASE_MS + 10, c), ReconItem(BASE_MS + 2 * 10**6, d)]
    return FixedItemsStore(common + mine), FixedItemsStore(common + theirs), {c, d}


def run_machines(initiator: SyncInitiator, responder: SyncResponder) -> list[Message]:
    """Carry frames between the two machines until neither has more; what the initiator sent."""
    sent: list[Message] = []
    initiator.receive(responder.next_frame() or b"")
    for _ in range(20):
        flight = frames_of(initiator)
        if not flight:
            break
        sent.extend(flight)
        for reply in answer_all(flight, responder):
            initiator.receive(reply)
    return sent


@pytest.mark.parametrize("trust_summary", [True, False])
def test_a_full_check_reconciles_what_a_fingerprint_collision_hides(trust_summary: bool) -> None:
    """The summaries' additive fingerprints collide for two different sets: trusted, the
    database is held alike and nothing is asked; a full check (``trust_summary=False``, one
    session in `SUMMARY_FULL_CHECK_EVERY` from the daemon) reconciles it anyway and asks for
    the two entries it lacks."""
    mine, theirs, their_own = colliding_stores()
    initiator = SyncInitiator(mine, version=3, trust_summary=trust_summary)
    responder = SyncResponder(theirs, announce=True, version3=True)
    sent = run_machines(initiator, responder)
    fetched = {i for m in sent if isinstance(m, FetchRequest) for i in m.ids}
    if trust_summary:
        assert initiator.report.databases["notes"].alike
        assert not any(isinstance(m, ReconRequest) for m in sent) and not fetched
    else:
        assert not initiator.report.databases["notes"].alike
        assert any(isinstance(m, ReconRequest) for m in sent)
        assert fetched == their_own
    initiator.close()
    responder.close()
