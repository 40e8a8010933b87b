"""The LMDB entry store: round trips, duplicates, indexes, feeds, snapshots and opening."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import lmdb
import pytest
from store_helpers import (
    ADMIN,
    AUTHOR,
    KEY,
    OTHER_TENANT,
    TENANT,
    Maker,
    assert_all_added,
)

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.errors import StoreError
from mindoo_p2p.keyring import TenantKey
from mindoo_p2p.store import (
    MAX_BATCH_ENTRIES,
    MAX_FEED_PAGE,
    AppendResult,
    EntryStore,
    FeedItem,
    _feed_reads,
    _writer,
    scope_key,
)
from mindoo_p2p.store import entry_store as entry_store_module
from mindoo_p2p.store._cursors import dups_from
from mindoo_p2p.store._writer import WrittenDocuments
from mindoo_p2p.writer import Draft, seal_drafts

OWN = SigningKeyPair.generate()
OWN_KEY = TenantKey.generate("default")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EntryStore]:
    with EntryStore(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def make() -> Maker:
    return Maker()


# -- round trip and duplicates --------------------------------------------------------------


def test_round_trip_bytes_and_entries(store: EntryStore, make: Maker) -> None:
    entries = [make(payload=f"change {i}".encode()) for i in range(6)]
    offered: list[Entry | bytes] = [e.raw if i % 2 else e for i, e in enumerate(entries)]
    assert_all_added(store.append(offered), entries)

    assert store.count() == 6
    for i, entry in enumerate(entries):
        got = store.get(entry.id)
        assert got == entry
        assert got is not None and got.decrypt(KEY) == f"change {i}".encode()
        assert store.get_raw(entry.id) == entry.raw
        assert store.has(entry.id)
    unknown = os.urandom(32)
    assert store.get(unknown) is None
    assert store.get_raw(unknown) is None
    assert not store.has(unknown)
    assert not store.has(b"short")
    assert store.missing([entries[0].id, unknown, entries[5].id, b"x"]) == [unknown, b"x"]
    assert store.get_raws([entries[3].id, unknown, b"x", entries[0].id]) == [
        entries[3].raw,
        None,
        None,
        entries[0].raw,
    ]
    assert store.get_raws([]) == []


def test_empty_batch_and_bad_item_type(store: EntryStore) -> None:
    assert store.append([]) == AppendResult([], [], [])
    with pytest.raises(TypeError):
        store.append(["not bytes"])  # type: ignore[list-item]
    assert store.count() == 0


def test_duplicates_are_no_ops(store: EntryStore, make: Maker) -> None:
    entries = [make() for _ in range(4)]
    store.append(entries)
    again = store.append([entries[1].raw, entries[3]])
    assert again.added == [] and again.rejected == []
    assert again.duplicates == [entries[1].id, entries[3].id]
    assert store.count() == 4
    assert store.last_seq(TENANT, "contacts") == 4

    fresh = make()
    mixed = store.append([fresh, fresh.raw, entries[0], fresh])
    assert mixed.added == [fresh.id]
    assert sorted(mixed.duplicates) == sorted([entries[0].id, fresh.id, fresh.id])
    assert store.last_seq(TENANT, "contacts") == 5
    assert store.fsck().ok


def test_repeat_of_a_rejected_entry_is_rejected_too(store: EntryStore, make: Maker) -> None:
    entry = make()
    bad = bytearray(entry.raw)
    bad[-1] ^= 0x01
    result = store.append([bytes(bad), bytes(bad)])
    assert result.added == [] and result.duplicates == []
    assert [r.reason for r in result.rejected] == ["bad signature", "bad signature"]


def test_entry_object_with_a_wrong_id_is_rejected(store: EntryStore, make: Maker) -> None:
    a, b = make(), make()
    forged = Entry(
        header=a.header,
        ciphertext=a.ciphertext,
        signature=a.signature,
        raw=a.raw,
        id=b.id,
        header_bytes=a.header_bytes,
        signed_end=a.signed_end,
    )
    result = store.append([forged])
    assert result.added == []
    assert result.rejected[0].entry_id == hashlib.sha256(a.raw).digest()
    assert not store.has(b.id)


# -- indexes and feeds ------------------------------------------------------------------------


def test_indexes(store: EntryStore, make: Maker) -> None:
    doc_a, doc_b, doc_c = os.urandom(16), os.urandom(16), os.urandom(16)
    first = [make(document_id=doc_b), make(document_id=doc_a), make(document_id=doc_b)]
    second = [
        make(document_id=doc_c, database="notes"),
        make(document_id=doc_a),
        make(document_id=doc_a, tenant_id=OTHER_TENANT),
    ]
    store.append(first)
    store.append(second)

    assert store.tenants() == sorted([TENANT, OTHER_TENANT])
    assert store.databases(TENANT) == ["contacts", "notes"]
    assert store.databases(OTHER_TENANT) == ["contacts"]
    assert store.databases(b"Z" * 16) == []
    assert store.documents(TENANT, "contacts") == [doc_b, doc_a]
    assert store.documents(TENANT, "notes") == [doc_c]
    assert store.documents(TENANT, "nothing") == []

    assert store.document_entries(TENANT, "contacts", doc_a) == [
        (2, first[1]),
        (4, second[1]),
    ]
    assert store.document_entries(TENANT, "contacts", doc_a, after_seq=2) == [(4, second[1])]
    assert store.document_entries(TENANT, "contacts", doc_a, after_seq=4) == []
    assert store.document_entries(OTHER_TENANT, "contacts", doc_a) == [(1, second[2])]
    assert store.document_entry_count(TENANT, "contacts", doc_b) == 2
    assert store.document_entry_count(TENANT, "contacts", os.urandom(16)) == 0

    assert store.last_seq(TENANT, "contacts") == 4
    assert store.last_seq(TENANT, "notes") == 1
    assert store.last_seq(TENANT, "nothing") == 0
    assert store.next_author_seq(TENANT, AUTHOR.public_key) == 6
    assert store.next_author_seq(OTHER_TENANT, AUTHOR.public_key) == 7
    assert store.next_author_seq(TENANT, ADMIN.public_key) == 1

    contacts = [first[0], first[1], first[2], second[1]]
    assert store.stats(TENANT, "contacts") == {
        "entries": 4,
        "documents": 2,
        "last_seq": 4,
        "bytes": sum(len(e.raw) for e in contacts),
    }
    assert list(store.iter_entries()) == first + second
    assert list(store.iter_entries(TENANT)) == first + second[:2]
    assert list(store.iter_entries(TENANT, "contacts")) == contacts
    assert list(store.iter_entries(TENANT, "contacts", since_seq=2)) == contacts[2:]
    with pytest.raises(ValueError):
        store.iter_entries(None, "contacts")
    with pytest.raises(ValueError):
        store.iter_entries(TENANT, since_seq=3)
    assert store.fsck().ok


def test_document_updates_leave_out_the_callers_own_entries(store: EntryStore, make: Maker) -> None:
    """A cache's refresh after its own writes (``known_ids``: entries it stored after
    ``after_seq``) reads nothing when they are all the document's new rows, and still reads
    every entry another writer stored among them, or that it does not know."""
    doc = os.urandom(16)
    older, own_1, own_2 = make(document_id=doc), make(document_id=doc), make(document_id=doc)
    store.append([older, own_1, own_2])
    known = {own_1.id, own_2.id}
    assert store.document_updates(TENANT, "contacts", doc, 1, known) == ([], 3)
    assert store.document_updates(TENANT, "contacts", doc, 3, set()) == ([], 3)
    # Another writer's entry among the cache's own: read, and only it.
    other, own_3 = make(document_id=doc), make(document_id=doc)
    store.append([other, own_3])
    known.add(own_3.id)
    assert store.document_updates(TENANT, "contacts", doc, 1, known) == ([(4, other)], 5)
    assert store.document_updates(TENANT, "contacts", doc, 3, {own_3.id}) == ([(4, other)], 5)
    assert store.document_updates(TENANT, "contacts", doc, 0, set()) == (
        [(1, older), (2, own_1), (3, own_2), (4, other), (5, own_3)],
        5,
    )
    # Review finding (trims, LOW): as many new rows as known ids was taken for "exactly the
    # known entries" unchecked; a known id stored at or before ``after_seq`` (or elsewhere)
    # then hid another writer's entry. Now each known id's arrival must be among the rows.
    assert store.document_updates(TENANT, "contacts", doc, 3, {own_1.id, own_2.id}) == (
        [(4, other), (5, own_3)],
        5,
    )
    assert store.document_updates(TENANT, "contacts", doc, 4, {os.urandom(32)}) == (
        [(5, own_3)],
        5,
    )


def test_an_older_own_writes_record_never_replaces_a_newer_one(store: EntryStore) -> None:
    """Review finding (first-touch, LOW): two threads' own writes on one handle may end in
    either order; the record of the older write no longer replaces the newer one's (which
    would send the next refresh to read back what the newer write stored)."""
    older, newer = WrittenDocuments(), WrittenDocuments()
    older.txn_id, newer.txn_id = 7, 8
    store._keep_own_rows(newer)
    store._keep_own_rows(older)
    assert store._own_rows is newer
    store._keep_own_rows(WrittenDocuments())  # a write that recorded nothing
    assert store._own_rows is newer


def test_document_updates_skip_an_own_writes_rows_while_nothing_else_is_stored(
    store: EntryStore, make: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows the last `append_local` added to a document are not read back (one seek to
    the document's last row, no walk) for a cache that had read up to just before them and
    knows all their ids; rows another handle stored after them, or between the cache's last
    read and them, are read as before."""
    doc = os.urandom(16)
    older = make(document_id=doc)
    store.append([older])  # seq 1

    def own_write(count: int, neighbour: bytes = os.urandom(16)) -> list[Entry]:
        """``count`` own entries of ``doc``, each after one of another document."""
        drafts = [
            Draft(EntryKind.CHANGE, TENANT, "contacts", document_id, OWN, OWN_KEY, os.urandom(40))
            for _ in range(count)
            for document_id in (neighbour, doc)
        ]
        return store.append_local(lambda positions: seal_drafts(drafts, positions))[1::2]

    walks: list[object] = []
    real_dups_from = dups_from

    def counting_dups_from(*args: Any) -> Iterator[tuple[int, bytes]]:
        walks.append(args)
        return real_dups_from(*args)

    monkeypatch.setattr(_feed_reads, "dups_from", counting_dups_from)
    mine = own_write(2)  # seqs 3, 5 (the other document's: 2, 4)
    known = {e.id for e in mine}
    reads: list[object] = []
    real_reading = store._reading

    def counting_reading() -> AbstractContextManager[lmdb.Transaction[bytes]]:
        reads.append(None)
        return real_reading()

    # Nothing committed since the write, which found the document's last row at seq 1: no
    # read transaction at all.
    monkeypatch.setattr(store, "_reading", counting_reading)
    assert store.document_updates(TENANT, "contacts", doc, 1, known) == ([], 5)
    assert reads == []
    assert store.document_updates(TENANT, "contacts", doc, 2, known) == ([], 5)
    assert store.document_updates(TENANT, "contacts", doc, 1, {*known, os.urandom(32)}) == (
        [],
        5,
    )
    assert walks == []
    # Not every entry of the write known, or read up to another point: read as before.
    assert store.document_updates(TENANT, "contacts", doc, 1, {mine[0].id}) == ([(5, mine[1])], 5)
    assert store.document_updates(TENANT, "contacts", doc, 0, known) == ([(1, older)], 5)
    with EntryStore(store.path) as other_handle:
        # Stored by another handle after the own write.
        theirs = make(document_id=doc)
        other_handle.append([theirs])  # seq 6
        assert store.document_updates(TENANT, "contacts", doc, 1, known) == ([(6, theirs)], 6)
        # Stored by another handle after the cache's last read (seq 6), before the own write.
        between = make(document_id=doc)
        other_handle.append([between])  # seq 7
        (mine_3,) = own_write(1)  # seq 9
        assert store.document_updates(TENANT, "contacts", doc, 6, {mine_3.id}) == (
            [(7, between)],
            9,
        )
        # A commit since (to another document): the document's rows are looked at.
        other_handle.append([make()])
    walks.clear()
    reads.clear()
    assert store.document_updates(TENANT, "contacts", doc, 7, {mine_3.id}) == ([], 9)
    assert walks == [] and reads == [None]
    # A write of more than MAX_REMEMBERED_ROWS entries is not remembered: read back.
    monkeypatch.setattr(_writer, "MAX_REMEMBERED_ROWS", 1)
    (mine_4,) = own_write(1)  # seq 12 (another document: 10, 11)
    assert store.document_updates(TENANT, "contacts", doc, 9, {mine_4.id}) == ([], 12)
    assert walks != []


