#!/usr/bin/env python3
"""Benchmark of the query index (issue 11): build, freshness, queries, search, views, size.

``--docs`` documents (default 100,000) of a few fields each (year, customer, amount, status, a
short title) spread over 3 databases of one tenant, written locally in batches. Then:

- ``build_docs_per_s``: the index built from nothing (every document materialized and indexed);
- ``commit_to_visible_ms``: p50/p99 from a local commit returning to a query that finds it
  (the query follows the log first: this is the index's freshness);
- ``query_ms``: p50/p99 of a filtered (status, amount range), sorted (amount desc) query with
  limit 50 over the 3 databases; ``scan_ms``, measured in the same run, is a linear scan of
  the same materialized documents in memory (filter, sort, top 50: the reference system's
  way) and ``scan_over_query`` the ratio;
- ``search_word_ms`` / ``search_prefix_ms``: p50/p99 of a full-text query for one word (in
  about 1.2% of the documents: titles of 6 words from a vocabulary of 500) and for a prefix
  (``invoice1*``: 11 words, about 13% of the documents), BM25-ranked, best 20 with snippets;
- ``tree_ms``: p50 of reading a 3-level category tree (year > customer > status) with
  count/sum/avg totals; ``tree_computed_ms``: the same with a computed first category (amount
  band) and a computed total (``amount * 0.8``);
- ``index_bytes_per_doc``: the SQLCipher file (and its WAL) over the document count.

``*_cpu_*`` figures are the CPU time for the same work (this process's, and for the build its
worker processes' too): on a machine shared with other work the wall-clock figures mostly
measure the wait for a core. ``build_workers``: the worker processes the build used
(`mindoo_p2p.index.build_workers`; ``--workers N`` to choose, 0 for none).

``--build-only`` measures the build alone (to compare two trees back to back).

Targets (issue 11): build >= 10,000 docs/s; commit to visible p50 < 10 ms, p99 < 50 ms; query
p50 < 5 ms; search p50 < 10 ms; tree < 50 ms. Prints one JSON object (indented with --json)
and a one-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.index import QueryIndex
from mindoo_p2p.node import Node

_STEMS = [
    *("invoice", "renewal", "upgrade", "outage", "migration", "audit", "training"),
    *("onboarding", "contract", "refund", "license", "warranty", "shipment", "backlog"),
    *("escalation", "review", "pricing", "discount", "quarterly", "annual"),
]
WORDS = [f"{stem}{n}" if n else stem for n in range(25) for stem in _STEMS]
"""500 words; a title holds 6: each word is in about 1.2% of the documents."""
CUSTOMERS = [f"customer-{i:02d}" for i in range(50)]


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(samples: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(samples), 3),
        "p99": round(percentile(samples, 99), 3),
    }


def populate(node: Node, docs: int, rng: random.Random) -> None:
    tenant = node.create_tenant("bench")
    dbs = [tenant.create_db(f"crm{year}") for year in (2024, 2025, 2026)]
    made = 0
    while made < docs:
        db = dbs[made % 3]
        with db.batch():
            for _ in range(min(1000, docs - made)):
                db.create_document(
                    {
                        "year": 2024 + made % 3,
                        "customer": rng.choice(CUSTOMERS),
                        "amount": rng.randrange(0, 100_000),
                        "status": rng.choice(("open", "won", "lost")),
                        "title": " ".join(rng.choice(WORDS) for _ in range(6)) + f" {made}",
                    }
                )
                made += 1


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the index build's workers are
    stopped, so counted, when the build returns)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def open_index(node: Node, workers: int | None) -> QueryIndex:
    """``node.index``, or with ``workers`` build workers when given."""
    if workers is None:
        return node.index
    return QueryIndex(node.home, node.index.store._key, node, workers=workers)


def timed_build(index: QueryIndex, docs: int) -> dict[str, Any]:
    started, cpu = time.perf_counter(), cpu_seconds()
    report = index.refresh()
    build_s = time.perf_counter() - started
    build_cpu_s = cpu_seconds() - cpu
    assert report.indexed == docs, report
    return {
        "build_workers": index.follower._workers,
        "build_docs_per_s": round(docs / build_s),
        "build_s": round(build_s, 2),
        "build_cpu_docs_per_s": round(docs / build_cpu_s),
    }


def measure_build(docs: int, workers: int | None) -> dict[str, Any]:
    """The full build alone (``--build-only``): to compare trees back to back."""
    with tempfile.TemporaryDirectory() as tmp:
        node = Node.init(Path(tmp) / "n", "benchmark password", kdf=KdfProfile.TESTING)
        try:
            populate(node, docs, random.Random(11))
            return {"docs": docs, **timed_build(open_index(node, workers), docs)}
        finally:
            node.close()


def measure(docs: int, samples: int, workers: int | None) -> dict[str, Any]:
    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        node = Node.init(Path(tmp) / "n", "benchmark password", kdf=KdfProfile.TESTING)
        try:
            started = time.perf_counter()
            populate(node, docs, rng)
            write_s = time.perf_counter() - started
            tenant = node.tenant("bench")
            index = open_index(node, workers)
            build = timed_build(index, docs)
            sources = index.all_sources(tenant)
            sort, limit = ["amount:desc"], 50
            # The first query makes the path indexes.
            index.query(sources, where={"status": "open"}, sort=sort, limit=limit)

            query_ms, query_cpu_ms = [], []
            for _ in range(samples):
                low = rng.randrange(0, 90_000)
                where = {"status": "open", "amount": {"$gte": low, "$lt": low + 10_000}}
                t0, c0 = time.perf_counter(), time.process_time()
                result = index.query(sources, where=where, sort=sort, limit=limit)
                query_ms.append((time.perf_counter() - t0) * 1000)
                query_cpu_ms.append((time.process_time() - c0) * 1000)
            assert result.rows

            bodies = [json.loads(b) for (b,) in index.store.read("SELECT body FROM docs")]
            scan_ms = []
            for _ in range(max(5, samples // 20)):
                low = rng.randrange(0, 90_000)
                t0 = time.perf_counter()
                matching = [
                    b
                    for b in bodies
                    if b.get("status") == "open" and low <= b.get("amount", -1) < low + 10_000
                ]
                matching.sort(key=lambda b: -b["amount"])
                _top = matching[:50]
                scan_ms.append((time.perf_counter() - t0) * 1000)

            search_ms: dict[str, list[float]] = {"word": [], "prefix": []}
            for i in range(samples):
                word = rng.choice(WORDS)
                kind = "word" if i % 2 else "prefix"
                terms = word if kind == "word" else word[: max(3, len(word) - 1)] + "*"
                t0 = time.perf_counter()
                index.search(sources, terms, limit=20)
                search_ms[kind].append((time.perf_counter() - t0) * 1000)

            visible_ms = []
            db = tenant.open_db("crm2025")
            for i in range(samples):
                db.create_document({"marker": i, "status": "open", "amount": 1})
                t0 = time.perf_counter()
                found = index.query(sources, where={"marker": i}, limit=1)
                visible_ms.append((time.perf_counter() - t0) * 1000)
                assert found.rows, "a committed document must be visible"

            node.views.define(
                tenant,
                "tree",
                {
                    "sources": [{"tenant": "bench", "db": "*"}],
                    "categories": ["year", "customer", "status"],
                    "totals": [
                        {"op": "count"},
                        {"name": "sum", "op": "sum", "path": "amount"},
                        {"name": "avg", "op": "avg", "path": "amount"},
                    ],
                },
                local=True,
            )
            reader = node.views.reader(tenant, "tree")
            reader.tree()
            tree_ms, tree_cpu_ms = [], []
            for _ in range(max(5, samples // 10)):
                t0, c0 = time.perf_counter(), time.process_time()
                tree = reader.tree()
                tree_ms.append((time.perf_counter() - t0) * 1000)
                tree_cpu_ms.append((time.process_time() - c0) * 1000)
            assert tree["count"] >= docs

            index.store.checkpoint()
            size = index.store.size_bytes()  # before the computed view adds its facet table

            # the same shape with computed values: a category and a total by expressions
            computed_tree = {
                "sources": [{"tenant": "bench", "db": "*"}],
                "categories": [
                    {"name": "band", "expr": {"$round": [{"$div": ["$amount", 10_000]}, 0]}},
                    "customer",
                    "status",
                ],
                "totals": [
                    {"op": "count"},
                    {"name": "net", "op": "sum", "expr": {"$mul": ["$amount", 0.8]}},
                ],
            }
            node.views.define(tenant, "computed", computed_tree, local=True)
            computed_reader = node.views.reader(tenant, "computed")
            computed_reader.tree()
            computed_ms, computed_cpu_ms = [], []
            for _ in range(max(5, samples // 10)):
                t0, c0 = time.perf_counter(), time.process_time()
                computed_reader.tree()
                computed_ms.append((time.perf_counter() - t0) * 1000)
                computed_cpu_ms.append((time.process_time() - c0) * 1000)

            query = timed(query_ms)
            scan = timed(scan_ms)
            return {
                "docs": docs,
                "databases": 3,
                "vocabulary": len(WORDS),
                "samples": samples,
                "write_docs_per_s": round(docs / write_s),
                **build,
                "commit_to_visible_ms": timed(visible_ms),
                "query_ms": query,
                "query_cpu_ms": timed(query_cpu_ms),
                "scan_ms": scan,
                "scan_over_query": round(scan["p50"] / query["p50"], 1),
                "search_word_ms": timed(search_ms["word"]),
                "search_prefix_ms": timed(search_ms["prefix"]),
                "tree_ms": timed(tree_ms),
                "tree_cpu_ms": timed(tree_cpu_ms),
                "tree_computed_ms": timed(computed_ms),
                "tree_computed_cpu_ms": timed(computed_cpu_ms),
                "index_bytes": size,
                "index_bytes_per_doc": round(size / docs, 1),
            }
        finally:
            node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="indented JSON on stdout")
    parser.add_argument("--build-only", action="store_true", help="measure the full build only")
    parser.add_argument(
        "--workers", type=int, help="build worker processes (default: the node's, 1 per core)"
    )
    args = parser.parse_args()
    if args.docs < 100 or args.samples < 10:
        parser.error("--docs must be at least 100 and --samples at least 10")
    if args.build_only:
        built = measure_build(args.docs, args.workers)
        print(json.dumps(built, indent=2 if args.json else None))
        print(
            f"{built['docs']} docs: build {built['build_docs_per_s']} docs/s"
            f" ({built['build_cpu_docs_per_s']} docs/s of CPU, {built['build_workers']} workers)",
            file=sys.stderr,
        )
        return
    result = measure(args.docs, args.samples, args.workers)
    print(json.dumps(result, indent=2 if args.json else None))
    print(
        f"{result['docs']} docs: build {result['build_docs_per_s']} docs/s, commit->visible"
        f" p50 {result['commit_to_visible_ms']['p50']} ms p99"
        f" {result['commit_to_visible_ms']['p99']} ms, query p50 {result['query_ms']['p50']}"
        f" ms (scan x{result['scan_over_query']}), search p50 {result['search_word_ms']['p50']} ms"
        f" (prefix {result['search_prefix_ms']['p50']} ms),"
        f" tree p50 {result['tree_ms']['p50']} ms (cpu {result['tree_cpu_ms']['p50']} ms,"
        f" computed {result['tree_computed_ms']['p50']} ms,"
        f" cpu {result['tree_computed_cpu_ms']['p50']} ms),"
        f" {result['index_bytes_per_doc']} bytes/doc",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
