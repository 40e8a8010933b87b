"""Deterministic revocation: cut records, the MembershipLog rule, retraction in the store, and the
property that every arrival order of entries and revocations ends with the same accepted set."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import pytest
from conftest import PASSWORD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_membership import ALICE, BOB, TENANT_ID, membership_entry, record, seal

import mindoo_p2p.writer as writer_module
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.entry import TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import DecodeError, MissingKeyError, NotFoundError, VerificationError
from mindoo_p2p.membership import (
    MAX_CUTS,
    Cut,
    MembershipAction,
    MembershipLog,
    Revocation,
    TenantLogRecord,
    decode_tenant_log_record,
)
from mindoo_p2p.node import Node
from mindoo_p2p.store import EntryStore
from mindoo_p2p.store._layout import SCHEMA_KEY, pack_schema_version
from mindoo_p2p.tenant import Tenant

# -- the record ------------------------------------------------------------------------------


def test_revocation_round_trip_and_canonical_form() -> None:
    key = ALICE.signing.public_key
    revocation = Revocation.of(key, {key: 7, BOB.signing.public_key: 0})
    data = revocation.encode()
    assert decode_tenant_log_record(data) == revocation
    assert data[4] == 3  # version 3
    assert revocation.cut_of(key) == 7
    assert revocation.cut_of(os.urandom(32)) is None


def test_revocation_refuses_malformed_cuts() -> None:
    key = ALICE.signing.public_key
    other = BOB.signing.public_key
    with pytest.raises(ValueError, match="name the member"):
        Revocation(key, (Cut(other, 1),))
    with pytest.raises(ValueError, match="sorted"):
        Revocation(
            key, tuple(sorted([Cut(key, 1), Cut(other, 1)], key=lambda c: c.signing_key)[::-1])
        )
    with pytest.raises(ValueError, match="1-64"):
        Revocation(key, ())
    with pytest.raises(ValueError, match="last_seq"):
        Cut(key, -1)
    too_many = {key: 1} | {os.urandom(32): 1 for _ in range(MAX_CUTS)}
    with pytest.raises(ValueError, match="1-64"):
        Revocation.of(key, too_many)


def test_revocation_decode_is_strict() -> None:
    key = ALICE.signing.public_key
    good = Revocation.of(key, {key: 300}).encode()
    for cut in range(len(good)):
        with pytest.raises(DecodeError):
            decode_tenant_log_record(good[:cut])
    with pytest.raises(DecodeError):
        decode_tenant_log_record(good + b"\x00")
    # a cut list that does not name the member is a DecodeError, not a ValueError
    other = Revocation.of(key, {key: 1, BOB.signing.public_key: 1}).encode()
    forged = other.replace(key, os.urandom(32), 1)
    with pytest.raises(DecodeError, match="member"):
        decode_tenant_log_record(forged)


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 200), mask=st.integers(1, 255))
def test_revocation_decode_fuzz_raises_only_decode_error(index: int, mask: int) -> None:
    key = ALICE.signing.public_key
    data = bytearray(Revocation.of(key, {key: 5, BOB.signing.public_key: 9}).encode())
    data[index % len(data)] ^= mask
    try:
        decoded = decode_tenant_log_record(bytes(data))
    except DecodeError:
        return
    assert decoded.encode() == bytes(data)  # whatever decodes has exactly one encoding


# -- the rule --------------------------------------------------------------------------------


def alice_entry(seq: int, timestamp_ms: int = 1_700_000_000_000) -> Entry:
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=TENANT_ID,
        database="contacts",
        document_id=bytes(16),
        author=ALICE.signing,
        author_seq=seq,
        timestamp_ms=timestamp_ms,
        deps=[],
        key_id=bytes(16),
        key=bytes(32),
        payload=b"change %d" % seq,
    )


def log_with_alice() -> MembershipLog:
    log = MembershipLog(TENANT_ID, seal(b"").author)
    log.apply(entry := membership_entry(record(MembershipAction.ADD, ALICE)), decode(entry))
    return log


def decode(entry: Entry) -> TenantLogRecord:
    from test_membership import MEMBERSHIP

    return decode_tenant_log_record(entry.decrypt(MEMBERSHIP.secret))


def revoke(log: MembershipLog, cut: int) -> None:
    key = ALICE.signing.public_key
    entry = seal(Revocation.of(key, {key: cut}).encode())
    log.apply(entry, decode_tenant_log_record(Revocation.of(key, {key: cut}).encode()))


def test_entries_within_the_cut_stay_accepted_and_later_ones_are_refused() -> None:
    log = log_with_alice()
    revoke(log, 3)
    assert not log.is_member(ALICE.signing.public_key)
    assert log.cut_of(ALICE.signing.public_key) == 3
    assert log.authorize_author(alice_entry(1)) is None
    assert log.authorize_author(alice_entry(3)) is None
    reason = log.authorize_author(alice_entry(4, timestamp_ms=1))  # backdated: no help
    assert reason is not None and "after their entry #3" in reason and "#4" in reason
    assert log.cuts() == {ALICE.signing.public_key: 3}


def test_the_smallest_cut_wins_whatever_the_order() -> None:
    first, second = log_with_alice(), log_with_alice()
    revoke(first, 5)
    revoke(first, 2)
    revoke(second, 2)
    revoke(second, 5)
    assert first.cuts() == second.cuts() == {ALICE.signing.public_key: 2}


def test_a_version_1_revoke_accepts_nothing_more() -> None:
    log = log_with_alice()
    entry = membership_entry(record(MembershipAction.REVOKE, ALICE))
    log.apply(entry, decode(entry))
    assert log.cut_of(ALICE.signing.public_key) == 0
    assert log.authorize_author(alice_entry(1)) is not None


def test_revoking_a_stranger_is_refused() -> None:
    log = MembershipLog(TENANT_ID, seal(b"").author)
    key = BOB.signing.public_key
    entry = seal(Revocation.of(key, {key: 1}).encode())
    with pytest.raises(VerificationError, match="not a member"):
        log.apply(entry, decode_tenant_log_record(Revocation.of(key, {key: 1}).encode()))


# -- nodes: a universe of entries and many arrival orders ------------------------------------


@dataclass(frozen=True)
class Universe:
    tenant_id: bytes
    entries: list[bytes]
    """Every sealed entry written (membership records included), in writing order."""
    expected: frozenset[bytes]
    """The ids every node must end up accepting."""
    late: frozenset[bytes]
    """Mallory's entries above the cut: never accepted."""
    document: bytes
    pristine_observer: Path
    revocations: frozenset[bytes]
    """The ids of the admin's two revocation entries."""


