"""The status's durability rows (`mindoo_p2p.durability`), never counted on the status path
when that is long.

Counting the own entries no peer is known to hold reads a database's feed above the confirmed
position. Done by the first ``status`` after a start, that was the whole feed: at 10^6 entries
the daemon answered its first ``status`` after 40 s. Now:

* at start, `run` loads the count saved by the previous run (`mindoo_p2p.durability_count`),
  counts what arrived since in a worker thread, reporting its progress to `WorkProgress`
  (``busy`` in the status), and saves the count: a daemon idle since its last run reads
  nothing, and one that was killed resumes from its last save;
* a status (`rows`, any thread, never waiting) counts what arrived since the last count itself
  when that is at most `INLINE_BACKLOG` feed items; when more arrived (a large catch-up), or a
  count runs, it returns the last rows counted and leaves the rest to the background count,
  which `run` starts within `POLL_S`, with its progress in the status;
* the count is saved after every background count, after `SAVE_EVERY` items counted inline,
  and when the daemon stops.

One count at a time (a lock held while counting; the status only tries it).

A count that fails (a `StoreError` such as "every reader slot of the home is taken": the slots
are shared with the CLI and scripts; or, logged with its traceback, anything unexpected) never
stops the daemon: the last rows counted stay, the ``busy`` entry goes, `error` says what failed
(``durability_error`` in the status) and `run` counts again after a backoff that doubles from
`POLL_S` up to `MAX_BACKOFF_S`; the first count that succeeds clears `error`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress

import trio

from ..durability import (
    DatabaseDurability,
    DurabilityCache,
    DurabilityLedger,
    durability,
    durability_backlog,
)
from ..durability_count import load_count, save_count
from ..errors import MindooError
from ..node import Node
from .work_progress import WorkProgress

logger = logging.getLogger(__name__)

TASK = "durability"
DOING = "counting own entries"
INLINE_BACKLOG = 5_000
"""Feed items a status may count itself; more are left to the background count."""
SAVE_EVERY = 100_000
"""Feed items counted inline after which the count is saved."""
POLL_S = 0.5
"""Seconds between two looks at whether a status left a large count to the background."""
MAX_BACKOFF_S = 60.0
"""The longest wait before counting again after failed counts."""

CountFn = Callable[
    [Node, DurabilityLedger, DurabilityCache, Callable[[int], None] | None],
    list[DatabaseDurability],
]
"""`durability` (a test injects a slow one)."""


class DurabilityCounter:
    """The durability rows for ``status``; see the module docstring."""

    def __init__(
        self,
        node: Node,
        ledger: DurabilityLedger,
        progress: WorkProgress,
        *,
        count: CountFn = durability,
        inline_backlog: int = INLINE_BACKLOG,
    ) -> None:
        self._node = node
        self._ledger = ledger
        self._progress = progress
        self._count = count
        self._inline_backlog = inline_backlog
        self._lock = threading.Lock()
        self._cache: DurabilityCache | None = None
        """None until `run` loaded the saved count."""
        self._rows: list[DatabaseDurability] = []
        self._behind = False
        """A status found more than `INLINE_BACKLOG` to count."""
        self._unsaved = 0
        self._stopping = False
        self._error: str | None = None

    @property
    def error(self) -> str | None:
        """(Any thread.) Why the last count failed; None when it succeeded (or none ran)."""
        return self._error

    async def run(self, *, poll_s: float = POLL_S, max_backoff_s: float = MAX_BACKOFF_S) -> None:
        """Load and finish the count, then count in the background whenever a status asks
        (or, after a failed count, when its backoff is over); save the count when cancelled
        (the daemon stops)."""
        # Shown before the thread starts: a status in between sees the count coming.
        self._progress.begin(TASK, DOING, 0)
        try:
            backoff = poll_s
            ok = await self._in_thread()
            while True:
                await trio.sleep(poll_s if ok else backoff)
                backoff = poll_s if ok else min(backoff * 2, max_backoff_s)
                if self._behind or not ok:
                    ok = await self._in_thread()
        finally:
            self._stopping = True  # an abandoned count stops at its next page
            self.save(wait=False)

    async def _in_thread(self) -> bool:
        """Count in a worker thread; False when the count failed (`error` says why)."""
        with suppress(_Stopped):
            try:
                await trio.to_thread.run_sync(  # type: ignore[call-arg]  # mypy 2 vs trio
                    self.count_in_background, abandon_on_cancel=True
                )
            except MindooError as exc:
                logger.warning("durability count failed (retrying): %s", exc)
                self._failed(exc)
                return False
            except Exception as exc:  # contained: the daemon runs on without fresh rows
                logger.error("durability count failed unexpectedly (retrying)", exc_info=exc)
                self._failed(exc)
                return False
        return True

    def _failed(self, exc: Exception) -> None:
        self._error = _describe(exc)
        self._progress.finish(TASK)  # a status asking meanwhile may have begun it again

    def count_in_background(self) -> None:
        """(Worker thread.) Count everything not counted yet, with progress; save."""
        with self._lock:
            self._behind = False
            self._progress.begin(TASK, DOING, 0)
            try:
                node = self._node
                if self._cache is None:
                    self._cache = load_count(node.home, node.store)
                cache = self._cache
                total = durability_backlog(node, self._ledger, cache)
                self._progress.begin(TASK, DOING, total)
                self._rows = self._count(node, self._ledger, cache, self._advance)
                self._error = None
                if total or self._unsaved:
                    self._save_locked()
            finally:
                self._progress.finish(TASK)

    def rows(self) -> list[DatabaseDurability]:
        """(Any thread; never waits.) The rows now, or the last ones counted while a count
        runs or when much arrived since (the background count is asked for then)."""
        if self._cache is None or not self._lock.acquire(blocking=False):
            return list(self._rows)
        try:
            return self._rows_locked(self._cache)
        except MindooError as exc:  # e.g. no reader slot: the last rows, counted again later
            logger.warning("durability count failed (left to the background): %s", exc)
            self._error = _describe(exc)
            self._behind = True
            return list(self._rows)
        finally:
            self._lock.release()

    def _rows_locked(self, cache: DurabilityCache) -> list[DatabaseDurability]:
        backlog = durability_backlog(self._node, self._ledger, cache)
        if backlog > self._inline_backlog:
            self._behind = True
            self._progress.begin(TASK, DOING, backlog)  # shows at once, until it runs
            return list(self._rows)
        self._rows = self._count(self._node, self._ledger, cache, None)
        self._error = None
        self._unsaved += backlog
        if self._unsaved >= SAVE_EVERY:
            self._save_locked()
        return list(self._rows)

    def save(self, *, wait: bool = True) -> None:
        """Save the count now; without ``wait``, not while a count runs (it saves when done,
        or, stopped, leaves the last save)."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if self._cache is not None:
                self._save_locked()
        finally:
            self._lock.release()

    def _save_locked(self) -> None:
        assert self._cache is not None
        try:
            save_count(self._node.home, self._node.store, self._cache)
            self._unsaved = 0
        except OSError as exc:  # the count stays right; only the next start is slower
            logger.warning("cannot save the durability count: %s", exc)

    def _advance(self, steps: int) -> None:
        if self._stopping:
            raise _Stopped
        self._progress.advance(TASK, steps)


def _describe(exc: Exception) -> str:
    """``exc`` on one line, for the status."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]


class _Stopped(Exception):
    """The daemon stopped during a background count."""


__all__ = ["DOING", "INLINE_BACKLOG", "MAX_BACKOFF_S", "TASK", "CountFn", "DurabilityCounter"]
