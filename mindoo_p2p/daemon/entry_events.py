"""Stored entries as events with their origin, on a bounded channel to the daemon.

`Node` listeners are synchronous callbacks, called by whichever thread stored the entries: the
trio thread (a local write by an app, a gossip entry) or a worker thread holding the Node
(a sync session's large ingest, a forwarded command, an import). `EntryEventQueue.offer` is the
one door between them: it never blocks the writer, and it is safe from any thread (off the trio
thread it hands the event over with ``trio.from_thread.run_sync``; trio objects are only ever
touched on the trio thread).

When the channel is full the event is not queued, and nothing is lost that matters: the queue
counts what it dropped and the consumer receives one `Resync` (how many events were dropped)
before the next event. What a `Resync` stands for is "something changed, origin unknown": the
daemon wakes every peer soon (reconciliation repairs whatever gossip would have carried),
re-reads the tenants' membership and topics, and tells event subscribers that they missed
entries. So a burst larger than the channel costs one extra round of sessions, never a missed
change.

================  ===============================================================
origin            what stored the entries
================  ===============================================================
LOCAL             this node's user wrote them (``local`` from the Node)
GOSSIP            a gossip message, ingested by the daemon's gossip bridge
SYNC              a reconciliation session (initiator or responder side)
IMPORT            the daemon's import, or a forwarded CLI command (bundle import, join)
OTHER             anything else: an app calling ``Node.ingest`` itself
ELSEWHERE         another process that has this home open (a script, the CLI without
                  forwarding), noticed by `store_watch`; offered to peers like LOCAL
================  ===============================================================
"""

from __future__ import annotations

import enum
import threading
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass

import trio

from ..entry import Entry

ENTRY_EVENT_QUEUE = 1024
"""Default capacity of the channel, in events (one event is one stored batch)."""


class Origin(enum.Enum):
    """Where stored entries came from; see the module docstring."""

    LOCAL = "local"
    GOSSIP = "gossip"
    SYNC = "sync"
    IMPORT = "import"
    OTHER = "other"
    ELSEWHERE = "elsewhere"


@dataclass(frozen=True)
class EntryEvent:
    """Entries stored in one batch, and where they came from."""

    entries: tuple[Entry, ...]
    origin: Origin
    peer: str | None = None
    """The peer whose sync session delivered them (SYNC; it holds them already), if known."""

    @property
    def local(self) -> bool:
        """Stored by this node's user: here, or by another process on this home."""
        return self.origin in (Origin.LOCAL, Origin.ELSEWHERE)


@dataclass(frozen=True)
class Resync:
    """``dropped`` events did not fit in the channel: something changed, origin unknown."""

    dropped: int


class EntryEventQueue:
    """A bounded channel of `EntryEvent` that never blocks its writers; see the module
    docstring. Create it on the trio thread (it remembers the trio token)."""

    def __init__(self, capacity: int = ENTRY_EVENT_QUEUE) -> None:
        if capacity < 1:
            raise ValueError("the entry event queue needs a capacity of at least 1")
        self._send, self._receive = trio.open_memory_channel[EntryEvent](capacity)
        self._token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()
        self._dropped = 0
        self._closed = False

    @property
    def dropped(self) -> int:
        """Events dropped since the consumer last heard of it (reported as one `Resync`)."""
        return self._dropped

    def offer(self, event: EntryEvent) -> None:
        """Queue ``event`` without blocking, from any thread; when full, count it dropped."""
        if threading.get_ident() == self._trio_thread:
            self._offer(event)
            return
        with suppress(trio.RunFinishedError):  # the daemon stopped: nobody listens any more
            trio.from_thread.run_sync(self._offer, event, trio_token=self._token)

    def _offer(self, event: EntryEvent) -> None:
        if self._closed:
            return
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._dropped += 1

    def close(self) -> None:
        """Stop accepting events (later offers are ignored); the consumer's loop ends."""
        self._closed = True
        self._send.close()

    async def events(self) -> AsyncIterator[EntryEvent | Resync]:
        """Every event in order; a `Resync` first whenever some were dropped before it."""
        while True:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                yield Resync(dropped)
                continue
            try:
                event = await self._receive.receive()
            except trio.EndOfChannel:
                return
            if self._dropped:
                # Drops happened while this event waited: report them before it, so the
                # consumer never believes it saw everything up to here.
                dropped, self._dropped = self._dropped, 0
                yield Resync(dropped)
            yield event
