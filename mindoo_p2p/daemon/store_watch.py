"""Entries another process stored in this node's home, noticed at once (issue 10).

Several processes may have one home open: the daemon, a script using the Python API, the CLI
when it does not forward. The daemon hears of its own Node's writes through the Node's
listener; a commit by another process it used to learn of only at the next periodic session
(3 to 30 s later). Now `watch_store` reads the store's change counter (the arrival number of
its newest entry, `EntryStore.last_arrival`: one short read transaction) every
`WATCH_INTERVAL` seconds and, when it moved, reads only the new arrivals.

`StoreWatch` (pure, thread-safe) decides which of those arrivals came from elsewhere: every
entry this process stored is *claimed* by the daemon's listener (called right after the
commit, by the thread that made it). An arrival nobody claimed when it is first read may still
be this process's own (its commit is visible before the listener runs in a worker thread), so
it is reported by the next scan, `CLAIM_GRACE` later, if still unclaimed. So another process's
write is reported within one interval and the grace of its commit (about 50 ms), and this
process's own writes never twice.

==========================  ==================================================================
`StoreWatch.claim(ids)`     the listener: entries this process stored
`StoreWatch.skip_own`       the counter moved by exactly the claims made before it was read:
                            only this process wrote, nothing is read
`StoreWatch.scan(read)`     the new arrivals (``read`` returns their sealed bytes and the last
                            arrival read); returns those to report now (unclaimed since the
                            previous scan)
==========================  ==================================================================

Every write of this process holds the Node (`NodeAccess`), and its listener claims the
entries inside that hold, so the watch does not look while the Node is held (``busy``): once
it is free, every commit of this process is claimed, and `skip_own` matches it exactly. (With
the grace alone, the commit of a large batch, visible some milliseconds before its listener ran,
was read back and, when the grace ran out first, reported and gossiped as another process's.)

A scan reads sealed bytes and tells arrivals apart by id (the SHA-256 of the bytes, about 1 µs
an entry); only the arrivals it reports are decoded (`watch_store`). A scan that finds this
process's own commit (read between the commit and its listener's claim: a large ingest's
commit is visible some milliseconds before the claim) so costs a hash per entry, not a decode
and an index read (issue 8: during a catch-up these scans had taken a sixth of the event loop).

A look that fails (a store read refused, e.g. no free reader slot, or a report that fails) is
logged and tried again after a bounded backoff (`containment`); an arrival that does not decode
is logged and skipped, the others are reported. Neither ends the daemon.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable

import trio

from ..entry import Entry
from ..errors import DecodeError, StoreError
from .containment import log_failure, retry_delay

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 0.04
"""Seconds between two looks at the store's change counter."""
CLAIM_GRACE = 0.01
"""Seconds an unclaimed arrival is given for this process's listener to claim it."""
WATCH_BATCH = 1000
"""Arrivals read at most per look (more are read on the following looks, without waiting)."""

ReadAfter = Callable[[int, int], tuple[list[bytes], int]]
"""``read(arrival, limit)``: the sealed bytes of up to ``limit`` entries after ``arrival`` and
the last arrival read (`EntryStore.raws_after`)."""


