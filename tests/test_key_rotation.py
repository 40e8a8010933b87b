"""Key rotation: new versions of named keys and of the default key, and who reads what."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from conftest import PASSWORD
from helpers import copy_tenant, run_cli_main

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.entry import TENANT_LOG
from mindoo_p2p.errors import InvalidNameError, MissingKeyError, NotFoundError, VerificationError
from mindoo_p2p.invite import Invite, open_invite, verify_invite
from mindoo_p2p.keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from mindoo_p2p.membership import KeyAnnouncement, decode_tenant_log_record
from mindoo_p2p.node import Node
from mindoo_p2p.tenant import Tenant

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
OLD_TEXT = "before rotation 41c2"
NEW_TEXT = "after rotation 9be7"
KEY_PASSWORD = "rotation key file password"


sync = copy_tenant


def key_ids_of(node: Node, tenant: Tenant, database: str, doc_id: str) -> list[bytes]:
    """The key id in the header of each of the document's entries, in arrival order."""
    entries = node.store.document_entries(tenant.id, database, bytes.fromhex(doc_id))
    return [entry.header.key_id for _seq, entry in entries]


def versions(tenant: Tenant, name: str) -> list[tuple[int, bool, bool]]:
    """(version, held, announced) of every known version of key ``name``."""
    return [(i.version, i.held, i.announced) for i in tenant.key_directory() if i.name == name]


# -- what rotation writes -------------------------------------------------------------------------
def test_rotation_seals_new_documents_and_new_changes_with_the_new_version(
    make_node: MakeNode,
) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    v1 = tenant.create_key("confidential")
    notes = tenant.create_db("notes")
    old_doc = notes.create_document({"text": OLD_TEXT}, key="confidential")

    v2 = tenant.rotate_key("confidential")
    assert (v2.name, v2.version) == ("confidential", 2)
    assert v2.key_id != v1.key_id and v2.secret != v1.secret
    assert tenant.keyring.current("confidential") == v2
    assert versions(tenant, "confidential") == [(1, True, True), (2, True, True)]

    new_doc = notes.create_document({"text": NEW_TEXT}, key="confidential")
    notes.update(old_doc, {"more": NEW_TEXT})
    assert key_ids_of(admin, tenant, "notes", new_doc) == [v2.key_id]
    assert key_ids_of(admin, tenant, "notes", old_doc) == [v1.key_id, v2.key_id]
    assert notes.get(old_doc) == {"text": OLD_TEXT, "more": NEW_TEXT}
    assert notes.get(new_doc) == {"text": NEW_TEXT}

    v3 = tenant.rotate_key("confidential")
    assert v3.version == 3 and len({v1.key_id, v2.key_id, v3.key_id}) == 3
    notes.update(new_doc, {"n": 3})
    assert key_ids_of(admin, tenant, "notes", new_doc) == [v2.key_id, v3.key_id]

    # The new versions survive a restart, and writes keep using the newest one.
    admin.close()
    with Node.open(admin.home, PASSWORD) as reopened:
        t = reopened.tenant("acme")
        assert t.keyring.current("confidential").key_id == v3.key_id
        assert versions(t, "confidential") == [(v, True, True) for v in (1, 2, 3)]
        db = t.create_db("notes")
        assert db.get(old_doc) == {"text": OLD_TEXT, "more": NEW_TEXT}
        db.update(old_doc, {"after_reopen": True})
        assert key_ids_of(reopened, t, "notes", old_doc)[-1] == v3.key_id


