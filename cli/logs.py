"""Logging of ``mindoo node run``: levels and timestamps, to stderr or a file, with libp2p's
noise kept at warning unless asked.

``--log-level`` is repeatable: ``LEVEL`` sets mindoo's level (default ``info``), and
``LOGGER=LEVEL`` sets one logger's (``--log-level libp2p=debug``). libp2p, hypercorn and
multiaddr log at ``warning`` unless named so. ``--log-file PATH`` appends to a file (created
0600: logs name peers and addresses) instead of stderr.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import click

LEVELS = ("debug", "info", "warning", "error", "critical")
QUIET_LOGGERS = ("libp2p", "multiaddr", "hypercorn", "async_service", "trio_websocket")
"""Third-party loggers held at warning unless ``--log-level NAME=LEVEL`` says otherwise."""
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


def parse_levels(specs: Sequence[str]) -> dict[str, int]:
    """``{"": root level, "libp2p": level, ...}`` from ``--log-level`` values;
    click.BadParameter naming the bad one."""
    levels: dict[str, int] = {"": logging.INFO}
    for name in QUIET_LOGGERS:
        levels[name] = logging.WARNING
    for spec in specs:
        name, _, level = spec.rpartition("=")
        if level.lower() not in LEVELS:
            raise click.BadParameter(
                f"{spec!r}: a level is one of {', '.join(LEVELS)} (or LOGGER=LEVEL)",
                param_hint="--log-level",
            )
        levels[name.strip()] = getattr(logging, level.upper())
    return levels


def configure_logging(specs: Sequence[str], log_file: Path | None, stream: TextIO) -> None:
    """Send log records with level and timestamp to ``log_file`` (appended) or ``stream``."""
    levels = parse_levels(specs)
    handler: logging.Handler
    if log_file is not None:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8", buffering=1))
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
