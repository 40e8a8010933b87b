"""Reconciliation snapshots (LMDB read transactions, one reader slot each out of the home's
256) held by sync sessions stay within ``sessions + budget`` (review s4: a version-2 initiator
held one per scope of its window, 8 per session, for as long as the peer took to answer).

Sessions are driven frame by frame between pure machines (no sockets); the cancellation test
runs the trio driver over memory streams in virtual time.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers import two_writers_converge
from sync_helpers import (
    AUTHORITY_A,
    AUTHORITY_B,
    BASE_MS,
    PEER_A,
    PEER_B,
    TENANT,
    DelayedFrameStream,
    seal,
)

from mindoo_p2p.daemon import sync_sessions
from mindoo_p2p.entry import TENANT_LOG
from mindoo_p2p.errors import StoreError
from mindoo_p2p.recon import ReconStorage
from mindoo_p2p.store import EntryStore
from mindoo_p2p.store._environment import MAX_READERS
from mindoo_p2p.sync.driver import run_initiator, run_responder
from mindoo_p2p.sync.messages import DatabaseList, ProtocolViolation, encode_message
from mindoo_p2p.sync.protocol import SyncInitiator, SyncLimits, SyncReport, SyncResponder
from mindoo_p2p.sync.snapshot_budget import SHARED_SNAPSHOT_BUDGET, SnapshotBudget
from mindoo_p2p.testing import Cluster
from mindoo_p2p.testing.memory_sync import MemorySyncStore

DBS = [TENANT_LOG] + [f"db{i:02}" for i in range(12)]


class CountingStore(MemorySyncStore):
    """Counts the reconciliation snapshots open now, and the most ever open, in ``counter``."""

    def __init__(self, tenant_id: bytes, counter: dict[str, int]) -> None:
        super().__init__(tenant_id)
        self.counter = counter
        self.fail_on: str | None = None

    @contextlib.contextmanager
    def recon_storage(self, database: str) -> Iterator[ReconStorage]:
        if database == self.fail_on:
            raise StoreError("entry store read failed: every reader slot of the home is taken")
        self.counter["open"] += 1
        self.counter["peak"] = max(self.counter["peak"], self.counter["open"])
        try:
            with super().recon_storage(database) as storage:
                yield storage
        finally:
            self.counter["open"] -= 1


def counter() -> dict[str, int]:
    return {"open": 0, "peak": 0}


def stores(
    count: dict[str, int], shared: int = 3, only_remote: int = 2
) -> tuple[CountingStore, CountingStore]:
    """A local store counting in ``count`` and a remote one (counting apart: a responder opens a
    snapshot only within one answer) over every database of DBS: ``shared`` entries in both,
    and ``only_remote`` the local store lacks, per database."""
    local, remote = CountingStore(TENANT, count), CountingStore(TENANT, counter())
    for n, db in enumerate(DBS):
        common = [seal(db, BASE_MS + n * 1000 + i) for i in range(shared)]
        local.add_own(common)
        remote.add_own(
            common + [seal(db, BASE_MS + 10**7 + n * 1000 + i) for i in range(only_remote)]
        )
    return local, remote


def stalled(
    local: MemorySyncStore, remote: MemorySyncStore, budget: SnapshotBudget
) -> tuple[SyncInitiator, SyncResponder, list[bytes]]:
    """A session (version 3) whose initiator got the responder's list and sent its own list and
    first requests, which the responder has not read yet (a slow or stalling peer)."""
    machine = SyncInitiator(local, snapshot_budget=budget)
    responder = SyncResponder(remote, announce=True, version3=True)
    machine.receive(responder.next_frame() or b"")
    in_flight = []
    while (frame := machine.next_frame()) is not None:
        in_flight.append(frame)
    return machine, responder, in_flight


def converse(
    initiator: SyncInitiator,
    responder: SyncResponder,
    i_store: MemorySyncStore,
    r_store: MemorySyncStore,
) -> None:
    """Carry frames between the two machines until both are done (bounded)."""
    machines = ((initiator, responder, r_store), (responder, initiator, i_store))
    try:
        for _ in range(10_000):
            if initiator.finished and responder.finished:
                return
            moved = False
            for sender, receiver, store in machines:
                while (frame := sender.next_frame()) is not None:
                    receiver.receive(frame)
                    moved = True
                for job in receiver.take_jobs():
                    receiver.ingested(job, store.ingest(job.raws))
                    moved = True
            assert moved, "the session stalled"
        raise AssertionError("the session did not end")
    finally:
        initiator.close()
        responder.close()


def session(
    local: MemorySyncStore, remote: MemorySyncStore, budget: SnapshotBudget
) -> SyncInitiator:
    machine = SyncInitiator(local, snapshot_budget=budget)
    converse(machine, SyncResponder(remote, announce=True, version3=True), local, remote)
    return machine


# --- the budget itself ------------------------------------------------------------------------


def test_budget_gives_at_most_its_slots_and_takes_back_only_what_it_gave() -> None:
    budget = SnapshotBudget(extra=2)
    assert budget.try_take() and budget.try_take()
    assert not budget.try_take() and budget.taken == 2 and budget.available == 0
    budget.give_back()
    assert budget.available == 1 and budget.try_take()
    budget.give_back()
    budget.give_back()
    with pytest.raises(RuntimeError, match="never taken"):
        budget.give_back()
    assert budget.taken == 0
    for bad in (-1, 1.5, True, "8"):
        with pytest.raises(ValueError, match="whole number"):
            SnapshotBudget(extra=bad)  # type: ignore[arg-type]


def test_budget_is_exact_under_threads() -> None:
    budget = SnapshotBudget(extra=3)
    over: list[int] = []

    def churn() -> None:
        for _ in range(2000):
            if budget.try_take():
                if budget.taken > 3:
                    over.append(budget.taken)
                budget.give_back()

    threads = [threading.Thread(target=churn) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not over and budget.taken == 0


# --- sessions within the bound ----------------------------------------------------------------


def test_many_sessions_with_many_scopes_hold_at_most_sessions_plus_budget() -> None:
    """The review's attack: 32 sessions, each with 13 databases to reconcile, whose peer does
    not answer. Before the budget they held 32 x 8 = 256 snapshots (every reader slot of the
    home); now one each plus the budget's 16. Once the peers answer, every session converges
    and every slot comes back."""
    count, budget = counter(), SnapshotBudget(extra=16)
    pairs = [stores(count) for _ in range(32)]
    sessions = [stalled(local, remote, budget) for local, remote in pairs]
    assert count["open"] == 32 + 16 and budget.available == 0
    for (machine, responder, in_flight), (local, remote) in zip(sessions, pairs, strict=True):
        for frame in in_flight:
            responder.receive(frame)
        converse(machine, responder, local, remote)
        assert machine.finished and local.ids() == remote.ids()
    assert count["peak"] == 32 + 16
    assert count["open"] == 0 and budget.taken == 0


def test_one_stalled_session_holds_one_snapshot_when_the_budget_is_spent() -> None:
    """The review's own measure (it printed ``v1 1 v2 8``): a version-2 session waiting for
    its peer holds as many snapshots as a version-1 one once the budget is spent, and up to
    its window while slots are free."""
    count = counter()
    local, remote = stores(count)
    machine, _, _ = stalled(local, remote, SnapshotBudget(extra=0))
    assert count["open"] == 1
    machine.close()
    machine, _, _ = stalled(local, remote, budget := SnapshotBudget(extra=64))
    assert count["open"] == 8 and budget.taken == 7
    machine.close()
    assert count["open"] == 0 and budget.taken == 0


def test_a_session_without_budget_converges_one_scope_at_a_time() -> None:
    count = counter()
    local, remote = stores(count)
    alone = session(local, remote, SnapshotBudget(extra=0))
    assert local.ids() == remote.ids() and count["peak"] == 1
    assert alone.report.recon_round_trips >= len(DBS)  # one scope after the other, as in v1
    assert all(alone.report.databases[db].received == 2 for db in DBS)

    count = counter()
    local, remote = stores(count)
    together = session(local, remote, SnapshotBudget(extra=64))
    assert local.ids() == remote.ids() and count["peak"] == 8
    assert together.report.recon_round_trips < alone.report.recon_round_trips


def test_slots_come_back_when_a_session_fails() -> None:
    """A peer breaking the protocol mid-session, and a snapshot that cannot be opened (the
    home's reader slots are all taken): the error surfaces, no slot is lost."""
    count, budget = counter(), SnapshotBudget(extra=4)
    local, remote = stores(count)
    machine, _, _ = stalled(local, remote, budget)
    assert budget.taken == 4
    with pytest.raises(ProtocolViolation):
        machine.receive(encode_message(DatabaseList(())))
    machine.close()
    assert budget.taken == 0 and count["open"] == 0

    machine = SyncInitiator(local, snapshot_budget=budget)
    machine.receive(SyncResponder(remote, announce=True, version3=True).next_frame() or b"")
    local.fail_on = DBS[3]  # the fourth scope's snapshot
    with pytest.raises(StoreError, match="reader slot"):
        while machine.next_frame() is not None:
            pass
    assert budget.taken == 2 and count["open"] == 3  # the scopes before it
    machine.close()
    assert budget.taken == 0 and count["open"] == 0
    local.fail_on = None
    machine, _, _ = stalled(local, remote, budget)
    assert budget.taken == 4
    machine.close()


async def test_slots_come_back_after_a_cancelled_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session over a slow link cancelled while its scopes reconcile gives back every slot."""
    count, budget = counter(), SnapshotBudget(extra=8)
    local, remote = stores(count)
    one_way = 5.0
    a_send, a_receive = trio.open_memory_channel[tuple[float, bytes]](1000)
    b_send, b_receive = trio.open_memory_channel[tuple[float, bytes]](1000)
    near = DelayedFrameStream(a_send, b_receive, one_way)
    far = DelayedFrameStream(b_send, a_receive, one_way)
    limits = SyncLimits(idle_seconds=60, session_seconds=600)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            tenants = {TENANT: (AUTHORITY_B, remote)}
            nursery.start_soon(run_responder, far, PEER_B, PEER_A, tenants)

            async def initiate() -> None:
                await run_initiator(
                    near,
                    PEER_A,
                    PEER_B,
                    AUTHORITY_A,
                    local,
                    limits=limits,
                    snapshot_budget=budget,
                )

            nursery.start_soon(initiate)
            while budget.taken < 7:
                await trio.sleep(0.5)
            assert count["open"] == 8
            nursery.cancel_scope.cancel()
    assert budget.taken == 0 and count["open"] == 0
    assert local.ids() != remote.ids()  # it was cut short


def test_the_shared_budget_is_whole_between_tests() -> None:
    """Every machine of the other sync tests closed: the process-wide budget is untouched."""
    assert SHARED_SNAPSHOT_BUDGET.taken == 0 and SHARED_SNAPSHOT_BUDGET.extra == 64


def test_a_home_without_free_reader_slots_is_a_clear_store_error(tmp_path: Path) -> None:
    """With every reader slot of the home taken, a read raises StoreError naming the cause
    (not lmdb.ReadersFullError), and the store reads again once slots are free."""
    entry = seal("notes", BASE_MS)
    with EntryStore(tmp_path / "store") as store:
        store.append([entry])
        held = contextlib.ExitStack()
        with held, pytest.raises(StoreError, match="every reader slot of the home is taken"):
            for _ in range(MAX_READERS + 1):
                held.enter_context(store.recon_snapshot(TENANT, "notes"))
        with store.recon_snapshot(TENANT, "notes") as storage:
            assert storage.size() == 1


async def test_a_session_failing_on_the_own_store_is_recorded_and_the_daemon_carries_on(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Over libp2p on loopback: the first sessions of both roles fail on the node's own store
    (as when every reader slot of the home is taken). Each is recorded as a failed session
    naming the cause, the daemons keep running, and later sessions converge."""
    plain_initiator, plain_responder = sync_sessions.run_initiator, sync_sessions.run_responder
    failures = {"initiator": 1, "responder": 1}
    full = "entry store read failed: every reader slot of the home is taken"

    def failing_first(role: str, plain: Any) -> Any:
        async def run(*args: Any, **kwargs: Any) -> SyncReport | None:
            if failures[role] > 0:
                failures[role] -= 1
                raise StoreError(full)
            result: SyncReport | None = await plain(*args, **kwargs)
            return result

        return run

    monkeypatch.setattr(sync_sessions, "run_initiator", failing_first("initiator", plain_initiator))
    monkeypatch.setattr(sync_sessions, "run_responder", failing_first("responder", plain_responder))

    async def sync_again_after_the_failures() -> None:
        # The failed sessions may be one in each direction (an initiator that fails before
        # sending anything never reaches the peer's responder: its stream opens optimistically),
        # and the daemon does not retry a failed session before its next wake: ask for one, as
        # `mindoo sync` would.
        while any(failures.values()):
            await trio.sleep(0.01)
        for node in cluster.nodes:
            assert node.daemon is not None
            node.daemon.wake_peers()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sync_again_after_the_failures)
        await two_writers_converge(cluster)
    assert failures == {"initiator": 0, "responder": 0}
    logged = [
        r.getMessage() for r in caplog.records if "this node's store failed" in r.getMessage()
    ]
    assert len(logged) == 2 and all(full in line for line in logged)
    assert {"(initiator)", "(responder)"} == {
        w for line in logged for w in line.split() if w[0] == "("
    }


