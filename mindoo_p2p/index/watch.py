"""Live views: ``async for change in watch_view(node, reader)``.

Each change says which rows were added, removed or changed and which category totals changed
(``path`` [] is the grand total), since the previous one. It wakes on the node's entry
listener (a local write, a sync or gossip arrival in this process: the listener may be called
from any thread, and only schedules a wake-up on the trio loop); on the store's change counter
moving (`EntryStore.last_arrival`, one short LMDB read, looked at every ``check_seconds``:
`ARRIVAL_CHECK_SECONDS` by default), so a write by another process that has the home open (a
script, the CLI, the daemon) shows within about 100 ms, with no polling of the view itself;
and every ``poll_seconds`` when given (a full re-reading: what moves no counter, such as a key
imported by another process). Wake-ups coalesce: a burst of arrivals gives one change. The
view is read again in full on each wake-up (at most ``max_rows`` rows are compared), which is
fine for the views people watch; the index does the work.

A process that serialises its node (the daemon: `NodeAccess`) makes the watch with
`watch_view_through`: every reading of the view then runs through its ``run`` function (a
worker thread holding the node), and the listener is added before the first reading, so a
change that lands in between is reported, not lost.
"""

from __future__ import annotations

import contextlib
import json
import math
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import trio

from ..entry import Entry
from .views import ARRIVAL_CHECK_SECONDS, ViewReader

MAX_WATCH_ROWS = 10_000


class ListenedNode(Protocol):
    def add_listener(self, listener: Callable[[list[Entry], bool], None]) -> None: ...

    def remove_listener(self, listener: Callable[[list[Entry], bool], None]) -> None: ...


ArrivalCounter = Callable[[], int]
"""The store's change counter (`EntryStore.last_arrival`): moved by every commit of entries,
whichever process made it."""


def arrival_counter(node: object) -> ArrivalCounter | None:
    """The change counter of ``node``'s store (None for a node without one, e.g. a fake)."""
    counter = getattr(getattr(node, "store", None), "last_arrival", None)
    return counter if callable(counter) else None


@dataclass
class ViewChange:
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    totals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.totals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "totals": self.totals,
        }


Snapshot = tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]
ReadThrough = Callable[[Callable[[], Snapshot]], Awaitable[Snapshot]]
"""Runs one reading of a view where the node may be used (e.g. ``NodeAccess.run``)."""


def snapshot(reader: ViewReader, max_rows: int = MAX_WATCH_ROWS) -> Snapshot:
    """(rows by tenant/db/id, category totals by path) of the view now."""
    rows = {
        f"{r.tenant}/{r.database}/{r.document_id}": r.to_dict()
        for r in reader.rows(limit=max_rows).rows
    }
    groups, _coverage = reader.groups()
    levels = len(reader.definition.categories)
    by_path: dict[str, list[Any]] = {}
    for values, acc in groups:
        for depth in range(levels + 1):
            by_path.setdefault(json.dumps(list(values[:depth])), []).append(acc)
    totals = {
        path: {
            "path": json.loads(path),
            "count": sum(a.count for a in accs),
            "totals": reader.totals_of(accs),
        }
        for path, accs in by_path.items()
    }
    return rows, totals


def diff(before: Snapshot, after: Snapshot) -> ViewChange:
    rows_a, totals_a = before
    rows_b, totals_b = after
    change = ViewChange()
    change.added = [rows_b[k] for k in sorted(rows_b.keys() - rows_a.keys())]
    change.removed = [rows_a[k] for k in sorted(rows_a.keys() - rows_b.keys())]
    change.changed = [
        rows_b[k] for k in sorted(rows_a.keys() & rows_b.keys()) if rows_a[k] != rows_b[k]
    ]
    for path in sorted(totals_a.keys() | totals_b.keys()):
        old, new = totals_a.get(path), totals_b.get(path)
        if old != new:
            change.totals.append(new or {"path": json.loads(path), "count": 0, "totals": None})
    return change


