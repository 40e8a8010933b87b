"""A document's key family is bound into its id and its Automerge actors to their authors.

Each attack from issue 9 (items 2 and 3) is performed by a member crafting entries by hand, and
shown failing: a backdated change under ``default`` in a ``confidential`` document, a change
under a key nobody holds, a forged (actor, seq) racing the honest change on two nodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest
from helpers import copy_tenant, seal_entry

from mindoo_p2p.crdt import AutomergeDocument, ChangeIdentity, change_identity
from mindoo_p2p.crypto import aead
from mindoo_p2p.crypto.signing import SigningKeyPair
from mindoo_p2p.database import Database
from mindoo_p2p.document_heads import entry_heads, head_mismatch
from mindoo_p2p.document_identity import (
    BOUND_ACTOR_SIZE,
    FAMILY_TAG_SIZE,
    actor_error,
    bound_actor,
    family_tag,
)
from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.errors import MindooError, MissingKeyError
from mindoo_p2p.keyring import MEMBERSHIP_KEY
from mindoo_p2p.materializer import DocumentMaterializer, MaterializedDocument
from mindoo_p2p.node import Node
from mindoo_p2p.tenant import Tenant
from mindoo_p2p.testing import Cluster, ConvergenceError

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
SECRET = "merger terms 4471"


def forge(
    node: Node,
    tenant: Tenant,
    database: str,
    document_id: bytes,
    payload: bytes,
    *,
    key_id: bytes | None = None,
    secret: bytes | None = None,
    deps: Sequence[bytes] = (),
    timestamp_ms: int = 1,
    after: Entry | None = None,
) -> Entry:
    """A CHANGE entry crafted by hand by ``node``'s user (a member): sealed under its default
    key unless ``key_id``/``secret`` say otherwise, backdated to ``timestamp_ms``; next in the
    author's chain after what ``node`` stores, or after ``after`` (an entry forged before and
    not stored there), so that several forged entries are not fork evidence."""
    mine = node.tenant(tenant.name)
    default = mine.keyring.current("default")
    signer = mine.identity.signing
    if after is None:
        seq = node.store.next_author_seq(tenant.id, signer.public_key)
        prev = node.store.last_entry_id(tenant.id, signer.public_key)
    else:
        seq, prev = after.header.author_seq + 1, after.id
    return seal_entry(
        tenant_id=tenant.id,
        database=database,
        author=signer,
        author_seq=seq,
        prev=prev,
        timestamp_ms=timestamp_ms,
        key_id=key_id or default.key_id,
        key=secret or default.secret,
        payload=payload,
        kind=EntryKind.CHANGE,
        document_id=document_id,
        deps=deps,
    )


def own_change(author: bytes, field: str, value: str, base: Sequence[bytes] = ()) -> bytes:
    """An Automerge change setting ``field`` written as a bound actor of ``author``."""
    doc = AutomergeDocument(bound_actor(author))
    doc.apply_changes(list(base))
    with doc.change() as root:
        root[field] = value
    assert doc.last_change is not None
    return doc.last_change.bytes


def key_ids(db: Database, document_id: str) -> list[bytes]:
    store, tenant = db.tenant.store, db.tenant
    return [
        e.header.key_id
        for _, e in store.document_entries(tenant.id, db.name, bytes.fromhex(document_id))
    ]


def test_document_id_carries_its_key_family(make_node: MakeNode) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    tenant.create_key("confidential")
    notes = tenant.create_db("notes")
    plain, secret = notes.create_document({"a": 1}), notes.create_document(key="confidential")
    membership = tenant.keyring.current(MEMBERSHIP_KEY).secret
    assert bytes.fromhex(plain)[:FAMILY_TAG_SIZE] == family_tag(tenant.id, "default", membership)
    assert bytes.fromhex(secret)[:FAMILY_TAG_SIZE] == family_tag(
        tenant.id, "confidential", membership
    )
    # Without the membership key, a guessed family name cannot be tested against an id.
    assert family_tag(tenant.id, "default", os.urandom(32)) != family_tag(
        tenant.id, "default", membership
    )
    # Local changes write as an actor bound to this node's key.
    change = notes._docs.load(bytes.fromhex(plain)).doc.get_changes()[0]
    assert len(change.actor) == BOUND_ACTOR_SIZE
    assert (
        actor_error(change.actor, tenant.identity.signing.public_key, bound_document=True) is None
    )


def test_backdated_default_change_cannot_hijack_a_confidential_document(
    make_node: MakeNode,
) -> None:
    admin, member, late = make_node("admin"), make_node("member"), make_node("late")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    late.join(admin.invite(tenant, late.public_identity()))
    tenant.create_key("confidential")
    late.import_key(admin.export_key(tenant, "confidential", to=late.public_identity()))
    doc_id = tenant.create_db("notes").create_document({"text": SECRET}, key="confidential")
    copy_tenant(admin, member, tenant)

    # The member holds only `default`: it plants a backdated root change under it.
    signing_key = member.tenant("acme").identity.signing.public_key
    planted = forge(
        member, tenant, "notes", bytes.fromhex(doc_id), own_change(signing_key, "text", "mine")
    )
    assert not admin.ingest([planted.raw]).rejected

    # A node syncing from scratch gets the backdated entry first (it sorts first by time).
    late.ingest([e.raw for e in admin.store.iter_entries(tenant.id) if e.database != "notes"])
    assert not late.ingest([planted.raw]).rejected
    copy_tenant(admin, late, tenant)
    notes = late.tenant("acme").create_db("notes")
    assert notes.get(doc_id) == {"text": SECRET}
    # Its own edits stay sealed under `confidential`, never readable to the member.
    notes.update(doc_id, {"more": "also secret"})
    confidential = late.tenant("acme").keyring.current("confidential").key_id
    assert key_ids(notes, doc_id)[-1] == confidential
    assert notes.skipped_entries(doc_id) == {
        planted.id.hex(): "sealed under key 'default', but the document is under 'confidential'"
    }
    assert tenant.create_db("notes").get(doc_id) == {"text": SECRET}
    copy_tenant(late, admin, tenant)
    assert tenant.create_db("notes").get(doc_id) == {"text": SECRET, "more": "also secret"}


def test_a_change_under_a_key_nobody_holds_leaves_the_document_readable(
    make_node: MakeNode,
) -> None:
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key("confidential")
    notes = tenant.create_db("notes")
    doc_id = notes.create_document({"text": "hello"})
    copy_tenant(admin, member, tenant)
    document = bytes.fromhex(doc_id)
    signing_key = member.tenant("acme").identity.signing.public_key
    nobodys = os.urandom(16)
    unknown = forge(
        member,
        tenant,
        "notes",
        document,
        own_change(signing_key, "x", "1"),
        key_id=nobodys,
        secret=aead.random_key(),
    )
    # A key id of another family (announced, held by the admin only) with garbage inside, and
    # the document's own key id with a ciphertext that does not open.
    confidential = tenant.keyring.current("confidential").key_id
    other_family = forge(
        member,
        tenant,
        "notes",
        document,
        b"garbage",
        key_id=confidential,
        secret=aead.random_key(),
        after=unknown,
    )
    default = tenant.keyring.current("default").key_id
    undecryptable = forge(
        member,
        tenant,
        "notes",
        document,
        b"garbage",
        key_id=default,
        secret=aead.random_key(),
        after=other_family,
    )
    for entry in (unknown, other_family, undecryptable):
        assert not admin.ingest([entry.raw]).rejected
    copy_tenant(admin, member, tenant)
    for node in (admin, member):
        db = node.tenant("acme").create_db("notes")
        assert db.get(doc_id) == {"text": "hello"}
        assert db.skipped_entries(doc_id) == {
            unknown.id.hex(): f"no key {nobodys.hex()} on this node",
            other_family.id.hex(): "sealed under key 'confidential', but the document is under"
            " 'default'",
            undecryptable.id.hex(): "does not decrypt under key 'default'",
        }
        db.update(doc_id, {"by": str(node.home)})
        assert key_ids(db, doc_id)[-1] == default


def squat_race(admin: Node, member: Node, other: Node, tenant: Tenant) -> tuple[str, Entry]:
    """The member forges the admin's next (actor, seq) in a new document; ``other`` sees the
    forgery before the honest change, the admin the honest change first. Returns the
    document id and the forged entry."""
    notes = tenant.create_db("notes")
    doc_id = notes.create_document({"v": "first"})
    copy_tenant(admin, member, tenant)
    copy_tenant(admin, other, tenant)
    ((_, created),) = admin.store.document_entries(tenant.id, "notes", bytes.fromhex(doc_id))
    first = created.decrypt(tenant.keyring.current("default").secret)
    honest_actor = change_identity(first).actor
    notes.update(doc_id, {"v": "honest"})
    honest = admin.store.document_entries(tenant.id, "notes", bytes.fromhex(doc_id))[-1][1]
    squatter = AutomergeDocument(honest_actor)
    squatter.apply_changes([first])
    with squatter.change() as root:
        root["v"] = "forged"
    assert squatter.last_change is not None and squatter.last_change.seq == 2
    forged = forge(
        member,
        tenant,
        "notes",
        bytes.fromhex(doc_id),
        squatter.last_change.bytes,
        deps=[created.id],
        timestamp_ms=created.timestamp_ms,
    )
    assert not other.ingest([forged.raw]).rejected
    assert not other.ingest([honest.raw]).rejected
    assert not admin.ingest([forged.raw]).rejected
    return doc_id, forged


def test_a_forged_actor_change_racing_the_honest_one_is_refused_on_every_node(
    make_node: MakeNode,
) -> None:
    admin, member, other = make_node("admin"), make_node("member"), make_node("other")
    tenant = admin.create_tenant("acme")
    for node in (member, other):
        node.join(admin.invite(tenant, node.public_identity()))
    doc_id, forged = squat_race(admin, member, other, tenant)
    views = [node.tenant("acme").create_db("notes") for node in (admin, other)]
    assert [db.get(doc_id) for db in views] == [{"v": "honest"}, {"v": "honest"}]
    heads = [db._docs.load(bytes.fromhex(doc_id)).doc.heads() for db in views]
    assert heads[0] == heads[1]
    actor = change_identity(forged.decrypt(tenant.keyring.current("default").secret)).actor
    reason = f"automerge actor {actor.hex()} belongs to another author than the entry's"
    for db in views:
        assert db.skipped_entries(doc_id) == {forged.id.hex(): reason}
    # fsck names the document (its entries end at the forgery, which is not applied) in a
    # notice: the rules explain it, so it is no damage.
    for node in (admin, other):
        report = node.fsck()
        assert report.ok
        lines = [n.reason for n in report.notices]
        assert len(lines) == 1 and lines[0].startswith(f"notes: document {doc_id}: ")
        assert f"{forged.id.hex()[:16]}: {reason}" in lines[0]


async def test_the_cluster_compares_document_heads_once_entries_agree(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Equal entry sets, different documents (what actor squatting did before actors were
    bound): the convergence check must say so. Shown with a replica made to drop a change
    for no reason the rules give."""
    await cluster.start(2)
    cluster.create_tenant("acme")
    admin, other = cluster.nodes[0].require(), cluster.nodes[1].require()
    tenant = admin.tenant("acme")
    notes = tenant.create_db("notes")
    doc_id = notes.create_document({"v": 1})
    notes.update(doc_id, {"v": 2})
    copy_tenant(admin, other, tenant)
    await cluster.wait_converged(timeout=10)

    dropped = admin.store.document_entries(tenant.id, "notes", bytes.fromhex(doc_id))[-1][1]
    original = DocumentMaterializer._open_change

    def drops_one(
        self: DocumentMaterializer, md: MaterializedDocument, entry: Entry
    ) -> tuple[bytes, ChangeIdentity] | None:
        if entry.id == dropped.id and self._store is other.store:
            return None
        return original(self, md, entry)

    monkeypatch.setattr(DocumentMaterializer, "_open_change", drops_one)
    with pytest.raises(ConvergenceError, match=f"document {doc_id} of acme/notes has different"):
        await cluster.wait_converged(timeout=10)