def _init(home: Path, name: str) -> Node:
    return Node.init(home, PASSWORD, name=name, kdf=KdfProfile.TESTING)


@pytest.fixture(scope="module")
def universe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Universe]:
    base = tmp_path_factory.mktemp("revocation")
    admin, mallory, bob, observer = (
        _init(base / n, n) for n in ("admin", "mallory", "bob", "observer")
    )
    try:
        tenant = admin.create_tenant("acme")
        for node in (mallory, bob, observer):
            node.join(admin.invite(tenant, node.public_identity()))
        observer.close()

        mdb = mallory.tenant("acme").create_db("notes")
        doc = mdb.create_document({"items": []})  # Mallory's entry #1
        for i in range(2, 7):  # #2 .. #6
            with mdb.change(doc) as d:
                d["items"].append(f"mallory {i}")
        written = list(mallory.store.iter_entries(tenant.id, "notes"))
        bob.ingest([e.raw for e in written])  # Bob saw them all before any revocation
        with bob.tenant("acme").create_db("notes").change(doc) as d:
            d["bob"] = "was here"
        # The admin revokes Mallory twice (e.g. two admin devices): the smaller cut (3) wins.
        mallory_identity = mallory.public_identity()
        revocations = frozenset(
            tenant.revoke_member(mallory_identity, accept_through=cut).id for cut in (5, 3)
        )
        # Mallory, unaware, writes once more and backdates it to before the revocations.
        real_now = writer_module.now_ms  # the sealing clock (drafts take their time from it)
        writer_module.now_ms = lambda: 1_000_000_000_000  # 2001
        try:
            with mdb.change(doc) as d:
                d["items"].append("backdated")
        finally:
            writer_module.now_ms = real_now
        newest = max(
            mallory.store.iter_entries(tenant.id, "notes"), key=lambda e: e.header.author_seq
        )
        assert newest.timestamp_ms == 1_000_000_000_000  # the backdating took effect

        every: dict[bytes, bytes] = {}
        for node in (admin, mallory, bob):
            for entry in node.store.iter_entries(tenant.id):
                every.setdefault(entry.id, entry.raw)
        mallory_key = mallory_identity.signing_key
        late = {
            entry_id
            for entry_id, raw in every.items()
            if (e := Entry.decode(raw)).author == mallory_key and e.header.author_seq > 3
        }
        assert len(late) == 4  # #4, #5, #6 and the backdated #7
        yield Universe(
            tenant_id=tenant.id,
            entries=list(every.values()),
            expected=frozenset(every) - late,
            late=frozenset(late),
            document=bytes.fromhex(doc) if isinstance(doc, str) else doc,
            pristine_observer=base / "observer",
            revocations=revocations,
        )
    finally:
        for node in (admin, mallory, bob):
            node.close()


