"""Named keys: creation and announcement, reading without the key, moving keys between nodes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from conftest import PASSWORD
from helpers import copy_tenant, run_cli_main

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import (
    DecodeError,
    InvalidNameError,
    MindooError,
    MissingKeyError,
    NotFoundError,
    VerificationError,
    WrongPasswordError,
)
from mindoo_p2p.identity import UserIdentity
from mindoo_p2p.key_transfer import (
    KeyFileNotForYouError,
    KeyTransfer,
    Protection,
    read_key_file_info,
    seal_key_to,
)
from mindoo_p2p.keyring import MEMBERSHIP_KEY, TenantKey
from mindoo_p2p.membership import (
    KeyAnnouncement,
    MembershipAction,
    MembershipLog,
    MembershipRecord,
    decode_tenant_log_record,
)
from mindoo_p2p.node import Node
from mindoo_p2p.tenant import Tenant

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
SECRET_TEXT = "quarterly numbers 7f3a9c"
KEY_PASSWORD = "key file password"


@dataclass
class Setup:
    admin: Node
    member: Node
    mirror: Node
    tenant: Tenant
    doc_id: str


sync = copy_tenant


def setup(make_node: MakeNode) -> Setup:
    admin, member, mirror = make_node("admin"), make_node("member"), make_node("mirror")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    mirror.join(admin.invite(tenant, mirror.public_identity(), role="mirror"))
    tenant.create_key("confidential")
    doc_id = tenant.create_db("notes").create_document({"text": SECRET_TEXT}, key="confidential")
    sync(admin, member, tenant)
    sync(admin, mirror, tenant)
    return Setup(admin, member, mirror, tenant, doc_id)


def confidential_secrets(tenant: Tenant) -> list[bytes]:
    return [k.secret for k in tenant.keyring if k.name == "confidential"]


# -- creating and announcing ----------------------------------------------------------------------
def test_create_key_announces_name_without_secret_to_members_and_mirrors(
    make_node: MakeNode,
) -> None:
    s = setup(make_node)
    created = s.tenant.keyring.current("confidential")
    assert created.version == 1
    for node in (s.admin, s.member, s.mirror):
        tenant = node.tenant("acme")
        assert "confidential" in tenant.key_names()
        assert tenant.key_name_for(created.key_id) == "confidential"
        info = next(i for i in tenant.key_directory() if i.name == "confidential")
        assert (info.key_id, info.version, info.announced) == (created.key_id, 1, True)
        assert info.held is (node is s.admin)
    # The announcement, decrypted with the membership key the mirror holds, has no secret.
    announcement = s.tenant.announcement_entries([created.key_id])[0]
    payload = announcement.decrypt(s.tenant.keyring.current(MEMBERSHIP_KEY).secret)
    assert decode_tenant_log_record(payload) == KeyAnnouncement.of(created)
    assert created.secret not in payload


def test_create_key_rules(make_node: MakeNode) -> None:
    s = setup(make_node)
    with pytest.raises(MissingKeyError, match="only the tenant admin can create keys"):
        s.member.tenant("acme").create_key("other")
    with pytest.raises(InvalidNameError, match="exists already"):
        s.tenant.create_key("confidential")
    with pytest.raises(InvalidNameError, match="reserved"):
        s.tenant.create_key("default")
    with pytest.raises(InvalidNameError):
        s.tenant.create_key("Bad Name")


def test_named_key_and_directory_survive_reopen(make_node: MakeNode) -> None:
    s = setup(make_node)
    key_id = s.tenant.keyring.current("confidential").key_id
    s.admin.close()
    with Node.open(s.admin.home, PASSWORD) as reopened:
        tenant = reopened.tenant("acme")
        assert tenant.keyring.current("confidential").key_id == key_id
        assert tenant.key_name_for(key_id) == "confidential"
        assert tenant.create_db("notes").get(s.doc_id) == {"text": SECRET_TEXT}


# -- reading without the key, then importing it ---------------------------------------------------
def test_member_without_key_sees_document_then_reads_after_sealed_import(
    make_node: MakeNode,
) -> None:
    s = setup(make_node)
    notes = s.member.tenant("acme").create_db("notes")
    assert notes.list_documents() == [s.doc_id]
    with pytest.raises(MissingKeyError) as raised:
        notes.get(s.doc_id)
    assert str(raised.value) == "no key 'confidential' for this document"
    with (
        pytest.raises(MissingKeyError, match="no key 'confidential' for this document"),
        notes.change(s.doc_id) as root,
    ):
        root["x"] = 1

    data = s.admin.export_key(s.tenant, "confidential", to=s.member.public_identity())
    assert read_key_file_info(data).protection is Protection.SEALED
    imported = s.member.import_key(data)
    assert (imported.name, imported.added_versions) == ("confidential", [1])
    assert notes.get(s.doc_id) == {"text": SECRET_TEXT}
    # The member can now write with it, and the admin reads the edit.
    notes.update(s.doc_id, {"reply": "seen"})
    sync(s.member, s.admin, s.tenant)
    assert s.tenant.create_db("notes").get(s.doc_id)["reply"] == "seen"
    # Importing again changes nothing; the key was saved in the member's keystore.
    assert s.member.import_key(data).added_versions == []
    s.member.close()
    with Node.open(s.member.home, PASSWORD) as reopened:
        assert reopened.tenant("acme").create_db("notes").get(s.doc_id)["text"] == SECRET_TEXT


def test_member_reads_after_password_import(make_node: MakeNode) -> None:
    s = setup(make_node)
    data = s.admin.export_key(
        s.tenant, "confidential", password=KEY_PASSWORD, kdf=KdfProfile.TESTING
    )
    assert read_key_file_info(data).protection is Protection.PASSWORD
    notes = s.member.tenant("acme").create_db("notes")
    with pytest.raises(MissingKeyError):
        notes.get(s.doc_id)
    with pytest.raises(WrongPasswordError, match="protected by a password"):
        s.member.import_key(data)
    with pytest.raises(WrongPasswordError, match="wrong password"):
        s.member.import_key(data, password="not it")
    s.member.import_key(data, password=KEY_PASSWORD)
    assert notes.get(s.doc_id) == {"text": SECRET_TEXT}


def test_unknown_key_id_falls_back_to_the_id(make_node: MakeNode) -> None:
    """A node that has not seen the announcement names the key by its id."""
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    key = tenant.create_key("confidential")
    doc_id = tenant.create_db("notes").create_document({"a": 1}, key="confidential")
    # Only the document's entries reach the member, not the announcement.
    member.ingest([e.raw for e in admin.store.iter_entries(tenant.id, "notes")])
    with pytest.raises(MissingKeyError) as raised:
        member.tenant("acme").create_db("notes").get(doc_id)
    assert str(raised.value) == f"no key {key.key_id.hex()} for this document"


# -- mirrors --------------------------------------------------------------------------------------
def test_mirror_can_never_read_named_key_documents(make_node: MakeNode) -> None:
    s = setup(make_node)
    notes = s.mirror.tenant("acme").create_db("notes")
    assert notes.list_documents() == [s.doc_id]
    with pytest.raises(MissingKeyError, match="no key 'confidential' for this document"):
        notes.get(s.doc_id)
    with pytest.raises(VerificationError, match="mirror"):
        s.admin.export_key(s.tenant, "confidential", to=s.mirror.public_identity())
    by_password = s.admin.export_key(
        s.tenant, "confidential", password=KEY_PASSWORD, kdf=KdfProfile.TESTING
    )
    with pytest.raises(VerificationError, match="mirrors hold no document keys"):
        s.mirror.import_key(by_password, password=KEY_PASSWORD)
    # Even a file sealed to the mirror outside export_key is refused on import.
    ring = s.tenant.keyring
    forced = seal_key_to(
        KeyTransfer(
            s.tenant.id,
            "confidential",
            [ring.current("confidential")],
            [e.raw for e in s.tenant.announcement_entries([ring.current("confidential").key_id])],
        ),
        s.mirror.public_identity(),
    )
    with pytest.raises(VerificationError, match="mirror"):
        s.mirror.import_key(forced)
    with pytest.raises(MissingKeyError):
        notes.get(s.doc_id)
    assert "confidential" not in [k.name for k in s.mirror.tenant("acme").keyring]


# -- what a key file shows and refuses ------------------------------------------------------------
def test_export_files_hold_no_secret_in_clear(make_node: MakeNode) -> None:
    s = setup(make_node)
    sealed = s.admin.export_key(s.tenant, "confidential", to=s.member.public_identity())
    protected = s.admin.export_key(
        s.tenant, "confidential", password=KEY_PASSWORD, kdf=KdfProfile.TESTING
    )
    secrets = confidential_secrets(s.tenant)
    assert secrets
    for data in (sealed, protected):
        for secret in secrets:
            assert secret not in data
            assert secret.hex().encode() not in data
        assert KEY_PASSWORD.encode() not in data
        assert len(data) < 4096


def test_someone_elses_export_wrong_tenant_and_garbage_fail_clearly(make_node: MakeNode) -> None:
    s = setup(make_node)
    outsider = make_node("outsider")
    for_member = s.admin.export_key(s.tenant, "confidential", to=s.member.public_identity())
    # The admin is a member too, but the file is sealed to the member's key.
    with pytest.raises(KeyFileNotForYouError, match="this key file is for member"):
        s.admin.import_key(for_member)
    with pytest.raises(NotFoundError, match="which this node has not joined"):
        outsider.import_key(for_member)
    for bad in (b"", b"garbage", b"MDKX", b"MDKX\x09", for_member[:-1], for_member + b"\x00"):
        with pytest.raises(DecodeError):
            s.member.import_key(bad)
    # Every truncation is refused with a clear error, never a crash.
    for cut in range(0, len(for_member), 7):
        with pytest.raises(DecodeError):
            s.member.import_key(for_member[:cut])
    # A flipped byte of the sealed part is caught by the sealed box.
    flipped = bytearray(for_member)
    flipped[-5] ^= 1
    with pytest.raises(VerificationError):
        s.member.import_key(bytes(flipped))
    # Altering the clear header of a password file breaks its authentication.
    protected = bytearray(
        s.admin.export_key(s.tenant, "confidential", password=KEY_PASSWORD, kdf=KdfProfile.TESTING)
    )
    protected[-1] ^= 1
    with pytest.raises(WrongPasswordError):
        s.member.import_key(bytes(protected), password=KEY_PASSWORD)
    with pytest.raises(MissingKeyError):
        s.member.tenant("acme").create_db("notes").get(s.doc_id)


def test_forged_key_under_an_announced_name_is_refused(make_node: MakeNode) -> None:
    """A sealed box does not say who sealed it: a key the admin never announced is refused."""
    s = setup(make_node)
    forged = TenantKey.generate("confidential", version=2)
    data = seal_key_to(
        KeyTransfer(s.tenant.id, "confidential", [forged], []), s.member.public_identity()
    )
    with pytest.raises(VerificationError, match="not the one the admin"):
        s.member.import_key(data)
    assert not s.member.tenant("acme").keyring.has_id(forged.key_id)


def test_export_refuses_unrotated_default_membership_key_and_keys_not_held(
    make_node: MakeNode,
) -> None:
    s = setup(make_node)
    # Every version is announced from the tenant's creation, so the default key may travel
    # in a key file too (members receive it with their invite anyway).
    key_file = s.admin.export_key(s.tenant, "default", to=s.member.public_identity())
    assert s.member.import_key(key_file, None).added_versions == []
    with pytest.raises(InvalidNameError, match="invites"):
        s.admin.export_key(s.tenant, MEMBERSHIP_KEY, to=s.member.public_identity())
    with pytest.raises(MissingKeyError, match="no key 'confidential' on this node"):
        s.member.export_key(s.member.tenant("acme"), "confidential", to=s.admin.public_identity())


# -- the KEY_ANNOUNCE record ----------------------------------------------------------------------
def test_key_announce_record_round_trip_and_versions() -> None:
    announcement = KeyAnnouncement(bytes(range(16)), "confidential", 3)
    encoded = announcement.encode()
    assert encoded[:6] == b"MDMR\x02\x03"
    assert decode_tenant_log_record(encoded) == announcement
    assert announcement.action is MembershipAction.KEY_ANNOUNCE
    # ADD and REVOKE keep version 1, so records written before announcements still decode.
    member = UserIdentity.generate("bob").public()
    add = MembershipRecord(MembershipAction.ADD, member, "member")
    assert add.encode()[4] == 1
    assert MembershipRecord.decode(add.encode()) == add
    assert decode_tenant_log_record(add.encode()) == add
    # One canonical encoding per record: the other version is refused for each action.
    with pytest.raises(DecodeError, match="unknown action 3 in version 1"):
        decode_tenant_log_record(b"MDMR\x01\x03" + encoded[6:])
    with pytest.raises(DecodeError, match="unsupported version 2 for action ADD"):
        decode_tenant_log_record(b"MDMR\x02\x01" + add.encode()[6:])
    with pytest.raises(DecodeError, match="unsupported version"):
        decode_tenant_log_record(b"MDMR\x03\x03" + encoded[6:])
    with pytest.raises(DecodeError, match="key announcement"):
        MembershipRecord.decode(encoded)
    with pytest.raises(DecodeError):
        decode_tenant_log_record(encoded + b"\x00")
    for cut in range(len(encoded)):
        with pytest.raises(DecodeError):
            decode_tenant_log_record(encoded[:cut])
    bad_name = encoded[:6] + encoded[6:22] + b"\x03BAD" + b"\x03"
    with pytest.raises(DecodeError):
        decode_tenant_log_record(bad_name)
    with pytest.raises(ValueError):
        MembershipRecord(MembershipAction.KEY_ANNOUNCE, member, "member")


def test_key_announce_not_signed_by_admin_is_rejected(make_node: MakeNode) -> None:
    s = setup(make_node)
    member_tenant = s.member.tenant("acme")
    fake = KeyAnnouncement(bytes(16), "stolen", 1)
    key = member_tenant.keyring.current(MEMBERSHIP_KEY)
    me = s.member.identity.signing
    entry = Entry.seal(  # crafted by hand by the member
        kind=EntryKind.MEMBERSHIP,
        tenant_id=member_tenant.id,
        database=TENANT_LOG,
        document_id=NO_DOCUMENT,
        author=me,
        author_seq=s.member.store.next_author_seq(member_tenant.id, me.public_key),
        timestamp_ms=int(time.time() * 1000),
        deps=(),
        key_id=key.key_id,
        key=key.secret,
        payload=fake.encode(),
    )
    result = s.admin.ingest([entry.raw])
    assert [r.entry_id for r in result.rejected] == [entry.id]
    assert "not by the admin key" in result.rejected[0].reason
    assert "stolen" not in s.tenant.key_names()
    log = MembershipLog(s.tenant.id, s.tenant.admin_key)
    reason = log.authorize_record(entry, fake)
    assert reason is not None and "not by the admin key" in reason
    with pytest.raises(VerificationError):
        log.apply(entry, fake)
    assert log.key_directory() == []


def test_conflicting_key_announcements_are_refused(make_node: MakeNode) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    key = tenant.create_key("confidential")
    # The same key id under another name, and another id under the same name and version.
    for record in (
        KeyAnnouncement(key.key_id, "renamed", 1),
        KeyAnnouncement(bytes(16), "confidential", 1),
    ):
        with pytest.raises(VerificationError, match="refused by the store"):
            tenant._membership_entry(record)
    # The same key id with another commitment.
    with pytest.raises(VerificationError, match="another commitment"):
        tenant._membership_entry(KeyAnnouncement(key.key_id, "confidential", 1, bytes(32)))
    # Announcing the same key again is accepted and changes nothing.
    tenant._membership_entry(KeyAnnouncement.of(key))
    tenant._membership_entry(KeyAnnouncement(key.key_id, "confidential", 1))
    assert [(i.name, i.version) for i in tenant.key_directory() if i.announced] == [
        (MEMBERSHIP_KEY, 1),
        ("confidential", 1),
        ("default", 1),
    ]
    tenant.load_membership()
    assert tenant.key_name_for(key.key_id) == "confidential"


# -- CLI ------------------------------------------------------------------------------------------
run_cli = partial(run_cli_main, password=PASSWORD)


def test_cli_key_create_list_export_import(
    make_node: MakeNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    monkeypatch.delenv("MINDOO_KEY_PASSWORD", raising=False)
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_db("notes")
    admin.close()
    member.close()
    a, b = ["--home", str(admin.home)], ["--home", str(member.home)]

    code, out, _ = run_cli(monkeypatch, capsys, *a, "key", "create", "acme", "confidential")
    assert code == 0 and "created key confidential (version 1" in out
    code, out, _ = run_cli(monkeypatch, capsys, *a, "key", "list", "acme")
    assert code == 0 and "confidential v1  held" in out
    code, out, err = run_cli(monkeypatch, capsys, *b, "key", "create", "acme", "x")
    assert code == 1 and out == "" and err.count("\n") == 1 and "only the tenant admin" in err
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        *a,
        "doc",
        "create",
        "acme",
        "notes",
        '{"t": 1}',
        "--key",
        "confidential",
    )
    assert code == 0
    doc_id = out.strip()

    with Node.open(admin.home, PASSWORD) as a_node, Node.open(member.home, PASSWORD) as m:
        sync(a_node, m, a_node.tenant("acme"))
    code, out, _ = run_cli(monkeypatch, capsys, *b, "key", "list", "acme")
    assert code == 0 and "confidential v1  not held" in out
    code, _, err = run_cli(monkeypatch, capsys, *b, "doc", "get", "acme", "notes", doc_id)
    assert code == 1 and "no key 'confidential' for this document" in err

    identity_file = tmp_path / "member.json"
    identity_file.write_text(member.public_identity().to_json())
    sealed_file, pw_file = tmp_path / "k.sealed", tmp_path / "k.pw"
    code, _, err = run_cli(
        monkeypatch, capsys, *a, "key", "export", "acme", "confidential", "--out", str(sealed_file)
    )
    assert code == 2 and "exactly one of --to" in err
    code, _, _ = run_cli(
        monkeypatch, capsys, *a, "key", "export", "acme", "confidential",
        "--to", str(identity_file), "--out", str(sealed_file),
    )  # fmt: skip
    assert code == 0 and sealed_file.exists()
    monkeypatch.setenv("MINDOO_KEY_PASSWORD", KEY_PASSWORD)
    code, _, _ = run_cli(
        monkeypatch, capsys, *a, "key", "export", "acme", "confidential",
        "--password", "--out", str(pw_file),
    )  # fmt: skip
    assert code == 0 and read_key_file_info(pw_file.read_bytes()).protection is Protection.PASSWORD

    # The admin cannot open the file sealed to the member: one clear line.
    code, _, err = run_cli(monkeypatch, capsys, *a, "key", "import", str(sealed_file))
    assert code == 1 and err.count("\n") == 1 and "not for you" in err
    monkeypatch.setenv("MINDOO_KEY_PASSWORD", "wrong")
    code, _, err = run_cli(monkeypatch, capsys, *b, "key", "import", str(pw_file))
    assert code == 1 and "wrong password" in err
    monkeypatch.setenv("MINDOO_KEY_PASSWORD", KEY_PASSWORD)
    code, out, _ = run_cli(monkeypatch, capsys, *b, "key", "import", str(pw_file))
    assert code == 0 and "imported key confidential" in out and "versions: 1" in out
    code, out, _ = run_cli(monkeypatch, capsys, *b, "key", "import", str(sealed_file))
    assert code == 0 and "none new" in out
    code, out, _ = run_cli(monkeypatch, capsys, *b, "doc", "get", "acme", "notes", doc_id)
    assert code == 0 and '"t": 1' in out


def test_key_transfer_kdf_limits_are_bounded(make_node: MakeNode) -> None:
    """A crafted password file cannot make the importer spend unbounded memory on argon2id."""
    s = setup(make_node)
    data = bytearray(
        s.admin.export_key(s.tenant, "confidential", password=KEY_PASSWORD, kdf=KdfProfile.TESTING)
    )
    header = 4 + 1 + 1 + 16 + 1 + len("confidential")
    data[header + 8 : header + 16] = (1 << 40).to_bytes(8, "big")  # memlimit: 1 TiB
    with pytest.raises(DecodeError, match="refusing argon2id limits"):
        s.member.import_key(bytes(data), password=KEY_PASSWORD)
    assert isinstance(DecodeError("x"), MindooError)
