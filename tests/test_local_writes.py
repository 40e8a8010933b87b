"""One author, one sequence, whatever the processes (issue 8, item 8).

Several processes that open one node home (a daemon, the CLI, a script) all write as the home's
user: their entries must never share a (tenant, author, author_seq), and each author's numbers
must be exactly 1..N. Real processes (tests/home_writer_worker.py) write at once; the rest of
the file checks the write paths of one process: batches with several changes to one document,
failed batches, a write after another process wrote, and membership another process changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD

import mindoo_p2p
from mindoo_p2p import admission
from mindoo_p2p.crdt import change_hash
from mindoo_p2p.database import parse_document_id
from mindoo_p2p.entry import TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import DocumentDeletedError, MindooError, OwnEntryRefusedError, StoreError
from mindoo_p2p.identity import UserIdentity
from mindoo_p2p.materializer import DocumentMaterializer
from mindoo_p2p.node import Node
from mindoo_p2p.rejection import RejectionKind
from mindoo_p2p.store import EntryStore
from mindoo_p2p.tenant_access import TenantAccess

MakeNode = Callable[[str], Node]
WORKER = Path(__file__).with_name("home_writer_worker.py")


def start_worker(home: Path, *args: str) -> subprocess.Popen[bytes]:
    root = str(Path(mindoo_p2p.__file__).parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(home), PASSWORD, "acme", "notes", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )


def run_together(workers: list[subprocess.Popen[bytes]]) -> list[list[str]]:
    """Wait until every worker is ready, start them at once, return each one's output lines."""
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
        worker.stdin.flush()
    outputs = []
    for worker in workers:
        out, _ = worker.communicate(timeout=150)
        assert worker.returncode == 0
        lines = out.decode().split()
        assert lines[-1] == "done"
        outputs.append(lines[:-1])
    return outputs


def sequences_by_author(store: EntryStore, tenant_id: bytes) -> dict[bytes, list[int]]:
    found: dict[bytes, list[int]] = defaultdict(list)
    for entry in store.iter_entries(tenant_id):
        found[entry.author].append(entry.header.author_seq)
    return found


def assert_one_sequence_per_author(store: EntryStore, tenant_id: bytes) -> dict[bytes, int]:
    """No two entries share (tenant, author, author_seq), and each author's are exactly 1..N.
    Returns N per author."""
    counts = {}
    for author, seqs in sequences_by_author(store, tenant_id).items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), author.hex()
        counts[author] = len(seqs)
    return counts


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_processes_writing_at_once_to_one_home_never_fork_an_author(
    make_node: MakeNode,
) -> None:
    node = make_node("home")
    tenant = node.create_tenant("acme")
    tenant.create_db("notes")
    documents, members = 30, 4
    workers = [
        start_worker(node.home, "--tag", "a", "--documents", str(documents), "--batch", "5"),
        start_worker(node.home, "--tag", "b", "--documents", str(documents), "--batch", "3"),
        start_worker(
            node.home,
            *("--tag", "c", "--documents", str(documents), "--batch", "1"),
            *("--members", str(members)),
        ),
    ]
    # This process writes too, while they run (the daemon of the issue).
    db = tenant.create_db("notes")
    mine = db.create_document({"tag": "main"})
    outputs = run_together(workers)
    for n in range(20):
        db.update(mine, {"n": n})

    counts = assert_one_sequence_per_author(node.store, tenant.id)
    me, admin = tenant.identity.signing.public_key, tenant.admin_key
    # Three entries per worker document, 21 here; the admin added this node and 4 members,
    # and announced the default and membership keys.
    assert counts == {me: 3 * 3 * documents + 21, admin: 3 + members}
    assert node.fsck().ok
    for tag, created in zip("abc", outputs, strict=True):
        assert len(created) == documents
        for n, doc_id in enumerate(created):
            assert db.get(doc_id) == {"tag": tag, "n": n + 1, "done": True}
            first, second, third = db.history(doc_id)
            assert (second.deps, third.deps) == ((first.entry_id,), (second.entry_id,))
    assert db.get(mine) == {"tag": "main", "n": 19}
    assert len(tenant.members()) == 1 + members


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_write_after_another_process_wrote_the_same_document(make_node: MakeNode) -> None:
    node = make_node("home")
    db = node.create_tenant("acme").create_db("notes")
    doc_id = db.create_document({"a": 1})
    db.update(doc_id, {"b": 2})  # this process's caches are warm
    (output,) = run_together([start_worker(node.home, "--tag", "other", "--update", doc_id)])
    assert output == []
    db.update(doc_id, {"c": 3})
    assert db.get(doc_id) == {"a": 1, "b": 2, "other": True, "c": 3}
    history = db.history(doc_id)
    me = node.tenant("acme").identity.signing.public_key
    assert [h.author for h in history] == [me.hex()] * 4
    # Built on the other process's change, and (Automerge's rule) on this actor's previous one.
    assert set(history[-1].deps) == {history[1].entry_id, history[2].entry_id}
    tenant_id = node.tenant("acme").id
    assert sequences_by_author(node.store, tenant_id)[me] == [
        1,
        2,
        3,
        4,
    ]
    node.close()
    with Node.open(node.home, PASSWORD) as again:
        assert again.tenant("acme").create_db("notes").get(doc_id) == {
            "a": 1,
            "b": 2,
            "other": True,
            "c": 3,
        }


