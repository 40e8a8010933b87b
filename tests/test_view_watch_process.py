"""A view watch notices another process's writes by default (issue 11, "live"): the store's
change counter is looked at on a short interval, and the view is read again only when it
moved."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import PASSWORD

from mindoo_p2p.entry import Entry
from mindoo_p2p.index import watch as watch_module
from mindoo_p2p.index.watch import ARRIVAL_CHECK_SECONDS, ViewWatch
from mindoo_p2p.node import Node

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
VIEW = {
    "sources": [{"tenant": "crm", "db": "deals"}],
    "categories": [{"name": "year", "expr": {"$year": "$date"}}],
    "columns": ["title"],
    "totals": [{"op": "count"}],
}
WRITER = textwrap.dedent(
    """
    import sys
    from mindoo_p2p.node import Node

    with Node.open(sys.argv[1], sys.argv[2]) as other:
        other.tenant("crm").open_db("deals").create_document(
            {"date": "2027-05-01", "title": "from elsewhere"}
        )
    """
)


def deals_view(node: Node) -> Any:
    crm = node.create_tenant("crm")
    crm.create_db("deals").create_document({"date": "2026-01-02", "title": "here"})
    node.views.define(crm, "by-year", VIEW, local=True)
    return node.views.reader(crm, "by-year")


async def test_a_watch_sees_another_processs_write_without_polling(
    make_node: MakeNode, tmp_path: Path
) -> None:
    node = make_node("n")
    view = deals_view(node)
    with trio.fail_after(45):
        async with view.watch() as watching:  # no poll_seconds
            await trio.run_process([sys.executable, "-c", WRITER, str(tmp_path / "n"), PASSWORD])
            change = await watching.__anext__()
    assert [r["values"]["title"] for r in change.added] == ["from elsewhere"]
    assert {tuple(t["path"]) for t in change.totals} == {(), (2027,)}


async def test_without_the_counter_check_only_this_processs_writes_wake_the_watch(
    make_node: MakeNode, tmp_path: Path
) -> None:
    node = make_node("n")
    view = deals_view(node)
    async with view.watch(check_seconds=None) as watching:
        await trio.run_process([sys.executable, "-c", WRITER, str(tmp_path / "n"), PASSWORD])
        with trio.move_on_after(1) as waited:
            await watching.__anext__()
        assert waited.cancelled_caught  # the other process's write went unnoticed
        node.tenant("crm").open_db("deals").create_document({"date": "2025-01-01", "title": "x"})
        with trio.fail_after(20):
            change = await watching.__anext__()
    # this process's write woke it, and the reading shows both
    assert sorted(r["values"]["title"] for r in change.added) == ["from elsewhere", "x"]


class CountedStore:
    def __init__(self) -> None:
        self.arrival = 0
        self.reads = 0

    def last_arrival(self) -> int:
        self.reads += 1
        return self.arrival


class FakeNode:
    def __init__(self) -> None:
        self.store = CountedStore()

    def add_listener(self, listener: Callable[[list[Entry], bool], None]) -> None:
        pass

    def remove_listener(self, listener: Callable[[list[Entry], bool], None]) -> None:
        pass


async def test_the_view_is_read_again_only_when_the_counter_moves(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    readings: list[int] = []
    node = FakeNode()

    def fake_snapshot(_reader: Any, _max_rows: int) -> Any:
        readings.append(node.store.arrival)
        return ({str(node.store.arrival): {"n": node.store.arrival}}, {})

    monkeypatch.setattr(watch_module, "snapshot", fake_snapshot)
    watching = ViewWatch(node, reader=None)  # type: ignore[arg-type]
    async with watching:
        with trio.move_on_after(10):
            await watching.__anext__()
        # ten quiet seconds: the counter looked at each interval, the view read once (first)
        assert readings == [0]
        assert node.store.reads == pytest.approx(10 / ARRIVAL_CHECK_SECONDS, abs=3)
        node.store.arrival = 5  # another process committed
        started = trio.current_time()
        change = await watching.__anext__()
        assert trio.current_time() - started <= ARRIVAL_CHECK_SECONDS + 1e-9  # virtual time
    assert readings == [0, 5]
    assert change.added == [{"n": 5}] and change.removed == [{"n": 0}]
