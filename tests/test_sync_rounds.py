"""The sync protocol's round trips: requests pipelined under latency, every scope reconciled in
one flight, and protocol version 2 (the responder announces its database list) beside version 1.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from sync_helpers import (
    AUTHORITY_A,
    AUTHORITY_B,
    BASE_MS,
    PEER_A,
    PEER_B,
    TENANT,
    DelayedFrameStream,
    RecordingStore,
    report_of,
    seal,
    store_with,
    sync,
)

from mindoo_p2p.entry import TENANT_LOG
from mindoo_p2p.recon import ReconItem, ReconResponder, VectorStorage
from mindoo_p2p.sync.auth import DENIED_FRAME, AuthDenied
from mindoo_p2p.sync.driver import (
    run_initiator,
    run_responder,
)
from mindoo_p2p.sync.messages import (
    DatabaseInfo,
    DatabaseList,
    DatabaseSummary,
    Entries,
    FetchEnd,
    FetchRequest,
    Hello,
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
from mindoo_p2p.testing.memory_sync import MemorySyncStore, memory_frame_pair


async def _round_trips_under_latency(
    mine: MemorySyncStore, theirs: MemorySyncStore, limits: SyncLimits, version: int = 2
) -> tuple[float, SyncReport]:
    """Sessions over a 50 ms one-way link, in virtual time: (duration in RTTs, report)."""
    one_way = 0.05
    a_send, a_receive = trio.open_memory_channel[tuple[float, bytes]](1000)
    b_send, b_receive = trio.open_memory_channel[tuple[float, bytes]](1000)
    near = DelayedFrameStream(a_send, b_receive, one_way)
    far = DelayedFrameStream(b_send, a_receive, one_way)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        tenants = {TENANT: (AUTHORITY_B, theirs)}
        nursery.start_soon(run_responder, far, PEER_B, PEER_A, tenants)
        report = await run_initiator(
            near, PEER_A, PEER_B, AUTHORITY_A, mine, limits=limits, version=version
        )
    return (trio.current_time() - started) / (2 * one_way), report


async def test_requests_are_pipelined(autojump_clock: trio.testing.MockClock) -> None:
    shared = [seal("notes", BASE_MS + i * 1000) for i in range(1000)]
    mine = store_with(shared + [seal("notes", BASE_MS + 10**8 + i) for i in range(30)])
    theirs = store_with(shared + [seal("notes", BASE_MS + 10**8 + 7 + i) for i in range(30)])
    # Handshake 2, database lists 1, reconciliation 2, fetch 1, finish 1.
    rtts, _ = await _round_trips_under_latency(mine, theirs, SyncLimits())
    assert rtts <= 7.01 and mine.ids() == theirs.ids()

    source = store_with([seal("notes", BASE_MS + i * 7) for i in range(3000)])
    pipelined, report = await _round_trips_under_latency(
        MemorySyncStore(TENANT), source, SyncLimits(fetch_batch=128)
    )
    one_by_one, _ = await _round_trips_under_latency(
        MemorySyncStore(TENANT), source, SyncLimits(fetch_batch=128, max_outstanding=1)
    )
    requests = report.databases["notes"].round_trips
    assert report.databases["notes"].bulk and requests == 1 + 24 + 1  # page, fetches, recon
    assert one_by_one >= requests  # one request per round trip
    assert pipelined <= 11  # eight in flight: the 26 requests take about 6 round trips


# --- every scope in one flight -----------------------------------------------------------------


async def test_idle_resync_of_every_scope_is_one_reconciliation_round_trip(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two stores in sync over the tenant log and three databases: the reconciliation of every
    scope goes out in one flight after the database lists (it took one round trip per scope)."""
    shared = [
        seal(db, BASE_MS + i * 1000) for db in (TENANT_LOG, "a", "b", "c") for i in range(300)
    ]
    mine, theirs = store_with(shared), store_with(shared)
    # Handshake 2 (the responder's database list rides its proof), our list with the
    # reconciliation of all four scopes 1, finish 1 (version 1: 5, before scopes in one flight: 7).
    rtts, report = await _round_trips_under_latency(mine, theirs, SyncLimits())
    assert rtts <= 4.01
    assert [db.recon_rounds for db in report.databases.values()] == [1, 1, 1, 1]
    assert report.recon_round_trips == 1
    assert report.received == report.sent == 0


