"""Per-author hash chains (issue 9, finding 1): the entry format, own writes, the fork rule, and
the attacks that pre-empted or slipped under a revocation cut, each performed and shown failing."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import lmdb
import pytest
from cli_helpers import CliResult
from helpers import forge

from mindoo_p2p import chains
from mindoo_p2p.chains import ForkPoint, conflict_seq, contiguous_head
from mindoo_p2p.commands import node_status
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.daemon.peer_table import PeerTable
from mindoo_p2p.daemon.status import daemon_status, read_store
from mindoo_p2p.entry import NO_PREV, Entry, EntryKind
from mindoo_p2p.entry_fields import prev_of_raw
from mindoo_p2p.errors import DecodeError, StoreError
from mindoo_p2p.membership import (
    CHAINED_CUT_VERSION,
    Cut,
    DeviceRevocation,
    Revocation,
    decode_tenant_log_record,
)
from mindoo_p2p.node import Node
from mindoo_p2p.rejection import RejectionKind
from mindoo_p2p.store import EntryStore
from mindoo_p2p.tenant import Tenant

MakeNode = Callable[[str], Node]
AUTHOR = SigningKeyPair.generate()
TENANT = os.urandom(16)


def chained(seq: int, prev: bytes | None, *, author: SigningKeyPair = AUTHOR) -> Entry:
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=TENANT,
        database="notes",
        document_id=os.urandom(16),
        author=author,
        author_seq=seq,
        timestamp_ms=1_700_000_000_000 + seq,
        deps=[],
        key_id=bytes(16),
        key=bytes(32),
        payload=b"change %d" % seq,
        prev=prev,
    )


# -- the format ------------------------------------------------------------------------------
def test_a_chained_entry_round_trips_and_a_legacy_one_still_decodes() -> None:
    first = chained(1, NO_PREV)
    second = chained(2, first.id)
    legacy = chained(7, None)
    for entry in (first, second, legacy):
        decoded = Entry.decode(entry.raw)
        assert decoded == entry
        assert decoded.prev == entry.prev
        assert prev_of_raw(entry.raw) == entry.prev
        decoded.verify_signature()
    assert (first.raw[3], second.raw[3], legacy.raw[3]) == (2, 2, 1)
    assert second.prev == first.id and legacy.prev is None


def test_a_chained_header_links_exactly_when_it_is_not_the_first() -> None:
    with pytest.raises(ValueError, match="exactly for author_seq 1"):
        chained(1, os.urandom(32))
    with pytest.raises(ValueError, match="exactly for author_seq 1"):
        chained(2, NO_PREV)
    with pytest.raises(ValueError, match="at least 1"):
        chained(0, NO_PREV)
    # The same rules hold for bytes from a peer: re-sign a header that breaks them.
    bad = bytearray(chained(2, os.urandom(32)).raw)
    offset = bad.index(b"notes") + 5 + 16 + 32 + 16
    bad[offset : offset + 32] = NO_PREV  # seq 2 now claims to be a first entry
    with pytest.raises(DecodeError, match="exactly for author_seq 1"):
        Entry.decode(bytes(bad))


# -- the pure rules --------------------------------------------------------------------------
class Facts:
    """`chains.ChainFacts` over a list of entries."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)

    def _at(self, author: bytes, seq: int) -> list[Entry]:
        return [e for e in self.entries if e.author == author and e.author_seq == seq]

    def others_at(self, tenant_id: bytes, author: bytes, seq: int, entry_id: bytes) -> bool:
        return any(e.id != entry_id for e in self._at(author, seq))

    def holds_at(self, tenant_id: bytes, author: bytes, seq: int, entry_id: bytes) -> bool | None:
        found = self._at(author, seq)
        return None if not found else any(e.id == entry_id for e in found)

    def prevs_at(self, tenant_id: bytes, author: bytes, seq: int) -> list[bytes | None]:
        return [e.prev for e in self._at(author, seq)]