async def test_a_store_failure_before_an_initiator_session_runs_resets_its_stream(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The initiator reads the durability ledger's feed positions after opening its stream:
    when that read fails on the own store, the session is recorded as failed like any other
    store failure (the stream reset, not left open for the peer's negotiation timeout), and
    the daemons converge afterwards."""
    plain = sync_sessions.feed_positions
    failures = [1]
    full = "entry store read failed: every reader slot of the home is taken"

    def failing_first(*args: Any, **kwargs: Any) -> Any:
        # only the initiator's read (the responder reads the positions too)
        if failures[0] > 0 and sys._getframe(1).f_code.co_name == "_session":
            failures[0] -= 1
            raise StoreError(full)
        return plain(*args, **kwargs)

    monkeypatch.setattr(sync_sessions, "feed_positions", failing_first)

    async def sync_again_after_the_failure() -> None:
        while failures[0]:
            await trio.sleep(0.01)
        for node in cluster.nodes:
            assert node.daemon is not None
            node.daemon.wake_peers()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sync_again_after_the_failure)
        await two_writers_converge(cluster)
    assert failures == [0]
    logged = [
        r.getMessage() for r in caplog.records if "this node's store failed" in r.getMessage()
    ]
    assert len(logged) == 1 and full in logged[0] and "(initiator)" in logged[0]
