"""Dials and disconnects asked for by callbacks, carried out by one task.

Callbacks (an mDNS announcement, a ban, ``request_peer`` from a forwarded command) must not
block nor spawn tasks, so they only `offer` a request: it waits in a bounded channel (more are
dropped and logged: the dialer retries address-book peers, and a banned peer is refused
whenever it comes back). `run` takes the next request only when one of its
`MAX_CONCURRENT_REQUESTS` slots is free, and carries it out in its own nursery; a transport
failure is logged, never raised, and so is any other failure (an address from an mDNS
announcement comes from anyone on the LAN): logged with its traceback (`containment`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from ..net.framing import TransportError
from .containment import log_failure

logger = logging.getLogger(__name__)

CONNECTION_REQUESTS = 256
"""Dials and disconnects waiting to be carried out, at most."""
MAX_CONCURRENT_REQUESTS = 4
"""Requests carried out at once, at most."""


@dataclass(frozen=True)
class Dial:
    addr: str
    remember: bool
    """Through `add_peer` (record the address on the peer) or a bare dial (mDNS)."""


@dataclass(frozen=True)
class Disconnect:
    peer_id: str


ConnectionRequest = Dial | Disconnect
CarryOut = Callable[[ConnectionRequest], Awaitable[None]]


class ConnectionRequests:
    """The bounded request channel and its one consumer; see the module docstring."""

    def __init__(
        self,
        capacity: int = CONNECTION_REQUESTS,
        concurrency: int = MAX_CONCURRENT_REQUESTS,
    ) -> None:
        self._send, self._receive = trio.open_memory_channel[ConnectionRequest](capacity)
        self._concurrency = concurrency

    def offer(self, request: ConnectionRequest) -> bool:
        """Queue ``request`` without blocking (trio thread); False when it was dropped."""
        try:
            self._send.send_nowait(request)
        except trio.WouldBlock:
            logger.warning("too many connection requests: dropped %s", request)
            return False
        except trio.ClosedResourceError:
            return False  # the daemon is stopping
        return True

    def close(self) -> None:
        """No more requests: `run` returns once those taken are done."""
        self._send.close()

    async def run(self, carry_out: CarryOut) -> None:
        """Carry out the requests with ``carry_out``, at most ``concurrency`` at once."""
        slots = trio.Semaphore(self._concurrency)
        async with trio.open_nursery() as nursery:
            async for request in self._receive:
                await slots.acquire()
                nursery.start_soon(self._carry_out, carry_out, request, slots)

    @staticmethod
    async def _carry_out(
        carry_out: CarryOut, request: ConnectionRequest, slots: trio.Semaphore
    ) -> None:
        try:
            await carry_out(request)
        except TransportError as exc:
            logger.info("%s failed: %s", request, exc)
        except Exception as exc:  # contained: the other requests go on
            log_failure(logger, str(request), exc)
        finally:
            slots.release()


__all__ = [
    "CONNECTION_REQUESTS",
    "MAX_CONCURRENT_REQUESTS",
    "ConnectionRequest",
    "ConnectionRequests",
    "Dial",
    "Disconnect",
]
