"""The admission pipeline (mindoo_p2p.admission): one decode and one signature check per
arriving entry, whatever path brought it; rejection kinds instead of message text; membership
changes published only after the commit, deterministically whatever the order in a batch."""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PASSWORD
from helpers import numbered_change

from cli.main import main
from mindoo_p2p import admission, key_transfer
from mindoo_p2p.admission import TenantView, VerifiedEntry
from mindoo_p2p.bundle import check_bundle, export_entries, import_bundle, write_bundle
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.daemon import PeerTable
from mindoo_p2p.daemon.gossip_bridge import GossipBridge
from mindoo_p2p.daemon.node_access import NodeAccess
from mindoo_p2p.entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import StoreError, VerificationError
from mindoo_p2p.identity import UserIdentity
from mindoo_p2p.keyring import MEMBERSHIP_KEY, TenantKey
from mindoo_p2p.membership import (
    DeviceEnrolment,
    MembershipAction,
    MembershipLog,
    MembershipRecord,
    Revocation,
    TenantLogRecord,
)
from mindoo_p2p.node import Node
from mindoo_p2p.recovery import export_recovery_kit
from mindoo_p2p.rejection import Rejected, RejectionKind
from mindoo_p2p.sync.tenant_adapter import TenantSyncStore

MakeNode = Callable[[str], Node]


# -- counting the expensive steps ---------------------------------------------------------------
@dataclass
class Counts:
    decodes: list[bytes] = field(default_factory=list)
    """Entry ids (SHA-256 of the bytes) of every `Entry.decode`."""
    signatures: list[bytes] = field(default_factory=list)
    """Signed messages of every Ed25519 check of an entry signature."""

    def of(self, raw: bytes) -> tuple[int, int]:
        entry = Entry.decode.__wrapped__(Entry, raw)  # type: ignore[attr-defined]
        return self.decodes.count(entry.id), self.signatures.count(entry.signed_message)


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    """Counts every entry decode and every entry signature check, wherever it happens."""
    found = Counts()
    original_decode = Entry.decode.__func__  # type: ignore[attr-defined]

    def decode(cls: type[Entry], data: bytes, what: str = "entry") -> Entry:
        entry: Entry = original_decode(cls, data, what)
        found.decodes.append(entry.id)
        return entry

    decode.__wrapped__ = original_decode  # type: ignore[attr-defined]
    monkeypatch.setattr(Entry, "decode", classmethod(decode))
    original_one = admission.verify_signature
    original_many = admission.verify_many_later

    def verify_one(key: bytes, message: bytes, signature: bytes) -> bool:
        found.signatures.append(message)
        return original_one(key, message, signature)

    def verify_many_later(
        items: Sequence[tuple[bytes, bytes, bytes]],
    ) -> Callable[[], list[bool]]:
        found.signatures.extend(message for _, message, _ in items)
        return original_many(items)

    def entry_verify(entry: Entry) -> None:
        raise AssertionError("Entry.verify_signature is not part of the admission pipeline")

    monkeypatch.setattr(admission, "verify_signature", verify_one)
    monkeypatch.setattr(admission, "verify_many_later", verify_many_later)
    monkeypatch.setattr(Entry, "verify_signature", entry_verify)
    return found


def member_pair(make_node: MakeNode) -> tuple[Node, Node]:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    return alice, bob


def written_by(node: Node, text: str = "hello") -> Entry:
    """The entry of a new document that ``node`` writes in tenant acme, database notes."""
    tenant = node.tenant("acme")
    doc = tenant.create_db("notes").create_document({"text": text})
    found = node.store.iter_entries(tenant.id, "notes")
    (entry,) = [e for e in found if e.document_id.hex() == doc]
    return entry


def gossip_bridge(node: Node) -> GossipBridge:
    """The daemon's gossip bridge for ``node`` (its validator and delivery), outside a run."""
    return GossipBridge(
        NodeAccess(node), PeerTable(), wake=lambda _peer: None, penalize=lambda *_: None
    )


# -- one decode and one signature check per entry -------------------------------------------------
async def test_a_gossiped_entry_is_decoded_once_and_verified_once_at_the_receiver(
    make_node: MakeNode, counts: Counts
) -> None:
    alice, bob = member_pair(make_node)
    raw = written_by(bob).raw
    daemon = gossip_bridge(alice)
    counts.decodes.clear()
    counts.signatures.clear()

    validated = daemon._validate_gossip(raw)  # what py-libp2p calls, maybe in a worker thread
    assert isinstance(validated, VerifiedEntry)

    await daemon._on_gossip_entry(validated, "a-peer")  # the gossip service hands it over
    assert alice.store.has(validated.id)
    assert counts.of(raw) == (1, 1)