def test_conflicts_are_found_from_either_end_of_a_link() -> None:
    one = chained(1, NO_PREV)
    two = chained(2, one.id)
    rogue_two = chained(2, one.id)
    liar_three = chained(3, os.urandom(32))  # names a predecessor nobody holds
    assert conflict_seq(two, Facts([one, two])) is None
    assert conflict_seq(rogue_two, Facts([one, two, rogue_two])) == 2  # (a) two at #2
    assert conflict_seq(liar_three, Facts([one, two, liar_three])) == 3  # (b) from #3's side
    assert conflict_seq(two, Facts([one, two, liar_three])) == 3  # (b) from #2's side
    assert conflict_seq(liar_three, Facts([liar_three])) is None  # a gap: admitted, not judged
    legacy_two = chained(2, None)
    assert conflict_seq(legacy_two, Facts([one, two, legacy_two])) == 2  # (a) for version 1


def test_the_default_cut_ends_at_the_first_gap_or_fork() -> None:
    ids = [os.urandom(32) for _ in range(5)]
    assert contiguous_head([(1, ids[0]), (2, ids[1]), (3, ids[2])]) == (3, ids[2])
    assert contiguous_head([(1, ids[0]), (2, ids[1]), (2**64 - 1, ids[2])]) == (2, ids[1])
    assert contiguous_head([(1, ids[0]), (2, ids[1]), (2, ids[2]), (3, ids[3])]) == (1, ids[0])
    assert contiguous_head([(2, ids[0])]) == (0, None)


def test_a_fork_refuses_what_lies_above_it_and_keeps_two_pieces_of_evidence() -> None:
    low, high = sorted(os.urandom(32) for _ in range(2))
    fork = ForkPoint(AUTHOR.public_key, 5, (low, high))
    assert fork.refuses(chained(6, os.urandom(32)))
    assert not fork.refuses(chained(4, os.urandom(32)))
    at = chained(5, os.urandom(32))
    assert fork.refuses(at) == (at.id > high)
    assert not ForkPoint(AUTHOR.public_key, 5, (low,)).refuses(at)
    assert chains.limit_of(7, fork) == 4 and chains.limit_of(3, fork) == 3
    assert chains.limit_of(None, None) is None


# -- the cut record --------------------------------------------------------------------------
def test_a_cut_names_its_last_entry_in_record_version_4_and_version_3_still_decodes() -> None:
    key, device = os.urandom(32), os.urandom(32)
    entry_id = os.urandom(32)
    chained_cut = Revocation.of(key, {key: 9, device: 0}, {key: entry_id})
    data = chained_cut.encode()
    assert data[4] == CHAINED_CUT_VERSION
    assert decode_tenant_log_record(data) == chained_cut
    old = Revocation.of(key, {key: 9})
    assert old.encode()[4] == 3 and decode_tenant_log_record(old.encode()) == old
    device_cut = DeviceRevocation(key, device, 4, entry_id)
    assert decode_tenant_log_record(device_cut.encode()) == device_cut
    with pytest.raises(ValueError, match="accepts nothing"):
        Cut(key, 0, entry_id)
    # Canonical form: a version-4 revocation without any entry id is a version-3 one.
    forged = bytearray(old.encode())
    forged[4] = CHAINED_CUT_VERSION
    forged += b"\x00"
    with pytest.raises(DecodeError, match="at least one entry id"):
        decode_tenant_log_record(bytes(forged))


# -- nodes: own writes -----------------------------------------------------------------------
def members(make_node: MakeNode) -> tuple[Node, Node, Tenant]:
    admin, mallory = make_node("admin"), make_node("mallory")
    tenant = admin.create_tenant("acme")
    mallory.join(admin.invite(tenant, mallory.public_identity()))
    return admin, mallory, tenant


def own_chain(node: Node, tenant_id: bytes) -> list[Entry]:
    me = node.identity.signing.public_key
    return sorted(
        (e for e in node.store.iter_entries(tenant_id) if e.author == me),
        key=lambda e: e.author_seq,
    )


