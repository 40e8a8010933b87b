"""The LMDB entry store: round trips, indexes, feeds, the tamper matrix, fuzzing, fsck."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindoo_p2p.admission import trust_stored
from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import StoreError
from mindoo_p2p.store import (
    MAX_BATCH_ENTRIES,
    MAX_FEED_PAGE,
    AppendResult,
    EntryStore,
    FeedItem,
    Rejected,
    RejectionKind,
    scope_key,
)
from mindoo_p2p.store import entry_store as entry_store_module

AUTHOR = SigningKeyPair.generate()
ADMIN = SigningKeyPair.generate()
KEY = random_key()
KEY_ID = b"store-test-key-1"
TENANT = b"T" * 16
OTHER_TENANT = b"U" * 16


class Maker:
    """Seals valid entries with increasing author sequence numbers."""

    def __init__(self, author: SigningKeyPair = AUTHOR) -> None:
        self.author = author
        self.seq = 0

    def __call__(
        self,
        *,
        database: str = "contacts",
        document_id: bytes | None = None,
        tenant_id: bytes = TENANT,
        kind: EntryKind = EntryKind.CHANGE,
        deps: int = 0,
        payload: bytes | None = None,
        author_seq: int | None = None,
    ) -> Entry:
        self.seq += 1
        return Entry.seal(
            kind=kind,
            tenant_id=tenant_id,
            database=database,
            document_id=document_id if document_id is not None else os.urandom(16),
            author=self.author,
            author_seq=author_seq if author_seq is not None else self.seq,
            timestamp_ms=1_700_000_000_000 + self.seq,
            deps=[os.urandom(32) for _ in range(deps)],
            key_id=KEY_ID,
            key=KEY,
            payload=payload if payload is not None else os.urandom(90),
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EntryStore]:
    with EntryStore(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def make() -> Maker:
    return Maker()


def assert_all_added(result: AppendResult, entries: list[Entry]) -> None:
    assert result.added == [e.id for e in entries]
    assert result.duplicates == []
    assert result.rejected == []


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


# -- the tamper matrix ------------------------------------------------------------------------

DECODE = "decode error"
SIGNATURE = "bad signature"


def field_offsets(entry: Entry) -> dict[str, tuple[int, str | tuple[str, ...]]]:
    """Offset of one byte inside each field of the sealed layout, and the expected verdict."""
    name_len = len(entry.database)
    o_name = 22
    o_doc = o_name + name_len
    o_author = o_doc + 16
    o_seq = o_author + 32
    o_time = o_seq + 8
    o_deps_count = o_time + 8
    o_deps = o_deps_count + 1
    o_key_id = o_deps + 32 * len(entry.deps)
    o_nonce = o_key_id + 16
    o_ct_len = o_nonce + 24
    o_sig = len(entry.raw) - 64
    assert entry.header_bytes == entry.raw[:o_ct_len]
    return {
        "magic": (1, DECODE),
        "version": (3, DECODE),
        "kind": (4, DECODE),  # CHANGE (1) ^ 1 = 0: no such kind
        "tenant_id": (10, SIGNATURE),
        "database length": (21, DECODE),
        "database name": (o_name + 1, SIGNATURE),  # "contacts" -> "cnntacts": valid, unsigned
        "document_id": (o_doc + 5, SIGNATURE),
        "author": (o_author + 3, SIGNATURE),
        "author_seq": (o_seq + 7, SIGNATURE),
        "timestamp_ms": (o_time + 7, SIGNATURE),
        # 2 -> 3 deps shifts every later field; the shifted bytes almost never decode, but once in
        # a few hundred random entries they do (and the signature then fails): rejected either way.
        "deps count": (o_deps_count, (DECODE, SIGNATURE)),
        "dep id": (o_deps + 40, SIGNATURE),
        "key_id": (o_key_id + 2, SIGNATURE),
        "nonce": (o_nonce + 11, SIGNATURE),
        "ciphertext length": (o_ct_len, DECODE),
        "ciphertext": (o_ct_len + 30, SIGNATURE),
        "signature": (o_sig + 17, SIGNATURE),
        "signature (last byte)": (len(entry.raw) - 1, SIGNATURE),
    }


FIELDS = list(field_offsets(Maker()(deps=2)))


@pytest.mark.parametrize("field", FIELDS)
def test_tamper_matrix(store: EntryStore, make: Maker, field: str) -> None:
    victim = make(deps=2)
    offset, expected = field_offsets(victim)[field]
    tampered = bytearray(victim.raw)
    tampered[offset] ^= 0x01
    tampered_bytes = bytes(tampered)
    valid = [make(deps=1) for _ in range(4)]

    result = store.append([valid[0].raw, valid[1], tampered_bytes, valid[2].raw, valid[3]])

    assert result.added == [e.id for e in valid]
    assert result.duplicates == []
    assert len(result.rejected) == 1
    rejected = result.rejected[0]
    assert rejected.entry_id == hashlib.sha256(tampered_bytes).digest()
    assert rejected.reason.startswith(expected), rejected.reason
    assert not store.has(rejected.entry_id)
    assert store.count() == 4
    # The untouched original is still welcome afterwards.
    assert store.append([victim.raw]).added == [victim.id]
    assert store.fsck().ok


def test_authorizer_rejects_only_its_entry(store: EntryStore, make: Maker) -> None:
    entries = [make() for _ in range(5)]
    refused = entries[2].id

    def authorize(entry: Entry) -> Rejected | None:
        if entry.id == refused:
            return Rejected(entry.id, RejectionKind.NOT_A_MEMBER, "author is not a member")
        return None

    result = store.append(entries, authorize)
    assert result.added == [e.id for e in entries if e.id != refused]
    assert [(r.entry_id, r.kind, r.reason) for r in result.rejected] == [
        (refused, RejectionKind.NOT_A_MEMBER, "author is not a member")
    ]
    assert not store.has(refused)


def test_authorizer_is_not_consulted_for_duplicates_or_bad_entries(
    store: EntryStore, make: Maker
) -> None:
    stored, fresh = make(), make()
    store.append([stored])
    broken = bytearray(make().raw)
    broken[-3] ^= 0x40
    seen: list[bytes] = []

    def authorize(entry: Entry) -> Rejected | None:
        seen.append(entry.id)
        return None

    result = store.append([stored, bytes(broken), b"garbage", fresh], authorize)
    assert seen == [fresh.id]
    assert result.added == [fresh.id]
    assert result.duplicates == [stored.id]
    assert [r.reason.split(":")[0] for r in result.rejected] == [SIGNATURE, DECODE]
    assert result.rejected[1].entry_id == hashlib.sha256(b"garbage").digest()


def test_tenant_log_first_so_new_members_can_write_in_the_same_batch(store: EntryStore) -> None:
    admin, member = Maker(ADMIN), Maker(SigningKeyPair.generate())
    member_change = member(document_id=bytes(16))
    grant_2 = admin(database=TENANT_LOG, kind=EntryKind.MEMBERSHIP, author_seq=2)
    grant_1 = admin(database=TENANT_LOG, kind=EntryKind.MEMBERSHIP, author_seq=1)
    grants = {grant_1.id: member.author.public_key}
    members = {ADMIN.public_key}
    order: list[bytes] = []

    def authorize(entry: Entry) -> Rejected | None:
        order.append(entry.id)
        if entry.author not in members:
            return Rejected(entry.id, RejectionKind.NOT_A_MEMBER, "unknown author")
        if entry.id in grants:
            members.add(grants[entry.id])
        return None

    result = store.append([member_change, grant_2, grant_1], authorize)
    assert order == [grant_1.id, grant_2.id, member_change.id]
    assert result.added == order
    assert result.rejected == []
    assert store.changes_since(TENANT, TENANT_LOG)[0][0].entry_id == grant_1.id
    assert list(store.iter_entries(TENANT, TENANT_LOG)) == [grant_1, grant_2]


def test_entry_stored_by_another_writer_meanwhile_is_a_duplicate(
    tmp_path: Path, make: Maker
) -> None:
    entries = [make(), make(), make()]
    with EntryStore(tmp_path) as store, EntryStore(tmp_path) as other:

        def authorize(entry: Entry) -> Rejected | None:
            if entry.id == entries[1].id:  # another writer wins the race for this one
                assert other.append([entry]).added == [entry.id]
            return None

        result = store.append(entries, authorize)
        assert result.added == [entries[0].id, entries[2].id]
        assert result.duplicates == [entries[1].id]
        items, _ = store.changes_since(TENANT, "contacts")
        assert [i.entry_id for i in items] == [entries[1].id, entries[0].id, entries[2].id]
        assert store.fsck().ok


def test_authorizer_exception_writes_nothing(store: EntryStore, make: Maker) -> None:
    def authorize(entry: Entry) -> Rejected | None:
        raise RuntimeError("membership state unavailable")

    with pytest.raises(RuntimeError):
        store.append([make(), make()], authorize)
    assert store.count() == 0


# -- fuzzing ----------------------------------------------------------------------------------

POOL_MAKER = Maker(SigningKeyPair.generate())
POOL = [POOL_MAKER(deps=i % 3, document_id=bytes([i % 4]) * 16) for i in range(12)]
POOL_IDS = {e.id for e in POOL}
BASE = POOL[:3]


@st.composite
def offered_item(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(max_size=500))
    raw = bytearray(draw(st.sampled_from(POOL)).raw)
    if choice == 1:
        return bytes(raw)
    position = draw(st.integers(0, len(raw) - 1))
    if choice == 2:
        raw[position] ^= draw(st.integers(1, 255))
    elif choice == 3:
        del raw[position:]
    elif choice == 4:
        raw.insert(position, draw(st.integers(0, 255)))
    else:
        del raw[position]
    return bytes(raw)


def test_append_never_raises_and_never_stores_anything_invalid(tmp_path: Path) -> None:
    with EntryStore(tmp_path) as store:
        store.append(BASE)

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(offered_item(), max_size=12))
        def check(offered: list[bytes]) -> None:
            earlier = {e.id: e.raw for e in store.iter_entries()}
            earlier_feed, cursor = store.changes_since(TENANT, "contacts")

            result = store.append(offered)

            accounted = len(result.added) + len(result.duplicates) + len(result.rejected)
            assert accounted == len(offered)
            assert set(result.added) <= POOL_IDS - set(earlier)
            assert set(result.duplicates) <= POOL_IDS
            assert not any(store.has(r.entry_id) for r in result.rejected)
            assert store.count() == len(earlier) + len(result.added)
            assert {e: store.get_raw(e) for e in earlier} == earlier
            assert store.changes_since(TENANT, "contacts")[0][: len(earlier_feed)] == earlier_feed
            new_items, _ = store.changes_since(TENANT, "contacts", cursor)
            assert [item.entry_id for item in new_items] == result.added
            assert store.fsck().ok

        check()
        assert store.count() > len(BASE)  # valid pool entries did land along the way


# -- corruption ---------------------------------------------------------------------------------


def flip_in_data_file(path: Path, needle: bytes, offset: int) -> int:
    """Flip one byte at ``offset`` inside every copy of ``needle`` in data.mdb; return copies."""
    data_file = path / "data.mdb"
    content = data_file.read_bytes()
    positions = []
    start = content.find(needle)
    while start != -1:
        positions.append(start)
        start = content.find(needle, start + 1)
    with data_file.open("r+b") as handle:
        for position in positions:
            handle.seek(position + offset)
            handle.write(bytes([content[position + offset] ^ 0x20]))
    return len(positions)


def test_fsck_reports_a_corrupted_entry_by_id(tmp_path: Path, make: Maker) -> None:
    path = tmp_path / "store"
    entries = [make(document_id=bytes(16)) for _ in range(20)]
    victim = entries[7]
    with EntryStore(path) as store:
        store.append(entries)
        assert store.fsck().ok

    assert flip_in_data_file(path, victim.raw, len(victim.raw) // 2) >= 1

    with EntryStore(path) as store:
        report = store.fsck()
        assert not report.ok
        assert report.entries_checked == 20
        assert {p.entry_id for p in report.problems} == {victim.id}
        assert all(p.where == "entries" for p in report.problems)
        with pytest.raises(StoreError, match=victim.id.hex()):
            store.get(victim.id)
        assert store.get(entries[6].id) == entries[6]
        with pytest.raises(StoreError):
            store.document_entries(TENANT, "contacts", bytes(16))


def test_fsck_reports_index_damage(tmp_path: Path, make: Maker) -> None:
    path = tmp_path / "store"
    entries = [make() for _ in range(5)]
    with EntryStore(path) as store:
        store.append(entries)
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        doc_feed = env.open_db(b"doc_feed", txn=txn, dupsort=True, dupfixed=True)
        number = txn.get(scope_key(TENANT, "contacts"), db=env.open_db(b"scopes", txn=txn))
        assert number == (1).to_bytes(4, "big")  # the store's first (and only) database
        key = number + entries[2].document_id
        assert txn.delete(key, (3).to_bytes(8, "big") + (3).to_bytes(8, "big"), db=doc_feed)
        authors = env.open_db(b"author_seq", txn=txn)
        txn.put(TENANT + AUTHOR.public_key, (1).to_bytes(8, "big"), db=authors)
    env.close()
    with EntryStore(path) as store:
        report = store.fsck()
    assert sorted((p.where, p.entry_id) for p in report.problems) == [
        ("author_seq", None),
        ("doc_feed", entries[2].id),
    ]


def test_fsck_reports_an_entry_missing_from_the_feed(tmp_path: Path, make: Maker) -> None:
    path = tmp_path / "store"
    stray = make()
    with EntryStore(path) as store:
        store.append([make()])
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put((2).to_bytes(8, "big"), stray.raw, db=env.open_db(b"sealed", txn=txn))
        txn.put(stray.id, (2).to_bytes(8, "big"), db=env.open_db(b"ids", txn=txn))
    env.close()
    with EntryStore(path) as store:
        report = store.fsck()
    assert report.entries_checked == 2
    # Stored and indexed by id, but in no other table: each table it is missing from says so.
    assert sorted(p.where for p in report.problems) == [
        "by_author",
        "db_feed",
        "doc_feed",
        "recon_idx",
        "scope_bytes",
        "scope_docs",
    ]
    assert {p.entry_id for p in report.problems if p.where.endswith(("feed", "author"))} == {
        stray.id
    }


def test_verified_entries_stored_already_are_duplicates_found_by_the_write(
    store: EntryStore, make: Maker
) -> None:
    """A batch of `VerifiedEntry` items is not looked up before the write (nothing to verify):
    what the store holds, or what the batch repeats, is still a duplicate, never stored twice
    and never rejected."""
    first = [make() for _ in range(3)]
    assert_all_added(store.append([trust_stored(e) for e in first]), first)
    new = make()
    again = [trust_stored(e) for e in [first[1], new, first[0], new]]
    result = store.append(again)
    assert result.added == [new.id]
    assert sorted(result.duplicates) == sorted([first[1].id, first[0].id, new.id])
    assert result.rejected == [] and store.count() == 4
    assert store.fsck().ok
