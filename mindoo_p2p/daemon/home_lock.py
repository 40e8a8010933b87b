"""One daemon per node home: the home's lock file, and the daemon's start-up error."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MindooError

LOCK_FILE = "daemon.lock"


class DaemonError(MindooError):
    """The daemon cannot start (another daemon runs on this home, bad address, ...), or a
    call needs it running."""


@contextmanager
def daemon_lock(home: Path) -> Iterator[None]:
    """Hold the home's daemon lock; DaemonError if another daemon holds it. The lock file
    names the holder's pid (for the error another daemon gets)."""
    path = home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DaemonError(
                f"another daemon is already running on {home} (pid {other})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "DaemonError", "daemon_lock"]