# -- holders of older versions --------------------------------------------------------------------
def test_member_holding_v1_reads_old_content_and_new_after_importing(make_node: MakeNode) -> None:
    admin, member, late = make_node("admin"), make_node("member"), make_node("late")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    late.join(admin.invite(tenant, late.public_identity()))
    tenant.create_key("confidential")
    notes = tenant.create_db("notes")
    old_doc = notes.create_document({"text": OLD_TEXT}, key="confidential")
    v1_file = admin.export_key(tenant, "confidential", to=member.public_identity())
    assert member.import_key(v1_file).added_versions == [1]

    v2 = tenant.rotate_key("confidential")
    new_doc = notes.create_document({"text": NEW_TEXT}, key="confidential")
    sync(admin, member, tenant)
    sync(admin, late, tenant)

    m_tenant = member.tenant("acme")
    m_notes = m_tenant.create_db("notes")
    assert m_notes.get(old_doc) == {"text": OLD_TEXT}
    with pytest.raises(MissingKeyError) as raised:
        m_notes.get(new_doc)
    assert str(raised.value) == "no key 'confidential' for this document"
    # The member learned of version 2 from the tenant log without getting its secret.
    assert versions(m_tenant, "confidential") == [(1, True, True), (2, False, True)]

    # An export after the rotation carries every version: the member adds only version 2.
    both = admin.export_key(tenant, "confidential", to=member.public_identity())
    assert member.import_key(both).added_versions == [2]
    assert m_notes.get(new_doc) == {"text": NEW_TEXT}
    assert m_notes.get(old_doc) == {"text": OLD_TEXT}
    # The member's own new changes now use version 2 too.
    m_notes.update(old_doc, {"by": "member"})
    assert key_ids_of(member, m_tenant, "notes", old_doc)[-1] == v2.key_id
    assert not admin.ingest([e.raw for e in member.store.iter_entries(tenant.id)]).rejected
    assert notes.get(old_doc) == {"text": OLD_TEXT, "by": "member"}

    # Someone who imports only after the rotation reads old and new content alike.
    by_password = admin.export_key(
        tenant, "confidential", password=KEY_PASSWORD, kdf=KdfProfile.TESTING
    )
    assert late.import_key(by_password, password=KEY_PASSWORD).added_versions == [1, 2]
    l_notes = late.tenant("acme").create_db("notes")
    assert l_notes.get(old_doc) == {"text": OLD_TEXT}
    assert l_notes.get(new_doc) == {"text": NEW_TEXT}


# -- the default key ------------------------------------------------------------------------------
def test_rotating_default_works_the_same(make_node: MakeNode) -> None:
    admin, member, mirror, late = (
        make_node("admin"),
        make_node("member"),
        make_node("mirror"),
        make_node("late"),
    )
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    mirror.join(admin.invite(tenant, mirror.public_identity(), role="mirror"))
    notes = tenant.create_db("notes")
    old_doc = notes.create_document({"text": OLD_TEXT})
    v1 = tenant.keyring.current(DEFAULT_KEY)
    assert versions(tenant, DEFAULT_KEY) == [(1, True, True)]  # announced at creation

    v2 = tenant.rotate_key(DEFAULT_KEY)
    assert (v2.name, v2.version) == (DEFAULT_KEY, 2) and v2.key_id != v1.key_id
    # Version 1, created with the tenant, is announced along with version 2.
    assert versions(tenant, DEFAULT_KEY) == [(1, True, True), (2, True, True)]
    new_doc = notes.create_document({"text": NEW_TEXT})
    assert key_ids_of(admin, tenant, "notes", new_doc) == [v2.key_id]
    notes.update(old_doc, {"more": 1})
    assert key_ids_of(admin, tenant, "notes", old_doc) == [v1.key_id, v2.key_id]

    # Members and mirrors accept the announcements of the default key's versions.
    for node in (member, mirror):
        sync(admin, node, tenant)
        assert [(v, a) for v, _h, a in versions(node.tenant("acme"), DEFAULT_KEY)] == [
            (1, True),
            (2, True),
        ]
    m_notes = member.tenant("acme").create_db("notes")
    with pytest.raises(MissingKeyError, match=r"^no key 'default' for this document$"):
        m_notes.get(new_doc)
    with pytest.raises(MissingKeyError, match="no key 'default'"):
        m_notes.get(old_doc)  # it holds a change sealed with version 2 now
    # Until it gets version 2, the member keeps writing with the newest version it holds.
    member_old = member.tenant("acme").create_db("old")
    m_doc = member_old.create_document({"v": 1})
    assert key_ids_of(member, member.tenant("acme"), "old", m_doc) == [v1.key_id]

    exported = admin.export_key(tenant, DEFAULT_KEY, to=member.public_identity())
    assert member.import_key(exported).added_versions == [2]
    assert m_notes.get(new_doc) == {"text": NEW_TEXT}
    assert m_notes.get(old_doc) == {"text": OLD_TEXT, "more": 1}

    # A member invited after the rotation gets every default version with the invite.
    late.join(admin.invite(tenant, late.public_identity()))
    sync(admin, late, tenant)
    l_notes = late.tenant("acme").create_db("notes")
    assert l_notes.get(old_doc) == {"text": OLD_TEXT, "more": 1}
    assert l_notes.get(new_doc) == {"text": NEW_TEXT}
    assert late.tenant("acme").keyring.current(DEFAULT_KEY).key_id == v2.key_id

    # The mirror still reads nothing and may import no version of the default key.
    with pytest.raises(MissingKeyError):
        mirror.tenant("acme").create_db("notes").get(new_doc)
    with pytest.raises(VerificationError, match="mirror"):
        admin.export_key(tenant, DEFAULT_KEY, to=mirror.public_identity())
    by_password = admin.export_key(
        tenant, DEFAULT_KEY, password=KEY_PASSWORD, kdf=KdfProfile.TESTING
    )
    with pytest.raises(VerificationError, match="mirrors hold no document keys"):
        mirror.import_key(by_password, password=KEY_PASSWORD)


