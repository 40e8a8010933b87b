"""Schema 7: the per-database document counter (``scope_docs``) that ``stats`` and ``status``
read instead of walking every document.

It is raised in the write transaction that stores a document's first entry, filled by the
upgrade from a store written by the schema-6 code (the current code with the table dropped and
the version set back: schema 7 adds nothing else), and checked by fsck against the documents
the entries name.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import lmdb
from helpers import seal_entry

from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import Entry
from mindoo_p2p.store import EntryStore, scope_key
from mindoo_p2p.store._layout import SCHEMA_VERSION

AUTHOR = SigningKeyPair.generate()
KEY = random_key()
TENANT = b"D" * 16
T0 = 1_700_000_000_000


class Author:
    """Seals entries of one author with consecutive sequence numbers."""

    def __init__(self) -> None:
        self.seq = 0

    def entry(self, database: str, document_id: bytes) -> Entry:
        self.seq += 1
        return seal_entry(
            tenant_id=TENANT,
            database=database,
            author=AUTHOR,
            author_seq=self.seq,
            timestamp_ms=T0 + self.seq,
            key_id=b"doc-count-key-01",
            key=KEY,
            payload=os.urandom(8),
            document_id=document_id,
        )


def documents(store: EntryStore, database: str) -> int:
    return store.stats(TENANT, database)["documents"]


def test_the_counter_follows_new_documents_across_batches_and_databases(tmp_path: Path) -> None:
    rnd = random.Random(7)
    author = Author()
    docs = {name: [rnd.randbytes(16) for _ in range(30)] for name in ("notes", "tasks")}
    expected: dict[str, set[bytes]] = {"notes": set(), "tasks": set()}
    with EntryStore(tmp_path / "store") as store:
        for _ in range(12):
            batch = []
            for _ in range(rnd.randrange(1, 25)):
                # Often a document already stored, or one the same batch already named.
                database = rnd.choice(("notes", "tasks"))
                document_id = rnd.choice(docs[database])
                batch.append(author.entry(database, document_id))
                expected[database].add(document_id)
            result = store.append(batch)
            assert len(result.added) == len(batch)
            for database, ids in expected.items():
                assert documents(store, database) == len(ids)
                assert len(store.documents(TENANT, database)) == len(ids)
        # A batch of duplicates changes nothing.
        assert not store.append(batch).added
        assert documents(store, "notes") == len(expected["notes"])
        assert documents(store, "nothing here") == 0
        assert store.fsck().ok


def write_store(path: Path) -> dict[str, int]:
    author = Author()
    with EntryStore(path) as store:
        for database, count in (("notes", 40), ("tasks", 3)):
            ids = [os.urandom(16) for _ in range(count)]
            store.append([author.entry(database, d) for d in ids + ids[: count // 2]])
        return {name: documents(store, name) for name in ("notes", "tasks")}


def downgrade_to_v6(path: Path) -> None:
    """What the schema-6 code wrote: no ``scope_docs`` table, version 6."""
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"scope_docs", txn=txn, create=False), delete=True)
        txn.put(b"schema_version", (6).to_bytes(4, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()


def test_a_schema_6_store_gets_its_counters_on_the_first_writable_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    counts = write_store(path)
    assert counts == {"notes": 40, "tasks": 3}
    downgrade_to_v6(path)
    with EntryStore(path) as store:
        assert {name: documents(store, name) for name in counts} == counts
        assert store.fsck().ok
    env = lmdb.open(str(path), max_dbs=32, subdir=True, readonly=True)
    with env.begin() as txn:
        stored = txn.get(b"schema_version", db=env.open_db(b"meta", txn=txn))
        assert stored == SCHEMA_VERSION.to_bytes(4, "big") == (7).to_bytes(4, "big")
        rows = dict(txn.cursor(env.open_db(b"scope_docs", txn=txn)))
    env.close()
    assert rows == {
        scope_key(TENANT, "notes"): (40).to_bytes(8, "big"),
        scope_key(TENANT, "tasks"): (3).to_bytes(8, "big"),
    }


def test_fsck_reports_a_counter_that_disagrees_with_the_entries(tmp_path: Path) -> None:
    path = tmp_path / "store"
    write_store(path)
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        counters = env.open_db(b"scope_docs", txn=txn)
        txn.put(scope_key(TENANT, "tasks"), (4).to_bytes(8, "big"), db=counters)
    env.close()
    with EntryStore(path) as store:
        problems = store.fsck().problems
    assert [(p.where, p.reason) for p in problems] == [
        ("scope_docs", f"value 4 != 3 for {scope_key(TENANT, 'tasks').hex()}")
    ]