def test_an_author_equivocating_on_its_own_actor_seq_gets_both_changes_skipped(
    make_node: MakeNode,
) -> None:
    """Two changes of one author as one (actor, seq) with different content: Automerge would
    keep whichever arrives first, so two replicas would differ. Both are skipped instead."""
    admin, member, other = make_node("admin"), make_node("member"), make_node("other")
    tenant = admin.create_tenant("acme")
    for node in (member, other):
        node.join(admin.invite(tenant, node.public_identity()))
    doc_id = tenant.create_db("notes").create_document({"v": "first"})
    copy_tenant(admin, member, tenant)
    copy_tenant(admin, other, tenant)
    ((_, created),) = admin.store.document_entries(tenant.id, "notes", bytes.fromhex(doc_id))
    first = created.decrypt(tenant.keyring.current("default").secret)
    actor = bound_actor(member.tenant("acme").identity.signing.public_key)
    twins = []
    for value in ("left", "right"):
        doc = AutomergeDocument(actor)
        doc.apply_changes([first])
        with doc.change() as root:
            root["v"] = value
        assert doc.last_change is not None
        twin = forge(
            member,
            tenant,
            "notes",
            bytes.fromhex(doc_id),
            doc.last_change.bytes,
            deps=[created.id],
            timestamp_ms=created.timestamp_ms + 1,
        )
        assert not member.ingest([twin.raw]).rejected
        twins.append(twin)
    for node, order in ((admin, twins), (other, twins[::-1])):
        db = node.tenant("acme").create_db("notes")
        for twin in order:
            assert not node.ingest([twin.raw]).rejected
            db.get(doc_id)
    views = [node.tenant("acme").create_db("notes") for node in (admin, other)]
    assert [db.get(doc_id) for db in views] == [{"v": "first"}, {"v": "first"}]
    reason = f"automerge actor {actor.hex()} seq 1 is claimed by 2 different changes"
    for db in views:
        assert db.skipped_entries(doc_id) == {t.id.hex(): reason for t in twins}


