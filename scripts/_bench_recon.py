"""Part (a) of ``bench_sync.py``: reconciliation round trips, bytes and CPU, against a naive
"send all ids" baseline measured on the same sets.

``--n N --d D --layout recent|scattered`` runs one case (its flat object is the result);
without them every case runs: n in {10^4, 10^5, 10^6}, d in {0, 10, 1000, 100000} (d >= n
skipped), both layouts.

A case: each side holds n items (author timestamp, 32-byte id) of one database; d of them
differ, d/2 only on each side. The items span 30 days (``--span-s S``: S seconds, e.g. 60 for a
burst of writes); with ``recent`` the differing ones lie in the last 10 minutes (a device that
was offline, gossip loss), with ``scattered`` anywhere.
One session: `ReconInitiator` over one side, `ReconResponder` over the other, in memory (no
transport framing counted), with a frame limit of 256 KiB by default. Reported per case:
``round_trips``; ``bytes`` (every message, both ways); ``cpu_s`` (Python CPU time of the whole
session, both sides, in this process, opening the snapshots included); ``exact`` (have/need equal
the brute-force difference); ``baseline_bytes``: the initiator sends all its ids and the
responder answers with the ids each side lacks, in one round trip: 32 bytes per id plus a
varint count per list (32*n + 32*d + framing).

Storage: every side is a real `EntryStore` read through ``EntryStore.recon_snapshot`` (the LMDB
index), for every n including 10^6, by default. The stores are built with a bulk helper that
writes the reconciliation rows directly through the same ``index_items`` the append path uses,
in chunks of 100,000 per transaction, without sealing or storing entries (sealing and signing
2 x 10^6 entries would take minutes; fsck would flag such a store). The common items of one n
are written once into a base store, which each case copies (``base_build_s``; a case's
``build_s`` is the copy plus the rest of its items). ``--storage vector`` runs the same sessions
over in-memory `VectorStorage` instead. ``index_insert_us`` is the CPU cost of that index
maintenance as appends pay it: 10^5 items in time order, 1,000 per write transaction.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mindoo_p2p.recon import (
    ReconInitiator,
    ReconItem,
    ReconResponder,
    ReconStorage,
    VectorStorage,
)
from mindoo_p2p.recon._varint import encode_varint
from mindoo_p2p.store import EntryStore, scope_key
from mindoo_p2p.store._recon_index import index_items

TENANT = b"bench-tenant-id!"
DATABASE = "bench"
BASE_MS = 1_700_000_000_000
SPAN_MS = 30 * 24 * 3600 * 1000
RECENT_MS = 10 * 60 * 1000
BULK_CHUNK = 100_000
SIZES = (10**4, 10**5, 10**6)
DIFFERENCES = (0, 10, 1000, 100_000)
LAYOUTS = ("recent", "scattered")
MAX_ROUNDS = 10_000

Item = tuple[int, bytes]


@dataclass(frozen=True)
class CaseSets:
    common: list[Item]
    only_initiator: list[Item]
    only_responder: list[Item]


def common_sequence(n: int, seed: int) -> list[Item]:
    """n items spread over SPAN_MS (30 days unless ``--span-s``); a case with d differences
    shares the first n - d/2."""
    rnd = random.Random(f"{seed}/common/{n}")
    return [(BASE_MS + rnd.randrange(SPAN_MS), rnd.randbytes(32)) for _ in range(n)]


def make_sets(common: list[Item], d: int, layout: str, seed: int) -> CaseSets:
    """Each side len(common) items, d/2 of them only its own (see the module docstring)."""
    n = len(common)
    rnd = random.Random(f"{seed}/{n}/{d}/{layout}")
    if layout == "recent":
        recent = min(RECENT_MS, SPAN_MS)
        start, span = BASE_MS + SPAN_MS - recent, recent
    else:
        start, span = BASE_MS, SPAN_MS

    def draw(count: int) -> list[Item]:
        return [(start + rnd.randrange(span), rnd.randbytes(32)) for _ in range(count)]

    half = d // 2
    return CaseSets(common[: n - half], draw(half), draw(d - half))


def bulk_index(store: EntryStore, items: Sequence[Item]) -> None:
    """Write reconciliation rows straight into ``store`` (no entries): the benchmark's bulk
    helper, through the append path's own ``index_items``."""
    scope = scope_key(TENANT, DATABASE)
    for start in range(0, len(items), BULK_CHUNK):
        chunk = items[start : start + BULK_CHUNK]
        with store._writing() as txn:
            index_items(txn, store._tables, [(scope, ts, item_id) for ts, item_id in chunk])


