"""Crypto-shredding: destroying every copy of a named key erases its documents for good while
the log stays append-only (entries kept, verified and synced as ciphertext)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from cli_helpers import PASSWORD as CLI_PASSWORD
from cli_helpers import cli_env, mindoo, run_mindoo
from conftest import PASSWORD
from helpers import copy_tenant, daemon_process, run_cli_main

from mindoo_p2p.crypto.keystore import KdfProfile, Keystore
from mindoo_p2p.errors import InvalidNameError, MindooError, MissingKeyError
from mindoo_p2p.keyring import DEFAULT_KEY, MEMBERSHIP_KEY
from mindoo_p2p.materializer import SNAPSHOT_EVERY
from mindoo_p2p.node import KEYSTORE_FILE, Node
from mindoo_p2p.tenant import Tenant

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
SUBJECT = "subject-42"
SUBJECT_TEXT = "Ada Lovelace, born 1815, 12 St James's Square e5c1"
LONG_TEXT = "medical record of subject 42 b7d0"
CRM_TEXT = "subject 42 phone +44 20 7946 0958 a93f"
KEPT_TEXT = "company handbook 3c88"
SHREDDED_MARKERS = (SUBJECT_TEXT, LONG_TEXT, CRM_TEXT)


sync = copy_tenant


def entry_ids(node: Node) -> list[bytes]:
    return sorted(entry.id for entry in node.store.iter_entries())


def home_bytes(home: Path) -> list[tuple[Path, bytes]]:
    """Every file under a node home, with its bytes."""
    return [(path, path.read_bytes()) for path in sorted(home.rglob("*")) if path.is_file()]


@dataclass
class Holders:
    admin: Node
    member: Node
    tenant: Tenant
    subject_doc: str
    long_doc: str
    crm_doc: str
    kept_doc: str


def two_holders(make_node: MakeNode) -> Holders:
    """Admin and member both hold key SUBJECT (versions 1 and 2) and have read every document;
    ``long_doc`` has more than SNAPSHOT_EVERY changes, so both hold a snapshot of it."""
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key(SUBJECT)
    notes = tenant.create_db("notes")
    subject_doc = notes.create_document({"about": SUBJECT_TEXT}, key=SUBJECT)
    tenant.rotate_key(SUBJECT)
    notes.update(subject_doc, {"after_rotation": True})
    long_doc = notes.create_document({"text": LONG_TEXT, "n": 0}, key=SUBJECT)
    with notes.batch():
        for n in range(1, SNAPSHOT_EVERY + 1):
            notes.update(long_doc, {"n": n})
    crm_doc = tenant.create_db("crm").create_document({"phone": CRM_TEXT}, key=SUBJECT)
    kept_doc = notes.create_document({"text": KEPT_TEXT})
    member.import_key(admin.export_key(tenant, SUBJECT, to=member.public_identity()))
    sync(admin, member, tenant)
    for node in (admin, member):
        t = node.tenant("acme")
        assert t.create_db("notes").get(long_doc)["n"] == SNAPSHOT_EVERY  # writes the snapshot
        assert t.create_db("notes").get(subject_doc)["about"] == SUBJECT_TEXT
        assert t.create_db("crm").get(crm_doc) == {"phone": CRM_TEXT}
        snapshot = node.store.get_snapshot(tenant.id, "notes", bytes.fromhex(long_doc))
        assert snapshot is not None
    return Holders(admin, member, tenant, subject_doc, long_doc, crm_doc, kept_doc)


# -- (a) every holder shreds ----------------------------------------------------------------------
def test_every_holder_shreds_and_the_documents_are_unreadable_for_good(
    make_node: MakeNode,
) -> None:
    h = two_holders(make_node)
    secrets = [k.secret for k in h.tenant.keyring if k.name == SUBJECT]
    key_ids = [k.key_id for k in h.tenant.keyring if k.name == SUBJECT]
    assert len(secrets) == 2
    before = {node.home: (node.store.count(), entry_ids(node)) for node in (h.admin, h.member)}
    # Database handles opened before shredding must not keep reading from their caches.
    handles = {node.home: node.tenant("acme").create_db("notes") for node in (h.admin, h.member)}

    for node in (h.admin, h.member):
        assert node.tenant("acme").shred_key(SUBJECT) == [1, 2]

    shredded = (("notes", h.subject_doc), ("notes", h.long_doc), ("crm", h.crm_doc))
    for node in (h.admin, h.member):
        tenant = node.tenant("acme")
        for database, doc_id in shredded:
            with pytest.raises(MissingKeyError) as raised:
                tenant.create_db(database).get(doc_id)
            assert str(raised.value) == f"no key {SUBJECT!r} for this document"
            # Headers stay readable: the document is listed and its history shown.
            assert doc_id in tenant.create_db(database).list_documents()
            assert tenant.create_db(database).history(doc_id)
            snapshot = node.store.get_snapshot(tenant.id, database, bytes.fromhex(doc_id))
            assert snapshot is None
        with pytest.raises(MissingKeyError, match=SUBJECT):
            handles[node.home].get(h.long_doc)
        with pytest.raises(MissingKeyError, match=SUBJECT):
            handles[node.home].get_at(h.subject_doc, time=2**62)
        with pytest.raises(MissingKeyError, match=SUBJECT):
            handles[node.home].update(h.subject_doc, {"x": 1})
        with pytest.raises(MissingKeyError, match=SUBJECT):
            handles[node.home].create_document({"x": 1}, key=SUBJECT)
        assert handles[node.home].get(h.kept_doc) == {"text": KEPT_TEXT}
        # The log is untouched.
        assert (node.store.count(), entry_ids(node)) == before[node.home]
        assert node.fsck().ok
        # The key directory still knows the announced versions, now not held.
        versions = [(i.version, i.held) for i in tenant.key_directory() if i.name == SUBJECT]
        assert versions == [(1, False), (2, False)]
        with pytest.raises(MissingKeyError):
            tenant.shred_key(SUBJECT)  # nothing left to shred

    for node in (h.admin, h.member):
        node.close()
        with Node.open(node.home, PASSWORD) as reopened:
            tenant = reopened.tenant("acme")
            assert SUBJECT not in tenant.keyring.names()
            with pytest.raises(MissingKeyError, match=SUBJECT):
                tenant.create_db("notes").get(h.long_doc)
            assert tenant.create_db("notes").get(h.kept_doc) == {"text": KEPT_TEXT}
            assert reopened.store.count() == before[node.home][0]
        # The decrypted keystore holds neither the secrets nor the ids of the shredded versions.
        contents = json.dumps(Keystore.unlock(node.home / KEYSTORE_FILE, PASSWORD).read())
        for secret, key_id in zip(secrets, key_ids, strict=True):
            assert secret.hex() not in contents and key_id.hex() not in contents
        # No file of the home holds a plaintext marker of the shredded documents.
        for path, data in home_bytes(node.home):
            for marker in SHREDDED_MARKERS:
                assert marker.encode() not in data, (path, marker)
            for secret in secrets:
                assert secret not in data, path


def test_shredding_leaves_other_keys_and_other_tenants_alone(make_node: MakeNode) -> None:
    admin = make_node("admin")
    tenant = admin.create_tenant("acme")
    other = admin.create_tenant("other")
    tenant.create_key(SUBJECT)
    tenant.create_key("project-x")
    other.create_key(SUBJECT)
    notes = tenant.create_db("notes")
    gone = notes.create_document({"a": SUBJECT_TEXT}, key=SUBJECT)
    project = notes.create_document({"p": 1}, key="project-x")
    elsewhere = other.create_db("notes").create_document({"o": 1}, key=SUBJECT)

    assert tenant.shred_key(SUBJECT) == [1]
    with pytest.raises(MissingKeyError, match=SUBJECT):
        notes.get(gone)
    assert notes.get(project) == {"p": 1}
    assert other.create_db("notes").get(elsewhere) == {"o": 1}
    assert tenant.keyring.names() == sorted([DEFAULT_KEY, MEMBERSHIP_KEY, "project-x"])
    # The admin keeps administering: new keys, rotations of the others.
    tenant.rotate_key("project-x")
    tenant.create_key("subject-43")


# -- (b) the log keeps replicating ---------------------------------------------------------------
def test_entries_under_a_shredded_key_still_ingest_and_sync(make_node: MakeNode) -> None:
    admin, shredder, newcomer = make_node("admin"), make_node("shredder"), make_node("newcomer")
    tenant = admin.create_tenant("acme")
    shredder.join(admin.invite(tenant, shredder.public_identity()))
    tenant.create_key(SUBJECT)
    notes = tenant.create_db("notes")
    doc = notes.create_document({"about": SUBJECT_TEXT}, key=SUBJECT)
    shredder.import_key(admin.export_key(tenant, SUBJECT, to=shredder.public_identity()))
    sync(admin, shredder, tenant)
    assert shredder.tenant("acme").shred_key(SUBJECT) == [1]

    # The admin still holds the key and keeps writing under it; the shredder stores it all.
    notes.update(doc, {"later": "after the shred"})
    second = notes.create_document({"second": True}, key=SUBJECT)
    count = shredder.store.count()
    assert sync(admin, shredder, tenant) == 2
    assert shredder.store.count() == count + 2
    assert shredder.fsck().ok
    shredder_notes = shredder.tenant("acme").create_db("notes")
    assert shredder_notes.list_documents() == [doc, second]
    for doc_id in (doc, second):
        with pytest.raises(MissingKeyError, match=SUBJECT):
            shredder_notes.get(doc_id)

    # A newcomer that syncs from the shredder alone gets every entry, and reads them with a
    # key file from the admin: the shredder forwarded ciphertext it can no longer open.
    newcomer.join(admin.invite(tenant, newcomer.public_identity()))
    newcomer.import_key(admin.export_key(tenant, SUBJECT, to=newcomer.public_identity()))
    sync(shredder, newcomer, tenant)
    assert set(entry_ids(shredder)) <= set(entry_ids(newcomer))
    newcomer_notes = newcomer.tenant("acme").create_db("notes")
    assert newcomer_notes.get(doc) == {"about": SUBJECT_TEXT, "later": "after the shred"}
    assert newcomer_notes.get(second) == {"second": True}


# -- (c) refusals ---------------------------------------------------------------------------------
def test_shred_refuses_default_membership_unknown_and_keys_not_held(make_node: MakeNode) -> None:
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key(SUBJECT)
    doc = tenant.create_db("notes").create_document({"t": 1})
    sync(admin, member, tenant)
    keys_before = list(tenant.keyring)

    with pytest.raises(InvalidNameError, match="'default' key cannot be shredded") as raised:
        tenant.shred_key(DEFAULT_KEY)
    assert "rotate it instead" in str(raised.value)
    with pytest.raises(InvalidNameError, match=r"'\$membership' key cannot be shredded"):
        tenant.shred_key(MEMBERSHIP_KEY)
    with pytest.raises(MissingKeyError, match="no key 'nobody-has-it' on this node"):
        tenant.shred_key("nobody-has-it")
    with pytest.raises(InvalidNameError):
        tenant.shred_key("Not A Name")
    # The member knows the key from its announcement but does not hold it.
    with pytest.raises(MissingKeyError, match=f"no key {SUBJECT!r} on this node"):
        member.tenant("acme").shred_key(SUBJECT)
    with pytest.raises(MindooError, match="inside a write batch"), admin.batch():
        tenant.shred_key(SUBJECT)

    assert list(tenant.keyring) == keys_before
    assert tenant.create_db("notes").get(doc) == {"t": 1}
    admin.close()
    with Node.open(admin.home, PASSWORD) as reopened:
        assert list(reopened.tenant("acme").keyring) == keys_before


# -- (d) the CLI ----------------------------------------------------------------------------------
run_cli = partial(run_cli_main, password=PASSWORD)
"""`cli.main.main` in-process; ``stdin=`` answers any question."""


def test_cli_key_shred_asks_first_and_refuses_clearly(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    monkeypatch.delenv("MINDOO_DEBUG", raising=False)
    node = make_node("admin")
    tenant = node.create_tenant("acme")
    tenant.create_key(SUBJECT)
    doc = tenant.create_db("notes").create_document({"about": SUBJECT_TEXT}, key=SUBJECT)
    node.close()
    home = ["--home", str(node.home)]
    get = (*home, "doc", "get", "acme", "notes", doc)

    # Declined, or no answer at all: the warning is shown and nothing is destroyed.
    for answer in ("n\n", ""):
        code, out, err = run_cli(monkeypatch, capsys, *home, "key", "shred", "acme", SUBJECT,
                                 stdin=answer)  # fmt: skip
        assert code == 1 and out == ""
        for fragment in (
            "never read the documents sealed with it again",
            "every other holder shreds its copy too",
            "key file exported earlier is destroyed",
            "encrypted entries stay in the log and keep syncing",
            f"Shred key {SUBJECT!r}?",
            f"key {SUBJECT!r} was not shredded: nothing changed",
        ):
            assert fragment in err, (fragment, err)
        assert run_cli(monkeypatch, capsys, *get)[0] == 0

    # Refusals come before any question, as one line.
    for name, expected in (
        (DEFAULT_KEY, "'default' key cannot be shredded"),
        ("nobody-has-it", "no key 'nobody-has-it' on this node"),
    ):
        code, out, err = run_cli(monkeypatch, capsys, *home, "key", "shred", "acme", name)
        assert code == 1 and out == "" and err.count("\n") == 1 and expected in err, err

    code, out, err = run_cli(monkeypatch, capsys, *home, "key", "shred", "acme", SUBJECT,
                             stdin="y\n")  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"shredded key {SUBJECT} (versions 1)")
    code, _, err = run_cli(monkeypatch, capsys, *get)
    assert code == 1 and f"no key {SUBJECT!r} for this document" in err
    code, out, _ = run_cli(monkeypatch, capsys, *home, "--json", "key", "list", "acme")
    assert [(r["name"], r["held"]) for r in json.loads(out) if r["name"] == SUBJECT] == [
        (SUBJECT, False)
    ]


def test_cli_key_shred_yes_and_json(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    node = make_node("admin")
    tenant = node.create_tenant("acme")
    tenant.create_key(SUBJECT)
    tenant.rotate_key(SUBJECT)
    node.close()
    code, out, err = run_cli(
        monkeypatch, capsys, "--home", str(node.home), "--json", "key", "shred", "acme", SUBJECT,
        "--yes",
    )  # fmt: skip
    assert code == 0 and err == "", err
    assert json.loads(out) == {
        "tenant": tenant.id_hex,
        "name": SUBJECT,
        "destroyed_versions": [1, 2],
    }


@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A CLI-made home (tenant acme, key SUBJECT, one document under it) with a running
    daemon; yields (home, document id) and stops the daemon afterwards."""
    home = tmp_path / "node"
    with Node.init(home, CLI_PASSWORD, name="daemon", kdf=KdfProfile.TESTING) as node:
        tenant = node.create_tenant("acme")
        tenant.create_key(SUBJECT)
        doc = tenant.create_db("notes").create_document({"about": SUBJECT_TEXT}, key=SUBJECT)
    with daemon_process(home, tmp_path, cli_env(CLI_PASSWORD)) as (proc, _info):
        yield home, doc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@pytest.mark.slow
def test_cli_key_shred_through_a_running_daemon(daemon_home: tuple[Path, str]) -> None:
    home, doc = daemon_home
    get = ("doc", "get", "acme", "notes", doc)
    # The daemon runs the command and cannot ask: without --yes it explains and refuses.
    refused = run_mindoo(home, "key", "shred", "acme", SUBJECT, password=None)
    assert refused.code == 1 and refused.stderr.count("\n") == 1
    assert "cannot ask: add --yes" in refused.stderr
    assert "never read the documents sealed with it again" in refused.stderr
    assert mindoo(home, *get, password=None).code == 0  # forwarded from this process

    done = run_mindoo(home, "key", "shred", "acme", SUBJECT, "--yes", password=None)
    assert done.code == 0 and "shredded key subject-42 (versions 1)" in done.stdout, done
    # The daemon's own unlocked node no longer reads it either.
    after = mindoo(home, *get, password=None)
    assert after.code == 1 and f"no key {SUBJECT!r} for this document" in after.stderr
    with Node.open(home, CLI_PASSWORD) as node:
        assert SUBJECT not in node.tenant("acme").keyring.names()