class ViewWatch:
    """The changes of one view from the moment it was made: ``async for change in watch``.

    Made inside trio (it remembers the trio token). The first reading of the view is taken
    when the watch is made, so a change that lands right after is reported, whenever the
    iteration starts. Close it (``async with`` or `aclose`) to stop listening; a watch that is
    dropped unclosed stops listening once garbage-collected."""

    def __init__(
        self,
        node: ListenedNode,
        reader: ViewReader,
        *,
        poll_seconds: float | None = None,
        max_rows: int = MAX_WATCH_ROWS,
        read_through: ReadThrough | None = None,
        check_seconds: float | None = ARRIVAL_CHECK_SECONDS,
    ) -> None:
        if check_seconds is not None and not check_seconds > 0:
            raise ValueError("check_seconds must be positive (or None: no check)")
        self._node = node
        self._reader = reader
        self._poll = poll_seconds
        self._arrivals = arrival_counter(node) if check_seconds is not None else None
        self._check = check_seconds
        self._arrival_read = -1
        self._max_rows = max_rows
        self._read_through = read_through
        self._send, self._receive = trio.open_memory_channel[None](1)
        token = trio.lowlevel.current_trio_token()
        send = self._send
        me = weakref.ref(self)

        def wake() -> None:
            # a wake-up may be pending already (or the watch ended)
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                send.send_nowait(None)

        def on_entries(_entries: list[Entry], _local: bool) -> None:
            if me() is None:  # dropped without closing: stop listening
                node.remove_listener(on_entries)
                return
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(wake)

        self._listener = on_entries
        self._current: Snapshot | None = None
        if read_through is None:
            if self._arrivals is not None:
                self._arrival_read = self._arrivals()
            self._current = snapshot(reader, max_rows)
        node.add_listener(on_entries)
        self._closed = False

    async def _read(self) -> Snapshot:
        if self._arrivals is not None:
            # read before the view: a commit in between is in the view, and moves the
            # counter past this (one more reading, never a missed change)
            self._arrival_read = self._arrivals()
        read = partial(snapshot, self._reader, self._max_rows)
        return read() if self._read_through is None else await self._read_through(read)

    async def _wait(self) -> None:
        """Until the view may have changed: a wake-up from the listener, the store's change
        counter moved since the last reading, or ``poll_seconds`` passed."""
        deadline = None if self._poll is None else trio.current_time() + self._poll
        while True:
            timeout = math.inf
            if self._arrivals is not None and self._check is not None:
                timeout = self._check
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - trio.current_time()))
            with trio.move_on_after(timeout):
                await self._receive.receive()
                return
            if deadline is not None and trio.current_time() >= deadline:
                return
            if self._arrivals is not None and self._arrivals() != self._arrival_read:
                return

    def __aiter__(self) -> ViewWatch:
        return self

    async def __anext__(self) -> ViewChange:
        while not self._closed:
            await self._wait()
            latest = await self._read()
            if self._current is None:
                raise RuntimeError("a watch made with read_through starts by watch_view_through")
            change = diff(self._current, latest)
            self._current = latest
            if not change.empty:
                return change
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(ValueError):
                self._node.remove_listener(self._listener)
            self._send.close()

    async def __aenter__(self) -> ViewWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def watch_view(
    node: ListenedNode,
    reader: ViewReader,
    *,
    poll_seconds: float | None = None,
    max_rows: int = MAX_WATCH_ROWS,
    check_seconds: float | None = ARRIVAL_CHECK_SECONDS,
) -> ViewWatch:
    """A `ViewWatch`: yields a `ViewChange` whenever the view changes (never an empty one)."""
    return ViewWatch(
        node, reader, poll_seconds=poll_seconds, max_rows=max_rows, check_seconds=check_seconds
    )


async def watch_view_through(
    node: ListenedNode,
    reader: ViewReader,
    read_through: ReadThrough,
    *,
    poll_seconds: float | None = None,
    max_rows: int = MAX_WATCH_ROWS,
    check_seconds: float | None = ARRIVAL_CHECK_SECONDS,
) -> ViewWatch:
    """A `ViewWatch` whose readings of the view (the first one included) run through
    ``read_through``; it listens before the first reading. Call it inside trio."""
    watch = ViewWatch(
        node,
        reader,
        poll_seconds=poll_seconds,
        max_rows=max_rows,
        read_through=read_through,
        check_seconds=check_seconds,
    )
    try:
        watch._current = await watch._read()
    except BaseException:
        await watch.aclose()
        raise
    return watch