async def test_gossip_validation_blames_only_the_forwarder_who_misbehaved(
    make_node: MakeNode,
) -> None:
    alice, bob = member_pair(make_node)
    tenant = alice.tenant("acme")
    entry = written_by(bob)
    daemon = gossip_bridge(alice)
    tampered = bytearray(entry.raw)
    tampered[-1] ^= 1
    log_entry = next(iter(alice.store.iter_entries(tenant.id, TENANT_LOG)))
    assert daemon._validate_gossip(bytes(tampered)) is False  # bad signature: scored
    assert daemon._validate_gossip(b"garbage") is False  # malformed: scored
    assert daemon._validate_gossip(log_entry.raw) is False  # tenant log by gossip: scored
    tenant.revoke_member(bob.public_identity(), accept_through=0)
    assert daemon._validate_gossip(entry.raw) is None  # revoked above the cut: nobody's fault


def test_ingest_of_bytes_decodes_and_verifies_each_entry_once(
    make_node: MakeNode, counts: Counts
) -> None:
    alice, bob = member_pair(make_node)
    entries = [written_by(bob, f"n{i}") for i in range(3)]
    raws = [e.raw for e in entries]
    counts.decodes.clear()
    counts.signatures.clear()
    result = alice.ingest(raws)
    assert result.added == [e.id for e in entries]
    assert [counts.of(raw) for raw in raws] == [(1, 1)] * 3


def test_sync_ingest_decodes_and_verifies_each_entry_once(
    make_node: MakeNode, counts: Counts
) -> None:
    alice, bob = member_pair(make_node)
    raws = [written_by(bob, f"n{i}").raw for i in range(3)]
    counts.decodes.clear()
    counts.signatures.clear()
    outcome = TenantSyncStore(alice, alice.tenant("acme")).ingest(raws)
    assert len(outcome.added) == 3
    assert [counts.of(raw) for raw in raws] == [(1, 1)] * 3


def test_bundle_import_verifies_each_signature_once(
    make_node: MakeNode, tmp_path: Path, counts: Counts
) -> None:
    alice, bob = member_pair(make_node)
    for i in range(4):
        written_by(alice, f"n{i}")
    bundle = tmp_path / "acme.bundle"
    tenant = alice.tenant("acme")
    count = write_bundle(bundle, export_entries(alice.store, tenant.id))
    raws = [e.raw for e in export_entries(alice.store, tenant.id)]
    counts.signatures.clear()
    checked = check_bundle(bundle)
    assert checked.ok and checked.count == count
    result = import_bundle(bundle, bob.ingest, checked)
    assert len(result.added) + len(result.duplicates) == count and not result.rejected
    assert [counts.of(raw)[1] for raw in raws] == [1] * count


