"""Part (d) of ``bench_sync.py``: the CPU and memory a connected, caught-up node spends
while nobody writes.

(d) Idle (``--idle-seconds S``, default 60): a node holding 1,000 documents and two member
peers, each a separate ``mindoo node run`` process (default sync interval), connected and
caught up; then for S seconds nobody writes. ``idle_cpu_percent``: CPU time of the measured
node's process (user + system, all threads, psutil) over S, in percent of one core;
``idle_rss_mb``: its resident memory at the end. Baseline in the same window: a lone node with
the same amount of data and no peers (``no_peers``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from _bench_common import NodeProcess, cpu_seconds, new_node, running_node, write_documents

from mindoo_p2p.node import Node

IDLE_PEERS = 2
IDLE_DOCUMENTS = 1000
IDLE_READY_S = 120.0
IDLE_SETTLE_S = 3.0


def build_idle_homes(root: Path) -> None:
    """Homes ``measured`` (tenant admin, `IDLE_DOCUMENTS` documents), ``peer1``.. (members,
    empty until they sync) and ``alone`` (its own tenant, as many documents), all closed."""
    names = ["measured", *(f"peer{i + 1}" for i in range(IDLE_PEERS)), "alone"]
    nodes: list[Node] = []
    try:
        for name in names:
            nodes.append(new_node(root / name, name))
        measured, peers, alone = nodes[0], nodes[1:-1], nodes[-1]
        tenant = measured.create_tenant("bench")
        for peer in peers:
            peer.join(measured.invite(tenant, peer.public_identity()))
        write_documents(measured, "bench", "idle", IDLE_DOCUMENTS)
        alone.create_tenant("bench")
        write_documents(alone, "bench", "idle", IDLE_DOCUMENTS)
    finally:
        for node in nodes:
            node.close()


def wait_idle_ready(measured: NodeProcess, peers: Sequence[NodeProcess]) -> None:
    """Until the measured node is connected to every peer, has synced with each, and every
    peer holds as many entries as it does."""
    deadline = time.monotonic() + IDLE_READY_S
    expected = {peer.peer_id for peer in peers}
    while True:
        status = measured.status()
        synced = {
            peer["peer_id"]
            for peer in status["peers"]
            if peer["connected"] and peer["last_sync_ms"] is not None
        }
        if expected <= synced and all(p.status()["entries"] == status["entries"] for p in peers):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"idle peers not ready after {IDLE_READY_S} s: synced with {len(synced & expected)}"
                f" of {len(expected)}; measured node log: {measured.log_tail()}"
            )
        time.sleep(0.2)


def measure_idle(root: Path, seconds: float) -> dict[str, Any]:
    """Part (d): see the module docstring."""
    build_idle_homes(root)
    with running_node(root / "measured") as measured, running_node(root / "alone") as alone:
        peers: list[NodeProcess] = []
        with ExitStack() as stack:
            for i in range(IDLE_PEERS):
                home = root / f"peer{i + 1}"
                peers.append(stack.enter_context(running_node(home, bootstrap=(measured.addr,))))
            wait_idle_ready(measured, peers)
            time.sleep(IDLE_SETTLE_S)
            watched = {
                "measured": psutil.Process(measured.process.pid),
                "alone": psutil.Process(alone.process.pid),
                **{f"peer{i + 1}": psutil.Process(p.process.pid) for i, p in enumerate(peers)},
            }
            before = {name: cpu_seconds(process) for name, process in watched.items()}
            started = time.perf_counter()
            time.sleep(seconds)
            wall = time.perf_counter() - started
            percent = {
                name: (cpu_seconds(process) - before[name]) / wall * 100
                for name, process in watched.items()
            }
            rss_mb = {name: process.memory_info().rss / 2**20 for name, process in watched.items()}
            connected = sum(peer["connected"] for peer in measured.status()["peers"])
    cpu, alone_cpu = percent["measured"], percent["alone"]
    return {
        "seconds": round(wall, 1),
        "peers": IDLE_PEERS,
        "peers_connected_at_end": connected,
        "documents": IDLE_DOCUMENTS,
        "cpu_percent": round(cpu, 3),
        "rss_mb": round(rss_mb["measured"], 1),
        "peer_cpu_percent": [round(percent[f"peer{i + 1}"], 3) for i in range(IDLE_PEERS)],
        "no_peers": {"cpu_percent": round(alone_cpu, 3), "rss_mb": round(rss_mb["alone"], 1)},
        "cpu_vs_no_peers": round(cpu / alone_cpu, 2) if alone_cpu > 0 else None,
        "rss_vs_no_peers": round(rss_mb["measured"] / rss_mb["alone"], 2),
    }
