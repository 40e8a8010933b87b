"""`StartupHeap`: the first call collects the garbage, then freezes what is left; later calls
do nothing (tests start many daemons in one process)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from mindoo_p2p.daemon import node_daemon as node_daemon_module
from mindoo_p2p.daemon.startup_heap import StartupHeap
from mindoo_p2p.node import Node
from tests.helpers import running_daemon


class _Node:
    """A tracked object that can take part in a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def restore_freeze() -> Iterator[None]:
    """Undo this test's freezes (the permanent generation is process-wide)."""
    before = gc.get_freeze_count()
    yield
    if before == 0:
        gc.unfreeze()


@pytest.mark.usefixtures("restore_freeze")
def test_first_call_collects_the_garbage_then_freezes_the_live_objects() -> None:
    live = _Node()
    cycle_a, cycle_b = _Node(), _Node()
    cycle_a.other, cycle_b.other = cycle_b, cycle_a
    garbage = weakref.ref(cycle_a)
    del cycle_a, cycle_b
    heap = StartupHeap()
    assert not heap.frozen
    assert heap.freeze_once()
    assert heap.frozen
    assert garbage() is None  # collected, not frozen
    assert gc.get_freeze_count() > 0
    assert live not in gc.get_objects()  # in the permanent generation, which no scan visits


@pytest.mark.usefixtures("restore_freeze")
def test_later_calls_do_nothing() -> None:
    heap = StartupHeap()
    assert heap.freeze_once()
    frozen = gc.get_freeze_count()
    later = [_Node() for _ in range(100)]
    assert not heap.freeze_once()
    assert gc.get_freeze_count() == frozen
    assert all(node in gc.get_objects() for node in later[:3])  # still collectable


@pytest.fixture
def fresh_startup_heap(monkeypatch: pytest.MonkeyPatch) -> Iterator[StartupHeap]:
    """A `StartupHeap` of this test's own in place of the process's (which an earlier test in
    this worker may have frozen already); its freeze is undone afterwards."""
    heap = StartupHeap()
    monkeypatch.setattr(node_daemon_module, "STARTUP_HEAP", heap)
    before = gc.get_freeze_count()
    yield heap
    if before == 0:
        gc.unfreeze()


async def test_a_daemon_process_freezes_its_heap_once_started_others_leave_it_alone(
    make_node: Callable[[str], Node], fresh_startup_heap: StartupHeap
) -> None:
    node = make_node("alice")
    async with running_daemon(node):  # an application's or a test's daemon: no freeze
        assert not fresh_startup_heap.frozen
    async with running_daemon(node, freeze_startup_heap=True):  # as `mindoo node run`
        assert fresh_startup_heap.frozen
        assert gc.get_freeze_count() > 0
