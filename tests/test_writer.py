"""LocalWriter and EntryStore.append_local: own entries numbered and sealed inside the write
transaction; batches all or nothing; parents drafted in the same write resolved by change hash.

The sealing rules (`seal_drafts`) are driven directly with an in-memory position table; the
store hook and the writer run against a real LMDB store in a temporary directory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
from helpers import MemoryPositions

from mindoo_p2p import native_seal, writer
from mindoo_p2p.admission import Admission, VerifiedEntry
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import OwnEntryRefusedError, StoreError, VerificationError
from mindoo_p2p.keyring import TenantKey
from mindoo_p2p.rejection import Rejected, RejectionKind
from mindoo_p2p.store import AuthorPositions, EntryStore
from mindoo_p2p.writer import (
    ChangeRef,
    Draft,
    LocalWriter,
    SealingState,
    UnresolvedDependencyError,
    seal_drafts,
)

TENANT = bytes(range(16))
OTHER_TENANT = bytes(range(1, 17))
ALICE = SigningKeyPair.generate()
BOB = SigningKeyPair.generate()
KEY = TenantKey.generate("default")
DOC = b"d" * 16
OTHER_DOC = b"e" * 16


@pytest.fixture(autouse=True, params=["native", "python"])
def sealer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every rule here holds for both sealers `writer.seal_drafts` may use: the native one
    (`native_seal`, where built) and the Python one (the fallback)."""
    if request.param == "python":
        monkeypatch.setattr(writer, "_native", [None])
    elif not native_seal.available():
        pytest.skip("the native sealer is off (MINDOO_NATIVE_SEAL=0) or not built here")
    return str(request.param)


def draft(
    *,
    signer: SigningKeyPair = ALICE,
    tenant_id: bytes = TENANT,
    document_id: bytes = DOC,
    deps: tuple[bytes | ChangeRef, ...] = (),
    change: bytes | None = None,
    database: str = "notes",
    kind: EntryKind = EntryKind.CHANGE,
) -> Draft:
    return Draft(
        kind=kind,
        tenant_id=tenant_id,
        database=database,
        document_id=document_id,
        signer=signer,
        key=KEY,
        payload=b"payload " + os.urandom(8),
        timestamp_ms=1_700_000_000_000,
        deps=deps,
        change_hash=change,
    )


