"""The durability count off the status path (start-10e6): a daemon answers ``status`` while its
start-up count runs, shows that count's progress, and a start with nothing new reads nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import trio
from helpers import FAST, LOOPBACK

from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.daemon.durability_counter import TASK, DurabilityCounter
from mindoo_p2p.daemon.work_progress import WorkProgress
from mindoo_p2p.durability import (
    DatabaseDurability,
    DurabilityCache,
    DurabilityLedger,
    durability,
)
from mindoo_p2p.durability_count import COUNT_FILE, load_count, save_count
from mindoo_p2p.node import Node

MakeNode = Callable[[str], Node]


def node_with_notes(make_node: MakeNode, name: str, documents: int) -> Node:
    node = make_node(name)
    notes = node.create_tenant("acme").create_db("notes")
    for n in range(documents):
        notes.create_document({"n": n})
    return node


class CountingRead:
    """`durability`, counting the feed items it reads."""

    def __init__(self) -> None:
        self.read = 0

    def __call__(
        self,
        node: Node,
        ledger: DurabilityLedger,
        cache: DurabilityCache,
        progress: Callable[[int], None] | None,
    ) -> list[DatabaseDurability]:
        def heard(items: int) -> None:
            self.read += items
            if progress is not None:
                progress(items)

        return durability(node, ledger, cache, heard)


async def test_status_answers_while_the_start_up_count_runs(make_node: MakeNode) -> None:
    node = node_with_notes(make_node, "laptop", 3)
    release = threading.Event()

    def slow_count(
        node: Node,
        ledger: DurabilityLedger,
        cache: DurabilityCache,
        progress: Callable[[int], None] | None,
    ) -> list[DatabaseDurability]:
        if progress is None:  # a status counting what arrived since, itself
            return durability(node, ledger, cache)
        progress(1)  # one step done, then a long one (a feed of 10^6 entries, say)
        if not release.wait(timeout=10):
            raise AssertionError("the test never released the count")
        return durability(node, ledger, cache, progress)

    daemon = NodeDaemon(node, LOOPBACK, host_config=FAST, control=False)
    daemon.durability_count = DurabilityCounter(
        node, daemon.held.ledger, daemon.work, count=slow_count
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        with trio.fail_after(5):
            while not any(r["done"] for r in daemon.work.rows()):
                await trio.sleep(0.01)
            status = await daemon.status_off_loop()  # answers while the count is stuck
        ((busy),) = status["busy"]
        assert (busy["task"], busy["done"]) == (TASK, 1) and busy["total"] >= 4
        assert status["durability"] == [] and status["entries"] == node.store.count()
        release.set()
        with trio.fail_after(5):
            while daemon.work.running(TASK):
                await trio.sleep(0.01)
        status = await daemon.status_off_loop()
        assert status["busy"] == []
        assert {r["database"]: r["only_here"] for r in status["durability"]}["notes"] == 3
        nursery.cancel_scope.cancel()
    assert (node.home / COUNT_FILE).exists()


def test_a_start_with_nothing_new_reads_nothing(make_node: MakeNode) -> None:
    node = node_with_notes(make_node, "laptop", 5)
    ledger = DurabilityLedger()
    first = CountingRead()
    DurabilityCounter(node, ledger, WorkProgress(), count=first).count_in_background()
    assert first.read >= 5  # the first start reads the feeds, and saves the count
    again = CountingRead()
    counter = DurabilityCounter(node, ledger, WorkProgress(), count=again)
    counter.count_in_background()
    assert again.read == 0
    assert counter.rows() == durability(node, ledger)  # the same as counting from scratch
    node.tenant("acme").open_db("notes").create_document({"n": 5})
    counter.count_in_background()
    assert again.read == 1  # only what is new


def test_a_large_arrival_is_counted_in_the_background(make_node: MakeNode) -> None:
    node = node_with_notes(make_node, "laptop", 2)
    ledger = DurabilityLedger()
    progress = WorkProgress()
    counter = DurabilityCounter(node, ledger, progress, inline_backlog=2)
    assert counter.rows() == []  # not loaded yet: nothing counted on the status path
    counter.count_in_background()
    before = counter.rows()
    notes = node.tenant("acme").open_db("notes")
    for n in range(3):
        notes.create_document({"n": n})
    assert counter.rows() == before  # 3 new: more than the status may count itself
    ((busy),) = progress.rows()
    assert (busy["task"], busy["done"], busy["total"]) == (TASK, 0, 3)
    counter.count_in_background()
    assert progress.rows() == []
    assert counter.rows() == durability(node, ledger)


def test_a_saved_count_is_used_only_for_the_store_it_was_written_for(
    make_node: MakeNode,
) -> None:
    laptop = node_with_notes(make_node, "laptop", 3)
    ledger = DurabilityLedger()
    cache: DurabilityCache = {}
    durability(laptop, ledger, cache)
    save_count(laptop.home, laptop.store, cache)
    assert ((laptop.home / COUNT_FILE).stat().st_mode & 0o777) == 0o600
    assert load_count(laptop.home, laptop.store) == cache
    # Another store under the same file (a store replaced or restored): no row matches.
    other = node_with_notes(make_node, "other", 3)
    (other.home / COUNT_FILE).write_bytes((laptop.home / COUNT_FILE).read_bytes())
    assert load_count(other.home, other.store) == {}
    # Damaged, of another version, or with invalid rows: counted again, nothing raised.
    path = laptop.home / COUNT_FILE
    saved = json.loads(path.read_bytes())
    path.write_bytes(b"{not json")
    assert load_count(laptop.home, laptop.store) == {}
    path.write_text(json.dumps({**saved, "version": 2}))
    assert load_count(laptop.home, laptop.store) == {}
    bad = [{**row, "count": row["through"] + 1} for row in saved["rows"]]
    path.write_text(json.dumps({**saved, "rows": [*bad, {"tenant": 1}, "x"]}))
    assert load_count(laptop.home, laptop.store) == {}