def test_one_change_in_two_entries_is_applied_once(make_node: MakeNode) -> None:
    """An author sealing its own change twice: applied once, the later copy skipped (fsck
    notes it, no problem)."""
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    doc_id = tenant.create_db("notes").create_document({"v": 1})
    copy_tenant(admin, member, tenant)
    ((_, created),) = admin.store.document_entries(tenant.id, "notes", bytes.fromhex(doc_id))
    first = created.decrypt(tenant.keyring.current("default").secret)
    signing_key = member.tenant("acme").identity.signing.public_key
    change = own_change(signing_key, "w", "x", base=[first])
    copies = []
    for _ in range(2):
        copy = forge(member, tenant, "notes", bytes.fromhex(doc_id), change, deps=[created.id])
        assert not member.ingest([copy.raw]).rejected
        copies.append(copy)
    assert not admin.ingest([copies[0].raw]).rejected
    notes = tenant.create_db("notes")
    assert notes.get(doc_id) == {"v": 1, "w": "x"}
    assert not admin.ingest([copies[1].raw]).rejected
    assert notes.get(doc_id) == {"v": 1, "w": "x"}
    assert notes.skipped_entries(doc_id) == {
        copies[1].id.hex(): "carries an Automerge change that an earlier entry carries already"
    }
    report = admin.fsck()
    assert report.ok and len(report.notices) == 1