def change_hash(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


# -- seal_drafts: the numbering and resolution rules, no store --------------------------------
def assert_sealed_from(drafts: Sequence[Draft], entries: Sequence[Entry]) -> None:
    """Each entry is its draft sealed: signed, its payload under `KEY`, its time and place."""
    for d, e in zip(drafts, entries, strict=True):
        e.verify_signature()
        assert e.decrypt(KEY.secret) == d.payload
        assert (e.timestamp_ms, e.database, e.document_id) == (
            d.timestamp_ms,
            d.database,
            d.document_id,
        )


def test_each_author_is_numbered_on_from_its_stored_position() -> None:
    positions = MemoryPositions(
        {(TENANT, ALICE.public_key): 41, (OTHER_TENANT, ALICE.public_key): 7}
    )
    drafts = [
        draft(),
        draft(signer=BOB),
        draft(),
        draft(tenant_id=OTHER_TENANT),
        draft(signer=BOB),
        draft(),
    ]
    entries = seal_drafts(drafts, positions)
    assert [(e.tenant_id, e.author, e.header.author_seq) for e in entries] == [
        (TENANT, ALICE.public_key, 42),
        (TENANT, BOB.public_key, 1),
        (TENANT, ALICE.public_key, 43),
        (OTHER_TENANT, ALICE.public_key, 8),
        (TENANT, BOB.public_key, 2),
        (TENANT, ALICE.public_key, 44),
    ]
    # The store is asked once per (tenant, author); the rest of the write counts on from there.
    assert sorted(positions.asked) == sorted(
        {(TENANT, ALICE.public_key), (TENANT, BOB.public_key), (OTHER_TENANT, ALICE.public_key)}
    )
    assert_sealed_from(drafts, entries)


def test_a_change_ref_becomes_the_entry_id_of_the_earlier_draft_carrying_that_change() -> None:
    stored_parent = os.urandom(32)
    first, second, third = change_hash("1"), change_hash("2"), change_hash("3")
    drafts = [
        draft(deps=(stored_parent,), change=first),
        draft(deps=(ChangeRef(first),), change=second),
        draft(document_id=OTHER_DOC, change=first),  # the same hash in another document
        draft(deps=(ChangeRef(second), stored_parent), change=third),
        draft(kind=EntryKind.DELETE, deps=(ChangeRef(third),)),
    ]
    entries = seal_drafts(drafts, MemoryPositions())
    assert entries[0].deps == (stored_parent,)
    assert entries[1].deps == (entries[0].id,)
    assert entries[3].deps == (entries[1].id, stored_parent)  # order kept
    assert entries[4].deps == (entries[3].id,)


def test_a_write_sealed_in_parts_with_one_state_chains_and_resolves_as_one_call() -> None:
    positions = MemoryPositions({(TENANT, ALICE.public_key): 9})
    first, second = change_hash("1"), change_hash("2")
    drafts = [
        draft(change=first),
        draft(signer=BOB),
        draft(deps=(ChangeRef(first),), change=second),  # its parent is in the first part
        draft(deps=(ChangeRef(second),)),
        draft(signer=BOB),
    ]
    state = SealingState()
    entries = seal_drafts(drafts[:2], positions, state) + seal_drafts(drafts[2:], positions, state)
    assert [(e.author, e.header.author_seq) for e in entries] == [
        (ALICE.public_key, 10),
        (BOB.public_key, 1),
        (ALICE.public_key, 11),
        (ALICE.public_key, 12),
        (BOB.public_key, 2),
    ]
    assert [e.header.prev for e in entries[2:]] == [entries[0].id, entries[2].id, entries[1].id]
    assert entries[2].deps == (entries[0].id,) and entries[3].deps == (entries[2].id,)
    # The second part asked the store about no chain: the state knew where both stood.
    assert sorted(positions.asked) == sorted({(TENANT, ALICE.public_key), (TENANT, BOB.public_key)})


@pytest.mark.parametrize(
    "drafts",
    [
        [draft(deps=(ChangeRef(change_hash("never drafted")),))],
        # A ref names an EARLIER draft: a later one does not resolve it.
        [draft(deps=(ChangeRef(change_hash("later")),)), draft(change=change_hash("later"))],
        # A ref names a change of the same document.
        [
            draft(document_id=OTHER_DOC, change=change_hash("x")),
            draft(deps=(ChangeRef(change_hash("x")),)),
        ],
    ],
)
def test_an_unresolvable_change_ref_is_an_error_naming_the_change(drafts: list[Draft]) -> None:
    with pytest.raises(UnresolvedDependencyError, match="no earlier draft of this write"):
        seal_drafts(drafts, MemoryPositions())


def test_malformed_drafts_are_refused_when_made() -> None:
    with pytest.raises(ValueError, match="32-byte entry id"):
        draft(deps=(b"short",))
    with pytest.raises(ValueError, match="change hash"):
        draft(change=b"short")
    with pytest.raises(ValueError, match="change hash"):
        ChangeRef(b"short")
    with pytest.raises(ValueError, match="32-byte entry id"):  # the deps are checked first
        draft(deps=(ChangeRef(change_hash("x")), b"short"), change=b"short")
    with pytest.raises(TypeError):
        draft(deps=(None,))  # type: ignore[arg-type]


def test_a_draft_is_a_frozen_value_stamped_by_the_sealing_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Draft` sets its slots itself (a fast ``__init__``): still a frozen dataclass value,
    compared and hashed by its fields, stamped by `writer.now_ms` unless given a time."""
    monkeypatch.setattr(writer, "now_ms", lambda: 1234)
    ref = ChangeRef(change_hash("x"))
    stamped = Draft(EntryKind.CHANGE, TENANT, "notes", DOC, ALICE, KEY, b"p", (b"i" * 32, ref))
    assert (stamped.deps, stamped.change_hash, stamped.on_sealed) == ((b"i" * 32, ref), None, None)
    assert stamped.timestamp_ms == 1234 and stamped.has_change_refs
    assert not replace(stamped, deps=(b"i" * 32,)).has_change_refs
    assert replace(stamped, payload=b"q") != stamped
    assert replace(stamped, timestamp_ms=1234) == stamped
    assert hash(replace(stamped)) == hash(stamped)
    assert ref == ChangeRef(change_hash("x")) and hash(ref) == hash(ChangeRef(change_hash("x")))
    with pytest.raises(FrozenInstanceError):
        stamped.payload = b"q"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        ref.change_hash = b"y" * 32  # type: ignore[misc]
    assert not draft().has_change_refs and draft().timestamp_ms == 1_700_000_000_000


# -- EntryStore.append_local: the hook inside the write transaction ----------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[EntryStore]:
    with EntryStore(tmp_path / "store") as opened:
        yield opened


def test_append_local_numbers_from_what_is_stored_and_stores_everything(
    store: EntryStore,
) -> None:
    first = store.append_local(lambda p: seal_drafts([draft(), draft(), draft(signer=BOB)], p))
    again = store.append_local(lambda p: seal_drafts([draft(signer=BOB), draft()], p))
    assert [e.header.author_seq for e in first] == [1, 2, 1]
    assert [e.header.author_seq for e in again] == [2, 3]
    assert store.missing([e.id for e in first + again]) == []
    assert store.next_author_seq(TENANT, ALICE.public_key) == 4
    assert store.next_author_seq(TENANT, BOB.public_key) == 3
    assert store.fsck().ok


def test_append_local_refuses_a_sequence_that_would_fork_the_author(store: EntryStore) -> None:
    store.append_local(lambda p: seal_drafts([draft(), draft()], p))
    key = KEY

    def reuse(positions: AuthorPositions) -> list[Entry]:
        return [
            Entry.seal(
                kind=EntryKind.CHANGE,
                tenant_id=TENANT,
                database="notes",
                document_id=DOC,
                author=ALICE,
                author_seq=positions.last_seq(TENANT, ALICE.public_key),  # one too low
                timestamp_ms=1,
                deps=(),
                key_id=key.key_id,
                key=key.secret,
                payload=b"x",
            )
        ]

    with pytest.raises(StoreError, match="would fork the author"):
        store.append_local(reuse)
    assert store.count() == 2


def test_a_refused_own_entry_stores_nothing_of_the_write_and_uses_no_number(
    store: EntryStore,
) -> None:
    def refuse_bob(entries: Sequence[Entry]) -> list[Rejected]:
        return [
            Rejected(entry.id, RejectionKind.REVOKED_ABOVE_CUT, "revoked")
            for entry in entries
            if entry.author == BOB.public_key
        ]

    with pytest.raises(OwnEntryRefusedError, match="refused by the store: revoked") as info:
        store.append_local(lambda p: seal_drafts([draft(), draft(signer=BOB)], p), refuse_bob)
    assert isinstance(info.value, VerificationError)
    assert [r.reason for r in info.value.rejected] == ["revoked"]
    assert [r.kind for r in info.value.rejected] == [RejectionKind.REVOKED_ABOVE_CUT]
    assert store.count() == 0
    entries = store.append_local(lambda p: seal_drafts([draft()], p), refuse_bob)
    assert [e.header.author_seq for e in entries] == [1]  # no gap


def test_a_sealer_that_raises_stores_nothing(store: EntryStore) -> None:
    def broken(positions: AuthorPositions) -> list[Entry]:
        seal_drafts([draft()], positions)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.append_local(broken)
    assert store.count() == 0
    assert store.next_author_seq(TENANT, ALICE.public_key) == 1


def test_tenant_log_entries_are_authorized_first_then_the_rest_in_the_order_sealed(
    store: EntryStore,
) -> None:
    order: list[str] = []

    def authorize(entries: Sequence[Entry]) -> list[Rejected]:
        order.extend(f"{entry.database}#{entry.header.author_seq}" for entry in entries)
        return []

    def log_record() -> Draft:
        return draft(database=TENANT_LOG, kind=EntryKind.MEMBERSHIP, document_id=NO_DOCUMENT)

    drafts = [draft(), log_record(), draft(), log_record()]
    stored = store.append_local(lambda p: seal_drafts(drafts, p), authorize)
    assert order == ["_tenant#2", "_tenant#4", "notes#1", "notes#3"]
    assert [f"{e.database}#{e.header.author_seq}" for e in stored] == order


# -- LocalWriter: batches, hooks --------------------------------------------------------------
class Hooks:
    def __init__(self) -> None:
        self.events: list[str] = []

    def before(self, drafts: object) -> None:
        self.events.append("before")

    def committed(self, entries: list[Entry], memberships: Mapping[bytes, object]) -> None:
        self.events.append(f"committed {[e.header.author_seq for e in entries]}")

    def discarded(self, drafts: object) -> None:
        self.events.append(f"discarded {len(drafts)}")  # type: ignore[arg-type]


def make_writer(store: EntryStore, hooks: Hooks) -> LocalWriter:
    return LocalWriter(
        store,
        before_commit=hooks.before,
        on_committed=hooks.committed,
        on_discarded=hooks.discarded,
    )


def test_a_write_outside_a_batch_is_stored_at_once(store: EntryStore) -> None:
    hooks = Hooks()
    writer = make_writer(store, hooks)
    sealed: list[Entry] = []
    writer.write(
        [
            replace(draft(), on_sealed=sealed.append),
            replace(draft(signer=BOB), on_sealed=sealed.append),
        ]
    )
    assert [e.header.author_seq for e in sealed] == [1, 1]
    assert store.missing([e.id for e in sealed]) == []
    assert hooks.events == ["before", "committed [1, 1]"]
    assert writer.current_batch is None


def test_a_batch_seals_at_its_end_in_one_write_and_nested_blocks_join_it(
    store: EntryStore,
) -> None:
    hooks = Hooks()
    writer = make_writer(store, hooks)
    sealed: list[Entry] = []
    first, second = change_hash("a"), change_hash("b")
    with writer.batch():
        batch = writer.current_batch
        writer.write([replace(draft(change=first), on_sealed=sealed.append)])
        with writer.batch():
            assert writer.current_batch == batch
            second_draft = draft(deps=(ChangeRef(first),), change=second)
            writer.write([replace(second_draft, on_sealed=sealed.append)])
        assert store.count() == 0 and sealed == []  # nothing sealed before the batch ends
    assert hooks.events == ["before", "committed [1, 2]"]
    assert [e.header.author_seq for e in sealed] == [1, 2]
    assert sealed[1].deps == (sealed[0].id,)
    assert store.count() == 2
    with writer.batch():
        assert writer.current_batch != batch  # a new batch, a new id


def test_a_batch_that_raises_stores_nothing_and_leaves_no_gap(store: EntryStore) -> None:
    hooks = Hooks()
    writer = make_writer(store, hooks)
    with pytest.raises(RuntimeError, match="app failed"), writer.batch():
        writer.write([draft(), draft()])
        raise RuntimeError("app failed")
    assert hooks.events == ["discarded 2"]
    assert store.count() == 0
    writer.write([draft()])
    assert store.next_author_seq(TENANT, ALICE.public_key) == 2  # numbered 1: no gap


def test_a_failed_commit_discards_the_drafts_and_propagates(store: EntryStore) -> None:
    hooks = Hooks()

    def refuse_all(verified: Sequence[VerifiedEntry]) -> Admission:
        refused = [Rejected(v.id, RejectionKind.NOT_A_MEMBER, "not a member") for v in verified]
        return Admission([], refused, {})

    writer = LocalWriter(
        store,
        refuse_all,
        before_commit=hooks.before,
        on_committed=hooks.committed,
        on_discarded=hooks.discarded,
    )
    with pytest.raises(OwnEntryRefusedError, match="not a member"):
        writer.write([draft()])
    with pytest.raises(UnresolvedDependencyError):
        writer.write([draft(deps=(ChangeRef(change_hash("gone")),))])
    assert hooks.events == ["before", "discarded 1", "before", "discarded 1"]
    assert store.count() == 0
