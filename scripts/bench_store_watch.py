#!/usr/bin/env python3
"""Benchmark: how soon a write made by another process on the home reaches a peer.

Two daemons on loopback (laptop, phone) in this process. A second process opens the laptop's
home (as a script using the Python API would, while the daemon runs) and creates ``--writes``
documents one at a time, ``--gap`` seconds apart, printing the wall-clock time of each commit.
Measured per write: when the laptop's daemon noticed it (its event stream) and when the phone
stored it (the phone's event stream), from the commit. The baseline, in the same run, is the
same number of writes made by the daemon's own Node (a local write, heard at once by the
Node's listener); ``ratio`` is the other process's p50 to the phone over the baseline's.

Prints one JSON object (indented with --json) and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mindoo_p2p.config import NodeConfig
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.node import Node

PASSWORD = "bench store watch password"
CONFIG = NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), sync_interval_s=3600)
WRITER = """
import sys, time
from mindoo_p2p.node import Node
home, password, count, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with Node.open(home, password) as node:
    db = node.tenant("bench").open_db("notes")
    for n in range(count):
        doc = db.create_document({"n": n})
        print(doc, time.time(), flush=True)
        time.sleep(gap)
"""


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
    }


async def _measure(writes: int, gap: float, root: Path) -> dict[str, Any]:
    laptop = Node.init(root / "laptop", PASSWORD, name="laptop", kdf=KdfProfile.TESTING)
    phone = Node.init(root / "phone", PASSWORD, name="phone", kdf=KdfProfile.TESTING)
    tenant = laptop.create_tenant("bench")
    phone.join(laptop.invite(tenant, phone.public_identity()))
    notes = tenant.create_db("notes")
    notes.create_document({"first": True})
    seen_here: dict[str, float] = {}
    seen_there: dict[str, float] = {}

    async def record(daemon: NodeDaemon, into: dict[str, float]) -> None:
        async with daemon.events.subscribe() as channel:
            async for event in channel:
                if event.get("type") == "entry":
                    into.setdefault(event["document_id"], time.time())

    a, b = NodeDaemon(laptop, CONFIG, control=False), NodeDaemon(phone, CONFIG, control=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await b.add_peer(a.listen_addrs()[0])
        while phone.store.count() < laptop.store.count():
            await trio.sleep(0.05)
        nursery.start_soon(record, a, seen_here)
        nursery.start_soon(record, b, seen_there)
        await trio.sleep(0.2)
        # Baseline: the daemon's own Node writes.
        local: dict[str, float] = {}
        for n in range(writes):
            async with a.access.hold():
                doc = notes.create_document({"local": n})
            local[doc] = time.time()
            await trio.sleep(gap)
        # Another process on the same home.
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        done = await trio.run_process(
            [sys.executable, "-c", WRITER, str(laptop.home), PASSWORD, str(writes), str(gap)],
            capture_stdout=True,
            env=env,
        )
        elsewhere = {
            line.split()[0]: float(line.split()[1]) for line in done.stdout.decode().splitlines()
        }
        with trio.move_on_after(10):
            while not all(d in seen_there for d in (*local, *elsewhere)):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    laptop.close()
    phone.close()

    def delays(commits: dict[str, float], seen: dict[str, float]) -> list[float]:
        return [(seen[d] - t) * 1000 for d, t in commits.items() if d in seen]

    lost = sum(1 for d in (*local, *elsewhere) if d not in seen_there)
    base = _percentiles(delays(local, seen_there))
    other = _percentiles(delays(elsewhere, seen_there))
    return {
        "writes": writes,
        "gap_s": gap,
        "not_delivered_in_10s": lost,
        "baseline_local_write_to_peer_ms": base,
        "other_process_noticed_by_daemon_ms": _percentiles(delays(elsewhere, seen_here)),
        "other_process_write_to_peer_ms": other,
        "ratio_p50": round(other["p50"] / base["p50"], 2) if base["p50"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.2)
    parser.add_argument("--json", action="store_true", help="indented JSON on stdout")
    args = parser.parse_args()
    if args.writes < 1 or args.gap < 0:
        parser.error("need --writes >= 1 and --gap >= 0")
    with tempfile.TemporaryDirectory() as tmp:
        result = trio.run(_measure, args.writes, args.gap, Path(tmp))
    print(json.dumps(result, indent=2 if args.json else None))
    print(
        f"other process -> peer p50 {result['other_process_write_to_peer_ms']['p50']} ms"
        f" (noticed by the daemon p50 {result['other_process_noticed_by_daemon_ms']['p50']} ms),"
        f" local write -> peer p50 {result['baseline_local_write_to_peer_ms']['p50']} ms,"
        f" ratio {result['ratio_p50']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