def test_a_change_after_another_writer_built_on_this_ones_last_change(
    make_node: MakeNode,
) -> None:
    """Automerge makes a local change depend on its actor's previous change even when another
    writer's change on top of it is now the only head: that dependency was looked up among the
    heads only, and the write failed with KeyError (the daemon's "internal error" of issue 8)."""
    alice = make_node("alice")
    tenant = alice.create_tenant("acme")
    bob = make_node("bob")
    bob.join(alice.invite(tenant, bob.public_identity()))
    notes = tenant.create_db("notes")
    doc_id = notes.create_document({"n": 0})
    notes.update(doc_id, {"n": 1})
    bob.ingest([e.raw for e in alice.store.iter_entries(tenant.id, "notes")])
    bob.tenant("acme").create_db("notes").update(doc_id, {"bob": True})
    alice.ingest([e.raw for e in bob.store.iter_entries(tenant.id, "notes")])
    notes.update(doc_id, {"n": 2})
    assert notes.get(doc_id) == {"n": 2, "bob": True}
    _, changed, by_bob, latest = notes.history(doc_id)
    assert set(latest.deps) == {changed.entry_id, by_bob.entry_id}

    # A dependency this cache has no entry id for (it is no head and not its last change) is
    # found among the document's stored entries; a change nobody stored is a clear error.
    fresh = DocumentMaterializer(alice.store, tenant.id, "notes", tenant.keyring)
    md = fresh.load(bytes.fromhex(doc_id))
    stored = alice.store.get(bytes.fromhex(changed.entry_id))
    assert stored is not None
    assert fresh.dependencies(md, [change_hash(fresh.decrypt(stored))]) == (stored.id,)
    with pytest.raises(MindooError, match="no stored entry carries change"):
        fresh.dependencies(md, [bytes(32)])


def test_a_batch_may_change_one_document_several_times_and_delete_another(
    make_node: MakeNode,
) -> None:
    node = make_node("home")
    tenant = node.create_tenant("acme")
    db = tenant.create_db("notes")
    with db.batch():
        doc_id = db.create_document({"n": 0})
        db.update(doc_id, {"n": 1})
        with db.change(doc_id) as doc:
            doc["n"] = 2
        assert db.get(doc_id) == {"n": 2}  # the batch reads its own writes
        gone = db.create_document({"x": 1})
        db.update(gone, {"x": 2})
        db.delete(gone)
        assert not db.exists(gone)
        with pytest.raises(DocumentDeletedError):
            db.update(gone, {"x": 3})
        assert node.store.count() == 3  # only the tenant log: nothing sealed yet
    first, second, third = db.history(doc_id)
    assert (first.deps, second.deps, third.deps) == ((), (first.entry_id,), (second.entry_id,))
    created, changed, deleted = db.history(gone)
    assert deleted.kind == "delete" and deleted.deps == (changed.entry_id,)
    assert changed.deps == (created.entry_id,)
    assert db.get(doc_id) == {"n": 2} and not db.exists(gone)
    db.update(doc_id, {"n": 3})  # the cache learnt the entry ids of the batch's changes
    assert db.history(doc_id)[-1].deps == (third.entry_id,)
    assert (
        assert_one_sequence_per_author(node.store, tenant.id)[tenant.identity.signing.public_key]
        == 7
    )
    node.close()
    with Node.open(node.home, PASSWORD) as again:
        reopened = again.tenant("acme").create_db("notes")
        assert reopened.get(doc_id) == {"n": 3} and not reopened.exists(gone)