async def test_scopes_reconcile_together_and_are_stored_in_order() -> None:
    """Reconciliation of later databases runs beside the current one, but entries are fetched,
    pushed and stored database by database, the tenant log first (membership before what it
    authorizes); the responder counts each pushed entry under its own database."""
    names = (TENANT_LOG, "notes", "tasks")
    shared = [seal(db, BASE_MS + i * 1000) for db in names for i in range(400)]
    only_a = [seal(db, BASE_MS + 10**7 + i) for db in names for i in range(30)]
    only_b = [seal(db, BASE_MS + 2 * 10**7 + i) for db in names for i in range(20)]
    a = store_with(shared + only_a, RecordingStore(TENANT))
    b = store_with(shared + only_b, RecordingStore(TENANT))
    assert isinstance(a, RecordingStore) and isinstance(b, RecordingStore)
    outcome = await sync(a, b)
    mine, theirs = report_of(outcome.initiator), report_of(outcome.responder)
    assert a.ids() == b.ids()
    for store in (a, b):
        assert store.ingest_order == sorted(store.ingest_order, key=names.index)
    rounds = [db.recon_rounds for db in mine.databases.values()]
    assert mine.recon_round_trips == max(rounds) < sum(rounds)
    for name in names:
        assert mine.databases[name].received == theirs.databases[name].sent == 20
        assert theirs.databases[name].received == mine.databases[name].sent == 30


def test_later_scopes_reconcile_but_fetch_only_when_current() -> None:
    """Frame by frame: after the database lists, the initiator sends the first reconciliation
    message of every scope at once; a later scope that settled waits with its fetch until the
    scopes before it are fetched and stored."""
    ours = [seal(db, BASE_MS + i) for db in (TENANT_LOG, "notes") for i in range(3)]
    log_extra, notes_extra = seal(TENANT_LOG, BASE_MS + 50), seal("notes", BASE_MS + 100)
    local = store_with(ours)
    remote = {
        TENANT_LOG: VectorStorage(ReconItem(e.timestamp_ms, e.id) for e in [*ours[:3], log_extra]),
        "notes": VectorStorage(ReconItem(e.timestamp_ms, e.id) for e in [*ours[3:], notes_extra]),
    }
    listed = (DatabaseInfo(TENANT_LOG, 4), DatabaseInfo("notes", 4))

    def started() -> tuple[SyncInitiator, ReconRequest, ReconRequest]:
        machine = SyncInitiator(local)
        assert machine.next_frame() is None  # version 3: our list waits for the peer's
        machine.receive(encode_message(DatabaseSummary(listed, (bytes(16),) * 2)))
        assert isinstance(decode_message(machine.next_frame() or b""), DatabaseSummary)
        first = decode_message(machine.next_frame() or b"")
        second = decode_message(machine.next_frame() or b"")
        assert isinstance(first, ReconRequest) and isinstance(second, ReconRequest)
        assert machine.next_frame() is None  # both open: wait for the answers
        return machine, first, second

    machine, first, second = started()
    assert (first.database, second.database) == (0, 1)
    with pytest.raises(ProtocolViolation):  # answered in request order: the log's comes first
        machine.receive(encode_message(FetchEnd(())))
    machine.close()

    machine, first, second = started()
    for request, name in ((first, TENANT_LOG), (second, "notes")):
        reply = ReconResponder(remote[name]).reconcile(request.payload)
        machine.receive(encode_message(ReconReply(reply)))
    fetch = decode_message(machine.next_frame() or b"")
    assert isinstance(fetch, FetchRequest) and (fetch.database, fetch.ids) == (0, (log_extra.id,))
    assert machine.next_frame() is None  # the notes' fetch waits for the log
    machine.receive(encode_message(Entries((log_extra.raw,))))
    machine.receive(encode_message(FetchEnd(())))
    assert machine.next_frame() is None  # ... until its entries are stored
    [job] = machine.take_jobs()
    machine.ingested(job, local.ingest(job.raws))
    fetch = decode_message(machine.next_frame() or b"")
    assert isinstance(fetch, FetchRequest) and (fetch.database, fetch.ids) == (1, (notes_extra.id,))
    assert machine.report.databases[TENANT_LOG].recon_rounds == 1
    assert machine.report.databases["notes"].recon_rounds == 1
    machine.close()


