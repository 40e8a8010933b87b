"""Schema 4 -> 5: the reconciliation aggregates gain finer levels under dense buckets (and on to
the current schema: 6 adds the ``forks`` table, filled by the same upgrade).

A version-4 store differs from a version-5 one only in ``recon_agg`` (four levels of shifts 18,
24, 30 and 36, numbered 0-3, a row for every non-empty bucket) and the version number.
:func:`downgrade_to_v4` turns a store written by the current code into exactly that, with a
frozen copy of the version-4 aggregation (checked to give byte-identical ``recon_agg`` tables to
the real version-4 code, commit d335c8e, for the same entries).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from unittest import mock

import lmdb
import pytest
from helpers import seal_entry

from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import Entry
from mindoo_p2p.recon import ReconItem, VectorStorage
from mindoo_p2p.store import EntryStore, scope_key
from mindoo_p2p.store._layout import (
    RECON_BASE_LEVEL,
    RECON_FAN_SHIFT,
    RECON_SHIFTS,
    RECON_SPLIT_THRESHOLD,
    RECON_V4_SHIFTS,
    SCHEMA_VERSION,
)

AUTHOR = SigningKeyPair.generate()
KEY = random_key()
TENANT = b"V" * 16
DB = "burst"
T0 = 1_700_000_000_000


def burst(rnd: random.Random, count: int, spread_ms: int) -> list[Entry]:
    return [
        seal_entry(
            tenant_id=TENANT,
            database=DB,
            author=AUTHOR,
            author_seq=seq,
            timestamp_ms=T0 + rnd.randrange(spread_ms),
            key_id=b"upgrade-v4-key-1",
            key=KEY,
            payload=os.urandom(16),
        )
        for seq in range(1, count + 1)
    ]


def open_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=32, subdir=True)


def downgrade_to_v4(path: Path) -> None:
    """Rewrite ``recon_agg`` as schema 4 kept it and set the version to 4."""
    env = open_env(path)
    with env.begin(write=True) as txn:
        idx = env.open_db(b"recon_idx", txn=txn, dupsort=True, dupfixed=True)
        agg = env.open_db(b"recon_agg", txn=txn)
        rows: dict[bytes, list[int]] = {}
        for scope, value in txn.cursor(idx):
            leaf = int.from_bytes(value[:8], "big") >> RECON_V4_SHIFTS[0]
            for level, shift in enumerate(RECON_V4_SHIFTS):
                bucket = leaf >> (shift - RECON_V4_SHIFTS[0])
                row = rows.setdefault(scope + bytes((level,)) + bucket.to_bytes(8, "big"), [0, 0])
                row[0] += 1
                row[1] += int.from_bytes(value[8:], "little")
        txn.drop(agg, delete=False)
        for key, (count, id_sum) in rows.items():
            value = count.to_bytes(8, "big") + (id_sum % (1 << 256)).to_bytes(32, "little")
            txn.put(key, value, db=agg)
        txn.put(b"schema_version", (4).to_bytes(4, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()


def stored(path: Path, table: bytes) -> dict[bytes, bytes]:
    env = open_env(path)
    with env.begin() as txn:
        rows = dict(txn.cursor(env.open_db(table, txn=txn)))
    env.close()
    return rows


def rule_rows(entries: list[Entry]) -> set[bytes]:
    """The keys of the version-5 rows, by brute force."""
    scope = scope_key(TENANT, DB)
    counts: dict[tuple[int, int], int] = {}
    for entry in entries:
        for level, shift in enumerate(RECON_SHIFTS):
            slot = (level, entry.header.timestamp_ms >> shift)
            counts[slot] = counts.get(slot, 0) + 1
    return {
        scope + bytes((level,)) + bucket.to_bytes(8, "big")
        for (level, bucket) in counts
        if level >= RECON_BASE_LEVEL
        or counts[(level + 1, bucket >> RECON_FAN_SHIFT)] > RECON_SPLIT_THRESHOLD
    }


@pytest.fixture
def v4_store(tmp_path: Path) -> tuple[Path, list[Entry]]:
    entries = burst(random.Random(3), 600, 3_000)  # ~200 items a second: buckets split
    path = tmp_path / "store"
    with EntryStore(path) as store:
        store.append(entries)
    downgrade_to_v4(path)
    return path, entries


def test_a_version_4_store_gets_the_finer_aggregates(v4_store: tuple[Path, list[Entry]]) -> None:
    path, entries = v4_store
    assert stored(path, b"meta")[b"schema_version"] == (4).to_bytes(4, "big")
    with EntryStore(path) as store:
        assert store.fsck().ok
        rnd = random.Random(1)
        items = [ReconItem(e.header.timestamp_ms, e.id) for e in entries]
        vector = VectorStorage(items)
        with store.recon_snapshot(TENANT, DB) as storage:
            assert storage.size() == vector.size() == 600
            for _ in range(200):
                begin = rnd.randrange(601)
                end = rnd.randrange(begin, 601)
                assert storage.fingerprint(begin, end) == vector.fingerprint(begin, end)
    assert stored(path, b"meta")[b"schema_version"] == SCHEMA_VERSION.to_bytes(4, "big")
    keys = set(stored(path, b"recon_agg"))
    assert keys == rule_rows(entries)
    assert any(key[32] < RECON_BASE_LEVEL for key in keys)  # the burst was split


def test_an_interrupted_upgrade_leaves_the_version_4_store_intact(
    v4_store: tuple[Path, list[Entry]],
) -> None:
    path, entries = v4_store
    before = stored(path, b"recon_agg")
    with (
        mock.patch("mindoo_p2p.store._upgrade.rebuild_aggregates", side_effect=OSError("crash")),
        pytest.raises(OSError, match="crash"),
    ):
        EntryStore(path)
    assert stored(path, b"recon_agg") == before
    assert stored(path, b"meta")[b"schema_version"] == (4).to_bytes(4, "big")
    with EntryStore(path) as store:
        assert store.fsck().ok and store.count() == len(entries)


def test_fsck_names_a_missing_fine_row(v4_store: tuple[Path, list[Entry]]) -> None:
    path, _ = v4_store
    EntryStore(path).close()
    victim = min(stored(path, b"recon_agg"), key=lambda key: key[32])  # a fine row
    assert victim[32] < RECON_BASE_LEVEL
    env = open_env(path)
    with env.begin(write=True) as txn:
        assert txn.delete(victim, db=env.open_db(b"recon_agg", txn=txn))
    env.close()
    with EntryStore(path) as store:
        report = store.fsck()
        assert [(p.where, victim.hex() in p.reason) for p in report.problems] == [
            ("recon_agg", True)
        ]
        store.rebuild_recon_index()
        assert store.fsck().ok
