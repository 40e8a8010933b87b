"""Part (c) of ``bench_sync.py``: propagation of a write through an in-process cluster.

(c) Propagation (``--changes K``, default 50): a 10-node in-process `Cluster` (line, then a
random connected topology of average degree 2). K times, a random node creates a small
document; the time until every node's store holds its entry is read from `Node.add_listener`
hooks on every node (one clock, one process); the next write follows 100-300 ms after
convergence. Per topology: p50/p99/max (with K=50, p99 is the largest), the writer's mean
eccentricity in hops, ``per_hop_ms_p50`` (arrival time over hop distance, every node of every
write) and the sync sessions run per write. ``propagation_p50_ms`` and ``propagation_p99_ms``
are the random topology's; the baseline is a 2-node cluster measured the same way
(``one_hop``; ``random_p50_vs_one_hop`` is the ratio). All nodes share this process's one
interpreter: a session on one node delays the others, which real devices would not.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mindoo_p2p.entry import Entry
from mindoo_p2p.testing import Cluster

PROPAGATION_NODES = 10
PROPAGATION_TIMEOUT_S = 30.0
"""A write that has not reached every node by then counts as this long (and as a timeout)."""
PROPAGATION_GAP_S = (0.1, 0.3)


def percentile(ascending: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(q / 100 * len(ascending)))
    return ascending[rank - 1]


@dataclass
class ArrivalLog:
    """When each node stored each entry (``time.perf_counter``), from `Node.add_listener`."""

    nodes: int
    times: dict[bytes, dict[int, float]] = field(default_factory=dict)
    local: list[bytes] = field(default_factory=list)
    """Ids of entries written here (by the benchmark), in order."""
    _waiting: dict[bytes, trio.Event] = field(default_factory=dict)
    token: trio.lowlevel.TrioToken | None = None
    """The event loop's token (listeners may run in the daemons' worker threads)."""

    def listener(self, index: int) -> Callable[[list[Entry], bool], None]:
        token = self.token or trio.lowlevel.current_trio_token()

        def on_entries(entries: list[Entry], local: bool) -> None:
            now = time.perf_counter()
            for entry in entries:
                seen = self.times.setdefault(entry.id, {})
                seen.setdefault(index, now)
                if local:
                    self.local.append(entry.id)
                if len(seen) == self.nodes and entry.id in self._waiting:
                    token.run_sync_soon(self._waiting.pop(entry.id).set)

        return on_entries

    async def wait_everywhere(self, entry_id: bytes, timeout: float) -> bool:
        """Wait until every node holds ``entry_id``; False after ``timeout`` seconds."""
        if len(self.times.get(entry_id, {})) == self.nodes:
            return True
        event = self._waiting[entry_id] = trio.Event()
        with trio.move_on_after(timeout):
            await event.wait()
            return True
        self._waiting.pop(entry_id, None)
        return False


def hop_distances(nodes: int, edges: set[tuple[int, int]], start: int) -> list[int]:
    """Hops from ``start`` to every node over ``edges`` (breadth first; -1: unreachable)."""
    neighbours: dict[int, list[int]] = {i: [] for i in range(nodes)}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    distance = [-1] * nodes
    distance[start] = 0
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for there in neighbours[here]:
            if distance[there] < 0:
                distance[there] = distance[here] + 1
                queue.append(there)
    return distance


def completed_sessions(cluster: Cluster) -> int:
    """Sync sessions completed so far, summed over every node (each counted by both sides)."""
    total = 0
    for member in cluster.nodes:
        if member.daemon is not None:
            total += sum(state.sessions for state in member.daemon.peers.values())
    return total


async def measure_propagation(
    root: Path, nodes: int, topology: str, changes: int, seed: int
) -> dict[str, Any]:
    """``changes`` writes on random nodes of an in-process cluster; see the module docstring."""
    started_all = time.perf_counter()
    async with Cluster(root) as cluster:
        await cluster.start(nodes)
        cluster.create_tenant("bench")
        await cluster.connect_topology(topology, seed=seed)
        await cluster.wait_converged(timeout=60)
        log = ArrivalLog(nodes)
        for member in cluster.nodes:
            member.require().add_listener(log.listener(member.index))
        dbs = [cluster.db(i, "bench", "propagation") for i in range(nodes)]
        rng = random.Random(f"{seed}/{topology}/{nodes}")
        latencies: list[float] = []
        per_hop: list[float] = []
        eccentricities: list[int] = []
        timeouts = 0
        sessions_before = completed_sessions(cluster)
        for change in range(changes):
            writer = rng.randrange(nodes)
            distances = hop_distances(nodes, cluster.edges, writer)
            eccentricities.append(max(distances))
            log.local.clear()
            started = time.perf_counter()
            dbs[writer].create_document({"change": change, "writer": writer})
            if len(log.local) != 1:
                raise RuntimeError(f"a document creation stored {len(log.local)} entries")
            entry_id = log.local[0]
            if await log.wait_everywhere(entry_id, PROPAGATION_TIMEOUT_S):
                seen = log.times[entry_id]
                latencies.append((max(seen.values()) - started) * 1000)
                per_hop.extend(
                    (seen[j] - started) * 1000 / distances[j] for j in range(nodes) if j != writer
                )
            else:
                timeouts += 1
                latencies.append(PROPAGATION_TIMEOUT_S * 1000)
            await trio.sleep(rng.uniform(*PROPAGATION_GAP_S))
        sessions = completed_sessions(cluster) - sessions_before
        edges = len(cluster.edges)
    latencies.sort()
    return {
        "nodes": nodes,
        "edges": edges,
        "changes": changes,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1),
        "min_ms": round(latencies[0], 1),
        "mean_eccentricity_hops": round(statistics.fmean(eccentricities), 2),
        "per_hop_ms_p50": round(statistics.median(per_hop), 1) if per_hop else None,
        "sync_sessions_per_write": round(sessions / 2 / changes, 1),
        "timeouts": timeouts,
        "wall_s": round(time.perf_counter() - started_all, 1),
    }


async def measure_all_propagation(root: Path, changes: int, seed: int) -> dict[str, Any]:
    """Part (c): line and random topologies of `PROPAGATION_NODES`, and the 2-node baseline."""
    result: dict[str, Any] = {}
    for name, nodes, topology in (
        ("line", PROPAGATION_NODES, "line"),
        ("random", PROPAGATION_NODES, "random"),
        ("one_hop", 2, "line"),
    ):
        result[name] = await measure_propagation(root / name, nodes, topology, changes, seed)
    result["random_p50_vs_one_hop"] = round(
        result["random"]["p50_ms"] / result["one_hop"]["p50_ms"], 2
    )
    return result
