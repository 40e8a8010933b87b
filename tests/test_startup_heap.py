"""`StartupHeap`: the first call collects the garbage, then freezes what is left; later calls
do nothing (tests start many daemons in one process)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from mindoo_p2p.daemon.startup_heap import STARTUP_HEAP, StartupHeap
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


async def test_a_started_daemon_has_frozen_the_process_heap(
    make_node: Callable[[str], Node],
) -> None:
    node = make_node("alice")
    async with running_daemon(node):
        assert STARTUP_HEAP.frozen
        assert gc.get_freeze_count() > 0