def deliver(node: Node, batches: list[list[bytes]]) -> None:
    """Offer the batches in order, then offer again whatever was refused until nothing more
    lands: what sync does (a refused entry is offered again by the next reconciliation)."""
    refused: list[bytes] = []
    for batch in batches:
        result = node.ingest(batch)
        rejected = {r.entry_id for r in result.rejected}
        refused += [raw for raw in batch if Entry.decode(raw).id in rejected]
    while refused:
        result = node.ingest(refused)
        if not result.added:
            return
        rejected = {r.entry_id for r in result.rejected}
        refused = [raw for raw in refused if Entry.decode(raw).id in rejected]


@dataclass(frozen=True)
class Outcome:
    accepted: frozenset[bytes]
    retracted: frozenset[bytes]
    content: dict[str, object]
    recon: tuple[int, bytes]


def observe(universe: Universe, batches: list[list[bytes]], workdir: Path) -> Outcome:
    home = workdir / "observer"
    shutil.copytree(universe.pristine_observer, home)
    node = Node.open(home, PASSWORD)
    try:
        deliver(node, batches)
        tenant = node.tenant("acme")
        accepted = frozenset(e.id for e in node.store.iter_entries(universe.tenant_id))
        content = tenant.create_db("notes").get(universe.document)
        with node.store.recon_snapshot(universe.tenant_id, "notes") as storage:
            size = storage.size()
            recon = (size, storage.fingerprint(0, size))
        assert node.fsck().ok, node.fsck().problems
        return Outcome(
            accepted,
            frozenset(node.store.retracted_ids(universe.tenant_id)),
            content,
            recon,
        )
    finally:
        node.close()


def split(entries: list[bytes], rng: random.Random) -> list[list[bytes]]:
    order = list(entries)
    rng.shuffle(order)
    batches: list[list[bytes]] = []
    while order:
        size = rng.randint(1, 6)
        batches.append(order[:size])
        order = order[size:]
    return batches


