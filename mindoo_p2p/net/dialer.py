"""Keep the node connected to its bootstrap and address-book peers.

`maintain_connections` is a long-running trio task: every ``check_interval`` seconds it dials,
with bounded concurrency, each known peer that is not connected and whose backoff has expired.
It dials only addresses from ``bootstrap`` and from the address book, never anything else, and
never the host's own peer id. A dial round tries the peer's addresses in the book's order (the
last one that worked first); success resets the peer's failures, failure schedules the next
round after `Backoff.delay(failures)` (at most `RECENT_MAX_DELAY` for a peer connected
within `RECENT_WINDOW`: a partition that heals is found at once). After a success, the next
redial of that peer waits at least ``backoff.min_delay`` so a peer that drops every connection
is not dialed in a tight loop.

Cancelling the task (its nursery) stops it cleanly, in-flight dials included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from .address_book import AddressBook, Backoff
from .framing import TransportError

logger = logging.getLogger(__name__)

RECENT_WINDOW = 3600.0
"""Seconds after its last connection during which a peer counts as recently connected."""
RECENT_MAX_DELAY = 2.0
"""The longest redial delay of a recently connected peer (see `maintain_connections`)."""


class Dialer(Protocol):
    """What `maintain_connections` needs from a host (`PeerHost` provides it)."""

    @property
    def peer_id(self) -> str: ...

    async def connect(self, addr: str) -> str: ...

    def is_connected(self, peer_id: str) -> bool: ...


async def maintain_connections(
    host: Dialer,
    address_book: AddressBook,
    bootstrap: Sequence[str] = (),
    *,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = trio.current_time,
    wall_clock: Callable[[], float] = time.time,
    max_concurrent_dials: int = 4,
    check_interval: float = 1.0,
    on_change: Callable[[AddressBook], None] | None = None,
    recent_window: float = RECENT_WINDOW,
    recent_max_delay: float = RECENT_MAX_DELAY,
) -> None:
    """Dial unconnected peers forever (until cancelled); see the module docstring.

    ``bootstrap`` addresses are added to ``address_book`` at start (``ValueError`` if one is
    not a ``.../tcp/PORT/p2p/PEER_ID`` multiaddr) and again whenever they were evicted.
    ``clock`` (monotonic seconds) schedules backoffs; ``wall_clock`` stamps `last_connected`.
    ``on_change`` is called after every change of the book, so the caller can persist it.
    A peer connected within the last ``recent_window`` seconds (wall clock) is redialed at
    most ``recent_max_delay`` seconds apart, whatever its failures: a path that comes back
    after a partition is found within seconds, not after minutes of exponential backoff.
    """
    if max_concurrent_dials < 1 or not check_interval > 0:
        raise ValueError("need max_concurrent_dials >= 1 and check_interval > 0")
    policy = backoff or Backoff()
    bootstrap_peers = [(addr, address_book.add(addr)) for addr in bootstrap]
    limiter = trio.CapacityLimiter(max_concurrent_dials)
    not_before: dict[str, float] = {}
    in_flight: set[str] = set()
    dial_finished = trio.Event()

    def changed() -> None:
        if on_change is not None:
            on_change(address_book)

    async def dial(peer_id: str) -> None:
        try:
            async with limiter:
                error = "no known address"
                for addr in address_book.addrs(peer_id):
                    if host.is_connected(peer_id):
                        return
                    try:
                        await host.connect(addr)
                    except TransportError as exc:
                        error = str(exc)
                        logger.debug("dial %s failed: %s", addr, exc)
                        continue
                    address_book.record_success(peer_id, addr, wall_clock())
                    not_before[peer_id] = clock() + policy.min_delay
                    changed()
                    logger.info("connected to %s via %s", peer_id, addr)
                    return
                failures = address_book.record_failure(peer_id, error)
                delay = policy.delay(failures)
                record = address_book.get(peer_id)
                last = record.last_connected if record is not None else None
                if last is not None and wall_clock() - last < recent_window:
                    delay = min(delay, recent_max_delay)
                not_before[peer_id] = clock() + delay
                changed()
                logger.info(
                    "cannot reach %s (%d failures), next try in %.1f s: %s",
                    peer_id,
                    failures,
                    delay,
                    error,
                )
        finally:
            in_flight.discard(peer_id)
            dial_finished.set()

    async with trio.open_nursery() as nursery:
        while True:
            for addr, peer_id in bootstrap_peers:
                if addr not in address_book.addrs(peer_id):
                    address_book.add(addr)
                    changed()
            now = clock()
            for peer_id in address_book.peers():
                if peer_id == host.peer_id or peer_id in in_flight:
                    continue
                if not address_book.addrs(peer_id):
                    continue  # known by name only (it dialed us): nothing to dial
                if host.is_connected(peer_id) or now < not_before.get(peer_id, 0.0):
                    continue
                in_flight.add(peer_id)
                nursery.start_soon(dial, peer_id)
            known = set(address_book.peers())
            for peer_id in [p for p in not_before if p not in known]:
                del not_before[peer_id]  # forgotten peers: keep the schedule bounded
            # Sleep until the next check, the earliest backoff expiry, or the end of a dial.
            now = clock()
            wake_at = min([now + check_interval, *(at for at in not_before.values() if at > now)])
            with trio.move_on_after(wake_at - now):
                await dial_finished.wait()
            dial_finished = trio.Event()
