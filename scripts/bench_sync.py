#!/usr/bin/env python3
"""Benchmark of synchronisation: reconciliation, catch-up, propagation and idle cost.

Prints one JSON object (with --json, indented; otherwise on one line) and a one-line summary on
stderr. The parts, each measured in its own module next to this one (its docstring says what it
measures and reports):

(a) Reconciliation (``_bench_recon.py``): round trips, bytes and CPU of one session between two
stores of n items with d differences, against a "send all ids" baseline on the same sets.
``--n N --d D --layout recent|scattered`` runs one case; without them every case runs.

(b) Catch-up (``_bench_catchup.py``, ``--catchup N``, default 100,000): an empty member node
catches up from a ``mindoo node run`` process holding N entries, over loopback; baseline: the
same entries ingested locally.

(c) Propagation (``_bench_propagation.py``, ``--changes K``, default 50): the time until a
write reaches every node of a 10-node in-process cluster (line and random topologies);
baseline: a 2-node cluster.

(d) Idle (``_bench_idle.py``, ``--idle-seconds S``, default 60): CPU and memory of a node with
two connected, caught-up peers while nobody writes; baseline: a lone node.

(e) Daemons end to end (``--part daemons``; ``--daemons-n N``, default 100,000, and
``--daemons-d D``, default 1,000): first sync of N vs N entries with D differences, idle
re-sync, warm re-sync and clone, between real daemon processes, with every byte on the wire
counted by a relay; see ``scripts/_bench_daemons.py``.

``--part recon|catchup|propagation|idle|daemons`` (repeatable) runs only those parts; by
default the first four run (about 5 minutes on 2 cores). Keys of parts not run are null.
``load_avg`` (1 minute, before and after) tells whether something else loaded the machine
during the run.

Shared helpers (node processes, homes, CPU readings) live in ``_bench_common.py``; this module
is the command line, the `TARGETS` table, the summary and the target check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench_catchup
import _bench_daemons
import _bench_idle
import _bench_propagation
import _bench_recon
import trio
from _bench_common import load_average, running_node

from mindoo_p2p.recon import DEFAULT_FRAME_SIZE_LIMIT

HOOKS: dict[str, None] = {
    "catchup_entries_per_s": None,
    "propagation_p50_ms": None,
    "propagation_p99_ms": None,
    "idle_cpu_percent": None,
    "idle_rss_mb": None,
}
PARTS = ("recon", "catchup", "propagation", "idle", "daemons")
DEFAULT_PARTS = ("recon", "catchup", "propagation", "idle")
TARGETS = {
    # Issue 8: catch-up of an empty node from 100,000 entries over the network (the default
    # size); from 1,000,000 on the issue asks for >= 12,000/s (`LARGE_CATCHUP`).
    "catchup_entries_per_s": (">=", 15_000),
    "propagation_p50_ms": ("<", 100),
    "propagation_p99_ms": ("<", 500),
    "idle_cpu_percent": ("<", 1.0),
}
LARGE_CATCHUP = (1_000_000, 12_000)
"""A catch-up of at least this many entries has this target instead (entries/s)."""


def summary(result: dict[str, Any]) -> str:
    """The one-line summary of whichever parts ran."""
    parts = []
    if "n" in result or "recon" in result:
        parts.append(_bench_recon.recon_summary(result))
    if result.get("catchup"):
        c = result["catchup"]
        parts.append(
            f"catch-up {c['entries_per_s']}/s ({c['transferred']} entries in {c['seconds']} s,"
            f" {c['catchup_vs_local_ingest']}x local ingest)"
        )
    if result.get("propagation"):
        p = result["propagation"]
        parts.append(
            f"propagation p50/p99 random {p['random']['p50_ms']}/{p['random']['p99_ms']} ms,"
            f" line {p['line']['p50_ms']}/{p['line']['p99_ms']} ms,"
            f" one hop {p['one_hop']['p50_ms']} ms"
        )
    if result.get("idle"):
        i = result["idle"]
        parts.append(
            f"idle {i['cpu_percent']}% CPU, {i['rss_mb']} MB"
            f" (no peers {i['no_peers']['cpu_percent']}%)"
        )
    if result.get("daemons"):
        parts.append(_bench_daemons.summary(result["daemons"]))
    missed = [key for key, check in result.get("targets", {}).items() if not check["met"]]
    if result.get("targets"):
        parts.append("targets met" if not missed else "missed: " + ", ".join(missed))
    return "bench_sync: " + "; ".join(parts)


def check_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For each measured key with a target: the target and whether it is met."""
    checks = {}
    for key, (op, bound) in TARGETS.items():
        catchup = result.get("catchup") if key == "catchup_entries_per_s" else None
        if catchup and catchup["transferred"] >= LARGE_CATCHUP[0]:
            bound = LARGE_CATCHUP[1]
        value = result.get(key)
        if value is not None:
            met = value >= bound if op == ">=" else value < bound
            checks[key] = {"value": value, "target": f"{op} {bound}", "met": met}
    return checks


