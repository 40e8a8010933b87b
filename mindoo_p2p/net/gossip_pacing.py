"""Publish pacing: when `GossipService.publish_entry` waits for room in mesh peers' queues. Pure.

py-libp2p's per-peer outbound queues drop RPCs when full. `publish_entry` therefore waits while
a mesh peer's queue is over 3/4 full; a peer whose queue stays full for the whole wait
(`GossipTuning.publish_wait`) is marked congested and not waited for again until its queue
drains below 1/4, so one stuck peer cannot stall publishing. The waiting loop (trio) is the
service's; the decisions are here.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PublishPacing(Generic[P]):
    """Which mesh peers a publish waits for, given each peer's queued RPCs."""

    def __init__(self, queue_size: int) -> None:
        if queue_size < 4:
            raise ValueError("queue_size must be at least 4")
        self.high = queue_size * 3 // 4
        """A peer with this many queued RPCs is full: a publish waits for it."""
        self.low = queue_size // 4
        """A congested peer at or below this many queued RPCs is waited for again."""
        self.congested: set[P] = set()

    def settle(self, connected: Container[P], queued: Callable[[P], int]) -> None:
        """Before a publish: congested peers that left or drained are no longer congested."""
        self.congested = {p for p in self.congested if p in connected and queued(p) > self.low}

    def full(self, mesh: Iterable[P], queued: Callable[[P], int]) -> list[P]:
        """The mesh peers a publish must wait for now (none: publish)."""
        return [p for p in mesh if p not in self.congested and queued(p) >= self.high]

    def give_up(self, full: Iterable[P]) -> None:
        """The wait ran out: these peers are congested until they drain."""
        self.congested.update(full)


__all__ = ["PublishPacing"]
