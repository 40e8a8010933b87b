#!/usr/bin/env python3
"""Benchmark of the Automerge layer: the cost of a change as a document's history grows.

A known limit of automerge 1.0.0rc1 (the pinned binding): a change that overwrites keys costs
more the more often those keys were overwritten before, because the binding's op set keeps
every overwritten value. One document, ``--keys`` top-level keys (default 10); one change at a
time sets one key (round-robin) through `AutomergeDocument.change`, which also extracts the
change bytes as a local write does. At each checkpoint (``--checkpoints``, overwrites done so
far) the median of 200 changes is taken. The baseline, measured in the same run, is the first
checkpoint (a fresh document); ``ratio`` is each checkpoint's median over it.

Prints one JSON object (indented with --json) and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from mindoo_p2p.crdt import AutomergeDocument

SAMPLES = 200


def measure(keys: int, checkpoints: list[int]) -> dict[str, Any]:
    doc = AutomergeDocument()
    done = 0

    def change() -> float:
        nonlocal done
        start = time.perf_counter()
        with doc.change() as root:
            root[f"k{done % keys}"] = done
        done += 1
        return (time.perf_counter() - start) * 1e6

    rows = []
    for target in sorted(checkpoints):
        while done < target:
            change()
        median = statistics.median(change() for _ in range(SAMPLES))
        rows.append({"overwrites_before": target, "change_us_p50": round(median, 1)})
    base = rows[0]["change_us_p50"]
    for row in rows:
        row["ratio"] = round(row["change_us_p50"] / base, 2)
    return {"keys": keys, "samples_per_checkpoint": SAMPLES, "checkpoints": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--checkpoints", default="0,1000,10000,30000")
    parser.add_argument("--json", action="store_true", help="indented JSON on stdout")
    args = parser.parse_args()
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    if args.keys < 1 or any(c < 0 for c in checkpoints):
        parser.error("--keys must be >= 1 and checkpoints >= 0")
    result = measure(args.keys, checkpoints)
    print(json.dumps(result, indent=2 if args.json else None))
    parts = [
        f"{row['overwrites_before']}: {row['change_us_p50']} us (x{row['ratio']})"
        for row in result["checkpoints"]
    ]
    print("one-key change after N overwrites: " + ", ".join(parts), file=sys.stderr)


if __name__ == "__main__":
    main()