def test_own_writes_are_chained_across_databases_and_batches(make_node: MakeNode) -> None:
    _, mallory, tenant = members(make_node)
    mt = mallory.tenant("acme")
    doc = mt.create_db("notes").create_document({"n": 0})
    with mallory.writer.batch():
        for n in range(1, 4):
            mt.create_db("notes").update(doc, {"n": n})
        mt.create_db("tasks").create_document({"todo": "x"})
    written = own_chain(mallory, tenant.id)
    assert [e.author_seq for e in written] == [1, 2, 3, 4, 5]
    assert [e.prev for e in written] == [NO_PREV, *(e.id for e in written[:-1])]
    assert all(e.raw[3] == 2 for e in written)
    assert mallory.store.last_entry_id(tenant.id, mallory.identity.signing.public_key) == (
        written[-1].id
    )


# -- the attacks -----------------------------------------------------------------------------
def write_three(mallory: Node, admin: Node, tenant: Tenant) -> list[Entry]:
    db = mallory.tenant("acme").create_db("notes")
    doc = db.create_document({"n": 1})
    db.update(doc, {"n": 2})
    db.update(doc, {"n": 3})
    written = own_chain(mallory, tenant.id)
    assert not admin.ingest([e.raw for e in written]).rejected
    return written


def readable_ids(node: Node, tenant: Tenant) -> set[bytes]:
    return {e.id for e in node.store.iter_entries(tenant.id, "notes")}


@pytest.mark.parametrize("chained_format", [True, False], ids=["format-2", "format-1"])
def test_an_entry_numbered_2_64_minus_1_no_longer_pre_empts_the_revocation(
    make_node: MakeNode, chained_format: bool
) -> None:
    admin, mallory, tenant = members(make_node)
    written = write_three(mallory, admin, tenant)
    pre_empt = forge(mallory, tenant, 2**64 - 1, os.urandom(32) if chained_format else None)
    assert not admin.ingest([pre_empt]).rejected  # a gap is admitted: nothing is lost

    plan = tenant.revocation_plan(mallory.public_identity())
    mallory_key = mallory.identity.signing.public_key
    cut = plan.revocation.cuts[0]
    assert (cut.last_seq, cut.last_entry_id) == (3, written[-1].id)  # not 2**64-1
    assert any("above a gap" in w for w in plan.warnings)
    tenant.revoke_member(mallory.public_identity())

    later = forge(mallory, tenant, 4, written[-1].id, b"written after the revocation")
    (refusal,) = admin.ingest([later]).rejected
    assert refusal.kind is RejectionKind.REVOKED_ABOVE_CUT
    assert admin.store.is_retracted(pre_empt.id)
    assert readable_ids(admin, tenant) >= {e.id for e in written}
    assert mallory_key not in {bytes.fromhex(f["author"]) for f in _forks(admin)}
    assert admin.fsck().ok


def _forks(node: Node) -> list[dict[str, object]]:
    return [dict(f) for t in node_status(node)["tenants"] for f in t["forks"]]


def test_a_revoked_key_cannot_mint_below_the_cut(make_node: MakeNode) -> None:
    admin, mallory, tenant = members(make_node)
    one, two, three = write_three(mallory, admin, tenant)
    tenant.revoke_member(mallory.public_identity())
    point = tenant.membership.cut_point(mallory.identity.signing.public_key)
    assert point == chains_cut(3, three.id)

    minted = forge(mallory, tenant, 2, one.id, b"minted with the stolen key")
    result = admin.ingest([minted])
    assert result.added == [minted.id]  # kept as evidence of the fork...
    assert minted.id not in readable_ids(admin, tenant)  # ...but never readable
    assert readable_ids(admin, tenant) == {one.id}  # the fork point withdraws #2 and #3
    (fork,) = _forks(admin)
    assert (fork["seq"], fork["name"]) == (2, "mallory")
    assert sorted(fork["evidence"]) == sorted([two.id.hex(), minted.id.hex()])  # type: ignore[type-var]
    live = daemon_status(read_store(admin), PeerTable(), home="", peer_id=None, listen_addrs=[])
    assert [(f["author"], f["seq"]) for f in live["forks"]] == [
        (mallory.identity.signing.public_key.hex(), 2)
    ]  # the running daemon's status says it too

    # Another minted entry above the fork point is refused outright, a third one at it too
    # unless it sorts before the evidence kept (then the larger one is dropped instead).
    (refusal,) = admin.ingest([forge(mallory, tenant, 3, minted.id)]).rejected
    assert refusal.kind is RejectionKind.FORKED
    assert not refusal.sender_at_fault
    assert admin.fsck().ok