def test_legacy_documents_keep_working_and_refuse_ambiguous_roots(make_node: MakeNode) -> None:
    """A document written before ids were bound (random id, random actors) reads and takes
    changes as before; one whose roots are under two families refuses new writes."""
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key("confidential")
    legacy_id = os.urandom(16)
    legacy = AutomergeDocument()  # a random 16-byte actor, as before
    with legacy.change() as root:
        root["text"] = "old"
    assert legacy.last_change is not None
    secret = tenant.keyring.current("confidential")
    created = forge(
        admin,
        tenant,
        "notes",
        legacy_id,
        legacy.last_change.bytes,
        key_id=secret.key_id,
        secret=secret.secret,
        timestamp_ms=1000,
    )
    assert not admin.ingest([created.raw]).rejected
    notes = tenant.create_db("notes")
    assert notes.get(legacy_id.hex()) == {"text": "old"}
    notes.update(legacy_id.hex(), {"more": "new"})
    assert key_ids(notes, legacy_id.hex())[-1] == secret.key_id
    assert notes.get(legacy_id.hex()) == {"text": "old", "more": "new"}

    # A member adds a second root under `default`: which key is genuine cannot be told.
    copy_tenant(admin, member, tenant)
    signing_key = member.tenant("acme").identity.signing.public_key
    planted = forge(member, tenant, "notes", legacy_id, own_change(signing_key, "p", "x"))
    assert not admin.ingest([planted.raw]).rejected
    with pytest.raises(MindooError, match="first changes are under different keys"):
        notes.update(legacy_id.hex(), {"leak": "no"})
    assert key_ids(notes, legacy_id.hex())[-1] == planted.header.key_id


