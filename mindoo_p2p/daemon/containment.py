"""Failure containment for the daemon's long-running tasks: one bad item, read or arrival must
not end the daemon (its main nursery would cancel every other task with it).

A task that handles data from peers or other processes catches `Exception` around each unit of
work (an event, a scan) and calls `log_failure`: an expected failure (`MindooError`: a store
that is busy or refuses, a corrupt stored entry) is logged as a warning with its message,
anything else (a bug, a raw library error) at error level with its traceback. BaseExceptions
(trio.Cancelled, KeyboardInterrupt) are never caught. A task retrying a failing read waits
`retry_delay` between attempts: doubling from its usual interval up to a bound.
"""

from __future__ import annotations

import logging

from ..errors import MindooError

MAX_RETRY_S = 30.0
"""The longest wait before a failing task tries again."""


def log_failure(logger: logging.Logger, what: str, exc: Exception) -> None:
    """Log that ``what`` failed with ``exc`` (see the module docstring)."""
    if isinstance(exc, MindooError):
        logger.warning("%s failed: %s", what, exc)
    else:
        logger.error("%s failed unexpectedly", what, exc_info=exc)


def retry_delay(interval: float, failures: int, maximum: float = MAX_RETRY_S) -> float:
    """The wait after ``failures`` failures in a row (0: the usual ``interval``)."""
    if failures <= 0:
        return interval
    return float(min(interval * 2 ** min(failures, 32), maximum))


__all__ = ["MAX_RETRY_S", "log_failure", "retry_delay"]
