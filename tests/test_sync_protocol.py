"""The sync protocol (mindoo_p2p.sync.protocol) run by its trio driver over memory streams.

Real sealed entries, real signatures, no sockets. Two stores must converge to exactly the union
of their sets; an empty node catches up through the bulk path; invalid entries are rejected
alone while the valid ones land; oversized frames and protocol breaches raise
ProtocolViolation with a penalty; a stalled peer hits the session's wall-time bound.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_helpers import (
    AUTHORITY_A,
    AUTHORITY_B,
    AUTHORS,
    BASE_MS,
    MEMBERS,
    PEER_A,
    PEER_B,
    TENANT,
    Member,
    RecordingStore,
    report_of,
    seal,
    store_with,
    sync,
)

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import TENANT_LOG, Entry
from mindoo_p2p.recon import ReconItem, ReconResponder, VectorStorage
from mindoo_p2p.rejection import Rejected, RejectionKind
from mindoo_p2p.sync.auth import AuthInitiator, AuthResponder
from mindoo_p2p.sync.driver import (
    TIMEOUT_PENALTY,
    SyncTimeout,
    run_initiator,
    run_responder,
)
from mindoo_p2p.sync.messages import (
    MAX_FRAME_SIZE,
    VIOLATION_PENALTY,
    DatabaseInfo,
    DatabaseList,
    DatabaseSummary,
    Entries,
    EntryFragment,
    FetchEnd,
    FetchRequest,
    Finish,
    Finished,
    IndexPage,
    IndexRequest,
    Message,
    MessageType,
    ProtocolViolation,
    ReconReply,
    ReconRequest,
    decode_message,
    encode_message,
)
from mindoo_p2p.sync.protocol import (
    SyncInitiator,
    SyncLimits,
    SyncReport,
    SyncResponder,
)
from mindoo_p2p.testing.memory_sync import MemoryFrameStream, MemorySyncStore, memory_frame_pair


def forge(entry: Entry) -> Entry:
    """The entry with one ciphertext byte changed: it decodes, its signature fails."""
    raw = bytearray(entry.raw)
    raw[entry.signed_end - 1] ^= 0x01
    return Entry.decode(bytes(raw))


# --- convergence -------------------------------------------------------------------------------


async def test_overlapping_random_sets_converge_exactly() -> None:
    rng = random.Random(7)

    def timestamps(count: int) -> list[int]:  # many equal timestamps, spread over a day
        return [BASE_MS + rng.randrange(0, 86_400_000, 1000) for _ in range(count)]

    shared = [seal(db, ts) for db in ("notes", TENANT_LOG) for ts in timestamps(600)]
    only_a = [seal("notes", ts) for ts in timestamps(150)] + [seal(TENANT_LOG, BASE_MS + 5)]
    only_a += [seal("tasks", ts) for ts in timestamps(80)]  # a database B has never seen
    only_b = [seal("notes", ts) for ts in timestamps(220)] + [seal(TENANT_LOG, BASE_MS + 9)]
    only_b += [seal("photos", BASE_MS + 1, size=700_000), seal("photos", BASE_MS + 2, size=10)]
    only_a += [seal("photos", BASE_MS + 3, size=300_000)]  # pushed in fragments
    a = store_with(shared + only_a, RecordingStore(TENANT))
    b = store_with(shared + only_b, RecordingStore(TENANT))
    assert isinstance(a, RecordingStore) and isinstance(b, RecordingStore)
    union = {e.id for e in shared + only_a + only_b}

    outcome = await sync(a, b)
    mine, theirs = report_of(outcome.initiator), report_of(outcome.responder)
    assert a.ids() == b.ids() == union
    for database in ("notes", TENANT_LOG, "tasks", "photos"):
        assert a.ids(database) == b.ids(database)
    assert mine.received == len(only_b) and theirs.received == len(only_a)
    assert mine.sent == len(only_a) and theirs.sent == len(only_b)
    assert mine.rejected == theirs.rejected == 0
    assert mine.peer_added == len(only_a)
    assert list(mine.databases) == [TENANT_LOG, "notes", "photos", "tasks"]
    assert a.ingest_order[0] == TENANT_LOG and b.ingest_order[0] == TENANT_LOG
    assert outcome.penalties == {"initiator": [], "responder": []}

    again = await sync(a, b)
    quiet = report_of(again.initiator)
    assert quiet.received == quiet.sent == 0
    # Version 3: the responder's summary shows every database held alike, so none reconciles.
    assert all(db.recon_rounds == 0 for db in quiet.databases.values())
    assert quiet.recon_round_trips == 0 and quiet.peer_added == 0
    assert quiet.bytes_sent + quiet.bytes_received < 2_000


async def test_typical_sync_is_few_round_trips_and_small() -> None:
    shared = [seal("notes", BASE_MS + i * 1000) for i in range(3000)]
    new_a = [seal("notes", BASE_MS + 4_000_000 + i) for i in range(25)]
    new_b = [seal("notes", BASE_MS + 4_000_000 + 500 + i) for i in range(25)]
    a, b = store_with(shared + new_a), store_with(shared + new_b)
    report = report_of((await sync(a, b)).initiator)
    assert a.ids() == b.ids()
    notes = report.databases["notes"]
    assert not notes.bulk
    assert notes.recon_rounds <= 3
    assert notes.round_trips <= notes.recon_rounds + 1
    assert report.bytes_sent + report.bytes_received < 30_000


async def test_empty_node_catches_up_in_bulk_from_20000_entries() -> None:
    entries = [seal("notes", BASE_MS + i * 7) for i in range(20_000)]
    entries += [seal(TENANT_LOG, BASE_MS + i) for i in range(5)]
    peer = store_with(entries)
    empty = MemorySyncStore(TENANT)
    started = time.perf_counter()
    report = report_of((await sync(empty, peer, seconds=120)).initiator)
    elapsed = time.perf_counter() - started
    assert empty.ids() == peer.ids()
    notes = report.databases["notes"]
    assert notes.bulk and not report.databases[TENANT_LOG].bulk
    assert notes.received == 20_000
    assert notes.recon_rounds == 1  # the closing reconciliation pass finds nothing left
    pages = -(-20_000 // 4096)
    assert notes.round_trips >= pages + 20_000 // 512
    print(f"\ncatch-up of 20,000 entries: {elapsed:.2f} s, {20_000 / elapsed:,.0f} entries/s")


async def test_far_behind_node_uses_bulk_then_pushes_its_own() -> None:
    entries = [seal("notes", BASE_MS + i * 3) for i in range(3_000)]
    mine_only = [seal("notes", BASE_MS + 10_000_000 + i) for i in range(10)]
    behind = store_with(entries[:500] + mine_only)
    ahead = store_with(entries)
    report = report_of((await sync(behind, ahead)).initiator)
    assert behind.ids() == ahead.ids()
    assert report.databases["notes"].bulk
    assert report.databases["notes"].received == 2_500
    assert report.databases["notes"].sent == 10


async def test_responder_serves_the_tenant_the_initiator_proved() -> None:
    other_tenant = os.urandom(16)
    other_authority = Member(other_tenant, SigningKeyPair.generate(), MEMBERS)
    other_store = MemorySyncStore(other_tenant)
    theirs = store_with([seal("notes", BASE_MS + i) for i in range(40)])
    mine = MemorySyncStore(TENANT)
    initiator_end, responder_end = memory_frame_pair()
    progress: list[int] = []
    served: list[SyncReport | None] = []

    async def respond() -> None:
        tenants = {other_tenant: (other_authority, other_store), TENANT: (AUTHORITY_B, theirs)}
        served.append(await run_responder(responder_end, PEER_B, PEER_A, tenants))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            report = await run_initiator(
                initiator_end,
                PEER_A,
                PEER_B,
                AUTHORITY_A,
                mine,
                on_progress=lambda r: progress.append(r.received),
            )
    assert mine.ids() == theirs.ids() and len(other_store) == 0
    assert served[0] is not None and served[0].tenant_id == TENANT and served[0].sent == 40
    assert report.received == 40 and progress[-1] == 40 and progress == sorted(progress)


# --- invalid entries ---------------------------------------------------------------------------


class GarbageStore(MemorySyncStore):
    """Serves garbage bytes instead of one entry it lists."""

    def __init__(self, tenant_id: bytes, bad_id: bytes) -> None:
        super().__init__(tenant_id)
        self.bad_id = bad_id

    def get_raw(self, ids: Sequence[bytes]) -> list[bytes]:
        raws = super().get_raw([i for i in ids if i != self.bad_id])
        return raws + [b"MDE\x01 not an entry"] * (self.bad_id in ids)


async def test_pushed_forged_entry_is_rejected_alone_and_penalized() -> None:
    shared = [seal("notes", BASE_MS + i) for i in range(100)]
    pushed = [seal("notes", BASE_MS + 1000 + i) for i in range(40)]
    forged = forge(seal("notes", BASE_MS + 2000))
    evil = store_with([*shared, *pushed, forged])
    honest = store_with(shared)
    outcome = await sync(evil, honest)
    violation = outcome.responder
    assert isinstance(violation, ProtocolViolation)
    assert "bad signature" in violation.reason
    assert outcome.penalties["responder"] == [(PEER_A, VIOLATION_PENALTY, violation.reason)]
    assert honest.ids() == {e.id for e in shared + pushed}  # everything valid landed
    assert isinstance(violation.report, SyncReport)
    assert violation.report.databases["notes"].rejected == 1
    assert violation.report.databases["notes"].received == 40


async def test_pushed_garbage_is_rejected_alone_and_penalized() -> None:
    shared = [seal("notes", BASE_MS + i) for i in range(20)]
    pushed = [seal("notes", BASE_MS + 1000 + i) for i in range(30)]
    evil = store_with([*shared, *pushed], GarbageStore(TENANT, pushed[7].id))
    honest = store_with(shared)
    outcome = await sync(evil, honest)
    assert isinstance(outcome.responder, ProtocolViolation)
    assert "decode error" in outcome.responder.reason
    assert len(outcome.penalties["responder"]) == 1
    assert honest.ids() == {e.id for e in shared + pushed} - {pushed[7].id}


async def test_fetched_forged_entry_is_rejected_alone_and_penalized() -> None:
    good = [seal("notes", BASE_MS + i) for i in range(60)]
    evil = store_with([*good, forge(seal("notes", BASE_MS + 30))])
    fresh = MemorySyncStore(TENANT)
    outcome = await sync(fresh, evil)
    assert isinstance(outcome.initiator, ProtocolViolation)
    assert outcome.penalties["initiator"] == [(PEER_B, VIOLATION_PENALTY, outcome.initiator.reason)]
    assert fresh.ids() == {e.id for e in good}


async def test_refused_entries_are_counted_not_penalized() -> None:
    banned = AUTHORS[0].public_key
    entries = [seal("notes", BASE_MS + i) for i in range(30)]
    strict = MemorySyncStore(
        TENANT,
        authorize=lambda e: (
            Rejected(e.id, RejectionKind.REVOKED_ABOVE_CUT, "revoked")
            if e.author == banned
            else None
        ),
    )
    report = report_of((await sync(strict, store_with(entries))).initiator)
    expected = {e.id for e in entries if e.author != banned}
    assert strict.ids() == expected
    assert report.databases["notes"].refused == len(entries) - len(expected)
    assert report.rejected == 0


# --- limits ------------------------------------------------------------------------------------


async def _authenticated_raw_initiator(stream: MemoryFrameStream) -> None:
    """Play the initiator's handshake by hand over ``stream``."""
    handshake = AuthInitiator(PEER_A, PEER_B, AUTHORITY_A)
    while not handshake.finished:
        frame = handshake.next_frame()
        if frame is not None:
            await stream.send_frame(frame)
        else:
            handshake.receive(await stream.receive_frame())


