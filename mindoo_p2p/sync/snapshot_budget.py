"""The process-wide budget of extra reconciliation snapshots (read transactions) that sync
sessions may hold beside their first.

Every open LMDB read transaction takes one reader slot of the home, and a home has
`~mindoo_p2p.store._environment.MAX_READERS` of them, shared by every process on it (daemon
sessions, status, the CLI, scripts); when they are all taken every read fails with
``ReadersFullError``. An initiator of protocol version 2 reconciles up to ``RECON_SCOPES``
scopes at once, each holding a snapshot until it settles, for as long as the peer takes to
answer. So that peers (slow, stalling or merely many) cannot exhaust the slots:

- a session may always hold ONE snapshot (its current database's, as before version 2);
- each further scope enters the reconciliation window only if it takes a slot of this budget
  (a non-blocking try), and gives it back when its snapshot closes (settled, failed,
  cancelled or abandoned). A scope that gets no slot reconciles later, when it becomes the
  current database (one scope at a time, as in version 1).

Sessions therefore hold at most ``sessions + extra`` snapshots in all. The object is pure
(no I/O, no clock) and thread-safe: sessions of every tenant share one.
"""

from __future__ import annotations

import threading

DEFAULT_EXTRA_SNAPSHOTS = 64
"""Extra snapshots all sessions of a process may hold together (a quarter of the home's
reader slots): enough for 8 sessions to reconcile 9 scopes each in one flight."""


class SnapshotBudget:
    """At most ``extra`` slots taken at once; :meth:`try_take` never waits."""

    __slots__ = ("_extra", "_lock", "_taken")

    def __init__(self, extra: int = DEFAULT_EXTRA_SNAPSHOTS) -> None:
        if type(extra) is not int or extra < 0:
            raise ValueError(f"a snapshot budget holds a whole number >= 0 of slots, not {extra!r}")
        self._extra = extra
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def extra(self) -> int:
        """The slots of the budget."""
        return self._extra

    @property
    def taken(self) -> int:
        """The slots taken now."""
        with self._lock:
            return self._taken

    @property
    def available(self) -> int:
        """The slots free now."""
        with self._lock:
            return self._extra - self._taken

    def try_take(self) -> bool:
        """Take a slot if one is free; False (and nothing taken) otherwise."""
        with self._lock:
            if self._taken >= self._extra:
                return False
            self._taken += 1
            return True

    def give_back(self) -> None:
        """Return a slot :meth:`try_take` gave; RuntimeError if none is taken (a slot given
        back twice would let sessions exceed the bound)."""
        with self._lock:
            if self._taken == 0:
                raise RuntimeError("a snapshot slot was given back that was never taken")
            self._taken -= 1

    def __repr__(self) -> str:
        return f"SnapshotBudget(extra={self._extra}, taken={self.taken})"


SHARED_SNAPSHOT_BUDGET = SnapshotBudget()
"""The budget every session of this process uses unless given another."""