def test_next_author_seq_is_the_maximum_not_the_last(store: EntryStore, make: Maker) -> None:
    store.append([make(author_seq=9), make(author_seq=3)])
    assert store.next_author_seq(TENANT, AUTHOR.public_key) == 10


def test_iter_entries_pages_through_large_databases(store: EntryStore, make: Maker) -> None:
    entries = [make(document_id=bytes(16)) for _ in range(1100)]  # more than two read pages
    store.append(entries)
    assert [e.id for e in store.iter_entries(TENANT, "contacts")] == [e.id for e in entries]
    assert [e.id for e in store.iter_entries()] == [e.id for e in entries]
    assert [e.id for e in store.iter_entries(TENANT, "contacts", 1000)] == [
        e.id for e in entries[1000:]
    ]


def test_changes_since_pagination(store: EntryStore, make: Maker) -> None:
    entries = [make(document_id=bytes([i % 3]) * 16) for i in range(25)]
    for start in range(0, 25, 7):
        store.append(entries[start : start + 7])
    store.append([make(database="notes")])

    seen: list[FeedItem] = []
    cursor = 0
    pages = []
    while True:
        items, cursor = store.changes_since(TENANT, "contacts", cursor, limit=10)
        if not items:
            break
        pages.append(len(items))
        seen.extend(items)
    assert pages == [10, 10, 5]
    assert cursor == 25
    assert [item.seq for item in seen] == list(range(1, 26))
    for item, entry in zip(seen, entries, strict=True):
        assert item == FeedItem(
            seq=item.seq,
            entry_id=entry.id,
            document_id=entry.document_id,
            kind=EntryKind.CHANGE,
            author=AUTHOR.public_key,
            author_seq=entry.header.author_seq,
            timestamp_ms=entry.timestamp_ms,
        )
    assert store.changes_since(TENANT, "contacts", 25) == ([], 25)
    assert store.changes_since(TENANT, "contacts", 10, limit=3)[0] == seen[10:13]
    assert store.changes_since(TENANT, "missing", 0) == ([], 0)
    with pytest.raises(ValueError):
        store.changes_since(TENANT, "contacts", -1)
    with pytest.raises(ValueError):
        store.changes_since(TENANT, "contacts", 0, limit=0)