async def _serve_against(
    script: Callable[[MemoryFrameStream], Awaitable[None]],
    store: MemorySyncStore,
    limits: SyncLimits | None = None,
) -> tuple[BaseException | SyncReport | None, list[tuple[bytes, int, str]]]:
    """run_responder against a hand-played initiator; its result and penalties."""
    mine, theirs = memory_frame_pair(buffer=4)
    penalties: list[tuple[bytes, int, str]] = []
    result: list[BaseException | SyncReport | None] = []

    async def respond() -> None:
        try:
            result.append(
                await run_responder(
                    theirs,
                    PEER_B,
                    PEER_A,
                    {TENANT: (AUTHORITY_B, store)},
                    on_penalty=lambda *a: penalties.append(a),
                    limits=limits or SyncLimits(),
                )
            )
        except Exception as exc:
            result.append(exc)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            await script(mine)
    return result[0], penalties


async def test_oversized_frame_is_a_violation() -> None:
    async def script(stream: MemoryFrameStream) -> None:
        await _authenticated_raw_initiator(stream)
        await stream.send_frame(bytes((MessageType.ENTRIES,)) + b"\x00" * MAX_FRAME_SIZE)
        with pytest.raises(trio.EndOfChannel):  # the responder dropped the stream
            while True:  # after the database summary it announced (version 3), if sent yet
                assert isinstance(decode_message(await stream.receive_frame()), DatabaseSummary)

    result, penalties = await _serve_against(script, MemorySyncStore(TENANT))
    assert isinstance(result, ProtocolViolation) and "over" in result.reason
    assert penalties == [(PEER_A, VIOLATION_PENALTY, result.reason)]