# --- protocol version 2: the responder announces its database list -----------------------------


def test_the_responder_announces_its_list_only_to_version_2() -> None:
    """Frame by frame: announcing, the responder's first frame is its database list, and the
    initiator's may come before or after it; otherwise (an initiator of version 1, which
    accepts no list before it sent its own) it waits for the initiator's list."""
    store = store_with([seal("notes", BASE_MS)])
    ours = DatabaseList((DatabaseInfo("notes", 1),))
    announcing = SyncResponder(store, announce=True)
    assert decode_message(announcing.next_frame() or b"") == ours
    announcing.receive(encode_message(DatabaseList(())))
    assert announcing.next_frame() is None  # serving: nothing asked yet
    late = SyncResponder(store, announce=True)
    late.receive(encode_message(DatabaseList(())))  # theirs first: ours is still sent
    assert decode_message(late.next_frame() or b"") == ours
    waiting = SyncResponder(store)
    assert waiting.next_frame() is None
    waiting.receive(encode_message(DatabaseList(())))
    assert decode_message(waiting.next_frame() or b"") == ours

    initiator = SyncInitiator(store_with([seal("notes", BASE_MS)]), version=2)
    initiator.receive(encode_message(ours))  # the announced list, before ours left
    assert isinstance(decode_message(initiator.next_frame() or b""), DatabaseList)
    request = decode_message(initiator.next_frame() or b"")  # in the same flight
    assert isinstance(request, ReconRequest) and request.database == 0
    initiator.close()


async def test_an_initiator_of_version_1_gets_the_version_1_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An older initiator (HELLO version 1) is answered the version-1 way: the responder waits
    for its list, one round trip more, and the stores converge."""
    shared = [seal("notes", BASE_MS + i * 1000) for i in range(200)]
    mine = store_with([*shared, seal("notes", BASE_MS + 10**7)])
    theirs = store_with([*shared, seal("notes", BASE_MS + 2 * 10**7)])
    # Handshake 2, database lists 1, reconciliation 1, fetch 1, finish 1 (version 2: 5).
    rtts, _ = await _round_trips_under_latency(mine, theirs, SyncLimits(), version=1)
    assert 5.99 <= rtts <= 6.01 and mine.ids() == theirs.ids()


async def test_a_responder_of_version_1_is_a_clear_refusal() -> None:
    """An older responder denies our HELLO of version 3, as it denies any other version: the
    initiator says so, instead of the generic denial."""
    initiator_end, responder_end = memory_frame_pair()
    hello_versions: list[int] = []

    async def old_responder() -> None:
        hello = decode_message(await responder_end.receive_frame())
        assert isinstance(hello, Hello)
        hello_versions.append(hello.version)
        await responder_end.send_frame(DENIED_FRAME)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(old_responder)
            with pytest.raises(AuthDenied, match="version 3"):
                await run_initiator(
                    initiator_end, PEER_A, PEER_B, AUTHORITY_A, MemorySyncStore(TENANT)
                )
    assert hello_versions == [3]
