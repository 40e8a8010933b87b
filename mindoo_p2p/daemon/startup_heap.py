"""`StartupHeap`: the daemon's start-up objects moved out of the garbage collector's sight.

CPython's cyclic collector rescans every tracked object on each full (oldest-generation)
collection. A running daemon holds about 120,000 long-lived objects from start-up (modules,
classes, the open node, the parts `NodeDaemon` wires together) that never become garbage, and a
catch-up allocates hundreds of thousands of short-lived tracked objects (entries, headers,
verdicts), which set off a full collection every second or so: in a 10^5 catch-up eleven full
collections took ~1 s of the receiving process's ~5 s of CPU, holding the GIL (measured with
``gc.callbacks``; perf-catchup2 in docs/architecture.md). `gc.freeze` moves every object alive
at that moment into the permanent generation, which collections skip; objects frozen are still
freed by reference counting, only a reference cycle among them would never be collected.

`freeze_once` collects first (so no garbage is frozen) and freezes once per process: the first
daemon of a process freezes its start-up heap; later daemons (tests start many in one
process) do nothing, so the permanent generation holds one start-up's objects at most.
"""

from __future__ import annotations

import gc


class StartupHeap:
    """Freezes the process's heap once (`freeze_once`); a process keeps one instance,
    `STARTUP_HEAP`."""

    def __init__(self) -> None:
        self.frozen = False
        """Whether `freeze_once` has frozen the heap (True from its first call on)."""

    def freeze_once(self) -> bool:
        """Collect the garbage there is, then `gc.freeze` every object left, the first time it
        is called; later calls do nothing. Returns whether this call froze the heap."""
        if self.frozen:
            return False
        self.frozen = True
        gc.collect()
        gc.freeze()
        return True


STARTUP_HEAP = StartupHeap()
"""The process's one `StartupHeap`: `NodeDaemon.run` freezes it once started."""
