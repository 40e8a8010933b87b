#!/usr/bin/env python3
"""Benchmark of the local node: writes, ingest, single-write latency, document reads, disk use.

Prints one JSON object (with --json) and a one-line summary on stderr. Targets on a 2-core
machine: >= 15,000 local changes/s at 100,000 changes and >= 12,000/s at 1,000,000, >= 20,000
ingested entries/s, single durable write p99 < 10 ms, first read of a 10,000-change document
< 100 ms, cached read < 1 ms, and a store of small documents under 700 bytes per entry.

Disk use is measured on closed stores: ``store_bytes_per_entry`` is the pages LMDB uses
(``last_pgno + 1``) times the page size over the entries stored (the file's high-water mark, free
pages included: pages freed by the last commits are reused by the next ones, so that overhead
is per commit, not per entry); ``live_bytes_per_entry`` counts only the pages the tables hold,
broken down in ``table_bytes_per_entry`` (leaf + branch + overflow pages of each sub-database). The
``documents`` scenario creates ``--documents`` small documents (one entry each) inside
``db.batch()`` blocks of 1000 in a fresh node and reports their rate, the bytes per entry of
that store and the resident memory afterwards (documents created in a batch must not stay
cached).

The local-write scenario reports the process CPU per change overall and per tenth of the run
(``local_cpu_us_per_change_by_tenth``: what grows with the store or the documents' history),
and the CPU of the writing thread alone (``local_writer_thread_cpu_us_per_change``: where the
native sealer is built, batches are sealed ahead on a second thread, `sealing_ahead`);
``--writes-only`` runs it alone (for 10^6), ``--rotate-documents N`` writes to 100 new documents
every N changes, so the store grows while no document's Automerge history does.

Baselines measured in the same run, as ratios:
- `fsync_commits_per_s`: one empty-ish durable LMDB transaction per write on this disk: how much of
  the single-write latency is the disk's;
- `verify_single_core_per_s`: Ed25519 verification on one core, the ceiling ingest must beat by
  using both cores.

Ingest: ``ingest_entries_per_s`` ingests the writer's entries into a joined node through
`EntryIntake.ingest_batches`, 2,000 per batch (each batch's commit beside the next batch's
signature checks); ``ingest_serial_calls_entries_per_s`` the same entries into another node by
one `Node.ingest` call of 2,000 after another (nothing overlaps a commit).
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

import lmdb

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.crypto.signing import verify_signature
from mindoo_p2p.node import Node

PASSWORD = "bench-store"
BATCH = 1000
DOCS = 100


def bench_local_writes(node: Node, changes: int, rotate: int = 0) -> dict[str, Any]:
    """``changes`` changes to DOCS documents in batches of BATCH; with ``rotate``, DOCS new
    documents take over every ``rotate`` changes (each document's Automerge history then stays
    at ``rotate / DOCS`` changes while the store grows). Wall rate, process CPU per change, and
    the CPU per change of each tenth of the run (what grows with the store or the history)."""
    db = node.tenant("bench").create_db("writes")

    def new_documents() -> list[str]:
        with db.batch():
            return [db.create_document({"n": 0, "name": f"doc {i}"}) for i in range(DOCS)]

    ids = new_documents()
    tenth = max(changes // 10, 1)
    next_mark, done_mark = tenth, 0
    deciles: list[float] = []
    start = time.perf_counter()
    cpu_start = cpu_mark = time.process_time()
    thread_start = time.thread_time()
    done = 0
    while done < changes:
        if rotate and done and done % rotate == 0:
            ids = new_documents()
        with db.batch():
            for _ in range(min(BATCH, changes - done)):
                with db.change(ids[done % DOCS]) as doc:
                    doc["n"] = done
                    doc["note"] = "x"
                done += 1
        if done >= next_mark:  # a tenth of the run (or more, when a batch is larger) is done
            now = time.process_time()
            deciles.append(round((now - cpu_mark) / (done - done_mark) * 1e6, 1))
            cpu_mark, done_mark = now, done
            while next_mark <= done:
                next_mark += tenth
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    thread_cpu = time.thread_time() - thread_start
    return {
        "local_changes_per_s": changes / elapsed,
        "local_cpu_us_per_change": cpu / changes * 1e6,
        "local_writer_thread_cpu_us_per_change": thread_cpu / changes * 1e6,
        "local_cpu_us_per_change_by_tenth": deciles,
    }


def bench_ingest(source: Node, target: Node, *, pipelined: bool) -> float:
    """Ingest every entry of ``source`` into ``target`` in batches of 2000; only the ingest is
    timed (the source's entries are read first). ``pipelined``: through
    `EntryIntake.ingest_batches` (batch k+1 decoded and its signatures on the verifier
    workers while batch k commits); else one `Node.ingest` call after another."""
    raws = [entry.raw for entry in source.store.iter_entries()]
    batches = [raws[i : i + 2000] for i in range(0, len(raws), 2000)]
    start = time.perf_counter()
    if pipelined:
        results = list(target.intake.ingest_batches(batches))
    else:
        results = [target.ingest(batch) for batch in batches]
    elapsed = time.perf_counter() - start
    for result in results:
        if result.rejected:
            raise RuntimeError(f"ingest rejected {len(result.rejected)}: {result.rejected[0]}")
    return len(raws) / elapsed


def bench_single_writes(node: Node, count: int) -> dict[str, float]:
    db = node.tenant("bench").create_db("single")
    doc_id = db.create_document({"n": 0})
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        db.update(doc_id, {"n": i})
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    return {
        "write_p50_ms": statistics.median(latencies),
        "write_p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }


def bench_reads(home: Path, node: Node, changes: int) -> dict[str, float]:
    db = node.tenant("bench").create_db("reads")
    doc_id = db.create_document({"n": 0})
    done = 0
    while done < changes - 1:
        with db.batch():
            for _ in range(min(BATCH, changes - 1 - done)):
                db.update(doc_id, {"n": done, f"k{done % 100}": done})
                done += 1
    expected = db.get(doc_id)  # brings the cache up to date and writes a snapshot
    node.close()

    results: dict[str, float] = {}
    fresh = Node.open(home, PASSWORD)
    try:
        fdb = fresh.tenant("bench").open_db("reads")
        start = time.perf_counter()
        got = fdb.get(doc_id)
        results["first_read_10k_ms"] = (time.perf_counter() - start) * 1000
        assert got == expected
        reads = []
        for _ in range(200):
            start = time.perf_counter()
            fdb.get(doc_id)
            reads.append((time.perf_counter() - start) * 1000)
        results["cached_read_ms"] = statistics.median(reads)
        # The same first read with no snapshot: every entry decrypted and applied.
        tenant = fresh.tenant("bench")
        from mindoo_p2p.materializer import DocumentMaterializer

        bare = DocumentMaterializer(
            fresh.store, tenant.id, "reads", tenant.keyring, use_snapshots=False
        )
        start = time.perf_counter()
        md = bare.load(bytes.fromhex(doc_id))
        md.doc.to_py()
        results["first_read_10k_no_snapshot_ms"] = (time.perf_counter() - start) * 1000
    finally:
        fresh.close()
    return results


def bench_documents(home: Path, count: int) -> dict[str, float]:
    """Create ``count`` small documents in batches of 1000 in a fresh node; rate, disk, memory."""
    node = Node.init(home, PASSWORD, name="docs", kdf=KdfProfile.TESTING)
    try:
        db = node.create_tenant("docs").create_db("docs")
        rss_before = rss_bytes()
        start = time.perf_counter()
        done = 0
        while done < count:
            with db.batch():
                for _ in range(min(BATCH, count - done)):
                    db.create_document({"n": done, "name": f"document {done}", "done": False})
                    done += 1
        rate = count / (time.perf_counter() - start)
        rss_growth = rss_bytes() - rss_before
    finally:
        node.close()
    usage = store_usage(home / "store")
    return {
        "documents": count,
        "documents_created_per_s": round(rate),
        "documents_rss_growth_mb": round(rss_growth / 1e6, 1),
        "documents_store_bytes_per_entry": usage["store_bytes_per_entry"],
        "documents_live_bytes_per_entry": usage["live_bytes_per_entry"],
        "documents_avg_entry_bytes": usage["avg_entry_bytes"],
        "documents_table_bytes_per_entry": usage["table_bytes_per_entry"],
    }


def rss_bytes() -> int:
    """Resident set size of this process now (Linux), 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def store_usage(path: Path) -> dict[str, Any]:
    """Pages used by a closed entry store, per entry and per table (read-only, any schema)."""
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=64, subdir=True)
    try:
        stat = env.stat()
        psize = int(stat["psize"])
        env_main_pages = int(stat["leaf_pages"] + stat["branch_pages"] + stat["overflow_pages"])
        used = (int(env.info()["last_pgno"]) + 1) * psize
        tables: dict[str, int] = {}
        with env.begin() as txn:
            names = [name for name, _ in txn.cursor()]
        entries = 0
        raw_bytes = 0
        for name in names:
            db = env.open_db(name, create=False)
            with env.begin() as txn:
                stat = txn.stat(db)
                if name in (b"entries", b"sealed"):  # entry bytes: schema <= 3, schema 4
                    entries = int(stat["entries"])
                    raw_bytes = sum(len(v) for v in txn.cursor(db).iternext(keys=False))
            pages = stat["leaf_pages"] + stat["branch_pages"] + stat["overflow_pages"]
            tables[name.decode()] = int(pages) * psize
    finally:
        env.close()
    per = max(entries, 1)
    main = env_main_pages * psize
    return {
        "entries": entries,
        "store_bytes_per_entry": round(used / per),
        "live_bytes_per_entry": round((sum(tables.values()) + main) / per),
        "file_bytes_per_entry": round((path / "data.mdb").stat().st_size / per),
        "avg_entry_bytes": round(raw_bytes / per),
        "table_bytes_per_entry": {k: round(v / per, 1) for k, v in sorted(tables.items()) if v},
    }


