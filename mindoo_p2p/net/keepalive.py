"""Silent partitions noticed: a keepalive ping on every connection (issue 10).

When packets to a peer silently vanish (a cable pulled, a NAT forgetting the mapping, a laptop
suspended), TCP tells nothing for minutes: `status` kept showing the peer connected for a
whole 120 s cut, and the dialer, which redials only peers that are not connected, never tried.
`keep_alive` pings a connected peer every `PING_INTERVAL` (libp2p's ``/ipfs/ping/1.0.0``,
which every node serves; 32 bytes each way) and declares the path dead when no ping was
answered for `DEAD_AFTER` seconds; the caller then closes the connection, which makes the
dialer redial it.

`Liveness` is the per-peer bookkeeping (pure, injected clock), which status reads: when the
peer last answered, the last round-trip time, pings unanswered since. `keep_alive` is its one
trio task; the ping itself is injected (`PeerHost.ping`), so tests drive it with a ping that
stops answering and trio's autojump clock.

==================  =====================================================================
every PING_INTERVAL  one ping, bounded by what is left of DEAD_AFTER
an answer            ``last_answer`` moves, ``rtt`` is recorded, ``unanswered`` is 0
no answer / error    ``unanswered`` grows; the next ping follows after PING_INTERVAL
DEAD_AFTER without   ``on_dead(reason)`` is awaited once and the task ends
an answer
==================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from .framing import TransportError

PING_INTERVAL = 5.0
"""Seconds between two pings to one peer."""
DEAD_AFTER = 15.0
"""Seconds without an answer after which the path to a peer is declared dead."""


@dataclass
class Liveness:
    """What the keepalive knows of one peer (monotonic seconds from the injected clock)."""

    last_answer: float
    """When the peer last answered a ping (at first: when the connection was made)."""
    rtt: float | None = None
    """The round-trip time of the last answered ping, in seconds."""
    unanswered: int = 0
    """Pings sent since the last answer that got none."""
    dead: bool = False

    def answered(self, now: float, rtt: float) -> None:
        self.last_answer = now
        self.rtt = rtt
        self.unanswered = 0

    def missed(self) -> None:
        self.unanswered += 1

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.last_answer)

    def is_dead(self, now: float, dead_after: float = DEAD_AFTER) -> bool:
        return self.silent_for(now) >= dead_after

    def to_dict(self, now: float) -> dict[str, float | int | None]:
        return {
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 1),
            "silent_s": round(self.silent_for(now), 1),
            "unanswered_pings": self.unanswered,
        }


async def keep_alive(
    liveness: Liveness,
    ping: Callable[[], Awaitable[float]],
    on_dead: Callable[[str], Awaitable[None]],
    *,
    interval: float = PING_INTERVAL,
    dead_after: float = DEAD_AFTER,
    clock: Callable[[], float] = trio.current_time,
    on_change: Callable[[Liveness], None] | None = None,
) -> None:
    """Ping until the path is dead (then ``await on_dead(reason)``) or the task is cancelled
    (the connection closed); see the module docstring. ``ping()`` returns the round-trip time
    in seconds, or raises `TransportError`. ``on_change`` hears every ping's outcome."""
    if not 0 < interval <= dead_after:
        raise ValueError("need 0 < interval <= dead_after")
    while True:
        left = dead_after - liveness.silent_for(clock())
        if left <= 0:
            liveness.dead = True
            await on_dead(f"no answer to keepalive pings for {dead_after:.0f} s")
            return
        started = clock()
        rtt: float | None = None
        with trio.move_on_after(left):
            try:
                rtt = await ping()
            except TransportError:
                rtt = None
        if rtt is None:
            liveness.missed()
        else:
            liveness.answered(clock(), rtt)
        if on_change is not None:
            on_change(liveness)
        wait = interval - (clock() - started)
        left = dead_after - liveness.silent_for(clock())
        await trio.sleep(max(0.0, min(wait, left)))