@dataclass(frozen=True)
class BaseStore:
    """A closed store holding the first ``held`` items of ``common``: every case of this n
    starts from a copy of it (building 10^6 rows twice per case would dominate the run)."""

    common: list[Item]
    held: int
    path: Path


def build_base(root: Path, common: list[Item], held: int) -> BaseStore:
    path = root / f"base-{len(common)}"
    with EntryStore(path) as store:
        bulk_index(store, common[:held])
    return BaseStore(common, held, path)


@contextmanager
def lmdb_pair(
    root: Path, base: BaseStore, sets: CaseSets
) -> Iterator[tuple[EntryStore, EntryStore]]:
    """Both sides: a copy of the base store plus the rest of their items."""
    shared_rest = sets.common[base.held :]
    sides = []
    for name, own in (("initiator", sets.only_initiator), ("responder", sets.only_responder)):
        shutil.copytree(base.path, root / name)
        sides.append((root / name, shared_rest + own))
    with EntryStore(sides[0][0]) as ours, EntryStore(sides[1][0]) as theirs:
        bulk_index(ours, sides[0][1])
        bulk_index(theirs, sides[1][1])
        yield ours, theirs


@dataclass
class SessionResult:
    round_trips: int
    total_bytes: int
    largest_message: int
    have: list[bytes]
    need: list[bytes]


def run_session(
    initiator_storage: ReconStorage, responder_storage: ReconStorage, frame_limit: int
) -> SessionResult:
    initiator = ReconInitiator(initiator_storage, frame_limit)
    responder = ReconResponder(responder_storage, frame_limit)
    message: bytes | None = initiator.initiate()
    total = largest = 0
    have: list[bytes] = []
    need: list[bytes] = []
    while message is not None:
        reply = responder.reconcile(message)
        total += len(message) + len(reply)
        largest = max(largest, len(message), len(reply))
        message, new_have, new_need = initiator.reconcile(reply)
        have += new_have
        need += new_need
        if initiator.rounds > MAX_ROUNDS:
            raise RuntimeError("the session does not end")
    return SessionResult(initiator.rounds, total, largest, have, need)


def baseline_bytes(initiator_count: int, have: int, need: int) -> int:
    """The initiator's ids, then the two lists of missing ids, each with a varint count."""
    return sum(len(encode_varint(count)) + 32 * count for count in (initiator_count, have, need))


def run_case(
    base: BaseStore, d: int, layout: str, *, storage: str, frame_limit: int, seed: int, root: Path
) -> dict[str, Any]:
    n = len(base.common)
    sets = make_sets(base.common, d, layout, seed)
    initiator_count = len(sets.common) + len(sets.only_initiator)
    build_start = time.perf_counter()
    if storage == "vector":
        ours = VectorStorage(ReconItem(*item) for item in sets.common + sets.only_initiator)
        theirs = VectorStorage(ReconItem(*item) for item in sets.common + sets.only_responder)
        build_s = time.perf_counter() - build_start
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        result = run_session(ours, theirs, frame_limit)
        cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    else:
        with (
            tempfile.TemporaryDirectory(dir=root) as tmp,
            lmdb_pair(Path(tmp), base, sets) as (ours_db, theirs_db),
        ):
            build_s = time.perf_counter() - build_start
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            with (
                ours_db.recon_snapshot(TENANT, DATABASE) as ours_lmdb,
                theirs_db.recon_snapshot(TENANT, DATABASE) as theirs_lmdb,
            ):
                result = run_session(ours_lmdb, theirs_lmdb, frame_limit)
            cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    exact = (
        len(result.have) == len(set(result.have))
        and len(result.need) == len(set(result.need))
        and set(result.have) == {item_id for _, item_id in sets.only_initiator}
        and set(result.need) == {item_id for _, item_id in sets.only_responder}
    )
    return {
        "n": n,
        "d": d,
        "layout": layout,
        "storage": storage,
        "round_trips": result.round_trips,
        "bytes": result.total_bytes,
        "baseline_bytes": baseline_bytes(initiator_count, len(result.have), len(result.need)),
        "baseline_round_trips": 1,
        "largest_message": result.largest_message,
        "frame_limit": frame_limit,
        "cpu_s": round(cpu_s, 4),
        "wall_s": round(wall_s, 4),
        "build_s": round(build_s, 3),
        "exact": exact,
    }


