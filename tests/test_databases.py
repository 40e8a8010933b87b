"""No implicit databases (issue 10): a database exists once created here or received, and
`forget_db` stops holding one here.

A typo in a database name used to create a database that replicated to every node forever,
and reads of a misspelt name succeeded with nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import PASSWORD as CLI_PASSWORD
from cli_helpers import assert_one_line_error, mindoo
from helpers import copy_tenant

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.errors import UnknownDatabaseError
from mindoo_p2p.node import Node
from mindoo_p2p.rejection import RejectionKind
from mindoo_p2p.tenant_secrets import TenantSecrets

MakeNode = Callable[[str], Node]


def test_an_unknown_database_is_an_error_naming_the_existing_ones(make_node: MakeNode) -> None:
    node = make_node("a")
    tenant = node.create_tenant("acme")
    tenant.create_db("contacts")
    tenant.create_db("notes")
    entries = node.store.count()
    with pytest.raises(UnknownDatabaseError) as caught:
        tenant.open_db("contcts")
    error = caught.value
    assert (error.database, error.suggestion, error.existing) == (
        "contcts",
        "contacts",
        ["contacts", "notes"],
    )
    assert "did you mean 'contacts'" in str(error) and "contacts, notes" in str(error)
    with pytest.raises(UnknownDatabaseError) as far:
        tenant.open_db("zzz")
    assert far.value.suggestion is None and "did you mean" not in str(far.value)
    # Nothing was made of the misspelt names.
    assert tenant.databases() == ["contacts", "notes"]
    assert node.store.count() == entries


def test_created_and_received_databases_exist(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    doc = tenant.create_db("notes").create_document({"title": "x"})
    tenant.create_db("empty")
    copy_tenant(a, b, tenant)
    received = b.tenant("acme")
    assert received.databases() == ["notes"]  # an empty database is not an entry
    assert received.open_db("notes").get(doc) == {"title": "x"}
    with pytest.raises(UnknownDatabaseError):
        received.open_db("empty")


def test_forget_stops_holding_a_database_and_create_brings_it_back(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    copy_tenant(a, b, tenant)
    notes = tenant.create_db("notes")
    doc = notes.create_document({"n": 1})
    copy_tenant(a, b, tenant)
    replica = b.tenant("acme")
    held = replica.open_db("notes")
    stored = b.store.count()

    replica.forget_db("notes")
    assert replica.databases() == [] and replica.forgotten_databases() == ["notes"]
    with pytest.raises(UnknownDatabaseError) as caught:
        replica.open_db("notes")
    assert caught.value.forgotten and "forgotten" in str(caught.value)
    with pytest.raises(UnknownDatabaseError):  # a handle opened before cannot write either
        held.update(doc, {"n": 2})
    assert b.store.count() == stored
    # What the peer writes next is refused here, nobody's fault; nothing stored is lost.
    notes.update(doc, {"n": 3})
    new = [e.raw for e in a.store.iter_entries(tenant.id) if e.database == "notes"]
    result = b.ingest(new)
    assert [r.kind for r in result.rejected] == [RejectionKind.NOT_REPLICATED]
    assert not RejectionKind.NOT_REPLICATED.sender_at_fault
    assert b.store.count() == stored
    # The forget is kept in the keystore (it survives a restart).
    home = b.home
    b.close()
    reopened = Node.open(home, "correct horse battery staple")
    try:
        again = reopened.tenant("acme")
        assert again.databases() == []
        again.create_db("notes")
        assert again.open_db("notes").get(doc) == {"n": 1}  # the stored entries stayed
        assert reopened.ingest(new).added  # and it replicates again
        assert again.open_db("notes").get(doc) == {"n": 3}
    finally:
        reopened.close()


def test_a_stale_database_list_never_revives_a_forgotten_database() -> None:
    """Another process that has the home open saves its (older) list after the forget."""
    on_disk = TenantSecrets(bytes(16), "t", bytes(32), None, None, ["a", "b"])  # type: ignore[arg-type]
    on_disk.merge_databases(None, forgotten="b")
    assert (on_disk.databases, on_disk.forgotten) == (["a"], ["b"])
    stale = TenantSecrets(bytes(16), "t", bytes(32), None, None, ["a", "b", "c"])  # type: ignore[arg-type]
    stale.merge_databases(on_disk)
    assert (stale.databases, stale.forgotten) == (["a", "c"], ["b"])
    stale.merge_databases(on_disk, created="b")
    assert (stale.databases, stale.forgotten) == (["a", "b", "c"], [])


def test_cli_unknown_database_is_one_line_and_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Node.init(home, CLI_PASSWORD, name="me", kdf=KdfProfile.TESTING) as node:
        node.create_tenant("acme").create_db("contacts")
    for args in (
        ("doc", "list", "acme", "contcts"),
        ("doc", "create", "acme", "contcts"),
        ("changes", "acme", "contcts"),
        ("doc", "get", "acme", "contcts", "00" * 16),
    ):
        assert_one_line_error(mindoo(home, *args), 1, "contcts", "did you mean 'contacts'")
    assert mindoo(home, "db", "list", "acme", json_output=True).ok().json() == ["contacts"]
    as_json = mindoo(home, "doc", "list", "acme", "contcts", json_output=True)
    assert as_json.code == 1 and "contacts" in as_json.stdout + as_json.stderr
    mindoo(home, "db", "forget", "acme", "contacts").ok()
    assert mindoo(home, "db", "list", "acme", json_output=True).ok().json() == []
    assert_one_line_error(mindoo(home, "doc", "list", "acme", "contacts"), 1, "forgotten")
