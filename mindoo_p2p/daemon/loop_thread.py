"""Calls carried over to the daemon's trio thread.

A forwarded CLI command runs in a worker thread (`NodeAccess.run`); what it asks of the daemon
itself (its status, a peer to dial, a name for a peer) touches trio objects and the peer table,
which live on the event loop. `LoopThread` remembers which thread runs the loop and carries a
call over to it (`trio.from_thread.run_sync`), or calls it directly when already there or when
the loop is not running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class LoopThread:
    """The event loop's thread, once `attach` was called on it."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: int | None = None

    def attach(self) -> None:
        """Remember the current trio run and its thread (call from inside it)."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()

    def on_loop(self) -> bool:
        """Whether the caller runs on the loop's thread (or no loop was attached)."""
        return self._thread is None or threading.get_ident() == self._thread

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the loop's thread: directly when already there (or not attached),
        else handed over and waited for."""
        if self.on_loop() or self._token is None:
            return fn()
        return trio.from_thread.run_sync(fn, trio_token=self._token)


__all__ = ["LoopThread"]