def test_invite_with_an_unannounced_default_version_is_refused(make_node: MakeNode) -> None:
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    tenant.rotate_key(DEFAULT_KEY)
    invite = open_invite(admin.invite(tenant, member.public_identity()), member.identity)
    assert sorted(k.version for k in invite.keys if k.name == DEFAULT_KEY) == [1, 2]
    verify_invite(invite)
    admin_key = SigningKeyPair(tenant.secrets.admin_seed or b"")

    def signed(keys: list[TenantKey]) -> Invite:
        # Even signed by the admin key, a key the log does not announce is refused.
        return dataclasses.replace(invite, keys=keys).signed(admin_key)

    forged = TenantKey.generate(DEFAULT_KEY, version=3)
    with pytest.raises(VerificationError, match=r"version 3 .* never announced"):
        verify_invite(signed([*invite.keys, forged]))
    swapped = [
        dataclasses.replace(k, version=5) if k.name == DEFAULT_KEY and k.version == 2 else k
        for k in invite.keys
    ]
    with pytest.raises(VerificationError, match=r"version 5 .* not the one announced"):
        verify_invite(signed(swapped))


# -- who may rotate, and what ---------------------------------------------------------------------
def test_rotation_rules(make_node: MakeNode) -> None:
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key("confidential")
    sync(admin, member, tenant)
    m_tenant = member.tenant("acme")
    log_size = len(list(admin.store.iter_entries(tenant.id, TENANT_LOG)))
    for name in ("confidential", DEFAULT_KEY):
        with pytest.raises(MissingKeyError, match="only the tenant admin can rotate keys"):
            m_tenant.rotate_key(name)
    assert versions(m_tenant, DEFAULT_KEY) == [(1, True, True)]
    with pytest.raises(InvalidNameError, match="cannot be rotated"):
        tenant.rotate_key(MEMBERSHIP_KEY)
    with pytest.raises(NotFoundError, match="no key 'nope'"):
        tenant.rotate_key("nope")
    with pytest.raises(InvalidNameError):
        tenant.rotate_key("Bad Name")
    assert len(list(admin.store.iter_entries(tenant.id, TENANT_LOG))) == log_size
    assert len(tenant.keyring) == 3
    # The tenant log refuses to announce the membership key without its commitment.
    membership = tenant.keyring.current(MEMBERSHIP_KEY)
    with pytest.raises(VerificationError, match="without its commitment"):
        tenant._membership_entry(KeyAnnouncement(membership.key_id, MEMBERSHIP_KEY, 1))


