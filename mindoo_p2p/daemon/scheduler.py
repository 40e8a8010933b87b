"""When the daemon runs sync sessions with which peer: the wake rules, sans-I/O.

`SyncScheduler` is fed facts (a peer connected, a session was recorded, entries were stored
with their origin, gossip showed a gap) and answers two questions: which peers are due now
(`due`), and when the next one will be (`next_deadline`). It never sleeps and spawns nothing;
its clock is injected (``clock()``, seconds, trio's by default) and so is its randomness.
`run_wakes` is the trio edge: one task that sleeps until the next deadline (or a change) and
hands each due peer to ``wake(peer_id)`` (the daemon sets that peer worker's event; a worker
already running a session runs one more afterwards, so wakes coalesce per peer).

==========================  =====================================================================
fact                        wake
==========================  =====================================================================
connected, we lead          that peer at once (the side that dialled the connection leads: it
                            may prove first, see `sync.auth.ProofGate`)
connected, we follow        that peer after `CONNECT_FOLLOWER_DELAY`, unless a session with it
                            started meanwhile (it would only fetch the same entries twice)
entries stored, LOCAL,      every connected peer after `REPAIR_DELAY` (gossip carried them at
ELSEWHERE or GOSSIP         once; sessions repair what gossip missed on any hop)
entries stored, SYNC,       every connected peer after `FORWARD_DELAY` (store and forward: what
IMPORT, OTHER; `resync`     one peer sent is offered to the others), except the peer whose
                            session delivered them (``source``: it holds them already)
entries stored, no gossip   every connected peer at once
gap / wanted / `wake`       that peer at once (gossip showed missing parents, or announced an
                            entry we lack)
`wake_all`                  every connected peer at once (``mindoo sync``)
periodic                    one random connected peer every ``sync_interval_s`` ± 20 %
==========================  =====================================================================

The "every peer" deadline is coalesced: a burst of stored batches costs one round, at the
earliest deadline any of them asked for, leaving out only a peer that every one of them left
out. Without the exclusion a first sync took four sessions: each side stored what the session
delivered, woke the peer it came from, held the wake until the session ended, then both ran
one more session that found nothing.

One session per peer pair: while a session with a peer runs, in either direction
(`session_started` / `session_ended`, counted: a peer may serve one tenant while we sync
another), that peer is never due. A wake asked for it meanwhile is held and given once when the
last of its sessions ends. Without this a receiver was offered every entry twice: during a
clone the puller's "forward" wake (entries arrived by reconciliation) started a second session
with the very peer that was still pushing them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import trio

from .entry_events import Origin

REPAIR_DELAY = 0.5
"""Seconds after entries are written here or arrive by gossip before sessions with every peer
repair what gossip may have missed (coalesced: a burst of entries costs one round)."""
CONNECT_FOLLOWER_DELAY = 2.0
"""On a new connection the peer that dialled starts the first session at once; the other
waits this long (it would only fetch the same entries twice)."""
FORWARD_DELAY = 0.05
"""Seconds to gather entries that arrived by reconciliation before offering them on."""
PERIODIC_JITTER = 0.2
"""The periodic wake comes every ``sync_interval_s`` times 1 ± this."""

_REPAIRED_BY_SESSIONS = frozenset({Origin.LOCAL, Origin.ELSEWHERE, Origin.GOSSIP})


class SyncScheduler:
    """The wake rules of the module docstring, as a pure object with an injected clock."""

    def __init__(
        self,
        *,
        sync_interval_s: float,
        gossip: bool,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        if not sync_interval_s > 0:
            raise ValueError("sync_interval_s must be positive")
        self.sync_interval_s = sync_interval_s
        self.gossip = gossip
        self._clock = clock
        self._rng = rng or random.Random()
        self._connected: dict[str, float | None] = {}
        """Connected peers -> the deadline of their follower wake (None: none pending)."""
        self._due: dict[str, None] = {}
        """Peers to wake at once, in order (a dict as an ordered set)."""
        self._all_at: float | None = None
        self._all_except: frozenset[str] = frozenset()
        """Peers the pending "every peer" wake leaves out (the source of every batch)."""
        self._in_session: dict[str, int] = {}
        """Peers with sessions running (either direction) -> how many."""
        self._held: set[str] = set()
        """Peers woken while in session: due when their sessions end."""
        self._periodic_at = clock() + self._periodic_delay()
        self.on_change: Callable[[], None] | None = None
        """Called after every fact that may bring a deadline forward (`run_wakes` sets it)."""

    def _periodic_delay(self) -> float:
        return self.sync_interval_s * self._rng.uniform(1 - PERIODIC_JITTER, 1 + PERIODIC_JITTER)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- facts -------------------------------------------------------------------------------
    def connected(self, peer_id: str, *, lead: bool) -> None:
        """``peer_id`` connected; ``lead``: this side starts the first session."""
        if lead:
            self._connected[peer_id] = None
            self._due[peer_id] = None
        else:
            self._connected[peer_id] = self._clock() + CONNECT_FOLLOWER_DELAY
        self._changed()

    def disconnected(self, peer_id: str) -> None:
        self._connected.pop(peer_id, None)
        self._due.pop(peer_id, None)
        self._held.discard(peer_id)

    def session_started(self, peer_id: str) -> None:
        """A session with ``peer_id`` began (either side started it): no other starts until
        it ends, and the follower's connect wake is no longer needed."""
        self._in_session[peer_id] = self._in_session.get(peer_id, 0) + 1
        if peer_id in self._connected:
            self._connected[peer_id] = None
        if self._due.pop(peer_id, False) is None:
            self._held.add(peer_id)

    def session_ended(self, peer_id: str) -> None:
        """A session with ``peer_id`` ended, however it went."""
        left = self._in_session.get(peer_id, 0) - 1
        if left > 0:
            self._in_session[peer_id] = left
            return
        self._in_session.pop(peer_id, None)
        if peer_id in self._held:
            self._held.discard(peer_id)
            if peer_id in self._connected:
                self._due[peer_id] = None
                self._changed()

    def session_recorded(self, peer_id: str) -> None:
        """A session with ``peer_id`` ended well (either side started it)."""
        if peer_id in self._connected:
            self._connected[peer_id] = None

    def entries_stored(self, origin: Origin, *, source: str | None = None) -> None:
        """Entries were stored; ``source``: the peer whose sync session delivered them."""
        if not self.gossip:
            delay = 0.0
        elif origin in _REPAIRED_BY_SESSIONS:
            delay = REPAIR_DELAY
        else:
            delay = FORWARD_DELAY
        self._wake_all_after(delay, frozenset({source}) if source is not None else frozenset())

    def resync(self) -> None:
        """Something changed and its origin is unknown (events were dropped)."""
        self._wake_all_after(FORWARD_DELAY if self.gossip else 0.0)

    def wake(self, peer_id: str) -> None:
        """Wake ``peer_id`` at once, if it is connected."""
        if peer_id in self._connected:
            self._due[peer_id] = None
            self._changed()

    def wake_all(self) -> int:
        """Wake every connected peer at once; returns how many."""
        for peer_id in self._connected:
            self._due[peer_id] = None
        self._changed()
        return len(self._connected)

    def _wake_all_after(self, delay: float, leave_out: frozenset[str] = frozenset()) -> None:
        deadline = self._clock() + delay
        if self._all_at is None:
            self._all_except = leave_out
        else:
            self._all_except &= leave_out
        if self._all_at is None or deadline < self._all_at:
            self._all_at = deadline
            self._changed()

    # -- questions ---------------------------------------------------------------------------
    def due(self) -> list[str]:
        """The peers to wake now (each once), and the deadlines they used up."""
        now = self._clock()
        if self._all_at is not None and self._all_at <= now:
            self._all_at = None
            for peer_id in self._connected:
                if peer_id not in self._all_except:
                    self._due[peer_id] = None
            self._all_except = frozenset()
        for peer_id, at in self._connected.items():
            if at is not None and at <= now:
                self._connected[peer_id] = None
                self._due[peer_id] = None
        if self._periodic_at <= now:
            self._periodic_at = now + self._periodic_delay()
            if self._connected:
                self._due[self._rng.choice(list(self._connected))] = None
        due, self._due = list(self._due), {}
        busy = [peer_id for peer_id in due if peer_id in self._in_session]
        self._held.update(busy)
        return [peer_id for peer_id in due if peer_id not in self._in_session]

    def next_deadline(self) -> float:
        """When `due` will next have something (now if it has already; never inf: the
        periodic wake is always scheduled)."""
        if self._due:
            return -math.inf
        deadlines = [self._periodic_at]
        if self._all_at is not None:
            deadlines.append(self._all_at)
        deadlines.extend(at for at in self._connected.values() if at is not None)
        return min(deadlines)


async def run_wakes(
    scheduler: SyncScheduler,
    wake: Callable[[str], None],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Forever (until cancelled): hand every due peer to ``wake``, then sleep until the next
    deadline or until the scheduler learns a new fact."""
    changed = trio.Event()

    def note_change() -> None:
        changed.set()

    scheduler.on_change = note_change
    task_status.started()
    try:
        while True:
            for peer_id in scheduler.due():
                wake(peer_id)
            with trio.move_on_at(scheduler.next_deadline()):
                await changed.wait()
            changed = trio.Event()
    finally:
        scheduler.on_change = None
