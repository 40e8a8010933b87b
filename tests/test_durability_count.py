"""The durability count off the status path (start-10e6): a daemon answers ``status`` while its
start-up count runs, shows that count's progress, and a start with nothing new reads nothing."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
from helpers import FAST, LOOPBACK

from cli.render import render_status
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
from mindoo_p2p.errors import StoreError
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
        assert status["busy"] == [] and status["durability_error"] is None
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


NO_READER_SLOT = "entry store read failed: every reader slot of the home is taken"


class FailingFirst(CountingRead):
    """`durability` that first raises each of ``failures`` in turn (one per call), noting the
    counter's `error` as each call starts (set ``counter`` first)."""

    def __init__(self, failures: list[Exception]) -> None:
        super().__init__()
        self.failures = failures
        self.counter: DurabilityCounter | None = None
        self.errors_seen: list[str | None] = []

    def __call__(
        self,
        node: Node,
        ledger: DurabilityLedger,
        cache: DurabilityCache,
        progress: Callable[[int], None] | None,
    ) -> list[DatabaseDurability]:
        assert self.counter is not None
        self.errors_seen.append(self.counter.error)
        if self.failures:
            raise self.failures.pop(0)
        return super().__call__(node, ledger, cache, progress)


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await trio.sleep(0.005)


async def test_a_failing_background_count_is_shown_and_retried_not_fatal(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    """Reproduces the review finding: a StoreError (no free reader slot: the slots are shared
    with the CLI and scripts) or any unexpected error in the background count escaped
    `DurabilityCounter.run`, which runs in the daemon's main nursery, and stopped the daemon.
    Now `run` keeps going: the error shows (`error`), ``busy`` is gone, and it counts again."""
    node = node_with_notes(make_node, "laptop", 3)
    ledger = DurabilityLedger()
    progress = WorkProgress()
    count = FailingFirst([StoreError(NO_READER_SLOT), RuntimeError("a bug")])
    counter = count.counter = DurabilityCounter(node, ledger, progress, count=count)
    caplog.set_level(logging.WARNING, logger="mindoo_p2p.daemon.durability_counter")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: counter.run(poll_s=0.01, max_backoff_s=0.02))
            # The third count succeeded (error cleared) and has finished (busy gone): the
            # thread clears the error before it saves and ends the task, so both are awaited
            # (a stuck busy fails the test at fail_after).
            await until(
                lambda: (
                    len(count.errors_seen) >= 3
                    and counter.error is None
                    and not progress.running(TASK)
                )
            )
            assert count.errors_seen[:3] == [
                None,
                f"StoreError: {NO_READER_SLOT}",
                "RuntimeError: a bug",
            ]
            assert counter.rows() == durability(node, ledger)
            nursery.cancel_scope.cancel()
    levels = [(r.levelno, r.exc_info is not None) for r in caplog.records]
    assert levels == [(logging.WARNING, False), (logging.ERROR, True)]  # the bug: traceback


def test_a_failing_count_on_the_status_path_keeps_the_last_rows(make_node: MakeNode) -> None:
    """A StoreError while a status counts a small arrival itself answers the last rows and
    leaves the count to the background, instead of failing the whole status."""
    node = node_with_notes(make_node, "laptop", 2)
    ledger = DurabilityLedger()
    count = FailingFirst([])
    counter = count.counter = DurabilityCounter(node, ledger, WorkProgress(), count=count)
    counter.count_in_background()
    before = counter.rows()
    node.tenant("acme").open_db("notes").create_document({"n": 2})
    count.failures.append(StoreError(NO_READER_SLOT))
    assert counter.rows() == before
    assert counter.error == f"StoreError: {NO_READER_SLOT}"
    counter.count_in_background()  # what `run` does next, as the status asked
    assert counter.error is None and counter.rows() == durability(node, ledger)


class ThreadsThatBegin(WorkProgress):
    """`WorkProgress` remembering which thread began each task."""

    def __init__(self) -> None:
        super().__init__()
        self.began_in: list[str] = []

    def begin(self, task: str, doing: str, total: int) -> None:
        self.began_in.append(threading.current_thread().name)
        super().begin(task, doing, total)


async def test_the_start_up_count_shows_as_busy_before_its_thread_starts(
    make_node: MakeNode,
) -> None:
    """The window the review noticed: right after start, a status showed neither durability
    rows nor a ``busy`` entry until the worker thread began the count."""
    node = node_with_notes(make_node, "laptop", 1)
    progress = ThreadsThatBegin()
    counter = DurabilityCounter(node, DurabilityLedger(), progress)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.run)
            await until(lambda: bool(progress.began_in))
            assert progress.began_in[0] == threading.current_thread().name  # the loop's
            nursery.cancel_scope.cancel()


def test_mindoo_status_says_when_the_durability_count_failed() -> None:
    """The failure `durability_error` reports reaches the plain `mindoo status` output too,
    not only `--json`: rows from an older count are not passed off as current."""
    status: dict[str, Any] = {
        "home": "/h",
        "identity": {"name": "laptop", "fingerprint": "ab12"},
        "entries": 0,
        "tenants": [],
        "durability": [],
        "busy": [],
        "durability_error": "every reader slot of the home is taken",
        "peer_id": "12D3KooW",
        "daemon_running": False,
    }
    text = render_status(status)
    assert "durability: the last count failed (every reader slot of the home is taken)" in text
    del status["durability_error"]
    assert "durability:" not in render_status(status)
