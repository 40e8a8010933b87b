"""The rows `_writer.write_entries` builds a column at a time and puts in bulk (issue 8, local
write rate): interleaved databases and authors keep their own sequence numbers, an entry with
the reserved timestamp inside a run is stored but not indexed, and `put_dups` inserts the rows
that cannot be appended and refuses a row that is already there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import seal_entry
from store_helpers import KEY, KEY_ID, TENANT, Maker, assert_all_added

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import NO_PREV, Entry
from mindoo_p2p.errors import StoreError
from mindoo_p2p.recon import MAX_TIMESTAMP
from mindoo_p2p.store import EntryStore
from mindoo_p2p.store._writer import put_dups


def test_interleaved_databases_and_authors_keep_their_own_numbers(tmp_path: Path) -> None:
    alice, bob = Maker(SigningKeyPair.generate()), Maker(SigningKeyPair.generate())
    document = os.urandom(16)
    with EntryStore(tmp_path / "store") as store:
        first = [alice(database="a"), alice(database="b"), bob(database="a")]
        assert_all_added(store.append(first), first)
        # runs of one database (a, a, b, a, b, b), two authors, one document written in both
        batch = [
            alice(database="a", document_id=document),
            bob(database="a"),
            alice(database="b", document_id=document),
            bob(database="a", document_id=document),
            alice(database="b"),
            bob(database="b"),
        ]
        assert_all_added(store.append(batch), batch)
        for database in ("a", "b"):
            items, _ = store.changes_since(TENANT, database)
            expected = [e for e in first + batch if e.database == database]
            assert [item.entry_id for item in items] == [e.id for e in expected]
            assert [item.seq for item in items] == list(range(1, len(expected) + 1))
            assert [e.id for _, e in store.document_entries(TENANT, database, document)] == [
                e.id for e in batch if e.database == database and e.document_id == document
            ]
        assert store.authors(TENANT) == {alice.author.public_key: 5, bob.author.public_key: 4}
        assert store.fsck().ok


def notes_entry(
    signer: SigningKeyPair, seq: int, prev: bytes, timestamp_ms: int | None = None
) -> Entry:
    """Entry ``seq`` of ``signer``'s chain in database "notes" (a fresh document)."""
    return seal_entry(
        tenant_id=TENANT,
        database="notes",
        author=signer,
        author_seq=seq,
        timestamp_ms=1_700_000_000_000 + seq if timestamp_ms is None else timestamp_ms,
        key_id=KEY_ID,
        key=KEY,
        payload=b"x",
        prev=prev,
    )


def test_an_entry_with_the_reserved_timestamp_inside_a_run_is_stored_not_indexed(
    tmp_path: Path,
) -> None:
    signer = SigningKeyPair.generate()
    entries: list[Entry] = []
    prev = NO_PREV
    for seq, timestamp in enumerate((1_700_000_000_000, MAX_TIMESTAMP, 1_700_000_000_001), 1):
        entry = notes_entry(signer, seq, prev, timestamp)
        prev = entry.id
        entries.append(entry)
    with EntryStore(tmp_path / "store") as store:
        assert_all_added(store.append(entries), entries)
        assert store.stats(TENANT, "notes")["entries"] == 3
        with store.recon_snapshot(TENANT, "notes") as storage:
            assert storage.size() == 2
        assert store.fsck().ok


def test_put_dups_inserts_what_cannot_be_appended_and_refuses_a_row_already_there(
    tmp_path: Path,
) -> None:
    with EntryStore(tmp_path / "store") as store:
        db = store._tables.by_author
        with store._writing() as txn:
            put_dups(txn, db, [(b"k", b"5" * 16), (b"k", b"7" * 16)], "test")
            # below the key's last value, above it, and a new key that sorts before it
            put_dups(txn, db, [(b"k", b"9" * 16), (b"k", b"3" * 16), (b"a", b"1" * 16)], "test")
            assert list(txn.cursor(db)) == [
                (b"a", b"1" * 16),
                (b"k", b"3" * 16),
                (b"k", b"5" * 16),
                (b"k", b"7" * 16),
                (b"k", b"9" * 16),
            ]
            with pytest.raises(StoreError, match="already holds a row"):
                put_dups(txn, db, [(b"k", b"8" * 16), (b"k", b"5" * 16)], "test")
            with pytest.raises(StoreError, match="already holds a row"):
                put_dups(txn, db, [(b"k", b"9" * 16)], "test")


def test_an_own_entry_that_does_not_name_its_author_s_last_entry_stores_nothing(
    tmp_path: Path,
) -> None:
    """The own-write sequence check compares both links: the right number with another
    predecessor is refused (StoreError) and nothing of the write is stored."""
    signer = SigningKeyPair.generate()

    with EntryStore(tmp_path / "store") as store:
        first = notes_entry(signer, 1, NO_PREV)
        assert store.append_local(lambda _positions: [first]) == [first]
        good, forged = notes_entry(signer, 2, first.id), notes_entry(signer, 2, os.urandom(32))
        with pytest.raises(StoreError, match="does not name its author's previous entry"):
            store.append_local(lambda _positions: [good, notes_entry(signer, 3, os.urandom(32))])
        with pytest.raises(StoreError, match="does not name its author's previous entry"):
            store.append_local(lambda _positions: [forged])
        assert store.count() == 1
        assert store.fsck().ok
