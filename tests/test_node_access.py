"""`NodeAccess` (one user of the Node at a time; long work in a worker thread; checkpoints
let waiting users in between batches) and `EntryEventQueue` (entries as events with their
origin, bounded, never blocking a writer on any thread; overflow becomes one `Resync`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import trio
import trio.testing

from mindoo_p2p.daemon import EntryEvent, EntryEventQueue, NodeAccess, Origin, Resync
from mindoo_p2p.node import Node

MakeNode = Callable[[str], Node]


class Occupancy:
    """Counts the threads inside the Node at once (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.order: list[str] = []

    def visit(self, name: str, seconds: float = 0.0) -> None:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.order.append(name)
        time.sleep(seconds)
        with self._lock:
            self.inside -= 1


async def test_long_work_runs_in_a_worker_thread_one_user_at_a_time(make_node: MakeNode) -> None:
    access = NodeAccess(make_node("n"))
    seen = Occupancy()
    loop_thread = threading.get_ident()
    threads: list[int] = []

    async def long_work(name: str) -> None:
        def work(node: Node) -> None:
            threads.append(threading.get_ident())
            seen.visit(name, 0.05)

        await access.run(work)

    async def short_work() -> None:
        async with access.hold():
            seen.visit("short")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(long_work, f"long{i}")
            nursery.start_soon(short_work)
    assert seen.most == 1
    assert len(seen.order) == 5
    assert loop_thread not in threads


async def test_results_and_errors_come_back_from_the_worker(make_node: MakeNode) -> None:
    node = make_node("n")
    access = NodeAccess(node)
    assert await access.run(lambda n: n.identity.name) == "n"
    with pytest.raises(ZeroDivisionError):
        await access.run(lambda n: 1 // 0)
    async with access.hold() as held:  # released after the error
        assert held is node


async def test_a_checkpoint_lets_waiting_users_in_between_batches(make_node: MakeNode) -> None:
    access = NodeAccess(make_node("n"))
    seen = Occupancy()
    batch_done = threading.Event()

    def import_in_batches(node: Node) -> None:
        for batch in range(3):
            seen.visit(f"batch{batch}", 0.02)
            if batch == 0:
                batch_done.set()
            access.checkpoint()

    async def status_like() -> None:
        await trio.to_thread.run_sync(batch_done.wait)
        async with access.hold():
            seen.visit("status")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(access.run, import_in_batches)
            nursery.start_soon(status_like)
    assert seen.most == 1
    assert seen.order.index("status") < seen.order.index("batch2")  # it did not wait for all


async def test_a_checkpoint_with_nobody_waiting_or_off_the_worker_does_nothing(
    make_node: MakeNode,
) -> None:
    access = NodeAccess(make_node("n"))
    access.checkpoint()  # on the loop: nothing
    await access.run(lambda node: access.checkpoint())
    assert access.waiting == 0


async def test_origin_is_the_holders_on_its_own_thread_only(make_node: MakeNode) -> None:
    access = NodeAccess(make_node("n"))
    assert access.origin_of_current_thread() is None
    assert await access.run(lambda n: access.origin_of_current_thread(), Origin.IMPORT) is (
        Origin.IMPORT
    )
    async with access.hold(Origin.GOSSIP):
        assert access.origin_of_current_thread() is Origin.GOSSIP
    inside = threading.Event()
    release = threading.Event()

    def hold_in_worker(node: Node) -> None:
        inside.set()
        release.wait(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(access.run, hold_in_worker, Origin.SYNC)
        await trio.to_thread.run_sync(inside.wait)
        # The loop writing while a worker holds the Node is not that worker's write.
        assert access.origin_of_current_thread() is None
        release.set()


async def test_a_session_use_names_its_peer_on_its_own_thread_only(make_node: MakeNode) -> None:
    """What a sync session's ingest stores is tagged with the session's peer (the daemon then
    does not offer it back to that peer); other uses name none."""
    access = NodeAccess(make_node("n"))
    assert access.peer_of_current_thread() is None
    assert await access.run(lambda n: access.peer_of_current_thread(), Origin.SYNC, peer="p") == "p"
    assert await access.run(lambda n: access.peer_of_current_thread(), Origin.IMPORT) is None
    async with access.hold(Origin.SYNC, peer="q"):
        assert access.peer_of_current_thread() == "q"
    assert access.peer_of_current_thread() is None


async def test_a_cancelled_caller_waits_for_its_worker_to_finish(make_node: MakeNode) -> None:
    access = NodeAccess(make_node("n"))
    finished = threading.Event()

    def slow(node: Node) -> None:
        time.sleep(0.2)
        finished.set()

    with trio.move_on_after(0.05):
        await access.run(slow)
    assert finished.is_set()  # never abandoned half way through a Node call
    async with access.hold():
        pass


async def test_entry_events_keep_their_order_and_origin(make_node: MakeNode) -> None:
    queue = EntryEventQueue(capacity=8)
    node = make_node("n")
    node.create_tenant("acme").create_db("notes").create_document({"a": 1})
    stored = tuple(node.store.iter_entries())
    events = [EntryEvent(stored, origin) for origin in (Origin.LOCAL, Origin.SYNC)]
    for event in events:
        queue.offer(event)
    queue.close()
    received = [item async for item in queue.events()]
    assert received == events
    assert received[0].local and not received[1].local


async def test_a_full_queue_never_blocks_and_reports_one_resync() -> None:
    queue = EntryEventQueue(capacity=2)
    events = [EntryEvent((), Origin.SYNC) for _ in range(10)]
    for event in events:
        queue.offer(event)  # returns at once even when full
    assert queue.dropped == 8
    queue.offer(EntryEvent((), Origin.LOCAL))
    queue.close()
    received = [item async for item in queue.events()]
    assert received == [Resync(9), events[0], events[1]]
    assert queue.dropped == 0


async def test_a_resync_comes_before_the_event_it_was_dropped_behind() -> None:
    queue = EntryEventQueue(capacity=1)
    first, second = EntryEvent((), Origin.SYNC), EntryEvent((), Origin.GOSSIP)
    queue.offer(first)
    queue.offer(EntryEvent((), Origin.IMPORT))  # dropped
    iterator = queue.events().__aiter__()
    assert await iterator.__anext__() == Resync(1)
    assert await iterator.__anext__() == first
    queue.offer(second)
    assert await iterator.__anext__() == second


async def test_events_offered_from_worker_threads_arrive_on_the_loop() -> None:
    queue = EntryEventQueue(capacity=64)
    offered = [EntryEvent((), Origin.IMPORT) for _ in range(20)]

    def writer() -> None:
        for event in offered:
            queue.offer(event)

    await trio.to_thread.run_sync(writer)
    queue.close()
    assert [item async for item in queue.events()] == offered


async def test_offers_after_close_are_ignored() -> None:
    queue = EntryEventQueue()
    queue.close()
    queue.offer(EntryEvent((), Origin.LOCAL))
    assert [item async for item in queue.events()] == []
    with pytest.raises(ValueError, match="capacity"):
        EntryEventQueue(capacity=0)
