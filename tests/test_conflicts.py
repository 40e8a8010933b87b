"""Conflicts are visible (issue 10): a concurrent edit to the same field used to lose one
value with no trace anywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from automerge.core import ROOT, Document, ObjType, ScalarType
from cli_helpers import PASSWORD as CLI_PASSWORD
from cli_helpers import mindoo
from helpers import copy_tenant, running_daemon

from mindoo_p2p.crdt.conflicts import conflicting_fields, field_name
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node

MakeNode = Callable[[str], Node]


def concurrent_titles(a: Node, b: Node) -> str:
    """Document ``{"title": "draft", "n": 1}`` on both nodes, then ``title`` set to "from a"
    on ``a`` and "from b" on ``b`` before they sync again, then synced both ways."""
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    notes = tenant.create_db("notes")
    doc = notes.create_document({"title": "draft", "n": 1})
    copy_tenant(a, b, tenant)
    notes.update(doc, {"title": "from a"})
    b.tenant("acme").open_db("notes").update(doc, {"title": "from b", "other": True})
    copy_tenant(a, b, tenant)
    copy_tenant(b, a, tenant)
    return doc


def test_concurrent_values_are_shown_with_author_and_time_then_a_write_resolves(
    make_node: MakeNode,
) -> None:
    a, b = make_node("alice"), make_node("bob")
    doc = concurrent_titles(a, b)
    views = [n.tenant("acme").open_db("notes").get(doc, conflicts=True) for n in (a, b)]
    assert views[0] == views[1]  # every node shows the same thing
    view = views[0]
    assert view.content["other"] is True and view.content["n"] == 1
    (conflict,) = view.conflicts
    assert conflict.field == "title"
    by_value = {v.value: v for v in conflict.values}
    assert set(by_value) == {"from a", "from b"}
    assert by_value["from a"].author_name == "alice" and by_value["from b"].author_name == "bob"
    assert by_value["from a"].author == a.tenant("acme").identity.signing.public_key.hex()
    assert all(v.timestamp_ms > 0 for v in conflict.values)
    assert [v.shown for v in conflict.values] == [True, False]
    assert conflict.values[0].value == view.content["title"]

    db = a.tenant("acme").open_db("notes")
    history = db.history(doc)
    concurrent = [h for h in history if h.concurrent]
    assert {h.author_name for h in concurrent} == {"alice", "bob"}
    assert all(h.head for h in concurrent) and not any(h.head for h in history[:1])
    assert db.conflicted_documents() == [(doc, ("title",))]

    db.update(doc, {"title": "agreed"})  # a plain write resolves it
    assert db.conflicts(doc) == ()
    assert db.conflicted_documents() == []
    assert db.get(doc)["title"] == "agreed"
    assert not any(h.concurrent for h in db.history(doc))


def test_a_field_changed_on_one_side_only_is_no_conflict(make_node: MakeNode) -> None:
    a, b = make_node("alice"), make_node("bob")
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    notes = tenant.create_db("notes")
    doc = notes.create_document({"x": 1, "y": 1})
    copy_tenant(a, b, tenant)
    notes.update(doc, {"x": 2})
    b.tenant("acme").open_db("notes").update(doc, {"y": 2})
    with b.tenant("acme").open_db("notes").change(doc) as root:
        del root["y"]
    copy_tenant(b, a, tenant)
    assert notes.get(doc) == {"x": 2}
    assert notes.conflicts(doc) == () and notes.conflicted_documents() == []
    assert sum(h.concurrent for h in notes.history(doc)) == 2  # concurrent, not conflicting


def test_cli_conflicts_and_doc_get_conflicts(tmp_path: Path) -> None:
    a = Node.init(tmp_path / "a", CLI_PASSWORD, name="alice", kdf=KdfProfile.TESTING)
    b = Node.init(tmp_path / "b", CLI_PASSWORD, name="bob", kdf=KdfProfile.TESTING)
    with a, b:
        doc = concurrent_titles(a, b)
    listed = mindoo(tmp_path / "a", "conflicts", "acme", "notes", json_output=True).ok()
    assert listed.json() == [{"document_id": doc, "fields": ["title"]}]
    shown = mindoo(tmp_path / "a", "doc", "get", "acme", "notes", doc, "--conflicts").ok()
    values = shown.json()["conflicts"][0]["values"]
    assert {v["value"] for v in values} == {"from a", "from b"}
    history = mindoo(tmp_path / "a", "doc", "history", "acme", "notes", doc).ok().stdout
    assert history.count("(concurrent head)") == 2
    mindoo(tmp_path / "a", "doc", "set", "acme", "notes", doc, "title", '"agreed"').ok()
    assert mindoo(tmp_path / "a", "conflicts", "acme", "notes").ok().stdout == "no conflicts\n"


async def test_the_event_stream_tells_of_a_conflict_and_its_resolution(
    make_node: MakeNode,
) -> None:
    a, b = make_node("alice"), make_node("bob")
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    notes = tenant.create_db("notes")
    doc = notes.create_document({"title": "draft"})
    copy_tenant(a, b, tenant)
    notes.update(doc, {"title": "from a"})  # both offline: concurrent
    b.tenant("acme").open_db("notes").update(doc, {"title": "from b"})

    async def next_conflict_event(channel: trio.MemoryReceiveChannel[dict[str, Any]]) -> Any:
        async for event in channel:
            if event["type"].startswith("conflict"):
                return event
        raise AssertionError("the event stream ended")

    async with (
        running_daemon(a) as da,
        running_daemon(b) as db_,
        da.events.subscribe() as channel,
    ):
        await db_.add_peer(da.listen_addrs()[0])
        with trio.fail_after(15):
            event = await next_conflict_event(channel)
        assert event["type"] == "conflict" and event["document_id"] == doc
        assert (event["tenant_name"], event["database"], event["fields"]) == (
            "acme",
            "notes",
            ["title"],
        )
        async with da.access.hold():
            notes.update(doc, {"title": "agreed"})
        with trio.fail_after(15):
            resolved = await next_conflict_event(channel)
        assert resolved["type"] == "conflict_resolved" and resolved["document_id"] == doc


def test_a_nested_field_conflict_is_shown_by_path_and_a_write_resolves_it(
    make_node: MakeNode,
) -> None:
    a, b = make_node("alice"), make_node("bob")
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    notes = tenant.create_db("notes")
    customer = {"contact": {"phone": "0", "mail": "m"}, "a.b": {"c": 0}}
    doc = notes.create_document({"customer": customer, "a": {"b.c": 0}})
    copy_tenant(a, b, tenant)
    with notes.change(doc) as root:
        root["customer"]["contact"]["phone"] = "from a"
        root["customer"]["a.b"]["c"] = 1
        root["a"]["b.c"] = 1
    with b.tenant("acme").open_db("notes").change(doc) as root:
        root["customer"]["contact"]["phone"] = "from b"
        root["customer"]["contact"]["mail"] = "only b"  # a sibling: no conflict
        root["customer"]["a.b"]["c"] = 2
        root["a"]["b.c"] = 2
    copy_tenant(a, b, tenant)
    copy_tenant(b, a, tenant)

    views = [n.tenant("acme").open_db("notes").get(doc, conflicts=True) for n in (a, b)]
    assert views[0] == views[1]  # every node shows the same thing
    view = views[0]
    assert view.content["customer"]["contact"]["mail"] == "only b"
    by_path = {c.path: c for c in view.conflicts}
    assert set(by_path) == {
        ("a", "b.c"),
        ("customer", "a.b", "c"),
        ("customer", "contact", "phone"),
    }
    # keys holding dots stay unambiguous in the dotted name
    assert [c.field for c in view.conflicts] == [
        "a.b\\.c",
        "customer.a\\.b.c",
        "customer.contact.phone",
    ]
    phone = by_path[("customer", "contact", "phone")]
    by_value = {v.value: v for v in phone.values}
    assert set(by_value) == {"from a", "from b"}
    assert by_value["from a"].author_name == "alice" and by_value["from b"].author_name == "bob"
    assert all(v.timestamp_ms > 0 for v in phone.values)
    assert phone.values[0].shown
    assert phone.values[0].value == view.content["customer"]["contact"]["phone"]
    assert phone.to_dict()["path"] == ["customer", "contact", "phone"]

    db = a.tenant("acme").open_db("notes")
    assert db.conflicted_documents() == [(doc, tuple(c.field for c in view.conflicts))]
    with db.change(doc) as root:  # a plain write of each field resolves its conflict
        root["customer"]["contact"]["phone"] = "agreed"
        root["customer"]["a.b"]["c"] = 3
    assert [c.path for c in db.conflicts(doc)] == [("a", "b.c")]
    with db.change(doc) as root:
        root["a"]["b.c"] = 3
    assert db.conflicts(doc) == () and db.conflicted_documents() == []
    assert db.get(doc)["customer"]["contact"] == {"phone": "agreed", "mail": "only b"}


def test_sibling_nested_fields_edited_concurrently_are_no_conflict(make_node: MakeNode) -> None:
    a, b = make_node("alice"), make_node("bob")
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    notes = tenant.create_db("notes")
    doc = notes.create_document({"address": {"city": "x", "zip": "1"}, "tags": ["t"]})
    copy_tenant(a, b, tenant)
    with notes.change(doc) as root:
        root["address"]["city"] = "Berlin"
    with b.tenant("acme").open_db("notes").change(doc) as root:
        root["address"]["zip"] = "10115"
    copy_tenant(b, a, tenant)
    assert notes.get(doc)["address"] == {"city": "Berlin", "zip": "10115"}
    assert notes.conflicts(doc) == () and notes.conflicted_documents() == []
    assert sum(h.concurrent for h in notes.history(doc)) == 2  # concurrent, not conflicting


def test_two_maps_put_in_one_field_and_list_elements() -> None:
    """Concurrent maps put in one field: that field is the conflict (not the fields of the
    map not shown); a concurrent put of one list element is not examined (documented)."""
    base = Document()
    with base.transaction() as tx:
        items = tx.put_object(ROOT, "items", ObjType.List)
        tx.insert(items, 0, ScalarType.Str, "x")
    left, right = base.fork(), base.fork()
    for side, value in ((left, "L"), (right, "R")):
        with side.transaction() as tx:
            address = tx.put_object(ROOT, "address", ObjType.Map)
            tx.put(address, "city", ScalarType.Str, value)
            tx.put(items, 0, ScalarType.Str, value)
    left.merge(right)
    (writes,) = conflicting_fields(left)
    assert writes.path == ("address",) and writes.field == "address"
    assert len(writes.changes) == 2
    assert field_name(["a.b", "c\\d"]) == "a\\.b.c\\\\d"