def test_bundle_import_refuses_a_damaged_file_whole(make_node: MakeNode, tmp_path: Path) -> None:
    alice, bob = member_pair(make_node)
    written_by(alice)
    tenant = alice.tenant("acme")
    entries = list(export_entries(alice.store, tenant.id))
    last = entries[-1]
    tampered = bytearray(last.raw)
    tampered[-1] ^= 1
    bad = Entry.decode(bytes(tampered))
    bundle = tmp_path / "damaged.bundle"
    write_bundle(bundle, [*entries[:-1], bad])
    checked = check_bundle(bundle)
    assert [(d.position, d.kind) for d in checked.damaged] == [
        (len(entries), RejectionKind.BAD_SIGNATURE)
    ]
    before = bob.store.count()
    with pytest.raises(VerificationError, match="damaged, nothing was imported"):
        import_bundle(bundle, bob.ingest, checked)
    assert bob.store.count() == before


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("MINDOO_PASSWORD", PASSWORD)
    monkeypatch.setattr(sys, "argv", ["mindoo", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Salts of every password-sealing key derivation (argon2id) of key files and kits."""
    calls: list[bytes] = []
    original = key_transfer.derive_password_key

    def derive(password: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
        calls.append(salt)
        return original(password, salt, opslimit, memlimit)

    monkeypatch.setattr(key_transfer, "derive_password_key", derive)
    return calls


def test_recovery_restore_derives_the_kit_key_once(
    make_node: MakeNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argon2_calls: list[bytes],
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    alice = make_node("alice")
    alice.create_tenant("acme")
    kit_file = tmp_path / "alice.kit"
    kit_file.write_bytes(export_recovery_kit(alice, "kit password 123", kdf=KdfProfile.TESTING))
    argon2_calls.clear()
    monkeypatch.setenv("MINDOO_RECOVERY_PASSWORD", "kit password 123")
    new_home = tmp_path / "new-device"
    code, out, err = run_cli(
        monkeypatch, capsys, "--home", str(new_home), "recovery", "restore", str(kit_file)
    )
    assert code == 0, err
    assert "restored alice" in out
    assert len(argon2_calls) == 1


def test_key_import_reads_the_key_file_header_once(
    make_node: MakeNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argon2_calls: list[bytes],
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    alice, bob = member_pair(make_node)
    alice.tenant("acme").create_key("confidential")
    data = alice.export_key(
        alice.tenant("acme"), "confidential", password="key password", kdf=KdfProfile.TESTING
    )
    key_file = tmp_path / "confidential.key"
    key_file.write_bytes(data)
    bob_home = bob.home
    bob.close()
    headers: list[int] = []
    original = key_transfer._read_clear_header

    def read_header(r: key_transfer.Reader) -> key_transfer.KeyFileInfo:
        headers.append(r.pos)
        return original(r)

    monkeypatch.setattr(key_transfer, "_read_clear_header", read_header)
    monkeypatch.setenv("MINDOO_KEY_PASSWORD", "key password")
    argon2_calls.clear()
    code, _out, err = run_cli(
        monkeypatch, capsys, "--home", str(bob_home), "key", "import", str(key_file)
    )
    assert code == 0, err
    assert len(headers) == 1 and len(argon2_calls) == 1


# -- rejection kinds, not message text ------------------------------------------------------------
def test_sync_sorts_rejections_by_kind(make_node: MakeNode) -> None:
    alice, bob = member_pair(make_node)
    tenant = alice.tenant("acme")
    good, revoked = written_by(bob, "kept"), written_by(bob, "cut")
    tampered = bytearray(written_by(bob, "x").raw)
    tampered[-1] ^= 1
    stranger = make_node("stranger")
    other = stranger.create_tenant("other")
    other.create_db("notes").create_document({"a": 1})
    foreign_raw = next(iter(stranger.store.iter_entries(other.id, "notes"))).raw
    seq_good = good.header.author_seq
    tenant.revoke_member(bob.public_identity(), accept_through=seq_good)
    assert revoked.header.author_seq > seq_good
    outcome = TenantSyncStore(alice, tenant).ingest(
        [good.raw, revoked.raw, bytes(tampered), b"\x01garbage", foreign_raw]
    )
    assert outcome.added == (good.id,)
    assert {r.kind for r in outcome.rejected} == {
        RejectionKind.BAD_SIGNATURE,
        RejectionKind.MALFORMED,
        RejectionKind.MISROUTED,
    }
    assert len(outcome.rejected) == 3
    assert [r.kind for r in outcome.refused] == [RejectionKind.REVOKED_ABOVE_CUT]


def test_which_kinds_blame_the_sender_is_decided_in_one_place() -> None:
    blamed = {kind for kind in RejectionKind if kind.sender_at_fault}
    assert blamed == {
        RejectionKind.MALFORMED,
        RejectionKind.BAD_SIGNATURE,
        RejectionKind.MISROUTED,
        RejectionKind.RESERVED_TIMESTAMP,
    }
    refusal = Rejected(b"\x00" * 32, RejectionKind.REVOKED_ABOVE_CUT, "bad signature")
    assert not refusal.sender_at_fault  # the message text decides nothing


def test_node_ingest_reports_kinds(make_node: MakeNode) -> None:
    alice, bob = member_pair(make_node)
    stranger = make_node("stranger")
    other = stranger.create_tenant("other")
    other.create_db("notes").create_document({"a": 1})
    unknown = next(iter(stranger.store.iter_entries(other.id, "notes")))
    alice_log = alice.tenant("acme")
    not_member = SigningKeyPair.generate()
    forged = Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=alice_log.id,
        database="notes",
        document_id=b"\x01" * 16,
        author=not_member,
        author_seq=1,
        timestamp_ms=1,
        deps=(),
        key_id=alice_log.keyring.current("default").key_id,
        key=alice_log.keyring.current("default").secret,
        payload=b"x",
    )
    result = alice.ingest([unknown.raw, forged.raw])
    assert [r.kind for r in result.rejected] == [
        RejectionKind.UNKNOWN_TENANT,
        RejectionKind.NOT_A_MEMBER,
    ]
    assert bob  # the member pair exists


# -- membership: pure checks, published after the commit -----------------------------------------
def test_membership_is_published_only_after_the_commit(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    carol = make_node("carol")
    alice.invite(tenant, carol.public_identity())
    log = [e.raw for e in alice.store.iter_entries(tenant.id, TENANT_LOG)]
    bob_tenant = bob.tenant("acme")
    before = bob_tenant.membership
    assert not before.is_member(carol.identity.signing.public_key)

    def failing_append(*args: object, **kwargs: object) -> object:
        raise StoreError("disk full")

    monkeypatch.setattr(bob.store, "append", failing_append)
    with pytest.raises(StoreError):
        bob.ingest(log)
    assert bob_tenant.membership is before  # nothing published for a batch that did not land
    assert not before.is_member(carol.identity.signing.public_key)
    monkeypatch.undo()
    bob.ingest(log)
    assert bob_tenant.membership is not before
    assert bob_tenant.membership.is_member(carol.identity.signing.public_key)
    assert not before.is_member(carol.identity.signing.public_key)  # the old snapshot stayed


# -- tenant-log records that build on each other, in any order ------------------------------------
TENANT_ID = bytes(range(16))
ADMIN = SigningKeyPair.generate()
MEMBERSHIP = TenantKey.generate(MEMBERSHIP_KEY)
USER = UserIdentity.generate("user")
DEVICE = UserIdentity.generate("device")
OTHER = UserIdentity.generate("other")


def record_entry(record: TenantLogRecord, author: SigningKeyPair, seq: int) -> Entry:
    return Entry.seal(
        kind=EntryKind.MEMBERSHIP,
        tenant_id=TENANT_ID,
        database=TENANT_LOG,
        document_id=NO_DOCUMENT,
        author=author,
        author_seq=seq,
        timestamp_ms=1_000 + seq,
        deps=(),
        key_id=MEMBERSHIP.key_id,
        key=MEMBERSHIP.secret,
        payload=record.encode(),
    )


def chain() -> list[Entry]:
    """A device enrolment sealed (user seq 1) before the ADD of its user (admin seq 2), a
    revocation of another member before that member's ADD, and their ADDs."""
    user, other = USER.public(), OTHER.public()
    return [
        record_entry(DeviceEnrolment(user.signing_key, DEVICE.public()), USER.signing, 1),
        record_entry(Revocation.of(other.signing_key, {other.signing_key: 0}), ADMIN, 1),
        record_entry(MembershipRecord(MembershipAction.ADD, user, "member"), ADMIN, 2),
        record_entry(MembershipRecord(MembershipAction.ADD, other, "member"), ADMIN, 0),
    ]


def fresh_view() -> TenantView:
    return TenantView.of(
        TENANT_ID,
        MembershipLog(TENANT_ID, ADMIN.public_key),
        [(MEMBERSHIP.key_id, MEMBERSHIP.secret)],
    )


def state_of(log: MembershipLog) -> tuple[object, ...]:
    return (
        sorted((m.identity.signing_key, m.revoked_entry) for m in log.members()),
        sorted((d.identity.signing_key, d.user_key) for d in log.devices()),
        sorted(log.cuts().items()),
    )


def verified(entries: list[Entry]) -> list[VerifiedEntry]:
    checked = admission.check_entries(entries, lambda ids: ())
    assert not checked.rejected
    return checked.verified


def test_records_that_build_on_each_other_apply_in_any_order_of_a_batch() -> None:
    entries = chain()
    results = set()
    for order in itertools.permutations(entries):
        view = fresh_view()
        admitted = admission.admit({TENANT_ID: view}, verified(list(order)))
        assert not admitted.rejected
        assert {v.id for v in admitted.accepted} == {e.id for e in entries}
        assert view.membership.members() == []  # the snapshot is never mutated
        results.add(repr(state_of(admitted.memberships[TENANT_ID])))
    assert len(results) == 1
    final = admission.admit({TENANT_ID: fresh_view()}, verified(entries)).memberships[TENANT_ID]
    assert final.is_member(DEVICE.signing.public_key)
    assert not final.is_member(OTHER.signing.public_key)


def test_a_record_whose_dependency_is_missing_is_refused_as_such() -> None:
    enrolment = chain()[0]
    admitted = admission.admit({TENANT_ID: fresh_view()}, verified([enrolment]))
    assert admitted.accepted == [] and admitted.memberships == {}
    assert [r.kind for r in admitted.rejected] == [RejectionKind.MISSING_DEPENDENCY]


def test_document_entries_of_a_batch_see_the_batch_records() -> None:
    add_user = chain()[2]
    change = Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=TENANT_ID,
        database="notes",
        document_id=b"\x01" * 16,
        author=USER.signing,
        author_seq=1,
        timestamp_ms=5,
        deps=(),
        key_id=MEMBERSHIP.key_id,
        key=MEMBERSHIP.secret,
        payload=b"x",
    )
    admitted = admission.admit({TENANT_ID: fresh_view()}, verified([change, add_user]))
    assert [v.id for v in admitted.accepted] == [add_user.id, change.id]
    alone = admission.admit({TENANT_ID: fresh_view()}, verified([change]))
    assert [r.kind for r in alone.rejected] == [RejectionKind.NOT_A_MEMBER]


def test_a_verified_entry_is_made_by_the_pipeline_only() -> None:
    entry = chain()[0]
    with pytest.raises(TypeError, match="admission only"):
        VerifiedEntry(entry)
    tampered = bytearray(entry.raw)
    tampered[-1] ^= 1
    checked = admission.check_entries([bytes(tampered), entry.raw, entry.raw], lambda ids: ())
    assert [r.kind for r in checked.rejected] == [RejectionKind.BAD_SIGNATURE]
    assert [v.id for v in checked.verified] == [entry.id] and checked.repeats == [entry.id]


# -- chunked checks (issue 8) -----------------------------------------------------------------
def test_a_bad_entry_in_any_chunk_is_refused_alone_and_chunks_change_no_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`check_entries` decodes chunk k+1 while the pool verifies chunk k. Planted across the
    chunks: a bad signature, bytes that do not decode, another tenant's entry (the screen), a
    repeat of an entry of an earlier chunk and one the store holds. Each is refused (or set
    aside) alone, every other entry passes, and the outcome is exactly that of one chunk."""
    author = SigningKeyPair.generate()
    raws = [numbered_change(author, seq).raw for seq in range(1, 1301)]
    forged = bytearray(raws[700])
    forged[-1] ^= 1  # the signature's last byte
    raws[700] = bytes(forged)
    raws[130] = raws[130][:-5]  # truncated: does not decode
    raws[1100] = numbered_change(author, 1100, tenant_id=b"\x01" * 16).raw
    raws[1250] = raws[3]  # a repeat, two chunks later
    held = Entry.decode(raws[900]).id

    def screen(entry: Entry) -> Rejected | None:
        if entry.tenant_id == bytes(16):
            return None
        return Rejected(entry.id, RejectionKind.MISROUTED, "entry of another tenant")

    def outcome(chunk: int) -> tuple[object, ...]:
        monkeypatch.setattr(admission, "CHECK_CHUNK", chunk)
        asked: list[int] = []

        def stored(ids: list[bytes]) -> set[bytes]:
            asked.append(len(ids))
            return {held} & set(ids)

        checked = admission.check_entries(raws, stored, screen=screen)
        assert sum(asked) == 1300 - 3 and len(asked) == -(-1300 // chunk)
        return (
            [v.id for v in checked.verified],
            checked.duplicates,
            sorted((r.entry_id, r.kind) for r in checked.rejected),
            checked.repeats,
            checked.order,
        )

    chunked, whole = outcome(512), outcome(100_000)  # 512: the batch spans three chunks
    assert chunked == whole
    verified, duplicates, rejected, repeats, _ = chunked
    assert len(verified) == 1300 - 5 and duplicates == [held]
    assert [kind for _, kind in rejected].count(RejectionKind.BAD_SIGNATURE) == 1
    assert sorted(kind.name for _, kind in rejected) == [
        "BAD_SIGNATURE",
        "MALFORMED",
        "MISROUTED",
    ]
    assert repeats == [Entry.decode(raws[3]).id]
