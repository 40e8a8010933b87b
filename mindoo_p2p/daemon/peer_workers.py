"""One session worker per connected peer, and the connection watcher that starts them.

`PeerWorkers.watch` follows the host's connection events: a connected peer the peer table
admits gets a worker in the watcher's own nursery (a peer refused by the table is
disconnected); a disconnected peer's worker is told to stop. A worker waits to be woken
(`wake`, by the scheduler's wake loop or `mindoo sync`), then runs a session per shared tenant
(``sync_with_peer``); wake-ups while a session runs coalesce into one more. Beside it runs the
connection's keepalive (`net.keepalive`): a path that stopped answering is closed, so the
dialer redials it. On connect, the scheduler hears whether this side dialled (it leads).

Nothing here is spawned from a callback: workers are started by the watcher task alone. A
session that fails unexpectedly is recorded and logged (`containment`); the worker goes on.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ..net.host import PeerHost
from ..net.keepalive import Liveness, keep_alive
from .activity import Activity
from .containment import log_failure
from .peer_table import PeerTable
from .scheduler import SyncScheduler

logger = logging.getLogger(__name__)


def keepalive_state(
    previous: dict[str, Any] | None, liveness: Liveness, now_ms: int
) -> dict[str, Any]:
    """What a peer's status shows of its keepalive after a ping's outcome: the round trip,
    when it last answered (kept from ``previous`` while pings go unanswered), and how many
    pings since went unanswered."""
    answered = liveness.unanswered == 0
    return {
        "rtt_ms": None if liveness.rtt is None else round(liveness.rtt * 1000, 1),
        "last_answer_ms": now_ms if answered else (previous or {}).get("last_answer_ms"),
        "unanswered_pings": liveness.unanswered,
    }


class _Worker:
    """One connected peer's session worker: its wake-up event."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()


class PeerWorkers:
    """The connected peers' session workers; see the module docstring."""

    def __init__(
        self,
        host: PeerHost,
        peer_table: PeerTable,
        scheduler: SyncScheduler,
        activity: Activity,
        *,
        sync_with_peer: Callable[[str], Awaitable[object]],
        on_disconnected: Callable[[str], None],
        keepalive: tuple[float, float] | None,
    ) -> None:
        """``on_disconnected(peer_id)``: what else forgets the peer (its proofs, its gossip
        admission); ``keepalive``: (seconds between pings, seconds of silence after which the
        path is dead), or None."""
        self._host = host
        self._peer_table = peer_table
        self._scheduler = scheduler
        self._activity = activity
        self._sync_with_peer = sync_with_peer
        self._on_peer_gone = on_disconnected
        self._keepalive = keepalive
        self._workers: dict[str, _Worker] = {}

    def wake(self, peer_id: str) -> None:
        """Ask ``peer_id``'s worker to run a session (coalesced; nothing if it has none)."""
        worker = self._workers.get(peer_id)
        if worker is not None:
            worker.event.set()

    def wake_all(self, peer_ids: Iterable[str], except_peer: str | None = None) -> None:
        for peer_id in peer_ids:
            if peer_id != except_peer:
                self.wake(peer_id)

    def clear(self) -> None:
        self._workers.clear()

    async def watch(self) -> None:
        """Follow the host's connections until cancelled; the workers live in this task's
        nursery."""
        host = self._host
        async with trio.open_nursery() as workers:
            for peer_id in host.connected_peers():
                self._on_connected(peer_id, workers)
            async for event in host.connection_events:
                if event.connected:
                    if not self._peer_table.may_dial(event.peer_id):
                        await host.disconnect(event.peer_id)
                        continue
                    self._on_connected(event.peer_id, workers)
                else:
                    self._on_disconnected(event.peer_id)

    def _on_connected(self, peer_id: str, workers: trio.Nursery) -> None:
        if not self._peer_table.connected(peer_id):
            return
        self._peer_table.peer(peer_id).address = self._host.remote_address(peer_id)
        worker = self._workers[peer_id] = _Worker()
        workers.start_soon(self._peer_worker, peer_id, worker)
        # The side that dialled starts (it may prove first); the other waits to be proven to.
        self._scheduler.connected(peer_id, lead=self._host.dialled(peer_id))
        self._activity.peer(peer_id, connected=True)

    def _on_disconnected(self, peer_id: str) -> None:
        self._activity.peer(peer_id, connected=False)
        self._peer_table.disconnected(peer_id)
        self._on_peer_gone(peer_id)
        self._scheduler.disconnected(peer_id)
        worker = self._workers.pop(peer_id, None)
        if worker is not None:
            worker.event.set()  # lets it notice and stop

    async def _peer_worker(self, peer_id: str, worker: _Worker) -> None:
        """Sessions with a connected peer whenever woken, and the connection's keepalive."""
        host = self._host
        async with trio.open_nursery() as nursery:
            if self._keepalive is not None:
                interval, dead_after = self._keepalive
                nursery.start_soon(
                    functools.partial(
                        keep_alive,
                        Liveness(trio.current_time()),
                        functools.partial(host.ping, peer_id),
                        functools.partial(self._path_dead, peer_id),
                        interval=interval,
                        dead_after=dead_after,
                        on_change=functools.partial(self._liveness_changed, peer_id),
                    )
                )
            await self._run_sessions(peer_id, worker)
            nursery.cancel_scope.cancel()

    def _liveness_changed(self, peer_id: str, liveness: Liveness) -> None:
        state = self._peer_table.get(peer_id)
        if state is not None and state.connected:
            state.keepalive = keepalive_state(state.keepalive, liveness, int(time.time() * 1000))

    async def _path_dead(self, peer_id: str, reason: str) -> None:
        """The keepalive heard nothing from ``peer_id`` for too long: show it, close the
        connection (the dialer then redials it with a short backoff)."""
        logger.warning("peer %s: %s; closing the connection to redial", peer_id, reason)
        self._peer_table.path_dead(peer_id, reason)
        self._activity.peer(peer_id, connected=False, reason=reason)
        await self._host.disconnect(peer_id)

    async def _run_sessions(self, peer_id: str, worker: _Worker) -> None:
        while True:
            await worker.event.wait()
            worker.event = trio.Event()
            current = self._workers.get(peer_id) is worker
            state = self._peer_table.get(peer_id)
            connected = self._host.is_connected(peer_id)
            if not current or state is None or not state.connected or not connected:
                if current:
                    del self._workers[peer_id]
                    if state is not None:
                        state.connected = False
                        self._activity.peer(peer_id, connected=False)
                return
            try:
                await self._sync_with_peer(peer_id)
            except Exception as exc:  # contained: this peer's next wake tries again
                self._peer_table.failed(peer_id, f"sync failed: {type(exc).__name__}: {exc}")
                log_failure(logger, f"sync with {peer_id}", exc)


__all__ = ["PeerWorkers", "keepalive_state"]
