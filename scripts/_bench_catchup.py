"""Part (b) of ``bench_sync.py``: catch-up of an empty member node over loopback.

(b) Catch-up (``--catchup N``, default 100,000): a node holding N entries (N small documents
written through ``db.batch()``, 1,000 per batch) runs as a separate ``mindoo node run``
process; an empty member node runs in this process (a `NodeDaemon`) and dials it over
loopback. ``catchup_entries_per_s``: the entries it lacked divided by the time from the dial
until its store holds all of them (counted by a `Node.add_listener` hook). Reported with the
CPU seconds of each side, the member's resident memory (the benchmark process: it built the
source's documents before, so this is an upper bound; ``member_rss_mb`` counts the pages of
the memory-mapped store it touched, ``member_rss_anon_mb`` only the process's own memory;
``member_verifier_workers_cpu_s`` is the CPU of the member's signature-checking worker
processes, `crypto.verify_workers`, which ``member_cpu_s`` does not count) and
store file size right after (``member_store_mb``), ``offered`` (entries handed to the member's
ingest, duplicates included: both sides' sessions run at once) and, as the baseline measured
in the same run, ``local_ingest_entries_per_s``: the same sealed entries ingested by a third
member node in this process, 2,000 per call, no network (``catchup_vs_local_ingest`` is the
ratio).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import trio
from _bench_common import (
    LOOPBACK_LISTEN,
    PASSWORD,
    cpu_seconds,
    new_node,
    running_node,
    write_documents,
)

from mindoo_p2p.admission import VerifiedEntry
from mindoo_p2p.config import NodeConfig
from mindoo_p2p.crypto.signing import verify_workers
from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.entry import Entry
from mindoo_p2p.net.host import HostConfig
from mindoo_p2p.node import Node
from mindoo_p2p.store import AppendResult

HOST_CONFIG = HostConfig(dial_timeout=5, stream_timeout=30, close_timeout=2)
LOCAL_INGEST_BATCH = 2000
CATCHUP_TIMEOUT_S = 900.0


class CountingNode(Node):
    """A `Node` that counts the entries handed to its ingest, duplicates included."""

    offered = 0

    def ingest(self, entries: Sequence[Entry | bytes | VerifiedEntry]) -> AppendResult:
        self.offered += len(entries)
        return super().ingest(entries)


def _verifier_cpu() -> float:
    """CPU seconds of this process's verifier worker processes so far (0 without them): the
    member's signature checks run there, so its CPU is ``member_cpu_s`` plus this."""
    workers = verify_workers()
    total = 0.0
    for pid in workers.pids if workers is not None else []:
        try:
            total += cpu_seconds(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return total


def build_catchup_homes(root: Path, count: int) -> tuple[list[bytes], float]:
    """Homes ``source`` (``count`` documents in database ``catchup``), ``member`` and
    ``local`` (both joined, empty but for the tenant log), all closed. Returns the source's
    sealed entries and the time its documents took to write."""
    nodes: list[Node] = []
    try:
        for name in ("source", "member", "local"):
            nodes.append(new_node(root / name, name))
        source = nodes[0]
        tenant = source.create_tenant("bench")
        for joiner in nodes[1:]:
            joiner.join(source.invite(tenant, joiner.public_identity()))
        started = time.perf_counter()
        write_documents(source, "bench", "catchup", count)
        build_s = time.perf_counter() - started
        return [entry.raw for entry in source.store.iter_entries()], build_s
    finally:
        for node in nodes:
            node.close()


def measure_local_ingest(home: Path, raws: Sequence[bytes]) -> tuple[int, float]:
    """The baseline: ``raws`` ingested by the node in ``home``, `LOCAL_INGEST_BATCH` per call,
    no network. Returns (entries added, seconds)."""
    node = Node.open(home, PASSWORD)
    try:
        before = node.store.count()
        started = time.perf_counter()
        for offset in range(0, len(raws), LOCAL_INGEST_BATCH):
            result = node.ingest(raws[offset : offset + LOCAL_INGEST_BATCH])
            if result.rejected:
                raise RuntimeError(f"local ingest rejected {result.rejected[0]}")
        elapsed = time.perf_counter() - started
        return node.store.count() - before, elapsed
    finally:
        node.close()


async def measure_catchup_session(root: Path, total: int) -> dict[str, Any]:
    """The member (in this process) dials the source (a child process) and syncs until it
    holds all ``total`` entries; see the module docstring."""
    with running_node(root / "source") as source:
        member = CountingNode.open(root / "member", PASSWORD)
        assert isinstance(member, CountingNode)
        try:
            held_before = member.store.count()
            held = [held_before]
            converged = trio.Event()
            token = trio.lowlevel.current_trio_token()

            def on_entries(entries: list[Entry], local: bool) -> None:
                # The daemon stores large batches in a worker thread: hand the event over.
                held[0] += len(entries)  # each stored entry is reported once
                if held[0] >= total:
                    token.run_sync_soon(converged.set)

            member.add_listener(on_entries)
            member.offered = 0
            config = NodeConfig(listen=(LOOPBACK_LISTEN,), sync_interval_s=3600)
            # The member runs as `mindoo node run` runs it (its start-up heap frozen).
            daemon = NodeDaemon(
                member, config, host_config=HOST_CONFIG, control=False, freeze_startup_heap=True
            )
            source_process = psutil.Process(source.process.pid)
            async with trio.open_nursery() as nursery:
                await nursery.start(daemon.run)
                source_cpu = cpu_seconds(source_process)
                member_cpu = time.process_time()
                verifier_cpu = _verifier_cpu()
                started = time.perf_counter()
                await daemon.add_peer(source.addr)
                with trio.move_on_after(CATCHUP_TIMEOUT_S):
                    await converged.wait()
                elapsed = time.perf_counter() - started
                member_cpu = time.process_time() - member_cpu
                verifier_cpu = _verifier_cpu() - verifier_cpu
                source_cpu = cpu_seconds(source_process) - source_cpu
                memory = psutil.Process().memory_info()
                nursery.cancel_scope.cancel()
            stored = member.store.count()
            store_file = root / "member" / "store" / "data.mdb"
            member_store = store_file.stat().st_size if store_file.exists() else 0
            if stored != total:
                raise RuntimeError(
                    f"catch-up incomplete after {elapsed:.0f} s: {stored} of {total} entries"
                )
            db = member.tenant("bench").open_db("catchup")
            documents = db.list_documents()
            sample = db.get(documents[len(documents) // 2])
            if sample.get("tags") != ["bench"]:
                raise RuntimeError(f"a caught-up document reads back wrong: {sample!r}")
            return {
                "transferred": total - held_before,
                "seconds": elapsed,
                "member_cpu_s": member_cpu,
                "verifier_cpu_s": verifier_cpu,
                "source_cpu_s": source_cpu,
                "offered": member.offered,
                "documents": len(documents),
                "member_rss_mb": memory.rss / 1e6,
                "member_rss_anon_mb": (memory.rss - memory.shared) / 1e6,
                "member_store_mb": member_store / 1e6,
            }
        finally:
            member.close()


def measure_catchup(root: Path, count: int) -> dict[str, Any]:
    """Part (b): build the homes, measure the local-ingest baseline, then the catch-up."""
    raws, build_s = build_catchup_homes(root, count)
    local_added, local_s = measure_local_ingest(root / "local", raws)
    total = len(raws)
    del raws
    session = trio.run(measure_catchup_session, root, total)
    rate = session["transferred"] / session["seconds"]
    local_rate = local_added / local_s
    return {
        "entries": total,
        "transferred": session["transferred"],
        "documents": session["documents"],
        "build_s": round(build_s, 2),
        "seconds": round(session["seconds"], 2),
        "entries_per_s": round(rate),
        "member_cpu_s": round(session["member_cpu_s"], 2),
        "member_verifier_workers_cpu_s": round(session["verifier_cpu_s"], 2),
        "source_cpu_s": round(session["source_cpu_s"], 2),
        "member_rss_mb": round(session["member_rss_mb"], 1),
        "member_rss_anon_mb": round(session["member_rss_anon_mb"], 1),
        "member_store_mb": round(session["member_store_mb"], 1),
        "offered": session["offered"],
        "offered_vs_transferred": round(session["offered"] / session["transferred"], 2),
        "local_ingest_entries_per_s": round(local_rate),
        "catchup_vs_local_ingest": round(rate / local_rate, 2),
    }