def test_an_entry_at_the_cut_that_the_cut_does_not_name_is_a_fork(make_node: MakeNode) -> None:
    """A node that never saw the member's entry #3 still catches an entry minted at #3: the
    cut names #3's id."""
    admin, mallory, tenant = members(make_node)
    observer = make_node("observer")
    observer.join(admin.invite(tenant, observer.public_identity()))
    one, two, three = write_three(mallory, admin, tenant)
    revocation = tenant.revoke_member(mallory.public_identity())
    log = [e.raw for e in admin.store.iter_entries(tenant.id, "_tenant")]
    observer.ingest([*log, one.raw, two.raw])
    assert observer.tenant("acme").membership.cut_point(
        mallory.identity.signing.public_key
    ) == chains_cut(3, three.id)
    minted = forge(mallory, tenant, 3, two.id, b"minted at the cut")
    assert observer.ingest([minted]).added == [minted.id]
    assert minted.id not in readable_ids(observer, tenant)
    assert readable_ids(observer, tenant) == {one.id, two.id}
    assert [f["seq"] for f in _forks(observer)] == [3]
    assert revocation.id in {e.id for e in observer.store.iter_entries(tenant.id, "_tenant")}
    assert observer.fsck().ok


def chains_cut(seq: int, entry_id: bytes) -> object:
    from mindoo_p2p.membership import CutPoint

    return CutPoint(seq, frozenset({entry_id}))


def test_a_member_that_forks_is_withdrawn_from_the_fork_point_in_either_order(
    make_node: MakeNode,
) -> None:
    admin, mallory, tenant = members(make_node)
    bob = make_node("bob")
    bob.join(admin.invite(tenant, bob.public_identity()))
    one, two, three = write_three(mallory, admin, tenant)
    branch = forge(mallory, tenant, 3, two.id, b"the other branch")
    assert admin.ingest([branch]).added == [branch.id]
    bob.ingest([one.raw, two.raw, branch.raw])  # the other order: the branch first
    bob.ingest([three.raw])
    for node in (admin, bob):
        assert readable_ids(node, tenant) == {one.id, two.id}
        ((fork),) = _forks(node)
        assert fork["seq"] == 3
        assert sorted(fork["evidence"]) == sorted([three.id.hex(), branch.id.hex()])  # type: ignore[type-var]
        with node.store.recon_snapshot(tenant.id, "notes") as storage:
            assert storage.size() == 4  # the evidence is still reconciled: it reaches everyone
        assert node.fsck().ok
    # Mallory's own next write continues the withdrawn chain: refused, and it says why.
    from mindoo_p2p.errors import OwnEntryRefusedError

    mallory.ingest([branch.raw])
    with pytest.raises(OwnEntryRefusedError, match="forked at #3"):
        mallory.tenant("acme").create_db("notes").create_document({"after": "fork"})