def run_cases(
    cases: list[tuple[int, int, str]],
    *,
    storage: str,
    frame_limit: int,
    seed: int,
    root: Path,
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run ``cases`` (n, d, layout), building one base store per n; return the case objects
    and the base build times (seconds, by n)."""
    results: list[dict[str, Any]] = []
    base_build_s: dict[str, float] = {}
    for n in sorted({case[0] for case in cases}):
        common = common_sequence(n, seed)
        largest_half = max(d for m, d, _ in cases if m == n) // 2
        started = time.perf_counter()
        base = build_base(root, common, n - largest_half) if storage == "lmdb" else None
        base_build_s[str(n)] = round(time.perf_counter() - started, 3)
        for m, d, layout in cases:
            if m != n:
                continue
            case = run_case(
                base or BaseStore(common, 0, root),
                d,
                layout,
                storage=storage,
                frame_limit=frame_limit,
                seed=seed,
                root=root,
            )
            results.append(case)
            if progress:
                print("bench_sync: " + recon_summary(case), file=sys.stderr, flush=True)
        if base is not None:
            shutil.rmtree(base.path)
    return results, base_build_s


def measure_index_insert(root: Path, count: int = 100_000, batch: int = 1000) -> float:
    """CPU microseconds per item of index maintenance as appends pay it: ``count`` items in time
    order, ``batch`` per write transaction (the durable commit, shared with the rest of the
    append, is left out: the CPU clock does not count waiting for the disk)."""
    rnd = random.Random(0)
    scope = scope_key(TENANT, DATABASE)
    stamps = sorted(BASE_MS + rnd.randrange(SPAN_MS) for _ in range(count))
    items = [(scope, ts, rnd.randbytes(32)) for ts in stamps]
    with tempfile.TemporaryDirectory(dir=root) as tmp, EntryStore(Path(tmp) / "s") as store:
        start = time.process_time()
        for offset in range(0, count, batch):
            with store._writing() as txn:
                index_items(txn, store._tables, items[offset : offset + batch])
        return (time.process_time() - start) / count * 1e6


def all_cases() -> Iterator[tuple[int, int, str]]:
    for n in SIZES:
        for d in DIFFERENCES:
            if d >= n:
                continue
            for layout in LAYOUTS:
                yield n, d, layout


def set_span(seconds: float) -> None:
    """``--span-s``: the items of every case span ``seconds`` instead of 30 days."""
    global SPAN_MS
    SPAN_MS = int(seconds * 1000)


def measure(
    root: Path,
    case: tuple[int, int, str] | None,
    *,
    storage: str,
    frame_limit: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Part (a): one ``case`` (n, d, layout: its flat object) or, with None, every case."""
    started = time.perf_counter()
    single = case is not None
    cases = [case] if case is not None else list(all_cases())
    results, base_build_s = run_cases(
        cases,
        storage=storage,
        frame_limit=frame_limit,
        seed=seed,
        root=root,
        progress=progress and not single,
    )
    if case is not None:
        result = results[0]
        result["build_s"] = round(result["build_s"] + base_build_s[str(case[0])], 3)
        return result
    return {
        "recon": results,
        "base_build_s": base_build_s,
        "index_insert_us": round(measure_index_insert(root), 3),
        "recon_s": round(time.perf_counter() - started, 1),
    }


def recon_summary(result: dict[str, Any]) -> str:
    """Part (a)'s share of the one-line summary: one case's object, or every case's (with the
    n = 10^6, d = 1,000, recent case, or the last one, as the example)."""

    def one(case: dict[str, Any]) -> str:
        return (
            f"n={case['n']} d={case['d']} {case['layout']}: {case['round_trips']} RT,"
            f" {case['bytes'] / 1000:.1f} KB (baseline {case['baseline_bytes'] / 1000:.0f} KB),"
            f" {case['cpu_s']:.2f} s CPU"
        )

    if "recon" not in result:
        return one(result)
    cases = result["recon"]
    inexact = sum(not case["exact"] for case in cases)
    pick = next(
        (c for c in cases if (c["n"], c["d"], c["layout"]) == (10**6, 1000, "recent")), cases[-1]
    )
    return (
        f"recon {len(cases)} cases in {result['recon_s']:.0f} s, {inexact} inexact;"
        f" {one(pick)}; index insert {result['index_insert_us']:.2f} us/item"
    )