def test_head_mismatch_names_what_is_not_applied_and_why() -> None:
    """The pure check behind fsck's lines: entry heads against the entries carrying the
    materialized heads; what the reading rules do not explain is a problem."""

    def entry(deps: Sequence[bytes] = ()) -> Entry:
        return forge_raw(SigningKeyPair.generate(), deps)

    root = entry()
    child, stray = entry([root.id]), entry([root.id])
    assert entry_heads([root, child, stray]) == {child.id, stray.id}
    document = root.document_id
    assert head_mismatch(document, [root, child], [child.id], {}, waiting=False) is None
    unexplained = head_mismatch(document, [root, child, stray], [child.id], {}, waiting=False)
    assert unexplained is not None and not unexplained.explained
    assert unexplained.line.endswith(
        f"{stray.id.hex()[:16]}: not applied, for no reason the reading rules give"
    )
    waiting = head_mismatch(document, [root, child, stray], [child.id], {}, waiting=True)
    assert waiting is not None and waiting.explained
    assert "waits for a change that is not here" in waiting.line
    skipped = head_mismatch(
        document, [root, child, stray], [child.id], {stray.id: "bad actor"}, waiting=False
    )
    assert skipped is not None and skipped.explained
    assert f"{stray.id.hex()[:16]}: bad actor" in skipped.line


def forge_raw(signer: SigningKeyPair, deps: Sequence[bytes]) -> Entry:
    return seal_entry(
        tenant_id=bytes(16),
        database="notes",
        author=signer,
        author_seq=1,
        timestamp_ms=1,
        key_id=bytes(16),
        key=bytes(32),
        payload=b"x",
        document_id=bytes(range(16)),
        deps=deps,
    )


def test_a_document_read_before_its_family_was_announced_is_bound_once_it_is(
    make_node: MakeNode,
) -> None:
    """A node that gets a document's entries before the announcement of its key family reads
    it under the legacy rule (and refuses to write to it); once the announcement is in, the
    document's next entry makes it read under its family's rule."""
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key("confidential")
    doc_id = tenant.create_db("notes").create_document({"text": SECRET}, key="confidential")
    signing_key = member.tenant("acme").identity.signing.public_key
    planted = forge(
        member, tenant, "notes", bytes.fromhex(doc_id), own_change(signing_key, "text", "mine")
    )
    notes_entries = [e.raw for e in admin.store.iter_entries(tenant.id) if e.database == "notes"]
    assert not member.ingest([*notes_entries, planted.raw]).rejected
    notes = member.tenant("acme").create_db("notes")
    assert notes.get(doc_id) == {"text": "mine"}  # it cannot tell yet
    with pytest.raises(MindooError, match="first changes are under different keys"):
        notes.update(doc_id, {"leak": "no"})

    assert not admin.ingest([planted.raw]).rejected
    tenant.create_db("notes").update(doc_id, {"more": 1})
    copy_tenant(admin, member, tenant)  # the announcement, then the document's next entry
    with pytest.raises(MissingKeyError, match="no key 'confidential' for this document"):
        notes.get(doc_id)
    member.import_key(admin.export_key(tenant, "confidential", to=member.public_identity()))
    assert notes.get(doc_id) == {"text": SECRET, "more": 1}
    assert list(notes.skipped_entries(doc_id)) == [planted.id.hex()]