def test_rotation_announcement_carries_no_secret(make_node: MakeNode) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    tenant.create_key("confidential")
    rotated = [tenant.rotate_key("confidential"), tenant.rotate_key(DEFAULT_KEY)]
    default_v1 = next(k for k in tenant.keyring if k.name == DEFAULT_KEY and k.version == 1)
    membership_secret = tenant.keyring.current(MEMBERSHIP_KEY).secret
    expected = [KeyAnnouncement.of(k) for k in [*rotated, default_v1]]
    entries = tenant.announcement_entries([a.key_id for a in expected])
    assert len(entries) == 3
    records = [decode_tenant_log_record(e.decrypt(membership_secret)) for e in entries]
    assert all(isinstance(r, KeyAnnouncement) for r in records)
    assert len(records) == 3 and set(records) == set(expected)
    secrets = [k.secret for k in tenant.keyring if k.name != MEMBERSHIP_KEY]
    for entry in entries:
        payload = entry.decrypt(membership_secret)
        assert len(payload) < 100
        for secret in secrets:
            for blob in (payload, entry.raw):
                assert secret not in blob and secret.hex().encode() not in blob
    # Nor does any file of the node's home hold a key secret in the clear.
    admin.close()
    for path in Path(admin.home).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret not in data and secret.hex().encode() not in data, path


# -- CLI ------------------------------------------------------------------------------------------
run_cli = partial(run_cli_main, password=PASSWORD)


def test_cli_key_rotate(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key("confidential")
    admin.close()
    member.close()
    a, b = ["--home", str(admin.home)], ["--home", str(member.home)]

    code, out, _ = run_cli(monkeypatch, capsys, *a, "key", "rotate", "acme", "confidential")
    assert code == 0 and "rotated key confidential to version 2" in out
    code, out, _ = run_cli(monkeypatch, capsys, *a, "key", "rotate", "acme", "default")
    assert code == 0 and "rotated key default to version 2" in out
    code, out, _ = run_cli(monkeypatch, capsys, *a, "key", "list", "acme")
    assert code == 0
    for line in ("confidential v1  held", "confidential v2  held", "default v2  held"):
        assert line in out
    assert "default v1  held\n" in out  # announced now: no "(not announced)"
    code, out, err = run_cli(monkeypatch, capsys, *b, "key", "rotate", "acme", "confidential")
    assert code == 1 and out == "" and err.count("\n") == 1 and "only the tenant admin" in err
    code, out, err = run_cli(monkeypatch, capsys, *a, "key", "rotate", "acme", "$membership")
    assert code == 1 and out == "" and err.count("\n") == 1 and "cannot be rotated" in err
    code, _, err = run_cli(monkeypatch, capsys, *a, "key", "rotate", "acme", "nope")
    assert code == 1 and err.count("\n") == 1 and "no key 'nope'" in err
    with Node.open(admin.home, PASSWORD) as reopened:
        assert reopened.tenant("acme").keyring.current("confidential").version == 2
        assert reopened.tenant("acme").keyring.current(DEFAULT_KEY).version == 2


def test_the_keyring_current_version_follows_added_and_discarded_versions() -> None:
    first = TenantKey.generate("default")
    ring = KeyRing([first])
    assert ring.current("default") is first  # computed once, then remembered
    second = TenantKey.generate("default", version=2)
    ring.add(second)
    assert ring.current("default") is second
    ring.discard(second.key_id)
    assert ring.current("default") is first
    ring.discard(first.key_id)
    with pytest.raises(MissingKeyError, match="no key 'default'"):
        ring.current("default")


def test_a_version_shredded_while_current_computes_is_never_remembered() -> None:
    """Review finding: `current` cached what it computed even when a discard (another
    thread's shred) ran meanwhile, so later writes kept using the shredded version. Here the
    discard runs inside the computation (the name's comparison triggers it)."""
    first = TenantKey.generate("default")
    second = TenantKey.generate("default", version=2)
    ring = KeyRing([first, second])

    class ShredsOnCompare(str):
        shredded = False

        def __eq__(self, other: object) -> bool:
            if not ShredsOnCompare.shredded:
                ShredsOnCompare.shredded = True
                ring.discard(second.key_id)
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    ring.current(ShredsOnCompare("default"))  # raced with the shred: either answer is fair
    assert ShredsOnCompare.shredded
    assert ring.current("default") is first  # but the shredded version is not remembered