# -- the store: upgrade ------------------------------------------------------------------------
def test_a_schema_4_store_upgrades_in_place_and_its_old_forks_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store as the schema-4 code wrote it (the same tables, no ``forks``, no evidence marks,
    no fork rule: the writer here with its fork step switched off) holds version-1 entries,
    two of them at one author's #2. Opening it writable upgrades it in one transaction: the
    fork is recorded, the rule applied, nothing stored is lost."""
    from mindoo_p2p.store import EntryStore
    from mindoo_p2p.store import _writer as writer_module
    from mindoo_p2p.store._layout import SCHEMA_KEY, SCHEMA_VERSION, pack_schema_version

    path = tmp_path / "store"
    one, two, other_two, three = (
        chained(1, None),
        chained(2, None),
        chained(2, None),
        chained(3, None),
    )
    bystander = chained(1, None, author=SigningKeyPair.generate())
    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "settle_new_entries", lambda *args: None)
        with EntryStore(path) as store:
            store.append([one, two, other_two, three, bystander])
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"forks", txn=txn), delete=True)
        txn.put(SCHEMA_KEY, pack_schema_version(4), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StoreError, match="open it once writable"):
        EntryStore(path, readonly=True)
    with EntryStore(path) as store:
        assert store.fsck().ok, store.fsck().problems
        assert store.count() == 5  # nothing lost
        (fork,) = store.forks(TENANT)
        assert (fork.author, fork.seq) == (AUTHOR.public_key, 2)
        assert set(fork.evidence) == {two.id, other_two.id}
        assert {e.id for e in store.iter_entries(TENANT)} == {one.id, bystander.id}
    env = lmdb.open(str(path), max_dbs=32, subdir=True, readonly=True)
    with env.begin() as txn:
        stored = txn.get(SCHEMA_KEY, db=env.open_db(b"meta", txn=txn))
    env.close()
    assert stored == pack_schema_version(SCHEMA_VERSION)


# -- the command line --------------------------------------------------------------------------
def test_tenant_revoke_sets_the_cut_and_warns_about_gaps_and_status_shows_forks(
    make_node: MakeNode,
) -> None:
    from cli_helpers import mindoo as run_mindoo
    from conftest import PASSWORD

    def mindoo(home: Path, *args: str, json_output: bool = False) -> CliResult:
        return run_mindoo(home, *args, json_output=json_output, password=PASSWORD)

    admin, mallory, tenant = members(make_node)
    one, two, three = write_three(mallory, admin, tenant)
    admin.ingest([forge(mallory, tenant, 3, two.id, b"a second #3").raw])
    home = admin.home
    admin.close()
    status = mindoo(home, "status", json_output=True).ok().json()
    (fork,) = status["tenants"][0]["forks"]
    assert (fork["name"], fork["seq"]) == ("mallory", 3)
    assert three.id.hex() in fork["evidence"]
    text = mindoo(home, "status").ok().stdout
    assert "FORK: mallory signed two different entries at #3" in text

    bad = mindoo(home, "tenant", "revoke", "acme", "mallory", "--accept-entry", "beef")
    assert bad.code == 2 and "64 hex digits" in bad.stderr
    both = mindoo(
        home, "tenant", "revoke", "acme", "mallory", "--accept-through", "1",
        "--accept-entry", one.id.hex(),
    )  # fmt: skip
    assert both.code == 2 and "not both" in both.stderr
    result = mindoo(
        home, "tenant", "revoke", "acme", "mallory", "--accept-through", "5", "--no-rotate",
        json_output=True,
    ).ok().json()  # fmt: skip
    assert result["cut"] == {"seq": 5, "entry": None}  # nothing held at #5 to name
    assert any("forked at #3" in w for w in result["warnings"])
    assert any("#3..#5 that are missing here" in w for w in result["warnings"])


def test_a_revocation_below_a_fork_withdraws_its_evidence_too(make_node: MakeNode) -> None:
    """Evidence is kept only while the fork point lies within what revocations accept: above
    a cut everything is withdrawn, on every node, whichever came first."""
    admin, mallory, tenant = members(make_node)
    one, two, three = write_three(mallory, admin, tenant)
    other = forge(mallory, tenant, 3, two.id, b"a second #3")
    admin.ingest([other.raw])
    with admin.store.recon_snapshot(tenant.id, "notes") as storage:
        assert storage.size() == 4  # #1, #2 and the two pieces of evidence at #3
    tenant.revoke_member(mallory.public_identity(), accept_through=1)
    (fork,) = admin.store.forks(tenant.id)
    assert (fork.seq, fork.evidence) == (3, ())  # the fork stays on record
    with admin.store.recon_snapshot(tenant.id, "notes") as storage:
        assert storage.size() == 1
    assert readable_ids(admin, tenant) == {one.id}
    assert {three.id, other.id} <= set(admin.store.retracted_ids(tenant.id))
    report = admin.fsck()
    assert report.ok, report.problems


def test_fsck_reports_a_damaged_forks_row_and_evidence_that_is_not_kept(
    tmp_path: Path,
) -> None:
    from mindoo_p2p.store import EntryStore

    path = tmp_path / "store"
    one = chained(1, NO_PREV)
    two, other_two = chained(2, one.id), chained(2, one.id)
    with EntryStore(path) as store:
        store.append([one, two, other_two])
        assert store.fsck().ok
        (fork,) = store.forks(TENANT)
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        forks = env.open_db(b"forks", txn=txn)
        txn.put(TENANT + AUTHOR.public_key, b"\x00" * 8 + os.urandom(32), db=forks)
        txn.put(TENANT + os.urandom(32), b"short", db=forks)
    env.close()
    with EntryStore(path) as store:
        problems = [(p.where, p.reason) for p in store.fsck().problems]
    assert ("forks", "fork evidence not stored as evidence") in problems
    assert any(where == "forks" and "malformed row" in reason for where, reason in problems)
    assert fork.seq == 2


def test_the_admission_pipeline_refuses_what_a_known_fork_withdraws() -> None:
    """Step 4 alone (pure): the view carries the store's forks; nothing is stored here."""
    from mindoo_p2p import admission
    from mindoo_p2p.membership import MembershipLog

    membership = MembershipLog(TENANT, AUTHOR.public_key)  # the admin may always write
    evidence = sorted(os.urandom(32) for _ in range(2))
    view = admission.TenantView.of(
        TENANT, membership, [], [ForkPoint(AUTHOR.public_key, 3, tuple(evidence))]
    )
    below, above = chained(2, os.urandom(32)), chained(4, os.urandom(32))
    at = [chained(3, os.urandom(32)) for _ in range(8)]
    verified = [admission.trust_own_seal(e) for e in (below, above, *at)]
    result = admission.admit({TENANT: view}, verified)
    refused = {r.entry_id: r.kind for r in result.rejected}
    assert below.id not in refused
    assert refused[above.id] is RejectionKind.FORKED
    for entry in at:  # at the fork point: only what sorts before the evidence kept may land
        assert (entry.id in refused) == (entry.id > evidence[-1])