def progress_line(args: argparse.Namespace, text: str) -> None:
    if args.progress:
        print(f"bench_sync: {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    parser.add_argument("--n", type=int, help="items per side (one recon case)")
    parser.add_argument("--d", type=int, help="differences, d/2 on each side (one recon case)")
    parser.add_argument(
        "--layout", choices=_bench_recon.LAYOUTS, help="where the differences lie (one case)"
    )
    parser.add_argument("--storage", choices=("lmdb", "vector"), default="lmdb")
    parser.add_argument(
        "--frame-limit", type=int, default=DEFAULT_FRAME_SIZE_LIMIT, help="bytes per message"
    )
    parser.add_argument("--catchup", type=int, default=100_000, help="entries to catch up on")
    parser.add_argument("--changes", type=int, default=50, help="writes per topology")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle window")
    parser.add_argument("--daemons-n", type=int, default=100_000, help="entries per daemon (e)")
    parser.add_argument("--daemons-d", type=int, default=1000, help="differences (e)")
    parser.add_argument(
        "--daemons-no-clone", action="store_true", help="(e) without the clone scenario"
    )
    parser.add_argument(
        "--daemons-homes",
        type=Path,
        help="(e) copy the homes from this directory (built there on the first run)",
    )
    parser.add_argument(
        "--span-s",
        type=float,
        help="recon cases: the items span this many seconds instead of 30 days (60: a burst of"
        " writes, as a bulk import or the daemons part makes)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="indented JSON on stdout")
    parser.add_argument("--progress", action="store_true", help="stderr lines while running")
    args = parser.parse_args()
    chosen = (args.n, args.d, args.layout)
    if any(value is not None for value in chosen) and None in chosen:
        parser.error("--n, --d and --layout go together")
    if args.n is not None and not 0 <= args.d < args.n:
        parser.error("need 0 <= d < n")
    if args.catchup < 1 or args.changes < 1 or args.idle_seconds <= 0:
        parser.error("--catchup and --changes must be at least 1, --idle-seconds positive")
    if not 0 <= args.daemons_d < args.daemons_n:
        parser.error("need 0 <= --daemons-d < --daemons-n")
    if args.span_s is not None:
        if args.span_s < 0.001:
            parser.error("--span-s must be at least 0.001")
        _bench_recon.set_span(args.span_s)
    parts = set(args.part or DEFAULT_PARTS)
    if args.n is not None and "recon" not in parts:
        parser.error("--n, --d and --layout choose a recon case: add --part recon")
    started = time.perf_counter()
    load_before = load_average()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mindoo-bench-sync-") as tmp:
        root = Path(tmp)
        if "recon" in parts:
            (root / "recon").mkdir()
            case = None if args.n is None else (args.n, args.d, args.layout)
            recon = _bench_recon.measure(
                root / "recon",
                case,
                storage=args.storage,
                frame_limit=args.frame_limit,
                seed=args.seed,
                progress=args.progress,
            )
            result.update(recon)
            progress_line(args, "recon done")
        result.update(HOOKS)
        if "catchup" in parts:
            (root / "catchup").mkdir()
            result["catchup"] = _bench_catchup.measure_catchup(root / "catchup", args.catchup)
            result["catchup_entries_per_s"] = result["catchup"]["entries_per_s"]
            progress_line(args, f"catch-up {result['catchup']}")
        if "propagation" in parts:
            propagation = trio.run(
                _bench_propagation.measure_all_propagation,
                root / "propagation",
                args.changes,
                args.seed,
            )
            result["propagation"] = propagation
            result["propagation_p50_ms"] = propagation["random"]["p50_ms"]
            result["propagation_p99_ms"] = propagation["random"]["p99_ms"]
            progress_line(args, f"propagation {propagation}")
        if "idle" in parts:
            (root / "idle").mkdir()
            idle = _bench_idle.measure_idle(root / "idle", args.idle_seconds)
            result["idle"] = idle
            result["idle_cpu_percent"] = idle["cpu_percent"]
            result["idle_rss_mb"] = idle["rss_mb"]
        if "daemons" in parts:
            (root / "daemons").mkdir()
            result["daemons"] = _bench_daemons.measure(
                root / "daemons",
                args.daemons_n,
                args.daemons_d,
                running_node,
                clone=not args.daemons_no_clone,
                homes=args.daemons_homes,
            )
            progress_line(args, f"daemons {result['daemons']}")
    result["targets"] = check_targets(result)
    result["cpu_count"] = os.cpu_count()
    result["load_avg"] = [load_before, load_average()]
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2 if args.json else None))
    print(summary(result), file=sys.stderr)


if __name__ == "__main__":
    main()
