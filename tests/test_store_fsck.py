"""fsck against damage in every table of the schema-4 layout: a flipped byte, a missing row, an
extra row. Each case damages one row behind the store's back and expects fsck to name the
table (or the check that covers it), and a clean store to stay clean."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import lmdb
import pytest

from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.errors import StoreError
from mindoo_p2p.store import EntryStore, scope_key
from mindoo_p2p.store._layout import SCHEMA_VERSION

KEY = random_key()
KEY_ID = b"fsck-test-key-01"
TENANT = b"T" * 16
ALICE = SigningKeyPair.generate()
MALLORY = SigningKeyPair.generate()
DOCS = [bytes([i]) * 16 for i in range(1, 4)]


def seal(author: SigningKeyPair, seq: int, database: str, document_id: bytes) -> Entry:
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=TENANT,
        database=database,
        document_id=document_id,
        author=author,
        author_seq=seq,
        timestamp_ms=1_700_000_000_000 + seq * 1000,
        deps=[],
        key_id=KEY_ID,
        key=KEY,
        payload=os.urandom(50),
    )


@dataclass
class Built:
    path: Path
    entries: list[Entry]
    """In arrival order: arrival n is entries[n - 1]."""


@pytest.fixture
def built(tmp_path: Path) -> Built:
    path = tmp_path / "store"
    entries = [seal(ALICE, i + 1, "notes" if i % 3 else "todo", DOCS[i % 3]) for i in range(9)]
    entries += [seal(MALLORY, i + 1, "notes", DOCS[0]) for i in range(3)]
    with EntryStore(path) as store:
        assert len(store.append(entries).added) == len(entries)
        assert [e.header.database for e in entries[:2]] == ["todo", "notes"]
        assert len(store.retract_authored_after(TENANT, MALLORY.public_key, 2)) == 1
        store.put_snapshot(TENANT, "notes", DOCS[1], 2, b"blob")
        assert store.fsck().ok
    return Built(path, entries)


Txn: TypeAlias = "lmdb.Transaction[bytes]"


def be64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def first_row(txn: Txn, db: lmdb._Database) -> tuple[bytes, bytes]:
    cursor = txn.cursor(db)
    assert cursor.first()
    return cursor.key(), cursor.value()


def replace_row(
    txn: Txn, db: lmdb._Database, row: tuple[bytes, bytes], new: tuple[bytes, bytes]
) -> None:
    assert txn.delete(row[0], row[1], db=db)
    assert txn.put(new[0], new[1], db=db)


Damage = Callable[[Txn, lmdb._Database, Built], object]


def flip_value(index: int) -> Damage:
    def damage(txn: Txn, db: lmdb._Database, built: Built) -> None:
        key, value = first_row(txn, db)
        replace_row(txn, db, (key, value), (key, flip(value, index)))

    return damage


def flip_key(index: int) -> Damage:
    def damage(txn: Txn, db: lmdb._Database, built: Built) -> None:
        key, value = first_row(txn, db)
        replace_row(txn, db, (key, value), (flip(key, index), value))

    return damage


def delete_first(txn: Txn, db: lmdb._Database, built: Built) -> None:
    key, value = first_row(txn, db)
    assert txn.delete(key, value, db=db)


def add_row(key: Callable[[Built], bytes], value: Callable[[Built], bytes]) -> Damage:
    def damage(txn: Txn, db: lmdb._Database, built: Built) -> None:
        assert txn.put(key(built), value(built), db=db)

    return damage


NOTES = scope_key(TENANT, "notes")
NOTES_NUMBER = (2).to_bytes(4, "big")
"""The ``scopes`` number of "notes": the second database to receive an entry (after "todo")."""
OTHER_ENTRY = seal(ALICE, 77, "notes", DOCS[0])

CASES: dict[str, tuple[str, Damage, set[str]]] = {
    # sealed: arrival -> bytes
    "sealed flipped": ("sealed", flip_value(60), {"entries"}),
    "sealed missing": ("sealed", delete_first, {"ids"}),
    "sealed extra": ("sealed", add_row(lambda b: be64(99), lambda b: OTHER_ENTRY.raw), {"ids"}),
    # ids: id -> arrival
    "ids flipped value": ("ids", flip_value(7), {"ids"}),
    "ids flipped key": ("ids", flip_key(5), {"ids"}),
    "ids missing": ("ids", delete_first, {"ids"}),
    "ids extra": ("ids", add_row(lambda b: os.urandom(32), lambda b: be64(1)), {"ids"}),
    # the DUPSORT indexes: key => seq + arrival
    "db_feed flipped seq": ("db_feed", flip_value(7), {"db_feed"}),
    "db_feed flipped arrival": ("db_feed", flip_value(15), {"db_feed"}),
    "db_feed missing": ("db_feed", delete_first, {"db_feed"}),
    "db_feed extra": (
        "db_feed",
        add_row(lambda b: NOTES, lambda b: be64(50) + be64(1)),
        {"db_feed"},
    ),
    "doc_feed flipped seq": ("doc_feed", flip_value(7), {"doc_feed"}),
    "doc_feed flipped key": ("doc_feed", flip_key(10), {"doc_feed"}),
    "doc_feed flipped number": ("doc_feed", flip_key(3), {"doc_feed"}),
    "doc_feed missing": ("doc_feed", delete_first, {"doc_feed"}),
    "doc_feed extra": (
        "doc_feed",
        add_row(lambda b: NOTES_NUMBER + DOCS[2], lambda b: be64(50) + be64(2)),
        {"doc_feed"},
    ),
    "by_author flipped author_seq": ("by_author", flip_value(7), {"by_author"}),
    "by_author flipped arrival": ("by_author", flip_value(15), {"by_author"}),
    "by_author missing": ("by_author", delete_first, {"by_author"}),
    "by_author extra": (
        "by_author",
        add_row(lambda b: TENANT + ALICE.public_key, lambda b: be64(40) + be64(3)),
        {"by_author"},
    ),
    # scopes: database scope -> number
    "scopes flipped number": ("scopes", flip_value(3), {"doc_feed"}),
    "scopes flipped scope": ("scopes", flip_key(20), {"scopes"}),
    "scopes missing": ("scopes", delete_first, {"scopes"}),
    "scopes extra": ("scopes", add_row(lambda b: bytes(32), lambda b: NOTES_NUMBER), {"scopes"}),
    # small tables
    "databases flipped": ("databases", flip_key(17), {"databases"}),
    "databases missing": ("databases", delete_first, {"databases"}),
    "databases extra": (
        "databases",
        add_row(lambda b: TENANT + b"ghost", lambda b: b""),
        {"databases"},
    ),
    "author_seq flipped": ("author_seq", flip_value(7), {"author_seq"}),
    "author_seq missing": ("author_seq", delete_first, {"author_seq"}),
    "author_seq extra": (
        "author_seq",
        add_row(lambda b: TENANT + bytes(32), lambda b: be64(1)),
        {"author_seq"},
    ),
    "scope_bytes flipped": ("scope_bytes", flip_value(6), {"scope_bytes"}),
    "scope_bytes missing": ("scope_bytes", delete_first, {"scope_bytes"}),
    "scope_bytes extra": (
        "scope_bytes",
        add_row(lambda b: bytes(32), lambda b: be64(9)),
        {"scope_bytes"},
    ),
    # snapshots are a cache: only a row that claims more than the feed holds is wrong
    "snapshots flipped": ("snapshots", flip_value(0), {"snapshots"}),
    # reconciliation index
    "recon_idx flipped id": ("recon_idx", flip_value(30), {"recon_idx"}),
    "recon_idx flipped timestamp": ("recon_idx", flip_value(5), {"recon_idx"}),
    "recon_idx missing": ("recon_idx", delete_first, {"recon_idx"}),
    "recon_idx extra": (
        "recon_idx",
        add_row(lambda b: NOTES, lambda b: be64(5) + OTHER_ENTRY.id),
        {"recon_idx"},
    ),
    "recon_agg flipped": ("recon_agg", flip_value(7), {"recon_agg"}),
    "recon_agg missing": ("recon_agg", delete_first, {"recon_agg"}),
    "recon_agg extra": (
        "recon_agg",
        add_row(lambda b: NOTES + bytes([0]) + be64(1), lambda b: be64(1) + bytes(32)),
        {"recon_agg"},
    ),
    # retracted: arrival -> tenant; a missing or extra row changes the reconciled set
    "retracted flipped tenant": ("retracted", flip_value(0), {"retracted"}),
    "retracted flipped arrival": ("retracted", flip_key(7), {"recon_idx"}),
    "retracted missing": ("retracted", delete_first, {"recon_idx"}),
    "retracted extra": ("retracted", add_row(lambda b: be64(1), lambda b: TENANT), {"recon_idx"}),
}


def damage_store(built: Built, table: str, damage: Damage) -> None:
    env = lmdb.open(str(built.path), max_dbs=32)
    with env.begin(write=True) as txn:
        damage(txn, env.open_db(table.encode(), txn=txn, create=False), built)
    env.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_fsck_reports_damage_in_every_table(built: Built, case: str) -> None:
    table, damage, expected = CASES[case]
    damage_store(built, table, damage)
    with EntryStore(built.path) as store:
        report = store.fsck()
    wheres = {problem.where for problem in report.problems}
    assert expected <= wheres, report.problems


def test_a_flipped_entry_byte_is_reported_once_under_its_id(built: Built) -> None:
    victim = built.entries[4]
    damage_store(built, "sealed", lambda txn, db, b: txn.put(be64(5), flip(victim.raw, 100), db=db))
    with EntryStore(built.path) as store:
        report = store.fsck()
        assert [(p.entry_id, p.where) for p in report.problems] == [(victim.id, "entries")]
        with pytest.raises(StoreError, match=victim.id.hex()):
            store.get(victim.id)
        with pytest.raises(StoreError, match="run fsck"):
            store.changes_since(TENANT, victim.header.database)
        assert store.get(built.entries[3].id) == built.entries[3]


def test_an_unknown_schema_version_in_meta_is_refused(built: Built) -> None:
    # The low bit of the third byte: flipping the last one could name an older, upgradable version.
    damage_store(built, "meta", flip_value(2))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION ^ 0x100};"):
        EntryStore(built.path)
