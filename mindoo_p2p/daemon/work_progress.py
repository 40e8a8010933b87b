"""Long work the daemon does in the background (at start, or after a large arrival), with its
progress, so ``status`` answers at once and says what the daemon is busy with.

`WorkProgress` is pure and thread-safe: the worker thread doing the work reports to it, the
status (any thread) reads it. ``status`` shows the running tasks as ``busy`` rows::

    {"task": "durability", "doing": "counting own entries", "done": 340000, "total": 1000000}

and ``mindoo status`` prints them as "busy: durability: counting own entries 340,000/1,000,000"
(`cli.render`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Task:
    doing: str
    done: int
    total: int


class WorkProgress:
    """The long tasks running now and how far each is (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}

    def begin(self, task: str, doing: str, total: int) -> None:
        """``task`` starts (or starts over): ``doing`` in words, ``total`` steps to go."""
        with self._lock:
            self._tasks[task] = _Task(doing, 0, max(0, total))

    def advance(self, task: str, steps: int) -> None:
        """``steps`` more of ``task`` are done (no-op when it is not running)."""
        with self._lock:
            running = self._tasks.get(task)
            if running is not None:
                running.done += steps
                running.total = max(running.total, running.done)

    def finish(self, task: str) -> None:
        with self._lock:
            self._tasks.pop(task, None)

    def running(self, task: str) -> bool:
        with self._lock:
            return task in self._tasks

    def rows(self) -> list[dict[str, Any]]:
        """The running tasks, for ``status``."""
        with self._lock:
            return [
                {"task": name, "doing": t.doing, "done": t.done, "total": t.total}
                for name, t in self._tasks.items()
            ]


__all__ = ["WorkProgress"]
