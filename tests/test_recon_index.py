"""The reconciliation index of the entry store (store/_recon_index.py).

LmdbReconStorage must answer exactly like the in-memory VectorStorage; sessions between two real
stores must find exactly the brute-force difference; appends must keep the index up to date
(duplicates and rejected entries included) without ever rebuilding it; fsck must notice damage
and rebuild_recon_index must repair it; a session's snapshot must not move under appends; an
older store must be upgraded once.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import lmdb
import pytest
from helpers import seal_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import NO_PREV, TENANT_LOG, Entry
from mindoo_p2p.errors import StoreError
from mindoo_p2p.recon import (
    MAX_TIMESTAMP,
    ReconInitiator,
    ReconItem,
    ReconResponder,
    ReconStorage,
    VectorStorage,
)
from mindoo_p2p.store import EntryStore, Rejected, RejectionKind, scope_key
from mindoo_p2p.store import _recon_index as recon_index
from mindoo_p2p.store import _recon_snapshot as recon_snapshot
from mindoo_p2p.store import entry_store as entry_store_module
from mindoo_p2p.store._layout import (
    RECON_BASE_LEVEL,
    RECON_FAN_SHIFT,
    RECON_SHIFTS,
    RECON_SPLIT_THRESHOLD,
    recon_agg_key,
    unpack_recon_agg,
)

AUTHOR = SigningKeyPair.generate()
KEY = random_key()
KEY_ID = b"recon-index-key1"
TENANT = b"R" * 16
DB = "contacts"
T0 = 1_700_000_000_000


_SEQ = itertools.count(1_000_000)


def seal(timestamp_ms: int, *, database: str = DB, seq: int | None = None) -> Entry:
    """A legacy (unchained) entry; each gets its own sequence number (two at one number would
    be a fork of AUTHOR, which withdraws them: see test_chains)."""
    return seal_entry(
        tenant_id=TENANT,
        database=database,
        author=AUTHOR,
        author_seq=next(_SEQ) if seq is None else seq,
        timestamp_ms=timestamp_ms,
        key_id=KEY_ID,
        key=KEY,
        payload=os.urandom(24),
    )


def spread_entries(rnd: random.Random, count: int) -> list[Entry]:
    """Entries over ~3 days, a third of them on a few hot timestamps (equal times)."""
    hot = [T0 + rnd.randrange(3 * 86_400_000) for _ in range(3)]
    return [
        seal(rnd.choice(hot) if rnd.random() < 0.33 else T0 + rnd.randrange(3 * 86_400_000))
        for _ in range(count)
    ]


def items_of(entries: list[Entry]) -> list[ReconItem]:
    return [ReconItem(e.header.timestamp_ms, e.id) for e in entries]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EntryStore]:
    with EntryStore(tmp_path / "store") as opened:
        yield opened


def run_session(
    ours: ReconStorage, theirs: ReconStorage, frame_limit: int = 256 * 1024
) -> tuple[list[bytes], list[bytes], int]:
    initiator = ReconInitiator(ours, frame_limit)
    responder = ReconResponder(theirs, frame_limit)
    message: bytes | None = initiator.initiate()
    have: list[bytes] = []
    need: list[bytes] = []
    while message is not None:
        message, new_have, new_need = initiator.reconcile(responder.reconcile(message))
        have += new_have
        need += new_need
        assert initiator.rounds < 1000
    return have, need, initiator.rounds


def assert_same_answers(
    lmdb_storage: ReconStorage, vector: VectorStorage, rnd: random.Random
) -> None:
    """Every query of the engine, on ranges of every size and on many bounds."""
    size = vector.size()
    assert lmdb_storage.size() == size
    step = max(1, size // 300)
    for i in range(0, size, step):
        assert lmdb_storage.item(i) == vector.item(i)
    lengths = sorted(
        {0, 1, 2, 3, 31, 32, 33, size // 3, size // 2, size} | set(range(0, size, step))
    )
    for length in lengths:
        if length > size:
            continue
        begin = rnd.randrange(size - length + 1)
        end = begin + length
        assert lmdb_storage.fingerprint(begin, end) == vector.fingerprint(begin, end)
        window = min(end, begin + 70)
        assert list(lmdb_storage.items(begin, window)) == list(vector.items(begin, window))
    stored = [vector.item(i) for i in range(size)]
    bounds = [ReconItem(0, bytes(32)), ReconItem(MAX_TIMESTAMP, bytes(32))]
    for _ in range(150):
        if stored and rnd.random() < 0.6:
            near = rnd.choice(stored)
            prefix = near.id[: rnd.randrange(33)]
            timestamp = near.timestamp + rnd.choice([-1, 0, 0, 1])
            bounds.append(ReconItem(max(timestamp, 0), prefix.ljust(32, b"\0")))
        else:
            bounds.append(ReconItem(rnd.randrange(1 << 64), rnd.randbytes(32)))
    for bound in bounds:
        begin = rnd.randrange(size + 1)
        end = rnd.randrange(begin, size + 1)
        for lo, hi in ((0, size), (begin, end)):
            assert lmdb_storage.lower_bound(lo, hi, bound) == vector.lower_bound(lo, hi, bound)


# -- LmdbReconStorage answers like VectorStorage ------------------------------------------------

_TIMESTAMP_SHAPES = ("hot", "bucket_edges", "wide", "dense")


@st.composite
def item_sets(draw: st.DrawFn) -> tuple[list[ReconItem], int]:
    """Items with many equal timestamps, bucket-edge timestamps and extreme ones."""
    seed = draw(st.integers(0, 2**32))
    count = draw(st.integers(0, 1500))
    shapes = draw(st.sets(st.sampled_from(_TIMESTAMP_SHAPES), min_size=1))
    rnd = random.Random(seed)
    hot = [rnd.randrange(1 << 44) for _ in range(3)]
    edges = [(k << shift) + delta for shift in RECON_SHIFTS for k in (1, 5) for delta in (-1, 0)]
    choices: list[int] = []
    for _ in range(count):
        shape = rnd.choice(sorted(shapes))
        if shape == "hot":
            choices.append(rnd.choice(hot))
        elif shape == "bucket_edges":
            choices.append(rnd.choice(edges))
        elif shape == "wide":
            choices.append(rnd.choice([0, rnd.randrange(MAX_TIMESTAMP), MAX_TIMESTAMP - 1]))
        else:
            choices.append(T0 + rnd.randrange(10**7))
    twins = b"\x42" * 20
    items = {
        ReconItem(ts, (twins + rnd.randbytes(12)) if rnd.random() < 0.1 else rnd.randbytes(32))
        for ts in choices
    }
    return sorted(items), seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=item_sets(), checkpoints=st.sampled_from([2, 3, 4096]), cache=st.sampled_from([1, 10**6])
)
def test_lmdb_storage_answers_like_vector_storage(
    case: tuple[list[ReconItem], int], checkpoints: int, cache: int
) -> None:
    """Small checkpoint limits force strided runs (the hot-bucket path); a tiny cache forces
    evictions and reloads in the middle of a walk."""
    items, seed = case
    scope = scope_key(TENANT, DB)
    with tempfile.TemporaryDirectory() as tmp, EntryStore(Path(tmp) / "s") as store:
        with store._writing() as txn:
            # A neighbouring scope on each side must not leak into ours.
            for other in (
                scope_key(TENANT, "a"),
                scope_key(TENANT, "zz"),
                scope_key(b"\xff" * 16, DB),
            ):
                recon_index.index_items(txn, store._tables, [(other, 5, b"\x01" * 32)])
            recon_index.index_items(txn, store._tables, [(scope, i.timestamp, i.id) for i in items])
        with (
            mock.patch.object(recon_snapshot, "_MAX_CHECKPOINTS", checkpoints),
            store.recon_snapshot(TENANT, DB, cache_rows=cache) as storage,
        ):
            assert_same_answers(storage, VectorStorage(items), random.Random(seed))


def test_a_hot_bucket_of_equal_timestamps_is_exact_and_strided(store: EntryStore) -> None:
    rnd = random.Random(5)
    items = [ReconItem(T0, rnd.randbytes(32)) for _ in range(9000)]  # > 2 x 4096 checkpoints
    items += [ReconItem(T0 + 1, rnd.randbytes(32)) for _ in range(100)]
    scope = scope_key(TENANT, DB)
    with store._writing() as txn:
        recon_index.index_items(txn, store._tables, [(scope, i.timestamp, i.id) for i in items])
    with store.recon_snapshot(TENANT, DB) as storage:
        assert_same_answers(storage, VectorStorage(items), rnd)
        # The one-millisecond leaf of 9,000 items is sampled; the next millisecond is its own.
        strides = {run.counts[-1]: run.stride for run in storage._leaves._runs.values()}
        assert strides == {9000: 4, 100: 1}


def index_rows(store: EntryStore, items: list[ReconItem], scope: bytes) -> None:
    with store._writing() as txn:
        recon_index.index_items(txn, store._tables, [(scope, i.timestamp, i.id) for i in items])


def brute_force_rows(items: list[ReconItem], scope: bytes) -> dict[bytes, tuple[int, int]]:
    sums: dict[tuple[int, int], list[int]] = {}
    for item in items:
        for level, shift in enumerate(RECON_SHIFTS):
            acc = sums.setdefault((level, item.timestamp >> shift), [0, 0])
            acc[0] += 1
            acc[1] += int.from_bytes(item.id, "little")
    return {
        recon_agg_key(scope, level, bucket): (count, total % (1 << 256))
        for (level, bucket), (count, total) in sums.items()
        if level >= RECON_BASE_LEVEL
        or sums[(level + 1, bucket >> RECON_FAN_SHIFT)][0] > RECON_SPLIT_THRESHOLD
    }


def test_a_burst_is_split_so_that_no_lookup_scans_more_than_the_threshold(
    store: EntryStore,
) -> None:
    """20,000 items written within 20 seconds (one base bucket of ~4.4 minutes, which schema 4
    kept as one leaf that every snapshot scanned whole): added in batches that cross the split
    threshold of buckets at every level, the stored rows are exactly the rule's, and a snapshot
    answers every lookup from leaves of at most RECON_SPLIT_THRESHOLD items."""
    rnd = random.Random(8)
    scope = scope_key(TENANT, DB)
    base = (T0 >> RECON_SHIFTS[RECON_BASE_LEVEL]) << RECON_SHIFTS[RECON_BASE_LEVEL]
    items = [ReconItem(base + rnd.randrange(20_000), rnd.randbytes(32)) for _ in range(20_000)]
    written: list[ReconItem] = []
    for size in (1, RECON_SPLIT_THRESHOLD - 1, 1, 1, 500, 19_000, 497):
        batch, items = items[:size], items[size:]
        index_rows(store, batch, scope)
        written += batch
        assert agg_rows(store) == brute_force_rows(written, scope)
    assert not items
    with store.recon_snapshot(TENANT, DB) as storage:
        assert_same_answers(storage, VectorStorage(written), rnd)
        leaves = list(storage._leaves._runs.values())
        assert leaves and max(run.counts[-1] for run in leaves) <= RECON_SPLIT_THRESHOLD
    assert len(agg_rows(store)) < len(written) // 10  # the fine rows cost little


def test_buckets_filled_past_the_threshold_by_one_write_get_the_rule_s_rows(
    store: EntryStore,
) -> None:
    """A write whose items land in buckets that held nothing get their subtree rows from the
    write's own items summed per millisecond (no scan of the index); buckets that held some
    get them from a scan. Writes crossing the threshold at levels 1 to 3, in empty buckets, in
    partly filled ones, with many items per millisecond and repeats of an item: the rows are
    exactly the rule's."""
    rnd = random.Random(10)
    scope = scope_key(TENANT, DB)
    base_width = 1 << RECON_SHIFTS[RECON_BASE_LEVEL]
    base = (T0 // base_width + 1) * base_width  # the start of an empty base bucket

    def burst(start: int, span: int, count: int) -> list[ReconItem]:
        return [ReconItem(start + rnd.randrange(span), rnd.randbytes(32)) for _ in range(count)]

    written: list[ReconItem] = []
    for items in (
        burst(base + 5, 40, 600),  # one 64 ms bucket past the threshold, ~15 items a ms
        burst(base + 3 * 4096, 4000, 2500),  # a ~4 s bucket and several of its children
        burst(base + base_width, base_width, 3000),  # an empty base bucket, every level
        burst(base, 4096, 400),  # buckets that held items already cross now
        burst(base + 100, 3, 300),  # 300 items in 3 ms of a split bucket
    ):
        index_rows(store, items + items[:3], scope)  # repeats count once
        written += items
        assert agg_rows(store) == brute_force_rows(written, scope)


def test_removing_items_merges_a_split_bucket_back_into_a_leaf(store: EntryStore) -> None:
    """Retraction lowers counts: a bucket falling to the threshold loses its child rows, one
    emptied loses its row; the rows stay exactly the rule's, and fsck agrees."""
    rnd = random.Random(9)
    scope = scope_key(TENANT, DB)
    items = [ReconItem(T0 + rnd.randrange(3_000), rnd.randbytes(32)) for _ in range(600)]
    index_rows(store, items, scope)
    rnd.shuffle(items)
    while items:
        gone, items = items[:150], items[150:]
        with store._writing() as txn:
            removed = recon_index.unindex_items(
                txn, store._tables, [(scope, i.timestamp, i.id) for i in gone]
            )
        assert removed == len(gone)
        assert agg_rows(store) == brute_force_rows(items, scope)
        with store.recon_snapshot(TENANT, DB) as storage:
            assert_same_answers(storage, VectorStorage(items), rnd)
    assert agg_rows(store) == {}


def test_later_snapshots_reuse_unchanged_runs_and_rebuild_changed_ones(store: EntryStore) -> None:
    """The runs one snapshot read are served to the next (an idle re-sync reads the same ones
    each session) only while their parent row's totals are unchanged: after appends to one
    part of the set, and after a removal, every answer is still exactly the brute force's."""
    rnd = random.Random(12)
    scope = scope_key(TENANT, DB)
    items = [ReconItem(T0 + rnd.randrange(10**9), rnd.randbytes(32)) for _ in range(3_000)]
    index_rows(store, items, scope)
    builds: list[str] = []
    real_leaf = recon_snapshot.LmdbReconStorage._build_leaf
    real_aggregates = recon_snapshot.LmdbReconStorage._build_aggregates

    def leaf(self: recon_snapshot.LmdbReconStorage, *args: object) -> object:
        builds.append("leaf")
        return real_leaf(self, *args)  # type: ignore[arg-type]

    def aggregates(self: recon_snapshot.LmdbReconStorage, *args: object) -> object:
        builds.append("aggregates")
        return real_aggregates(self, *args)  # type: ignore[arg-type]

    def answers(expected: list[ReconItem]) -> int:
        builds.clear()
        with store.recon_snapshot(TENANT, DB) as storage:
            assert_same_answers(storage, VectorStorage(expected), random.Random(3))
        return builds.count("leaf")

    with (
        mock.patch.object(recon_snapshot.LmdbReconStorage, "_build_leaf", leaf),
        mock.patch.object(recon_snapshot.LmdbReconStorage, "_build_aggregates", aggregates),
    ):
        first = answers(items)
        assert first > 0
        assert answers(items) == 0 and builds == ["aggregates"]  # only the root is read again
        late = [ReconItem(T0 + 10**9 + rnd.randrange(1000), rnd.randbytes(32)) for _ in range(50)]
        index_rows(store, late, scope)
        items += late
        assert 0 < answers(items) < first  # only the appended part is rebuilt
        gone = items.pop(rnd.randrange(len(items)))
        with store._writing() as txn:
            recon_index.unindex_items(txn, store._tables, [(scope, gone.timestamp, gone.id)])
        answers(items)


# -- sessions between two real stores --------------------------------------------------------


def test_sessions_between_stores_find_the_exact_difference(tmp_path: Path) -> None:
    rnd = random.Random(11)
    common = spread_entries(rnd, 900)
    only_ours = [*spread_entries(rnd, 60), seal(T0 + 5)]  # recent and scattered gaps
    only_theirs = spread_entries(rnd, 45)
    with EntryStore(tmp_path / "ours") as ours, EntryStore(tmp_path / "theirs") as theirs:
        for chunk in range(0, 900, 300):
            ours.append(common[chunk : chunk + 300])
        ours.append(only_ours)
        theirs.append(only_theirs + common[::-1])
        for frame_limit in (4096, 256 * 1024):
            with (
                ours.recon_snapshot(TENANT, DB) as mine,
                theirs.recon_snapshot(TENANT, DB) as peer,
            ):
                have, need, rounds = run_session(mine, peer, frame_limit)
            assert sorted(have) == sorted(e.id for e in only_ours)
            assert sorted(need) == sorted(e.id for e in only_theirs)
            assert rounds <= (3 if frame_limit > 4096 else 50)

        # Exchange what each side lacks: both indexes then hold the same set.
        ours.append([theirs.get_raw(i) or b"" for i in need])
        theirs.append([ours.get_raw(i) or b"" for i in have])
        with ours.recon_snapshot(TENANT, DB) as mine, theirs.recon_snapshot(TENANT, DB) as peer:
            assert mine.size() == peer.size() == 900 + 61 + 45
            assert mine.fingerprint(0, mine.size()) == peer.fingerprint(0, peer.size())
            assert run_session(mine, peer) == ([], [], 1)
        assert ours.fsck().ok and theirs.fsck().ok


def test_the_tenant_log_is_a_scope_of_its_own(store: EntryStore) -> None:
    log_entries = [seal(T0 + i, database=TENANT_LOG, seq=i + 1) for i in range(5)]
    changes = [seal(T0 + i) for i in range(7)]
    store.append(log_entries + changes)
    with store.recon_snapshot(TENANT, TENANT_LOG) as log, store.recon_snapshot(TENANT, DB) as db:
        assert list(log.items(0, log.size())) == sorted(items_of(log_entries))
        assert list(db.items(0, db.size())) == sorted(items_of(changes))
    with store.recon_snapshot(b"\x00" * 16, DB) as empty:
        assert empty.size() == 0
        assert empty.fingerprint(0, 0) == VectorStorage([]).fingerprint(0, 0)
        assert empty.lower_bound(0, 0, ReconItem(5, bytes(32))) == 0


# -- maintenance on append ---------------------------------------------------------------------


def agg_rows(store: EntryStore) -> dict[bytes, tuple[int, int]]:
    rows: dict[bytes, tuple[int, int]] = {}
    with store._reading() as txn:
        for key, value in txn.cursor(store._tables.recon_agg):
            parsed = unpack_recon_agg(value)
            assert parsed is not None
            rows[key] = parsed
    return rows


def expected_agg_rows(entries: list[Entry]) -> dict[bytes, tuple[int, int]]:
    """The rows the layout's rule calls for, by brute force: every level's sums, then the rows
    of the base level and up, and the finer rows whose parent holds more than the threshold."""
    sums: dict[tuple[bytes, int, int], list[int]] = {}
    for entry in entries:
        scope = scope_key(entry.header.tenant_id, entry.header.database)
        for level, shift in enumerate(RECON_SHIFTS):
            acc = sums.setdefault((scope, level, entry.header.timestamp_ms >> shift), [0, 0])
            acc[0] += 1
            acc[1] += int.from_bytes(entry.id, "little")
    return {
        recon_agg_key(scope, level, bucket): (count, total % (1 << 256))
        for (scope, level, bucket), (count, total) in sums.items()
        if level >= RECON_BASE_LEVEL
        or sums[(scope, level + 1, bucket >> RECON_FAN_SHIFT)][0] > RECON_SPLIT_THRESHOLD
    }


def test_appends_update_the_index_incrementally(store: EntryStore) -> None:
    rnd = random.Random(3)
    first = spread_entries(rnd, 300)
    second = [*spread_entries(rnd, 200), seal(T0 + 1)]
    with (
        mock.patch.object(recon_index, "rebuild_recon_index", side_effect=AssertionError),
        mock.patch.object(entry_store_module, "rebuild_recon_index", side_effect=AssertionError),
    ):
        store.append(first)
        with store.recon_snapshot(TENANT, DB) as before:
            assert_same_answers(before, VectorStorage(items_of(first)), rnd)
        store.append(second)
        with store.recon_snapshot(TENANT, DB) as after:
            assert_same_answers(after, VectorStorage(items_of(first + second)), rnd)
    assert agg_rows(store) == expected_agg_rows(first + second)
    assert store.fsck().ok


def test_duplicates_do_not_count_twice(store: EntryStore) -> None:
    entries = [seal(T0 + i % 3) for i in range(40)]
    store.append(entries)
    rows = agg_rows(store)
    result = store.append([entries[0], entries[5].raw, entries[5], seal(T0)])
    assert len(result.added) == 1 and len(result.duplicates) == 3
    extra = store.get(result.added[0])
    assert extra is not None
    assert agg_rows(store) == expected_agg_rows([*entries, extra]) != rows
    # The index's own guard: items already there (or twice in one call) are not counted.
    scope = scope_key(TENANT, DB)
    again = [(scope, e.header.timestamp_ms, e.id) for e in entries[:10]]
    with store._writing() as txn:
        assert recon_index.index_items(txn, store._tables, again + again) == 0
    assert agg_rows(store) == expected_agg_rows([*entries, extra])
    with store.recon_snapshot(TENANT, DB) as storage:
        assert storage.size() == 41
    assert store.fsck().ok


def test_rejected_entries_are_not_indexed(store: EntryStore) -> None:
    good = [seal(T0 + i) for i in range(5)]
    forged = bytearray(seal(T0 + 100).raw)
    forged[-1] ^= 1  # bad signature
    refused = seal(T0 + 200)
    result = store.append(
        [*good, bytes(forged), refused, b"garbage"],
        authorize=lambda e: (
            Rejected(e.id, RejectionKind.NOT_A_MEMBER, "not a member")
            if e.id == refused.id
            else None
        ),
    )
    assert len(result.added) == 5 and len(result.rejected) == 3
    with store.recon_snapshot(TENANT, DB) as storage:
        assert list(storage.items(0, storage.size())) == sorted(items_of(good))
    assert agg_rows(store) == expected_agg_rows(good)
    assert store.fsck().ok


def test_the_reserved_timestamp_is_stored_but_not_reconciled(store: EntryStore) -> None:
    infinite = seal(MAX_TIMESTAMP)
    ordinary = seal(T0)
    assert len(store.append([infinite, ordinary]).added) == 2
    with store.recon_snapshot(TENANT, DB) as storage:
        assert list(storage.items(0, storage.size())) == [ReconItem(T0, ordinary.id)]
    assert store.fsck().ok


# -- fsck and rebuild ----------------------------------------------------------------------------


def raw_write(path: Path, table: bytes, key: bytes, value: bytes | None) -> None:
    """Change one row behind the store's back (value None: delete it). A ``recon_idx`` row is
    given as its 72-byte key: the table is DUPSORT, scope => timestamp + id."""
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        db = env.open_db(table, txn=txn)
        if table == b"recon_idx":
            key, item = key[:32], key[32:]
            assert txn.delete(key, item, db=db) if value is None else txn.put(key, item, db=db)
        elif value is None:
            assert txn.delete(key, db=db)
        else:
            txn.put(key, value, db=db)
    env.close()


def test_fsck_reports_a_corrupted_aggregate_row_and_rebuild_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rnd = random.Random(8)
    entries = spread_entries(rnd, 400)
    with EntryStore(path) as store:
        store.append(entries)
        rows = agg_rows(store)
    victim = max((key for key in rows if key[32] == RECON_BASE_LEVEL), key=lambda key: rows[key][0])
    count, id_sum = rows[victim]
    forged = (count + 1).to_bytes(8, "big") + (id_sum ^ 1).to_bytes(32, "little")
    raw_write(path, b"recon_agg", victim, forged)
    with EntryStore(path) as store:
        report = store.fsck()
        assert [(p.where, victim.hex() in p.reason) for p in report.problems] == [
            ("recon_agg", True)
        ]
        with pytest.raises(StoreError, match="rebuild_recon_index"):  # noqa: SIM117
            with store.recon_snapshot(TENANT, DB) as storage:
                for i in range(storage.size()):
                    storage.fingerprint(0, i)
        assert store.rebuild_recon_index() == 400
        assert store.fsck().ok
        with store.recon_snapshot(TENANT, DB) as storage:
            assert_same_answers(storage, VectorStorage(items_of(entries)), rnd)


def test_fsck_names_missing_and_stray_index_rows(tmp_path: Path) -> None:
    path = tmp_path / "store"
    entries = [seal(T0 + 1000 * i) for i in range(30)]
    with EntryStore(path) as store:
        store.append(entries)
    scope = scope_key(TENANT, DB)
    lost = entries[4]
    raw_write(
        path, b"recon_idx", scope + lost.header.timestamp_ms.to_bytes(8, "big") + lost.id, None
    )
    stray = os.urandom(32)
    raw_write(path, b"recon_idx", scope + (T0 + 7).to_bytes(8, "big") + stray, b"")
    with EntryStore(path) as store:
        report = store.fsck()
        named = {(p.where, p.entry_id) for p in report.problems if p.entry_id is not None}
        assert named == {("recon_idx", lost.id), ("recon_idx", stray)}
        assert {p.where for p in report.problems} == {"recon_idx", "recon_agg"}
        assert store.rebuild_recon_index() == 30
        assert store.fsck().ok


# -- snapshots ---------------------------------------------------------------------------------


def test_a_snapshot_does_not_move_under_appends(store: EntryStore) -> None:
    rnd = random.Random(21)
    before = spread_entries(rnd, 200)
    store.append(before)
    with store.recon_snapshot(TENANT, DB) as storage:
        size = storage.size()
        whole = storage.fingerprint(0, size)
        listed = list(storage.items(0, size))
        store.append([*spread_entries(rnd, 50), seal(T0 - 1)])  # lands before, among and after
        assert (storage.size(), storage.fingerprint(0, size)) == (size, whole)
        assert list(storage.items(0, size)) == listed
    with store.recon_snapshot(TENANT, DB) as fresh:
        assert fresh.size() == size + 51
    with pytest.raises(StoreError, match="closed"):
        storage.size()
    with pytest.raises(ValueError):  # noqa: SIM117
        with store.recon_snapshot(TENANT, "Not A Name"):
            pass


def test_a_session_runs_in_one_snapshot_while_another_thread_appends(tmp_path: Path) -> None:
    rnd = random.Random(17)
    common = spread_entries(rnd, 600)
    only_ours = spread_entries(rnd, 40)
    only_theirs = spread_entries(rnd, 40)
    later = spread_entries(rnd, 300)
    with EntryStore(tmp_path / "ours") as ours, EntryStore(tmp_path / "theirs") as theirs:
        ours.append(common + only_ours)
        theirs.append(common + only_theirs)
        first_append = threading.Event()

        def writer() -> None:
            for chunk in range(0, 300, 30):
                theirs.append(later[chunk : chunk + 30])
                ours.append(later[chunk : chunk + 15])
                first_append.set()

        with ours.recon_snapshot(TENANT, DB) as mine, theirs.recon_snapshot(TENANT, DB) as peer:
            initiator = ReconInitiator(mine, 4096)
            responder = ReconResponder(peer, 4096)
            message: bytes | None = initiator.initiate()
            thread = threading.Thread(target=writer)
            thread.start()
            have: list[bytes] = []
            need: list[bytes] = []
            while message is not None:
                message, new_have, new_need = initiator.reconcile(responder.reconcile(message))
                have += new_have
                need += new_need
                assert first_append.wait(timeout=30)  # the rest of the session runs after it
            thread.join(timeout=60)
            assert (mine.size(), peer.size()) == (640, 640)
        assert not thread.is_alive()
        assert initiator.rounds >= 2
        assert sorted(have) == sorted(e.id for e in only_ours)
        assert sorted(need) == sorted(e.id for e in only_theirs)


# -- schema upgrade ----------------------------------------------------------------------------


def downgrade_to_version_1(path: Path) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        for name in (b"recon_idx", b"recon_agg"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
        txn.put(b"schema_version", (1).to_bytes(4, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()


def test_an_older_store_is_upgraded_once(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rnd = random.Random(4)
    entries = spread_entries(rnd, 250) + [
        seal(T0 + i, database=TENANT_LOG, seq=i + 1) for i in range(3)
    ]
    with EntryStore(path) as store:
        store.append(entries)
    downgrade_to_version_1(path)
    with pytest.raises(StoreError, match="schema version 1; open it once writable"):
        EntryStore(path, readonly=True)
    with EntryStore(path) as store:
        assert store.fsck().ok
        with store.recon_snapshot(TENANT, DB) as storage:
            assert_same_answers(storage, VectorStorage(items_of(entries[:250])), rnd)
        with store.recon_snapshot(TENANT, TENANT_LOG) as log:
            assert log.size() == 3
    with (
        mock.patch("mindoo_p2p.store._upgrade.rebuild_recon_index", side_effect=AssertionError),
        EntryStore(path) as again,
        EntryStore(path, readonly=True) as reader,
    ):
        assert again.fsck().ok and reader.count() == 253


def test_a_rebuilt_index_keeps_a_fork_s_evidence_as_fsck_expects(store: EntryStore) -> None:
    # Review finding (trims; present since fork evidence was kept indexed): the rebuild left
    # out every arrival with a `retracted` row, a fork's evidence marks included, so a store
    # holding a fork failed fsck after `rebuild_recon_index` (or a schema upgrade's rebuild).
    author = SigningKeyPair.generate()
    key = random_key()

    def chained(seq: int, prev: bytes, payload: bytes) -> Entry:
        return seal_entry(
            tenant_id=TENANT,
            database=DB,
            author=author,
            author_seq=seq,
            timestamp_ms=1_700_000_000_000 + seq,
            key_id=b"k" * 16,
            key=key,
            payload=payload,
            prev=prev,
        )

    first = chained(1, NO_PREV, b"first")
    store.append([first])
    store.append([chained(2, first.id, b"one twin"), chained(2, first.id, b"the other")])
    assert store.fsck().ok
    before = agg_rows(store)
    assert store.rebuild_recon_index() == 3
    assert store.fsck().ok
    assert agg_rows(store) == before