# -- the store's batch-level chain reads (issue 8) ------------------------------------------
def _random_chain_offers(rng: random.Random, authors: Sequence[SigningKeyPair]) -> list[Entry]:
    """Entries of a few authors in runs, with forks mixed in: twins at one seq, successors that
    name another predecessor, gaps, legacy entries."""
    offers: list[Entry] = []
    for author in authors:
        prev = NO_PREV
        for seq in range(1, rng.randint(4, 25)):
            if rng.random() < 0.08:
                prev = os.urandom(32)  # a gap: the next entry names one this node never sees
                continue
            roll = rng.random()
            if roll < 0.05:
                offers.append(chained(seq, None, author=author))  # version 1: no link
            link = os.urandom(32) if roll > 0.95 and seq > 1 else prev
            entry = chained(seq, link, author=author)
            offers.append(entry)
            if rng.random() < 0.05:
                offers.append(chained(seq, prev, author=author))  # a twin at this seq
            prev = entry.id
    first = authors[0]
    twin_of = rng.choice([e for e in offers if e.author == first.public_key])
    offers.append(chained(twin_of.author_seq, twin_of.prev, author=first))
    return offers


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_finds_the_same_forks_as_one_entry_at_a_time(tmp_path: Path, seed: int) -> None:
    """`TransactionChainFacts.preload` reads a batch's rows in runs; whatever the batch holds
    (a fork mid-batch, a fork against what was stored, gaps), the store ends with the same
    fork points and the same withdrawn entries as when every entry arrives alone."""
    rng = random.Random(seed)
    authors = [SigningKeyPair.generate() for _ in range(3)]
    offers = _random_chain_offers(rng, authors)
    stored_first = rng.sample(offers, len(offers) // 3)
    batch = [e for e in offers if e not in stored_first]
    rng.shuffle(batch)
    outcomes = []
    for name, batches in (("batch", [batch]), ("alone", [[e] for e in batch])):
        with EntryStore(tmp_path / name) as store:
            for entry in stored_first:
                store.append([entry], sealed_here=True)
            for part in batches:
                store.append(part, sealed_here=True)
            forks = sorted((f.author, f.seq, f.evidence) for f in store.forks(TENANT))
            outcomes.append((forks, sorted(store.retracted_ids(TENANT)), store.count()))
            assert store.fsck().ok
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0]  # the guaranteed twin forked its author
