"""The embedding API end to end: node, tenants, invites, documents, feeds, time travel."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PASSWORD

from mindoo_p2p import (
    Counter,
    DocumentDeletedError,
    InvalidNameError,
    KeystoreError,
    Node,
    NotFoundError,
    Text,
    VerificationError,
    WrongPasswordError,
)
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.materializer import SNAPSHOT_EVERY

MakeNode = Callable[[str], Node]


def exchange(a: Node, b: Node) -> None:
    """Copy every entry each node has to the other (sync without a network)."""
    a_entries = [e.raw for e in a.store.iter_entries()]
    b_entries = [e.raw for e in b.store.iter_entries()]
    for result in (b.ingest(a_entries), a.ingest(b_entries)):
        assert not result.rejected, result.rejected


def invite_pair(make_node: MakeNode) -> tuple[Node, Node]:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    return alice, bob


def test_init_open_and_wrong_password(tmp_path: Path, make_node: MakeNode) -> None:
    node = make_node("n")
    ident = node.public_identity()
    node.close()
    with pytest.raises(WrongPasswordError):
        Node.open(tmp_path / "n", "not the password")
    with pytest.raises(KeystoreError, match="already exists"):
        Node.init(tmp_path / "n", PASSWORD)
    with pytest.raises(KeystoreError, match="no node"):
        Node.open(tmp_path / "nothing", PASSWORD)
    reopened = Node.open(tmp_path / "n", PASSWORD)
    try:
        assert reopened.public_identity() == ident
    finally:
        reopened.close()


def test_tenant_creation_and_membership(make_node: MakeNode) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    assert tenant.is_admin
    # the creator is the first member, under an identity of its own in this tenant
    assert [m.identity for m in tenant.members()] == [tenant.identity.public()]
    assert tenant.identity.name == node.public_identity().name
    assert tenant.identity.public() != node.public_identity()
    assert node.tenant("acme") is tenant
    assert node.tenant(tenant.id_hex[:10]) is tenant
    with pytest.raises(InvalidNameError):
        node.create_tenant("acme")
    with pytest.raises(NotFoundError):
        node.tenant("nope")
    with pytest.raises(InvalidNameError):
        tenant.create_db("Bad Name")


def test_documents_crud_history_and_delete(make_node: MakeNode) -> None:
    db = make_node("n").create_tenant("acme").create_db("contacts")
    doc_id = db.create_document({"name": "Ada", "tags": ["x"], "address": {"city": "London"}})
    assert db.get(doc_id) == {"name": "Ada", "tags": ["x"], "address": {"city": "London"}}
    with db.change(doc_id) as doc:
        doc["tags"].append("y")
        doc["address"]["zip"] = "N1"
        doc["visits"] = Counter(1)
        doc["bio"] = Text("hello")
    with db.change(doc_id) as doc:
        doc.increment("visits", 2)
        doc["bio"].insert(5, " world")
    got = db.get(doc_id)
    assert got["tags"] == ["x", "y"] and got["address"] == {"city": "London", "zip": "N1"}
    assert got["visits"] == 3 and got["bio"] == "hello world"
    db.set_path(doc_id, ["address", "geo", "lat"], 51.5)
    assert db.get(doc_id)["address"]["geo"] == {"lat": 51.5}

    empty = db.create_document()
    assert db.get(empty) == {}
    assert db.list_documents() == [doc_id, empty]

    before_delete = db.history(doc_id)[-1].entry_id
    db.delete(doc_id)
    with pytest.raises(DocumentDeletedError):
        db.get(doc_id)
    with pytest.raises(DocumentDeletedError), db.change(doc_id) as doc:
        doc["x"] = 1
    assert db.list_documents() == [empty]
    assert db.list_documents(include_deleted=True) == [doc_id, empty]
    history = db.history(doc_id)
    assert [h.kind for h in history] == ["change"] * 4 + ["delete"]
    assert db.get_at(doc_id, heads=[before_delete])["address"]["geo"] == {"lat": 51.5}
    with pytest.raises(NotFoundError):
        db.get(bytes(16).hex())


def test_failed_change_block_writes_nothing(make_node: MakeNode) -> None:
    db = make_node("n").create_tenant("acme").create_db("contacts")
    doc_id = db.create_document({"n": 1})
    entries_before = db.stats()["entries"]
    with pytest.raises(RuntimeError), db.change(doc_id) as doc:
        doc["n"] = 2
        raise RuntimeError("boom")
    assert db.get(doc_id) == {"n": 1}
    assert db.stats()["entries"] == entries_before


def test_batch_is_one_commit_and_all_or_nothing(make_node: MakeNode) -> None:
    db = make_node("n").create_tenant("acme").create_db("contacts")
    with db.batch():
        ids = [db.create_document({"i": i}) for i in range(50)]
        assert db.get(ids[3]) == {"i": 3}  # read your own writes inside the batch
    assert len(db.list_documents()) == 50
    with pytest.raises(RuntimeError), db.batch():
        db.create_document({"lost": True})
        with db.change(ids[0]) as doc:
            doc["i"] = -1
        raise RuntimeError("abort")
    assert len(db.list_documents()) == 50
    assert db.get(ids[0]) == {"i": 0}


def test_changes_since_is_durable_and_paginated(tmp_path: Path, make_node: MakeNode) -> None:
    node = make_node("n")
    db = node.create_tenant("acme").create_db("crm2026")
    ids = [db.create_document({"i": i}) for i in range(25)]
    seen: list[str] = []
    cursor = 0
    while True:
        items, cursor_next = db.changes_since(cursor, limit=10)
        if not items:
            assert cursor_next == cursor
            break
        assert all(i.cursor > cursor for i in items)
        seen.extend(i.document_id for i in items)
        cursor = cursor_next
    assert seen == ids
    node.close()
    again = Node.open(tmp_path / "n", PASSWORD)
    try:
        db2 = again.tenant("acme").create_db("crm2026")
        assert db2.changes_since(0, limit=5)[0][0].document_id == ids[0]
        assert db2.changes_since(cursor)[0] == []
        db2.create_document({"late": True})
        items, _ = db2.changes_since(cursor)
        assert len(items) == 1 and items[0].cursor == cursor + 1
    finally:
        again.close()


def test_time_travel_by_time(make_node: MakeNode) -> None:
    db = make_node("n").create_tenant("acme").create_db("contacts")
    doc_id = db.create_document({"v": 1})
    time.sleep(0.01)
    middle = int(time.time() * 1000)
    time.sleep(0.01)
    db.update(doc_id, {"v": 2})
    assert db.get_at(doc_id, time=middle) == {"v": 1}
    assert db.get_at(doc_id, time=int(time.time() * 1000) + 1) == {"v": 2}
    with pytest.raises(NotFoundError):
        db.get_at(doc_id, time=0)


def test_invite_join_and_offline_convergence(make_node: MakeNode) -> None:
    alice, bob = invite_pair(make_node)
    assert bob.tenant("acme").membership.is_member(bob.identity.signing.public_key)
    a_db = alice.tenant("acme").create_db("contacts")
    doc_id = a_db.create_document({"name": "Ada", "tags": []})
    exchange(alice, bob)
    b_db = bob.tenant("acme").create_db("contacts")
    assert b_db.get(doc_id) == {"name": "Ada", "tags": []}
    # Both edit the same document while offline.
    with a_db.change(doc_id) as doc:
        doc["name"] = "Ada Lovelace"
        doc["tags"].append("alice")
        doc["from_alice"] = True
    with b_db.change(doc_id) as doc:
        doc["tags"].append("bob")
        doc["from_bob"] = True
    exchange(alice, bob)
    merged = a_db.get(doc_id)
    assert merged == b_db.get(doc_id)
    assert merged["name"] == "Ada Lovelace" and merged["from_alice"] and merged["from_bob"]
    assert sorted(merged["tags"]) == ["alice", "bob"]
    authors = {h.author_name for h in a_db.history(doc_id)}
    assert authors == {"alice", "bob"}


def test_entries_from_non_members_are_rejected(make_node: MakeNode) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    stranger = SigningKeyPair.generate()
    key = tenant.keyring.current("default")
    forged = Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=tenant.id,
        database="contacts",
        document_id=bytes(range(16)),
        author=stranger,
        author_seq=1,
        timestamp_ms=1,
        deps=[],
        key_id=key.key_id,
        key=key.secret,
        payload=b"x",
    )
    result = node.ingest([forged.raw])
    assert [r.entry_id for r in result.rejected] == [forged.id]
    assert "not a member" in result.rejected[0].reason
    assert not node.store.has(forged.id)


def test_revoked_member_cannot_write(make_node: MakeNode) -> None:
    alice, bob = invite_pair(make_node)
    alice.tenant("acme").revoke_member(bob.public_identity())
    exchange(alice, bob)
    with pytest.raises(VerificationError, match="revoked"):
        bob.tenant("acme").create_db("contacts").create_document({"x": 1})


def test_snapshot_makes_a_fresh_node_read_fast(tmp_path: Path, make_node: MakeNode) -> None:
    node = make_node("n")
    db = node.create_tenant("acme").create_db("log")
    doc_id = db.create_document({"n": 0})
    with db.batch():
        for i in range(SNAPSHOT_EVERY + 10):
            db.update(doc_id, {"n": i, f"k{i % 7}": i})
    expected = db.get(doc_id)
    db.get(doc_id)
    tenant = node.tenant("acme")
    snap = node.store.get_snapshot(tenant.id, "log", bytes.fromhex(doc_id))
    assert snap is not None
    node.close()
    again = Node.open(tmp_path / "n", PASSWORD)
    try:
        assert again.tenant("acme").create_db("log").get(doc_id) == expected
    finally:
        again.close()


def test_no_plaintext_or_private_key_on_disk(tmp_path: Path, make_node: MakeNode) -> None:
    marker = "MARKER-7f1c2e9a-plaintext"
    node = make_node("n")
    tenant = node.create_tenant("acme")
    db = tenant.create_db("secrets")
    doc_id = db.create_document({"note": marker, marker: Text(marker)})
    with db.batch():
        for i in range(SNAPSHOT_EVERY + 5):
            db.update(doc_id, {"i": i, "again": f"{marker}-{i}"})
    db.get(doc_id)  # writes a snapshot
    assert node.store.get_snapshot(tenant.id, "secrets", bytes.fromhex(doc_id)) is not None
    secrets = [
        node.identity.signing.seed,
        bytes(node.identity.encryption),
        tenant.secrets.admin_seed or b"",
        *[k.secret for k in tenant.keyring],
    ]
    needles = [marker.encode(), marker.encode("utf-16-le")]
    needles += [s for s in secrets if s] + [s.hex().encode() for s in secrets if s]
    node.close()
    files = [p for p in (tmp_path / "n").rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle[:12]!r} found in {path}"


def test_a_members_malformed_change_does_not_break_the_document(make_node: MakeNode) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    db = tenant.create_db("contacts")
    doc_id = db.create_document({"name": "Ada"})
    md_heads = db.history(doc_id)[-1].entry_id
    key = tenant.keyring.current("default")
    me = tenant.identity.signing
    bad = Entry.seal(  # crafted by hand, as a member could
        kind=EntryKind.CHANGE,
        tenant_id=tenant.id,
        database="contacts",
        document_id=bytes.fromhex(doc_id),
        author=me,
        author_seq=node.store.next_author_seq(tenant.id, me.public_key),
        timestamp_ms=int(time.time() * 1000),
        deps=[bytes.fromhex(md_heads)],
        key_id=key.key_id,
        key=key.secret,
        payload=b"\x85\x6f\x4a\x83 this is not an automerge change",
    )
    assert not node.ingest([bad]).rejected  # validly signed by a member: stored as history
    db.update(doc_id, {"email": "ada@example.org"})
    assert db.get(doc_id) == {"name": "Ada", "email": "ada@example.org"}
    node.close()
    again = Node.open(node.home, PASSWORD)
    try:
        assert again.tenant("acme").create_db("contacts").get(doc_id) == {
            "name": "Ada",
            "email": "ada@example.org",
        }
    finally:
        again.close()


def test_a_new_node_password_must_have_eight_characters(tmp_path: Path) -> None:
    """Issue 9 (low): the node password had no minimum length."""
    with pytest.raises(KeystoreError, match="at least 8 characters"):
        Node.init(tmp_path / "short", "1234567", kdf=KdfProfile.TESTING)
    assert not (tmp_path / "short" / "keystore.bin").exists()
    Node.init(tmp_path / "long", "12345678", kdf=KdfProfile.TESTING).close()