def test_changes_since_limit_is_bounded(
    store: EntryStore, make: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_FEED_PAGE >= 1000
    monkeypatch.setattr(entry_store_module, "MAX_FEED_PAGE", 40)  # the real one is 10,000
    document = os.urandom(16)
    store.append([make(document_id=document) for _ in range(45)])
    items, cursor = store.changes_since(TENANT, "contacts", 0, limit=10**9)
    assert len(items) == 40 and cursor == 40
    assert len(store.changes_since(TENANT, "contacts", cursor, limit=10**9)[0]) == 5


def test_feeds_and_indexes_survive_reopen(tmp_path: Path, make: Maker) -> None:
    path = tmp_path / "store"
    entries = [make(document_id=bytes(16)) for _ in range(12)]
    with EntryStore(path) as store:
        store.append(entries[:8])
        before = store.changes_since(TENANT, "contacts", 3, limit=4)
    with EntryStore(path) as store:
        assert store.changes_since(TENANT, "contacts", 3, limit=4) == before
        assert store.count() == 8
        result = store.append(entries[8:])
        assert result.added == [e.id for e in entries[8:]]
        items, _ = store.changes_since(TENANT, "contacts", 8)
        assert [i.seq for i in items] == [9, 10, 11, 12]
        assert store.changes_since(TENANT, "contacts", 3, limit=4) == before
        assert store.document_entry_count(TENANT, "contacts", bytes(16)) == 12
        assert store.fsck().ok


def test_scope_key() -> None:
    key = scope_key(TENANT, "contacts")
    assert len(key) == 32
    assert key[:16] == TENANT
    assert key[16:] == hashlib.blake2b(b"contacts", digest_size=16).digest()
    assert scope_key(TENANT, "notes") != key
    with pytest.raises(ValueError):
        scope_key(b"short", "contacts")


def test_snapshots_are_replaceable(store: EntryStore) -> None:
    document = os.urandom(16)
    assert store.get_snapshot(TENANT, "contacts", document) is None
    store.put_snapshot(TENANT, "contacts", document, 0, b"encrypted-state-v0")
    assert store.get_snapshot(TENANT, "contacts", document) == (0, b"encrypted-state-v0")
    store.put_snapshot(TENANT, "contacts", document, 0, b"encrypted-state-v1")
    assert store.get_snapshot(TENANT, "contacts", document) == (0, b"encrypted-state-v1")
    assert store.get_snapshot(OTHER_TENANT, "contacts", document) is None
    with pytest.raises(ValueError):
        store.put_snapshot(TENANT, "Bad Name", document, 0, b"")
    with pytest.raises(ValueError):
        store.put_snapshot(TENANT, "contacts", b"short", 0, b"")
    with pytest.raises(ValueError):
        store.put_snapshot(TENANT, "contacts", document, -1, b"")


def test_snapshot_beyond_the_feed_is_reported_by_fsck(store: EntryStore, make: Maker) -> None:
    entry = make()
    store.append([entry])
    store.put_snapshot(TENANT, "contacts", entry.document_id, 1, b"ok")
    assert store.fsck().ok
    store.put_snapshot(TENANT, "contacts", entry.document_id, 5, b"ahead of the store")
    report = store.fsck()
    assert [p.where for p in report.problems] == ["snapshots"]


# -- opening ----------------------------------------------------------------------------------


def test_read_only_store(tmp_path: Path, make: Maker) -> None:
    with pytest.raises(StoreError):
        EntryStore(tmp_path / "absent", readonly=True)
    entry = make()
    with EntryStore(tmp_path / "store") as store:
        store.append([entry])
    with EntryStore(tmp_path / "store", readonly=True) as reader:
        assert reader.get(entry.id) == entry
        with pytest.raises(StoreError, match="read-only"):
            reader.append([make()])
        with pytest.raises(StoreError, match="read-only"):
            reader.put_snapshot(TENANT, "contacts", bytes(16), 0, b"")
        assert reader.fsck().ok


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    EntryStore(path).close()
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", (99).to_bytes(4, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StoreError, match="schema version 99"):
        EntryStore(path)
    with pytest.raises(StoreError, match="schema version 99"):
        EntryStore(path, readonly=True)


def test_foreign_lmdb_directory_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v", db=env.open_db(b"something-else", txn=txn))
    env.close()
    with pytest.raises(StoreError, match="not an entry store"):
        EntryStore(tmp_path)


def test_one_directory_opened_twice_in_one_process(tmp_path: Path, make: Maker) -> None:
    first = EntryStore(tmp_path)
    second = EntryStore(tmp_path)
    entry = make()
    first.append([entry])
    assert second.get(entry.id) == entry
    first.close()
    first.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        first.count()
    assert second.count() == 1  # the shared environment stays open for its other user
    second.append([make()])
    second.close()
    with EntryStore(tmp_path) as third:
        assert third.count() == 2


def test_read_only_store_shares_an_open_writable_environment(tmp_path: Path, make: Maker) -> None:
    with EntryStore(tmp_path) as writer, EntryStore(tmp_path, readonly=True) as reader:
        entry = make()
        writer.append([entry])
        assert reader.get(entry.id) == entry
        with pytest.raises(StoreError, match="read-only"):
            reader.append([make()])
    with EntryStore(tmp_path, readonly=True) as reader, pytest.raises(StoreError):
        EntryStore(tmp_path)  # cannot become writable while shared read-only


def test_batch_limits(store: EntryStore) -> None:
    with pytest.raises(ValueError, match="entries"):
        store.append([b"x"] * (MAX_BATCH_ENTRIES + 1))
    assert store.count() == 0


def test_full_store_raises_store_error_and_keeps_earlier_batches(
    tmp_path: Path, make: Maker
) -> None:
    with EntryStore(tmp_path, map_size=256 * 1024) as store:
        kept = [make(document_id=bytes(16))]
        store.append(kept)
        with pytest.raises(StoreError, match="full"):
            for _ in range(50):
                store.append([make(payload=os.urandom(4000)) for _ in range(20)])
        assert store.has(kept[0].id)
        assert store.fsck().ok
