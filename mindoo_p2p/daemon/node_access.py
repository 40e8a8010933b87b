"""Serialised access to the daemon's `Node`, with long work off the trio thread.

A `Node` is meant for one thread at a time. The daemon uses it from the trio thread (sessions,
gossip, status) and from worker threads (large ingests, forwarded CLI commands: fsck, import,
export, key shred), so every use goes through one `NodeAccess`:

- `run` (long work): waits for the Node, then runs the function in a worker thread
  (``trio.to_thread.run_sync``) while the event loop keeps serving peers and the control
  socket. Cancelling the waiting caller leaves the thread to finish (a Node call is never cut
  in half); the caller then sees the cancellation.
- `hold` (short work on the loop): waits for the Node and holds it for a block of synchronous
  calls on the trio thread.
- `checkpoint` (from the worker thread that holds the Node): lets whoever is waiting have the
  Node, then takes it back. Long commands call it between batches (the daemon's entry listener
  does, after each stored batch), so a 50,000-entry import keeps peers' sessions and ``status``
  answered. It never lets anybody in between a Node call's steps: it is only called after a
  complete ingest, when the Node's state is consistent.

Holders are served in arrival order (a `trio.CapacityLimiter` of one borrowed on behalf of a
token per holder, which is FIFO). While a holder runs, `origin` says which daemon activity it is
(`Origin`), so the entry listener can tell where stored entries came from without guessing.

Reads of the entry store alone (LMDB read transactions: `status` counts, reconciliation ranges,
``get_raw``) need no access: LMDB readers see a consistent snapshot beside a writer in another
thread.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ..node import Node
from .entry_events import Origin

T = TypeVar("T")


class _Holder:
    """The borrower token of one use of the Node."""

    __slots__ = ("origin", "peer")

    def __init__(self, origin: Origin, peer: str | None) -> None:
        self.origin = origin
        self.peer = peer


class NodeAccess:
    """The one door to the daemon's Node; see the module docstring. Create it on the trio
    thread."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._limiter = trio.CapacityLimiter(1)
        self._holder: _Holder | None = None
        self._worker: int | None = None
        """The thread id of the worker that holds the Node, if one does."""
        self._token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()

    @property
    def node(self) -> Node:
        return self._node

    def origin_of_current_thread(self) -> Origin | None:
        """The origin of the use the calling thread makes of the Node: the holder's when the
        caller is the worker thread that holds it, or the trio thread while a `hold` block
        holds it; None otherwise (a write that bypassed the access)."""
        holder = self._holder_of_current_thread()
        return None if holder is None else holder.origin

    def peer_of_current_thread(self) -> str | None:
        """The peer the calling thread's use of the Node serves (a sync session's ingest), in
        the same sense as `origin_of_current_thread`; None when it serves none."""
        holder = self._holder_of_current_thread()
        return None if holder is None else holder.peer

    def _holder_of_current_thread(self) -> _Holder | None:
        holder = self._holder
        if holder is None:
            return None
        if self.held_by_current_thread():
            return holder
        if self._worker is None and threading.get_ident() == self._trio_thread:
            return holder
        return None

    @property
    def in_use(self) -> bool:
        """Whether a use holds the Node now (read it on the trio thread)."""
        return self._holder is not None

    @property
    def waiting(self) -> int:
        """How many uses are waiting for the Node."""
        return self._limiter.statistics().tasks_waiting

    def held_by_current_thread(self) -> bool:
        """Whether the calling worker thread holds the Node (false on the trio thread)."""
        return self._worker == threading.get_ident()

    async def _acquire(self, holder: _Holder) -> None:
        await self._limiter.acquire_on_behalf_of(holder)
        self._holder = holder

    def _release(self, holder: _Holder) -> None:
        self._holder = None
        self._limiter.release_on_behalf_of(holder)

    @asynccontextmanager
    async def hold(
        self, origin: Origin = Origin.OTHER, *, peer: str | None = None
    ) -> AsyncIterator[Node]:
        """Hold the Node on the trio thread for a block of short synchronous calls (``peer``:
        the peer whose session this use serves)."""
        holder = _Holder(origin, peer)
        await self._acquire(holder)
        try:
            yield self._node
        finally:
            self._release(holder)

    async def run(
        self, fn: Callable[[Node], T], origin: Origin = Origin.OTHER, *, peer: str | None = None
    ) -> T:
        """Run ``fn(node)`` in a worker thread once the Node is free; its result or error."""
        holder = _Holder(origin, peer)
        await self._acquire(holder)
        try:

            def in_worker() -> T:
                self._worker = threading.get_ident()
                try:
                    return fn(self._node)
                finally:
                    self._worker = None

            return await trio.to_thread.run_sync(in_worker)
        finally:
            self._release(holder)

    def checkpoint(self) -> None:
        """From the worker thread that holds the Node: let waiting uses go first, then take
        the Node back. Does nothing elsewhere or when nobody waits."""
        if not self.held_by_current_thread() or not self.waiting:
            return
        holder = self._holder
        assert holder is not None
        worker = self._worker
        self._worker = None
        try:
            trio.from_thread.run(self._yield_to_waiters, holder, trio_token=self._token)
        except trio.RunFinishedError:  # pragma: no cover - the loop ended under a worker
            pass
        finally:
            self._worker = worker

    async def _yield_to_waiters(self, holder: _Holder) -> None:
        self._release(holder)
        with trio.CancelScope(shield=True):  # the worker goes on with the Node: it must own it
            await self._acquire(holder)