def baseline_fsync(path: Path, count: int = 300) -> float:
    env = lmdb.open(str(path), map_size=1 << 26, sync=True, metasync=True)
    start = time.perf_counter()
    for i in range(count):
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), b"x" * 300)
    rate = count / (time.perf_counter() - start)
    env.close()
    return rate


def baseline_verify(count: int = 5000) -> float:
    key = SigningKeyPair.generate()
    msgs = [os.urandom(300) for _ in range(count)]
    sigs = [key.sign(m) for m in msgs]
    start = time.perf_counter()
    for m, s in zip(msgs, sigs, strict=True):
        verify_signature(key.public_key, m, s)
    return count / (time.perf_counter() - start)


def run(changes: int, documents: int, rotate: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mindoo-bench-") as tmp:
        root = Path(tmp)
        writer = Node.init(root / "writer", PASSWORD, name="writer", kdf=KdfProfile.TESTING)
        reader = Node.init(root / "reader", PASSWORD, name="reader", kdf=KdfProfile.TESTING)
        serial = Node.init(root / "serial", PASSWORD, name="serial", kdf=KdfProfile.TESTING)
        tenant = writer.create_tenant("bench")
        reader.join(writer.invite(tenant, reader.public_identity()))
        serial.join(writer.invite(tenant, serial.public_identity()))

        local = bench_local_writes(writer, changes, rotate)
        local_rate = local["local_changes_per_s"]
        ingest_rate = bench_ingest(writer, reader, pipelined=True)
        serial_rate = bench_ingest(writer, serial, pipelined=False)
        serial.close()
        single = bench_single_writes(writer, 1000)
        reads = bench_reads(root / "writer", writer, min(10_000, max(changes // 10, 1000)))
        reader.close()
        writer_usage = store_usage(root / "writer" / "store")
        reader_usage = store_usage(root / "reader" / "store")
        docs = bench_documents(root / "docs", documents) if documents else {}
        fsync_rate = baseline_fsync(root / "fsync")
        verify_rate = baseline_verify()
    return {
        "changes": changes,
        "local_changes_per_s": round(local_rate),
        "local_cpu_us_per_change": round(local["local_cpu_us_per_change"], 1),
        "local_writer_thread_cpu_us_per_change": round(
            local["local_writer_thread_cpu_us_per_change"], 1
        ),
        "local_cpu_us_per_change_by_tenth": local["local_cpu_us_per_change_by_tenth"],
        "rotate_documents_every": rotate,
        "ingest_entries_per_s": round(ingest_rate),
        "ingest_serial_calls_entries_per_s": round(serial_rate),
        **{k: round(v, 3) for k, v in single.items()},
        **{k: round(v, 3) for k, v in reads.items()},
        "writer_entries": writer_usage["entries"],
        "writer_store_bytes_per_entry": writer_usage["store_bytes_per_entry"],
        "writer_live_bytes_per_entry": writer_usage["live_bytes_per_entry"],
        "writer_avg_entry_bytes": writer_usage["avg_entry_bytes"],
        "writer_table_bytes_per_entry": writer_usage["table_bytes_per_entry"],
        "ingested_store_bytes_per_entry": reader_usage["store_bytes_per_entry"],
        "ingested_table_bytes_per_entry": reader_usage["table_bytes_per_entry"],
        **docs,
        "fsync_commits_per_s": round(fsync_rate),
        "verify_single_core_per_s": round(verify_rate),
        "ingest_vs_single_core_verify": round(ingest_rate / verify_rate, 2),
        "local_writes_vs_fsync_per_write": round(local_rate / fsync_rate, 2),
        "cpu_count": os.cpu_count(),
    }


def run_writes_only(changes: int, rotate: int) -> dict[str, Any]:
    """The local-write scenario alone, in a fresh node."""
    with tempfile.TemporaryDirectory(prefix="mindoo-bench-") as tmp:
        writer = Node.init(Path(tmp) / "writer", PASSWORD, name="writer", kdf=KdfProfile.TESTING)
        try:
            writer.create_tenant("bench")
            local = bench_local_writes(writer, changes, rotate)
        finally:
            writer.close()
    return {
        "changes": changes,
        "rotate_documents_every": rotate,
        "local_changes_per_s": round(local["local_changes_per_s"]),
        "local_cpu_us_per_change": round(local["local_cpu_us_per_change"], 1),
        "local_writer_thread_cpu_us_per_change": round(
            local["local_writer_thread_cpu_us_per_change"], 1
        ),
        "local_cpu_us_per_change_by_tenth": local["local_cpu_us_per_change_by_tenth"],
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100_000, help="local changes to write")
    parser.add_argument(
        "--documents",
        type=int,
        default=100_000,
        help="small documents to create in the documents scenario (0: skip it)",
    )
    parser.add_argument(
        "--rotate-documents",
        type=int,
        default=0,
        metavar="N",
        help=f"write to {DOCS} new documents every N local changes (0: the same {DOCS} throughout)",
    )
    parser.add_argument(
        "--writes-only",
        action="store_true",
        help="run the local-write scenario alone (no ingest, latency, read or disk parts)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON object on stdout")
    args = parser.parse_args()
    if args.changes < 1000:
        parser.error("--changes must be at least 1000")
    if args.documents < 0:
        parser.error("--documents must be >= 0")
    if args.rotate_documents < 0:
        parser.error("--rotate-documents must be >= 0")
    if args.writes_only:
        writes = run_writes_only(args.changes, args.rotate_documents)
        print(json.dumps(writes, indent=2 if args.json else None))
        print(
            f"bench_store: {writes['local_changes_per_s']} local changes/s,"
            f" {writes['local_cpu_us_per_change']} us CPU a change"
            f" ({writes['local_writer_thread_cpu_us_per_change']} of the writing thread)"
            f" (by tenth: {writes['local_cpu_us_per_change_by_tenth']})",
            file=sys.stderr,
        )
        return
    result = run(args.changes, args.documents, args.rotate_documents)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(json.dumps(result))
    print(
        f"bench_store: {result['local_changes_per_s']} local changes/s,"
        f" {result['ingest_entries_per_s']} ingested/s, write p99 {result['write_p99_ms']} ms,"
        f" first read 10k {result['first_read_10k_ms']} ms, cached {result['cached_read_ms']} ms,"
        f" {result['writer_store_bytes_per_entry']} B/entry (entries of"
        f" {result['writer_avg_entry_bytes']} B)"
        + (
            f", {result['documents_store_bytes_per_entry']} B/entry for {documents} small"
            f" documents, RSS +{result['documents_rss_growth_mb']} MB"
            if (documents := result.get("documents"))
            else ""
        ),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
