"""Long work the daemon does for its user, in a worker thread that holds the Node.

A bundle import through the daemon (`import_in_batches`) calls `Node.ingest` `IMPORT_BATCH`
entries at a time, letting go of the Node between batches, so sessions and ``status`` go on
meanwhile; a forwarded CLI command (`CommandRunner`) runs whole in a worker thread holding the
Node (it checkpoints after every batch it stores: `NodeAccess.checkpoint`). Both are tagged
`Origin.IMPORT`, so what they store is forwarded to every peer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ..entry import Entry
from ..node import Node
from ..store import AppendResult, Rejected
from .entry_events import Origin
from .node_access import NodeAccess

IMPORT_BATCH = 1000
"""Entries per Node call when the daemon imports: it lets go of the Node between batches."""

CommandRunner = Callable[[list[str], str, dict[str, str]], dict[str, Any]]
"""``runner(argv, cwd, env)`` runs a forwarded CLI command and returns its exit code and
output. The daemon calls it in a worker thread, holding the Node."""


async def import_in_batches(
    access: NodeAccess, raws: Sequence[Entry | bytes], batch: int = IMPORT_BATCH
) -> AppendResult:
    """Ingest ``raws`` in a worker thread, ``batch`` at a time; the results joined."""
    added: list[bytes] = []
    duplicates: list[bytes] = []
    rejected: list[Rejected] = []
    for start in range(0, len(raws), batch):
        chunk = raws[start : start + batch]
        result = await access.run(functools.partial(_ingest, batch=chunk), Origin.IMPORT)
        added += result.added
        duplicates += result.duplicates
        rejected += result.rejected
    return AppendResult(added, duplicates, rejected)


async def run_forwarded(
    access: NodeAccess, runner: CommandRunner, argv: list[str], cwd: str, env: dict[str, str]
) -> dict[str, Any]:
    """A forwarded CLI command, run in a worker thread that holds the Node."""
    return await access.run(lambda _node: runner(argv, cwd, env), Origin.IMPORT)


def _ingest(node: Node, *, batch: Sequence[Entry | bytes]) -> AppendResult:
    return node.ingest(batch)


__all__ = ["IMPORT_BATCH", "CommandRunner", "import_in_batches", "run_forwarded"]