def test_after_a_batch_each_document_knows_the_entry_of_its_last_change(
    make_node: MakeNode,
) -> None:
    """The heads' entry ids are brought up to date once per document and write, after its
    last drafted change is stored: with documents interleaved in the batch (one of them
    built on another writer's change), the next change of each names its last entry."""
    node = make_node("home")
    notes = node.create_tenant("acme").create_db("notes")
    a, b = notes.create_document({"n": 0}), notes.create_document({"n": 0})
    with Node.open(node.home, PASSWORD) as other:
        other.tenant("acme").create_db("notes").update(b, {"other": True})
    with notes.batch():
        for n in range(1, 4):
            notes.update(a, {"n": n})
            if n < 3:
                notes.update(b, {"n": n})
    for document_id in (a, b):  # the first batch's changes were all taken into the heads
        md = notes._docs.load(parse_document_id(document_id))
        assert md.drafted_changes == set()
        assert md.stored_not_in_heads == {}
        assert set(md.heads_to_entries) == set(md.doc.heads())
    with notes.batch():
        notes.update(a, {"n": 4})
        notes.update(b, {"n": 3})
    *_, a_last, a_next = notes.history(a)
    assert a_next.deps == (a_last.entry_id,)
    *_, b_last, b_next = notes.history(b)
    assert b_next.deps == (b_last.entry_id,)
    assert notes.get(b) == {"n": 3, "other": True}
    for document_id, last in ((a, a_next), (b, b_next)):
        md = notes._docs.load(parse_document_id(document_id))
        assert md.stored_not_in_heads == {}
        assert md.heads_to_entries == {md.doc.heads()[0]: bytes.fromhex(last.entry_id)}