class StoreWatch:
    """Which stored entries came from another process; see the module docstring."""

    def __init__(self, seen: int) -> None:
        self._seen = seen
        self._lock = threading.Lock()
        self._claimed: dict[bytes, None] = {}
        """Claimed ids, in the order claimed (an ordered set)."""
        self._pending: list[tuple[bytes, bytes]] = []
        """(id, sealed bytes) of the arrivals read but not claimed yet."""

    @property
    def seen(self) -> int:
        """The last arrival number read."""
        return self._seen

    def claim(self, entry_ids: Iterable[bytes]) -> None:
        """Entries this process stored (any thread)."""
        with self._lock:
            self._claimed.update(dict.fromkeys(entry_ids))

    def claims(self) -> int:
        """How many claims wait to be matched with arrivals (take it *before* reading the
        change counter for `skip_own`)."""
        with self._lock:
            return len(self._claimed)

    def skip_own(self, last: int, claims: int) -> bool:
        """When the arrivals after `seen` up to ``last`` are exactly the first ``claims``
        claims (``claims`` counted before ``last`` was read: every one of them was committed
        by then, so each lies in that range; equal counts leave room for nothing else), move
        past them without reading the store: a clone of a million entries by this process
        is never read back. False when anything else may be there."""
        if self._pending or last - self._seen != claims or claims == 0:
            return False
        with self._lock:
            for entry_id in list(self._claimed)[:claims]:
                del self._claimed[entry_id]
        self._seen = last
        return True

    def scan(self, read: ReadAfter, limit: int = WATCH_BATCH) -> tuple[list[bytes], bool]:
        """Read the arrivals after `seen` (at most ``limit``); return the sealed bytes of those
        to report as stored elsewhere, and whether more arrivals wait to be read."""
        raws, last = read(self._seen, limit)
        self._seen = last
        fresh = [(hashlib.sha256(raw).digest(), raw) for raw in raws]
        with self._lock:
            claimed = self._claimed
            report = [raw for entry_id, raw in self._pending if entry_id not in claimed]
            for entry_id, _ in self._pending:
                claimed.pop(entry_id, None)
            self._pending = [item for item in fresh if item[0] not in claimed]
            for entry_id, _ in fresh:
                claimed.pop(entry_id, None)
        return report, len(raws) >= limit

    def pending(self) -> bool:
        """Unclaimed arrivals wait for the next scan."""
        return bool(self._pending)


async def watch_store(
    watch: StoreWatch,
    last_arrival: Callable[[], int],
    read: ReadAfter,
    report: Callable[[list[Entry]], Awaitable[None]],
    *,
    busy: Callable[[], bool] = lambda: False,
    interval: float = WATCH_INTERVAL,
    grace: float = CLAIM_GRACE,
) -> None:
    """Forever: every ``interval`` seconds, when the change counter moved (or arrivals wait),
    scan and hand what came from elsewhere to ``report``. Nothing is read while ``busy()``
    (this process's writer may have committed what it has not claimed yet), and ``busy`` is
    asked again before every scan, also between the batches of a large arrival (a report may
    wait for the Node, and this process may write meanwhile). Unclaimed arrivals are reported
    only by a later scan, at least ``grace`` seconds after they were read; when more arrivals
    wait and none is pending, the next batch is read at once."""
    delay = interval
    failures = 0
    while True:
        await trio.sleep(delay)
        try:
            delay = await _look_once(watch, last_arrival, read, report, busy, interval, grace)
            failures = 0
        except Exception as exc:  # contained: a failing read or report is tried again
            failures += 1
            log_failure(logger, "watching the store for other processes' entries", exc)
            delay = retry_delay(interval, failures)


async def _look_once(
    watch: StoreWatch,
    last_arrival: Callable[[], int],
    read: ReadAfter,
    report: Callable[[list[Entry]], Awaitable[None]],
    busy: Callable[[], bool],
    interval: float,
    grace: float,
) -> float:
    """One look of `watch_store`; the delay before the next."""
    if busy():
        return interval
    claims = watch.claims()
    last = last_arrival()
    if watch.skip_own(last, claims):
        return interval
    if not watch.pending() and last <= watch.seen:
        return interval
    raws, more = watch.scan(read)
    entries = []
    for raw in raws:
        try:
            entries.append(decode_stored(raw))
        except StoreError as exc:  # one corrupt arrival: the others are still reported
            log_failure(logger, "reading an entry another process stored", exc)
    if entries:
        await report(entries)
    if watch.pending():
        return grace
    return 0 if more else interval


def decode_stored(raw: bytes) -> Entry:
    """A stored entry's sealed bytes decoded; StoreError when they do not decode (as the
    store's own reads say)."""
    try:
        return Entry.decode(raw, "stored entry")
    except DecodeError as exc:
        raise StoreError(f"a stored entry is corrupt ({exc}): run fsck") from None
