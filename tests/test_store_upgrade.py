"""Schema upgrades of the entry store: a version-3 store is converted in place to version 4.

The version-3 store is written by :func:`write_v3_store`, a frozen copy of what the version-3
writer (``store/_writer.py`` and ``store/_recon_index.py`` at schema 3) put under which key, so
this test keeps meaning the same thing whatever the current writer becomes. (A committed binary
fixture would pin the bytes too, but nobody can review or extend an opaque data.mdb; the frozen
writer was checked to produce byte-identical tables to the real version-3 code for the same
entries, retraction and snapshot.)
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from unittest import mock

import lmdb
import pytest

from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import StoreError
from mindoo_p2p.recon import MAX_TIMESTAMP
from mindoo_p2p.store import EntryStore

KEY = random_key()
KEY_ID = b"upgrade-test-key"
TENANT = b"T" * 16
OTHER_TENANT = b"U" * 16
T0 = 1_700_000_000_000

# -- the frozen version-3 writer -----------------------------------------------------------------

V3_TABLES = (
    "meta",
    "entries",
    "log",
    "feed",
    "doc_idx",
    "documents",
    "databases",
    "author_seq",
    "scope_bytes",
    "snapshots",
    "recon_idx",
    "recon_agg",
    "author_idx",
    "retracted",
)
V3_RECON_SHIFTS = (18, 24, 30, 36)


def be64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def v3_scope(tenant_id: bytes, database: str) -> bytes:
    return tenant_id + hashlib.blake2b(database.encode(), digest_size=16).digest()


def write_v3_store(
    path: Path,
    entries: list[Entry],
    retracted: set[bytes],
    snapshots: dict[tuple[bytes, str, bytes], tuple[int, bytes]],
) -> None:
    """A schema-3 store holding ``entries`` in this arrival order, ``retracted`` withdrawn by a
    revocation (no reconciliation rows, no snapshot of their documents) and ``snapshots``
    ((tenant, database, document) -> (covered seq, blob))."""
    path.mkdir(parents=True)
    env = lmdb.open(str(path), max_dbs=32, map_size=1 << 28, subdir=True)
    with env.begin(write=True) as txn:
        db = {name: env.open_db(name.encode(), txn=txn) for name in V3_TABLES}
        txn.put(b"schema_version", (3).to_bytes(4, "big"), db=db["meta"])
        next_seq: dict[bytes, int] = {}
        author_max: dict[bytes, int] = {}
        scope_bytes: dict[bytes, int] = {}
        aggregates: dict[bytes, list[int]] = {}
        for log_seq, entry in enumerate(entries, 1):
            header = entry.header
            scope = v3_scope(header.tenant_id, header.database)
            seq = next_seq[scope] = next_seq.get(scope, 0) + 1
            assert txn.put(entry.id, entry.raw, overwrite=False, db=db["entries"])
            txn.put(scope + be64(seq), entry.id, db=db["feed"])
            txn.put(scope + header.document_id + be64(seq), entry.id, db=db["doc_idx"])
            txn.put(scope + header.document_id, be64(seq), overwrite=False, db=db["documents"])
            txn.put(be64(log_seq), header.tenant_id + entry.id, db=db["log"])
            database_key = header.tenant_id + header.database.encode()
            txn.put(database_key, b"", overwrite=False, db=db["databases"])
            author_key = header.tenant_id + header.author
            author_max[author_key] = max(author_max.get(author_key, 0), header.author_seq)
            txn.put(author_key + be64(header.author_seq) + entry.id, b"", db=db["author_idx"])
            scope_bytes[scope] = scope_bytes.get(scope, 0) + len(entry.raw)
            if entry.id in retracted:
                txn.put(entry.id, header.tenant_id, db=db["retracted"])
            elif header.timestamp_ms != MAX_TIMESTAMP:
                txn.put(scope + be64(header.timestamp_ms) + entry.id, b"", db=db["recon_idx"])
                leaf = header.timestamp_ms >> V3_RECON_SHIFTS[0]
                for level, shift in enumerate(V3_RECON_SHIFTS):
                    bucket = leaf >> (shift - V3_RECON_SHIFTS[0])
                    row = aggregates.setdefault(scope + bytes((level,)) + be64(bucket), [0, 0])
                    row[0] += 1
                    row[1] += int.from_bytes(entry.id, "little")
        for author_key, author_seq in author_max.items():
            txn.put(author_key, be64(author_seq), db=db["author_seq"])
        for scope, size in scope_bytes.items():
            txn.put(scope, be64(size), db=db["scope_bytes"])
        for key, (count, id_sum) in aggregates.items():
            value = be64(count) + (id_sum % (1 << 256)).to_bytes(32, "little")
            txn.put(key, value, db=db["recon_agg"])
        for (tenant_id, database, document_id), (covered, blob) in snapshots.items():
            key = v3_scope(tenant_id, database) + document_id
            txn.put(key, be64(covered) + blob, db=db["snapshots"])
    env.close()


# -- a small history -----------------------------------------------------------------------------


class History:
    """Entries of two tenants, several databases and documents, the tenant log, a revoked
    author whose later entries are retracted, an unreconcilable timestamp, a snapshot."""

    def __init__(self) -> None:
        rnd = random.Random(3)
        self.alice = SigningKeyPair.generate()
        self.mallory = SigningKeyPair.generate()
        self.admin = SigningKeyPair.generate()
        self.seqs: dict[bytes, int] = {}
        documents = [os.urandom(16) for _ in range(6)]
        self.entries: list[Entry] = [
            self.seal(self.admin, TENANT, TENANT_LOG, bytes(16), EntryKind.MEMBERSHIP, T0)
        ]
        for i in range(60):
            author = self.mallory if i % 5 == 0 else self.alice
            tenant = OTHER_TENANT if i % 7 == 0 else TENANT
            database = "notes" if i % 3 else "contacts"
            self.entries.append(
                self.seal(author, tenant, database, rnd.choice(documents), EntryKind.CHANGE, T0 + i)
            )
        self.entries.append(
            self.seal(self.alice, TENANT, "notes", documents[0], EntryKind.CHANGE, MAX_TIMESTAMP)
        )
        self.retracted = {
            e.id
            for e in self.entries
            if e.header.author == self.mallory.public_key
            and e.header.tenant_id == TENANT
            and e.header.author_seq > 3
        }
        self.snapshot_doc = documents[1]
        self.snapshots = {(TENANT, "notes", documents[1]): (5, b"snapshot blob")}

    def seal(
        self,
        author: SigningKeyPair,
        tenant: bytes,
        database: str,
        document_id: bytes,
        kind: EntryKind,
        timestamp_ms: int,
    ) -> Entry:
        key = tenant + author.public_key
        self.seqs[key] = self.seqs.get(key, 0) + 1
        return Entry.seal(
            kind=kind,
            tenant_id=tenant,
            database=database,
            document_id=document_id,
            author=author,
            author_seq=self.seqs[key],
            timestamp_ms=timestamp_ms,
            deps=[],
            key_id=KEY_ID,
            key=KEY,
            payload=os.urandom(40),
        )


def answers(store: EntryStore) -> dict[str, object]:
    """Everything the public API says about the store."""
    found: dict[str, object] = {"count": store.count(), "tenants": store.tenants()}
    for tenant in (TENANT, OTHER_TENANT):
        found[f"{tenant!r} iter"] = [e.id for e in store.iter_entries(tenant)]
        found[f"{tenant!r} retracted"] = store.retracted_ids(tenant)
        found[f"{tenant!r} authors"] = store.authors(tenant)
        for database in store.databases(tenant):
            where = f"{tenant!r} {database}"
            found[f"{where} feed"] = store.changes_since(tenant, database, 0, 10_000)
            found[f"{where} stats"] = store.stats(tenant, database)
            found[f"{where} iter"] = [e.id for e in store.iter_entries(tenant, database, 2)]
            with store.recon_snapshot(tenant, database) as storage:
                found[f"{where} recon"] = list(storage.items(0, storage.size()))
            for document_id in store.documents(tenant, database):
                rows = store.document_entries(tenant, database, document_id)
                found[f"{where} {document_id.hex()}"] = (
                    [(seq, e.id) for seq, e in rows],
                    store.document_entry_count(tenant, database, document_id),
                    store.get_snapshot(tenant, database, document_id),
                )
    found["all"] = [e.id for e in store.iter_entries()]
    return found


@pytest.fixture(scope="module")
def history() -> History:
    return History()


def v3_path(tmp_path: Path, history: History) -> Path:
    path = tmp_path / "v3"
    write_v3_store(path, history.entries, history.retracted, history.snapshots)
    return path


def reference(tmp_path: Path, history: History) -> dict[str, object]:
    """The same history written by the current code."""
    with EntryStore(tmp_path / "reference") as store:
        assert len(store.append(history.entries).added) == len(history.entries)
        retracted = store.retract_authored_after(TENANT, history.mallory.public_key, 3)
        assert {e.id for e in retracted} == history.retracted
        ((tenant, database, document_id), (covered, blob)) = next(iter(history.snapshots.items()))
        store.put_snapshot(tenant, database, document_id, covered, blob)
        assert store.fsck().ok
        return answers(store)


def table_names(path: Path) -> set[bytes]:
    env = lmdb.open(str(path), max_dbs=32, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {name for name, _ in txn.cursor()}
    finally:
        env.close()


def test_a_version_3_store_is_upgraded_in_place(tmp_path: Path, history: History) -> None:
    path = v3_path(tmp_path, history)
    with pytest.raises(StoreError, match="schema version 3; open it once writable"):
        EntryStore(path, readonly=True)
    expected = reference(tmp_path, history)
    with EntryStore(path) as store:
        assert store.fsck().ok
        assert answers(store) == expected
        assert all(store.is_retracted(i) for i in history.retracted)
        assert store.next_author_seq(TENANT, history.alice.public_key) == (
            history.seqs[TENANT + history.alice.public_key] + 1
        )
    assert b"entries" not in table_names(path) and b"log" not in table_names(path)
    with EntryStore(path, readonly=True) as reader:
        assert answers(reader) == expected
    # Appends go on where the old sequences ended.
    extra = history.seal(history.alice, TENANT, "notes", bytes(16), EntryKind.CHANGE, T0 + 99)
    with EntryStore(path) as store:
        last = store.last_seq(TENANT, "notes")
        assert store.append([extra]).added == [extra.id]
        items, _ = store.changes_since(TENANT, "notes", last)
        assert [(i.seq, i.entry_id) for i in items] == [(last + 1, extra.id)]
        assert store.fsck().ok


def test_an_interrupted_upgrade_leaves_the_version_3_store_intact(
    tmp_path: Path, history: History
) -> None:
    path = v3_path(tmp_path, history)
    with (
        mock.patch("mindoo_p2p.store._upgrade.build_author_index", side_effect=OSError("crash")),
        pytest.raises(OSError, match="crash"),
    ):
        EntryStore(path)
    assert b"log" in table_names(path) and b"sealed" not in table_names(path)
    with EntryStore(path) as store:
        assert store.fsck().ok
        assert answers(store) == reference(tmp_path, history)


def test_an_upgraded_store_is_not_converted_again(tmp_path: Path, history: History) -> None:
    path = v3_path(tmp_path, history)
    EntryStore(path).close()
    with (
        mock.patch("mindoo_p2p.store._upgrade._convert_layout", side_effect=AssertionError),
        EntryStore(path) as store,
    ):
        assert store.count() == len(history.entries)