@pytest.fixture(scope="module")
def reference(universe: Universe, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """Everything in writing order, one entry at a time."""
    outcome = observe(
        universe, [[raw] for raw in universe.entries], tmp_path_factory.mktemp("reference")
    )
    assert outcome.accepted == universe.expected
    return outcome


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_arrival_order_accepts_the_same_set(
    universe: Universe, reference: Outcome, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        outcome = observe(universe, split(universe.entries, random.Random(seed)), Path(workdir))
    assert outcome.accepted == universe.expected
    assert outcome.accepted.isdisjoint(universe.late)
    assert outcome.retracted <= universe.late  # whatever landed early was withdrawn
    assert outcome.content == reference.content
    assert outcome.recon == reference.recon  # peers reconcile exactly the accepted set


def test_late_entries_stored_before_the_revocation_are_retracted(
    universe: Universe, reference: Outcome, tmp_path: Path
) -> None:
    revocations = [raw for raw in universe.entries if _is_revocation(universe, raw)]
    others = [raw for raw in universe.entries if not _is_revocation(universe, raw)]
    outcome = observe(universe, [others, revocations], tmp_path)
    assert outcome.accepted == universe.expected
    assert outcome.retracted == universe.late
    assert outcome.content == reference.content
    assert outcome.recon == reference.recon
    items = outcome.content["items"]
    assert isinstance(items, list)
    assert "backdated" not in items and "mallory 4" not in items
    assert items == ["mallory 2", "mallory 3"]
    # Bob's change is accepted (Bob is a member) but was made on top of Mallory's #6: without
    # that change Automerge holds it back, on every node alike.
    bob_entries = universe.expected - {
        Entry.decode(raw).id
        for raw in universe.entries
        if Entry.decode(raw).author == _mallory(universe)
    }
    assert bob_entries <= outcome.accepted
    assert "bob" not in outcome.content


def test_revocation_first_rejects_late_entries_on_arrival(
    universe: Universe, reference: Outcome, tmp_path: Path
) -> None:
    revocations = [raw for raw in universe.entries if _is_revocation(universe, raw)]
    membership = [raw for raw in universe.entries if _in_tenant_log(raw)]
    others = [raw for raw in universe.entries if not _in_tenant_log(raw)]
    outcome = observe(universe, [membership, revocations, others], tmp_path)
    assert outcome.accepted == universe.expected
    assert outcome.retracted == frozenset()  # nothing late was ever stored
    assert outcome.content == reference.content


def _is_revocation(universe: Universe, raw: bytes) -> bool:
    return Entry.decode(raw).id in universe.revocations


def _mallory(universe: Universe) -> bytes:
    late = next(raw for raw in universe.entries if Entry.decode(raw).id in universe.late)
    return Entry.decode(late).author


def _in_tenant_log(raw: bytes) -> bool:
    return Entry.decode(raw).database == TENANT_LOG


def test_a_crash_between_revocation_and_retraction_is_repaired_on_open(
    universe: Universe, reference: Outcome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "observer"
    shutil.copytree(universe.pristine_observer, home)
    node = Node.open(home, PASSWORD)
    with monkeypatch.context() as patch:
        patch.setattr(Tenant, "enforce_new_revocations", lambda self: [])
        node.ingest([raw for raw in universe.entries if not _is_revocation(universe, raw)])
        node.ingest([raw for raw in universe.entries if _is_revocation(universe, raw)])
        stored = {e.id for e in node.store.iter_entries(universe.tenant_id)}
        assert universe.late & stored  # the "crash": revocations stored, nothing retracted
    node.close()
    node = Node.open(home, PASSWORD)
    try:
        accepted = {e.id for e in node.store.iter_entries(universe.tenant_id)}
        assert accepted == universe.expected
        assert node.tenant("acme").create_db("notes").get(universe.document) == reference.content
        assert node.fsck().ok
    finally:
        node.close()


def test_revoke_member_names_what_the_admin_holds(make_node) -> None:  # type: ignore[no-untyped-def]
    admin, alice = make_node("admin"), make_node("alice")
    tenant = admin.create_tenant("acme")
    alice.join(admin.invite(tenant, alice.public_identity()))
    adb = alice.tenant("acme").create_db("notes")
    doc = adb.create_document({"n": 0})
    for n in range(1, 4):
        with adb.change(doc) as d:
            d["n"] = n
    admin.ingest([e.raw for e in alice.store.iter_entries(tenant.id, "notes")])
    entry = tenant.revoke_member(alice.public_identity())
    revocation = decode_tenant_log_record(
        entry.decrypt(tenant.keyring.by_id(entry.header.key_id).secret)
    )
    assert isinstance(revocation, Revocation)
    assert revocation.cut_of(alice.public_identity().signing_key) == 4
    assert tenant.create_db("notes").get(doc) == {"n": 3}  # everything held stays accepted
    with pytest.raises(NotFoundError):
        tenant.revoke_member(make_node("stranger").public_identity())
    with pytest.raises(ValueError):
        tenant.revoke_member(alice.public_identity(), accept_through=-1)


# -- the store -------------------------------------------------------------------------------


def test_a_version_2_store_gets_its_author_index_on_upgrade(
    universe: Universe, tmp_path: Path
) -> None:
    path = tmp_path / "store"
    with EntryStore(path) as store:
        result = store.append(universe.entries)
        assert len(result.added) == len(universe.entries)
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        for name in (b"author_idx", b"retracted"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
        txn.put(SCHEMA_KEY, pack_schema_version(2), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(Exception, match="open it once writable"):
        EntryStore(path, readonly=True)
    with EntryStore(path) as store:
        assert store.fsck().ok
        mallory = next(
            Entry.decode(raw) for raw in universe.entries if Entry.decode(raw).id in universe.late
        ).author
        retracted = store.retract_authored_after(universe.tenant_id, mallory, 3)
        assert {e.id for e in retracted} == universe.late
        assert store.retract_authored_after(universe.tenant_id, mallory, 3) == []
        assert store.fsck().ok
        assert all(store.has(i) and store.is_retracted(i) for i in universe.late)
        assert store.count() == len(universe.entries)  # nothing deleted


def test_after_revocation_and_rotation_new_content_is_unreadable_to_the_revoked_member(
    make_node,  # type: ignore[no-untyped-def]
) -> None:
    admin, mallory, bob = make_node("admin"), make_node("mallory"), make_node("bob")
    tenant = admin.create_tenant("acme")
    for node in (mallory, bob):
        node.join(admin.invite(tenant, node.public_identity()))
    old = tenant.create_db("notes").create_document({"written": "before"})
    mallory.ingest([e.raw for e in admin.store.iter_entries(tenant.id)])
    assert mallory.tenant("acme").create_db("notes").get(old) == {"written": "before"}

    tenant.revoke_member(mallory.public_identity())
    rotated = tenant.rotate_keys_held()
    assert [(k.name, k.version) for k in rotated] == [("default", 2)]
    new = tenant.create_db("notes").create_document({"written": "after"})
    bob.import_key(admin.export_key(tenant, "default", to=bob.public_identity()), None)

    # Mallory gets every entry anyway (a stale peer, a copied disk): the log is not secret.
    everything = [e.raw for e in admin.store.iter_entries(tenant.id)]
    mallory.ingest(everything)
    bob.ingest(everything)
    mallory_notes = mallory.tenant("acme").create_db("notes")
    assert mallory_notes.get(old) == {"written": "before"}  # history stays readable to her
    # She cannot even learn the new key's name: its announcement is sealed under the
    # membership key version granted to everyone but her.
    with pytest.raises(MissingKeyError, match=r"no key [0-9a-f]{32} for this document"):
        mallory_notes.get(new)
    assert bob.tenant("acme").create_db("notes").get(new) == {"written": "after"}