async def test_undecodable_and_unexpected_frames_are_violations() -> None:
    async def garbage(stream: MemoryFrameStream) -> None:
        await _authenticated_raw_initiator(stream)
        await stream.send_frame(b"\x10\xff\xff")

    async def early_request(stream: MemoryFrameStream) -> None:
        await _authenticated_raw_initiator(stream)
        await stream.send_frame(encode_message(FetchRequest(0, (b"x" * 32,))))

    async def request_out_of_list(stream: MemoryFrameStream) -> None:
        await _authenticated_raw_initiator(stream)
        await stream.send_frame(encode_message(DatabaseList(())))
        await stream.receive_frame()
        await stream.send_frame(encode_message(ReconRequest(3, b"\x61")))

    for script in (garbage, early_request, request_out_of_list):
        result, penalties = await _serve_against(script, MemorySyncStore(TENANT))
        assert isinstance(result, ProtocolViolation), script.__name__
        assert len(penalties) == 1


async def test_stalled_peer_hits_the_wall_time_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A responder that authenticates, then trickles: each answer within the idle bound, but
    the reconciliation never settles. The wall-time bound stops it (in virtual time)."""
    initiator_end, responder_end = memory_frame_pair()
    limits = SyncLimits(session_seconds=30, idle_seconds=10)
    penalties: list[tuple[bytes, int, str]] = []

    async def trickling_responder() -> None:
        handshake = AuthResponder(PEER_B, PEER_A, [AUTHORITY_B])
        while not handshake.finished:
            frame = handshake.next_frame()
            if frame is not None:
                await responder_end.send_frame(frame)
            else:
                handshake.receive(await responder_end.receive_frame())
        # Our list first, as a responder of version 2 or later does (a version-3 initiator
        # sends its own only after it).
        await responder_end.send_frame(encode_message(DatabaseSummary((), ())))
        await responder_end.receive_frame()  # the initiator's database list
        never_equal = b"\x61\x00\x00\x01" + b"\xee" * 16  # one range, a wrong fingerprint
        with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError)):  # hung up on
            while True:  # answers every request, 5 s later, so that it never settles
                await responder_end.receive_frame()
                await trio.sleep(5)
                await responder_end.send_frame(encode_message(ReconReply(never_equal)))

    store = store_with([seal("notes", BASE_MS)])
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickling_responder)
        with pytest.raises(SyncTimeout) as info:
            await run_initiator(
                initiator_end,
                PEER_A,
                PEER_B,
                AUTHORITY_A,
                store,
                limits=limits,
                on_penalty=lambda *a: penalties.append(a),
            )
    assert 30 <= trio.current_time() - started < 31
    assert "ran past 30" in info.value.reason
    assert penalties == [(PEER_B, TIMEOUT_PENALTY, info.value.reason)]


async def test_silent_peer_hits_the_idle_bound(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: MemoryFrameStream) -> None:
        with pytest.raises(trio.EndOfChannel):  # says nothing until the responder hangs up
            await stream.receive_frame()

    result, penalties = await _serve_against(
        silent, MemorySyncStore(TENANT), SyncLimits(idle_seconds=20)
    )
    assert isinstance(result, SyncTimeout) and "nothing for 20" in result.reason
    assert penalties[0][1] == TIMEOUT_PENALTY


_FP = bytes(16)
"""A fingerprint no store of these tests has."""

# --- the machines, directly --------------------------------------------------------------------


def test_initiator_refuses_answers_it_did_not_ask_for() -> None:
    entries = [seal("notes", BASE_MS + i) for i in range(5)]
    local = store_with(entries[:2])
    remote = VectorStorage(ReconItem(e.timestamp_ms, e.id) for e in entries)

    def started() -> tuple[SyncInitiator, bytes]:
        machine = SyncInitiator(local)
        assert machine.next_frame() is None  # version 3: our list waits for the peer's
        machine.receive(encode_message(DatabaseSummary((DatabaseInfo("notes", 5),), (_FP,))))
        assert isinstance(decode_message(machine.next_frame() or b""), DatabaseSummary)
        request = decode_message(machine.next_frame() or b"")
        assert isinstance(request, ReconRequest) and request.database == 0
        return machine, ReconResponder(remote).reconcile(request.payload)

    machine, _ = started()
    with pytest.raises(ProtocolViolation):  # a fetch answer while a recon reply is due
        machine.receive(encode_message(FetchEnd(())))

    machine, _ = started()
    with pytest.raises(ProtocolViolation):  # not Negentropy V1
        machine.receive(encode_message(ReconReply(b"\x62")))

    # A fetch answer carrying an entry that was not requested: refused after the valid ones.
    machine, reply = started()
    machine.receive(encode_message(ReconReply(reply)))
    fetch = decode_message(machine.next_frame() or b"")
    assert isinstance(fetch, FetchRequest) and set(fetch.ids) == {e.id for e in entries[2:]}
    machine.receive(encode_message(Entries((entries[2].raw, entries[0].raw))))
    [job] = machine.take_jobs()
    assert job.raws == (entries[2].raw,) and "not requested" in job.problems[0]
    with pytest.raises(ProtocolViolation):
        machine.ingested(job, local.ingest(job.raws))
    assert entries[2].id in local.ids()
    machine.close()

    # FETCH_END must account for exactly the requested ids.
    machine, reply = started()
    machine.receive(encode_message(ReconReply(reply)))
    machine.next_frame()
    with pytest.raises(ProtocolViolation):
        machine.receive(encode_message(FetchEnd((entries[0].id,))))


def test_responder_bounds_its_request_queue() -> None:
    store = store_with([seal("notes", BASE_MS)])
    machine = SyncResponder(store, SyncLimits(max_outstanding=2))
    machine.receive(encode_message(DatabaseList(())))
    listed = decode_message(machine.next_frame() or b"")
    assert listed == DatabaseList((DatabaseInfo("notes", 1),))
    with pytest.raises(ProtocolViolation):  # only database 0 exists
        machine.receive(encode_message(ReconRequest(1, b"\x61")))
    for _ in range(16):  # never reading the answers
        machine.receive(encode_message(ReconRequest(0, b"\x61")))
    with pytest.raises(ProtocolViolation):
        machine.receive(encode_message(ReconRequest(0, b"\x61")))


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        SyncLimits(recon_frame_size=100)
    with pytest.raises(ValueError):
        SyncLimits(fetch_batch=5000)
    with pytest.raises(ValueError):
        SyncLimits(session_seconds=0)


# --- hostile peers: random frames raise ProtocolViolation and nothing else ---------------------

_POOL = [seal("notes", BASE_MS + i) for i in range(6)] + [seal(TENANT_LOG, BASE_MS)]
_IDS = [e.id for e in _POOL] + [bytes(32), b"\xff" * 32]
_RAWS = [e.raw for e in _POOL] + [b"MDE\x01garbage", forge(_POOL[0]).raw]
_ITEMS = sorted({ReconItem(e.timestamp_ms, e.id) for e in _POOL})

pool_ids = st.sampled_from(_IDS)
hostile_messages = st.one_of(
    st.builds(ReconRequest, st.integers(0, 3), st.sampled_from([b"\x61", b"\x62", b"\x61\x00"])),
    st.builds(
        ReconReply,
        st.sampled_from([b"\x61", b"\x61\x00\x00\x01" + b"\xaa" * 16, b"\x61\x00\x00\x02\x01"]),
    ),
    st.builds(
        IndexRequest, st.integers(0, 3), st.none() | st.sampled_from(_ITEMS), st.integers(1, 9)
    ),
    st.builds(
        IndexPage,
        st.lists(st.sampled_from(_ITEMS), max_size=4, unique=True).map(lambda x: tuple(sorted(x))),
        st.booleans(),
    ),
    st.builds(
        FetchRequest,
        st.integers(0, 3),
        st.lists(pool_ids, min_size=1, max_size=4, unique=True).map(tuple),
    ),
    st.builds(FetchEnd, st.lists(pool_ids, max_size=3, unique=True).map(tuple)),
    st.builds(Entries, st.lists(st.sampled_from(_RAWS), min_size=1, max_size=3).map(tuple)),
    st.builds(EntryFragment, st.just(10), st.sampled_from([0, 4, 8]), st.just(b"ab")),
    st.just(Finish()),
    st.builds(Finished, st.integers(0, 5), st.integers(0, 5)),
    st.just(DatabaseList((DatabaseInfo("notes", 3),))),
)


def _drive(
    machine: SyncInitiator | SyncResponder, store: MemorySyncStore, frames: list[bytes]
) -> None:
    """Feed ``frames`` as the peer would; only ProtocolViolation may come out."""
    try:
        for frame in frames:
            if not machine.receiving:
                return
            machine.receive(frame)
            for job in machine.take_jobs():
                machine.ingested(job, store.ingest(job.raws))
            for _ in range(50):
                if machine.next_frame() is None:
                    break
    except ProtocolViolation:
        return
    finally:
        machine.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_messages, max_size=8), st.lists(st.binary(max_size=40), max_size=2))
def test_hostile_frames_to_the_responder(messages: list[Message], junk: list[bytes]) -> None:
    store = store_with(_POOL[:3])
    machine = SyncResponder(store)
    frames = [encode_message(DatabaseList((DatabaseInfo("notes", 2),)))]
    frames += [encode_message(m) for m in messages] + junk
    _drive(machine, store, frames)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_messages, max_size=8), st.lists(st.binary(max_size=40), max_size=2))
def test_hostile_frames_to_the_initiator(messages: list[Message], junk: list[bytes]) -> None:
    store = store_with(_POOL[:3])
    machine = SyncInitiator(store, SyncLimits(bulk_min_items=2))
    assert machine.next_frame() is None  # version 3: our list waits for the peer's
    listed = (DatabaseInfo("notes", 5), DatabaseInfo("x", 9))
    frames = [encode_message(DatabaseSummary(listed, (_FP, _FP)))]
    frames += [encode_message(m) for m in messages] + junk
    _drive(machine, store, frames)


async def test_initiator_declines_a_database_it_forgot() -> None:
    """A database the initiator's store declines (forgotten there) is neither fetched nor
    pushed, though the peer offers it; the others sync as usual."""
    theirs = [seal("kept", BASE_MS + i) for i in range(5)] + [
        seal("gone", BASE_MS + 10 + i) for i in range(5)
    ]
    ours = [seal("gone", BASE_MS + 20)]
    initiator, responder = store_with(ours), store_with(theirs)
    initiator.declined.add("gone")
    outcome = await sync(initiator, responder)
    report_of(outcome.initiator)
    assert initiator.ids("kept") == responder.ids("kept")
    assert initiator.ids("gone") == {e.id for e in ours}
    assert responder.ids("gone") == {e.id for e in theirs if e.database == "gone"}
