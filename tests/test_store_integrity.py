"""The LMDB entry store against bad input and damage: the tamper matrix, authorizers, fuzzing,
fsck of corrupted data."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import (
    ADMIN,
    AUTHOR,
    TENANT,
    Maker,
    assert_all_added,
)

from mindoo_p2p.admission import trust_stored
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import StoreError
from mindoo_p2p.store import (
    EntryStore,
    Rejected,
    RejectionKind,
    scope_key,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EntryStore]:
    with EntryStore(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def make() -> Maker:
    return Maker()


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