def test_an_interrupted_callback_after_the_commit_leaves_no_document_stale(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding (first-touch, LOW): an exception from an own draft's ``on_sealed``
    after the commit (a KeyboardInterrupt) left its document's cache expecting a change it
    had not been told was stored: every later write of that document then failed with
    UnresolvedDependencyError. The caches the callbacks did not reach are dropped."""
    node = make_node("home")
    notes = node.create_tenant("acme").create_db("notes")
    a, b = notes.create_document({"n": 0}), notes.create_document({"n": 0})
    real = DocumentMaterializer.note_local_sealed
    calls = 0

    def interrupted(self: DocumentMaterializer, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        real(self, *args)

    monkeypatch.setattr(DocumentMaterializer, "note_local_sealed", interrupted)
    with pytest.raises(KeyboardInterrupt), notes.batch():
        notes.update(a, {"n": 1})
        notes.update(b, {"n": 1})
        notes.update(a, {"n": 2})
    monkeypatch.setattr(DocumentMaterializer, "note_local_sealed", real)
    assert notes.get(a) == {"n": 2} and notes.get(b) == {"n": 1}  # stored
    notes.update(a, {"n": 3})
    notes.update(b, {"n": 2})
    assert notes.get(a) == {"n": 3} and notes.get(b) == {"n": 2}
    *_, last, after = notes.history(a)
    assert after.deps == (last.entry_id,)


def test_an_interrupted_callback_after_the_commit_still_publishes_what_was_stored(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding (final, LOW): an own draft's ``on_sealed`` raising after the commit
    skipped ``on_committed``: a stored member was not in the published membership and the
    listeners were not told. Publishing no longer depends on the callbacks."""
    node = make_node("home")
    tenant = node.create_tenant("acme")
    told: list[tuple[int, bool]] = []
    node.add_listener(lambda entries, local: told.append((len(entries), local)))
    real = TenantAccess.write_record

    def interrupted(
        self: TenantAccess, record: Any, author: Any = None, *, on_sealed: Any = None
    ) -> None:
        def raising(entry: Entry) -> None:
            if on_sealed is not None:
                on_sealed(entry)
            raise KeyboardInterrupt

        real(self, record, author, on_sealed=raising)

    monkeypatch.setattr(TenantAccess, "write_record", interrupted)
    before = len(tenant.members())
    with pytest.raises(KeyboardInterrupt):
        tenant.add_member(UserIdentity.generate("bob").public())
    assert len(tenant.members()) == before + 1  # published without another write
    assert told == [(1, True)]


def test_a_batch_that_raises_stores_nothing_and_leaves_no_gap(make_node: MakeNode) -> None:
    node = make_node("home")
    tenant = node.create_tenant("acme")
    db = tenant.create_db("notes")
    doc_id = db.create_document({"n": 0})
    stored = node.store.count()
    with pytest.raises(RuntimeError, match="app failed"), db.batch():
        db.update(doc_id, {"n": 1})
        db.update(doc_id, {"n": 2})
        db.create_document({"lost": True})
        raise RuntimeError("app failed")
    assert node.store.count() == stored
    assert db.get(doc_id) == {"n": 0}  # the cache dropped what never reached the store
    db.update(doc_id, {"n": 5})
    assert db.get(doc_id) == {"n": 5}
    me = tenant.identity.signing.public_key  # this node's key in the tenant
    assert sequences_by_author(node.store, tenant.id)[me] == [1, 2]


def test_a_tenant_log_change_that_returns_its_entry_is_refused_inside_a_batch(
    make_node: MakeNode,
) -> None:
    node = make_node("home")
    tenant = node.create_tenant("acme")
    db = tenant.create_db("notes")
    stored = node.store.count()
    with pytest.raises(MindooError, match="outside a write batch"), db.batch():
        db.create_document({"n": 0})
        tenant.add_member(UserIdentity.generate("bob").public())
    assert node.store.count() == stored
    with db.batch():  # records that return nothing may be written in a batch
        tenant.create_key("confidential")
        db.create_document({"n": 1}, key="confidential")
    assert "confidential" in tenant.key_names()
    assert len(list(node.store.iter_entries(tenant.id, TENANT_LOG))) == stored + 1


def test_a_revocation_stored_by_another_process_stops_this_ones_writes(
    make_node: MakeNode,
) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    member = make_node("member")
    member.join(admin.invite(tenant, member.public_identity()))
    db = member.tenant("acme").create_db("notes")
    doc_id = db.create_document({"n": 0})
    admin.ingest([e.raw for e in member.store.iter_entries(tenant.id, "notes")])
    tenant.revoke_member(member.public_identity())  # accepts the member's entries so far

    # Another process of the member's home (here a second Node on it) stores the revocation;
    # this one loaded its membership before.
    with Node.open(member.home, PASSWORD) as other:
        other.ingest([e.raw for e in admin.store.iter_entries(tenant.id, TENANT_LOG)])
    stored = member.store.count()
    with pytest.raises(OwnEntryRefusedError, match="refused by the store"):
        db.update(doc_id, {"n": 1})
    assert member.store.count() == stored
    assert not member.tenant("acme").membership.is_member(member.identity.signing.public_key)
    assert db.get(doc_id) == {"n": 0}
    assert [e.kind for e in member.store.iter_entries(tenant.id, "notes")] == [EntryKind.CHANGE]


def test_a_member_added_through_another_process_is_admitted_by_this_one(
    make_node: MakeNode,
) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    member = make_node("member")
    member.join(admin.invite(tenant, member.public_identity()))
    member.tenant("acme")  # this process loaded the membership before carol was added
    carol = make_node("carol")
    carol.join(admin.invite(tenant, carol.public_identity()))
    with Node.open(member.home, PASSWORD) as other:  # the ADD reaches the home elsewhere
        other.ingest([e.raw for e in admin.store.iter_entries(tenant.id, TENANT_LOG)])
    carol.tenant("acme").create_db("notes").create_document({"by": "carol"})
    result = member.ingest([e.raw for e in carol.store.iter_entries(tenant.id, "notes")])
    assert result.rejected == [] and len(result.added) == 1
    assert member.tenant("acme").membership.is_member(carol.identity.signing.public_key)


def test_keys_created_by_two_processes_are_both_kept_in_the_keystore(
    make_node: MakeNode,
) -> None:
    node = make_node("home")
    tenant = node.create_tenant("acme")
    with Node.open(node.home, PASSWORD) as other:  # opened before either key exists
        tenant.create_key("first")
        other.tenant("acme").create_key("second")  # saved its keyring without "first"
        assert {"first", "second"} <= {k.name for k in other.tenant("acme").keyring}
    tenant.create_db("later")  # a save here keeps "second" and learns it
    assert {"first", "second"} <= {k.name for k in tenant.keyring}
    node.close()
    with Node.open(node.home, PASSWORD) as again:
        acme = again.tenant("acme")
        assert {"first", "second"} <= {k.name for k in acme.keyring}
        assert "later" in acme.databases()
        notes = acme.create_db("notes")
        doc_id = notes.create_document({"x": 1}, key="first")
        assert notes.get(doc_id) == {"x": 1}


def test_a_key_rotated_by_another_process_is_used_by_this_ones_next_write(
    make_node: MakeNode,
) -> None:
    node = make_node("home")
    tenant = node.create_tenant("acme")
    tenant.create_key("confidential")
    notes = tenant.create_db("notes")
    plain = notes.create_document({"n": 0})
    secret = notes.create_document({"n": 0}, key="confidential")
    with Node.open(node.home, PASSWORD) as other:
        default_v2 = other.tenant("acme").rotate_key("default")
        confidential_v2 = other.tenant("acme").rotate_key("confidential")
    notes.update(plain, {"n": 1})
    notes.update(secret, {"n": 1})
    fresh = notes.create_document({"n": 0})

    def key_ids(doc_id: str) -> list[bytes]:
        stored = node.store.document_entries(tenant.id, "notes", bytes.fromhex(doc_id))
        return [entry.header.key_id for _, entry in stored]

    assert key_ids(plain)[-1] == default_v2.key_id
    assert key_ids(secret)[-1] == confidential_v2.key_id
    assert key_ids(fresh) == [default_v2.key_id]
    assert notes.get(secret) == {"n": 1}


def test_a_batch_reads_what_another_handle_wrote_to_a_document_since_the_last_batch(
    make_node: MakeNode,
) -> None:
    """A batch's first touch of a document it wrote in the batch before does not read that
    batch's entries back (the store's own rows); what another handle on the home stored for
    the document after that batch, or during it (after the batch's first read of it, before
    its commit), is read all the same."""
    node = make_node("home")
    notes = node.create_tenant("acme").create_db("notes")
    doc_id = notes.create_document({"n": 0})
    with Node.open(node.home, PASSWORD) as other:
        theirs = other.tenant("acme").create_db("notes")
        with notes.batch():
            notes.update(doc_id, {"n": 1})
            notes.update(doc_id, {"n": 2})
        theirs.update(doc_id, {"after": 1})
        with notes.batch():
            notes.update(doc_id, {"n": 3})
            assert notes.get(doc_id) == {"n": 3, "after": 1}
            theirs.update(doc_id, {"during": 1})
            notes.update(doc_id, {"n": 4})
        with notes.batch():
            notes.update(doc_id, {"n": 5})
            assert notes.get(doc_id) == {"n": 5, "after": 1, "during": 1}
        with notes.batch():
            notes.update(doc_id, {"n": 6})
        assert theirs.get(doc_id) == {"n": 6, "after": 1, "during": 1}
    assert notes.get(doc_id) == {"n": 6, "after": 1, "during": 1}
    *_, last = notes.history(doc_id)
    assert last.deps == (notes.history(doc_id)[-2].entry_id,)


def test_a_batch_reads_the_tenant_log_once_for_its_keys_and_a_later_batch_again(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key check above costs one read of the tenant log's position per batch, not one per
    change (that read was a sixth of a batched write's time); the next batch reads again, so
    a rotation by another process between batches is still used."""
    node = make_node("home")
    tenant = node.create_tenant("acme")
    notes = tenant.create_db("notes")
    docs = [notes.create_document({"n": 0}) for _ in range(3)]
    log_reads: list[bytes] = []
    real_last_seq = EntryStore.last_seq

    def counting(store: EntryStore, tenant_id: bytes, database: str) -> int:
        if database == TENANT_LOG:
            log_reads.append(tenant_id)
        return real_last_seq(store, tenant_id, database)

    monkeypatch.setattr(EntryStore, "last_seq", counting)
    with notes.batch():
        for n in range(50):
            notes.update(docs[n % 3], {"n": n})
    in_one_batch = len(log_reads)
    assert 1 <= in_one_batch < 5  # the key check once, whatever else reads it once
    with Node.open(node.home, PASSWORD) as other:
        rotated = other.tenant("acme").rotate_key("default")
    log_reads.clear()
    with notes.batch():
        for n in range(50):
            notes.update(docs[n % 3], {"n": n})
    assert 1 <= len(log_reads) < 5  # again a few (the rotation is learnt), not one per change
    stored = node.store.document_entries(tenant.id, "notes", bytes.fromhex(docs[0]))
    assert [entry for _, entry in stored][-1].header.key_id == rotated.key_id


# -- own writes go through the admission pipeline ----------------------------------------------
def test_a_refused_own_write_says_which_rule_it_broke(make_node: MakeNode) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    member = make_node("member")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.revoke_member(member.public_identity(), accept_through=0)
    member.ingest([e.raw for e in admin.store.iter_entries(tenant.id, TENANT_LOG)])
    with pytest.raises(OwnEntryRefusedError) as info:
        member.tenant("acme").create_db("notes").create_document({"n": 1})
    assert [r.kind for r in info.value.rejected] == [RejectionKind.REVOKED_ABOVE_CUT]
    assert not info.value.rejected[0].sender_at_fault


def test_own_records_are_admitted_by_the_pipeline_and_published_only_after_the_commit(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node("home")
    tenant = node.create_tenant("acme")
    carol = UserIdentity.generate("carol").public()
    admitted: list[list[bytes]] = []
    real_admit = admission.admit

    def counting_admit(
        views: Mapping[bytes, admission.TenantView], verified: Sequence[admission.VerifiedEntry]
    ) -> admission.Admission:
        admitted.append([v.id for v in verified])
        return real_admit(views, verified)

    monkeypatch.setattr(admission, "admit", counting_admit)
    before = tenant.membership
    real_append_local = node.store.append_local

    def fail_after_the_check(seal: Any, authorize: Any = None) -> Any:
        def check_then_fail(entries: Sequence[Entry]) -> Any:
            refused = authorize(entries)  # the pipeline accepts, inside the transaction...
            assert refused == []
            raise StoreError("disk full")  # ...which then aborts

        return real_append_local(seal, check_then_fail)

    stored = node.store.count()
    with monkeypatch.context() as failing:
        failing.setattr(node.store, "append_local", fail_after_the_check)
        with pytest.raises(StoreError):
            tenant.add_member(carol)
    assert len(admitted) == 1  # the membership check ran: admission.admit, once
    assert node.store.count() == stored
    assert tenant.membership is before  # a write that did not commit publishes nothing

    entry = tenant.add_member(carol)
    assert admitted[-1] == [entry.id]
    assert tenant.membership is not before and tenant.membership.is_member(carol.signing_key)
    published = tenant.membership
    node.tenant("acme").create_db("notes").create_document({"n": 1})
    assert tenant.membership is published  # the log grew by exactly the write: no rebuild


def test_a_database_change_block_is_entered_once(make_node: MakeNode) -> None:
    # trim-change made Database.change a class; like the generator-based manager it replaced,
    # it refuses a second entry (which would start a second change of the document).
    db = make_node("home").create_tenant("t").create_db("notes")
    doc_id = db.create_document({"n": 0})
    block = db.change(doc_id)
    with block as doc:
        doc["n"] = 1
    with pytest.raises(RuntimeError, match="entered once"), block:
        pass
    assert db.get(doc_id) == {"n": 1}
