"""Views over several databases and tenants: categories, totals, pagination, live changes,
shared and local definitions."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
from helpers import copy_tenant

from mindoo_p2p.errors import NotFoundError
from mindoo_p2p.index import SHARED_VIEWS_DB, QueryError, ViewDefinition
from mindoo_p2p.node import Node

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
CUSTOMERS = ("Acme", "Globex", "Initech", "Umbrella")
YEARS = (2024, 2025, 2026)
VIEW = {
    "sources": [
        {"tenant": "crm", "db": "crm2024"},
        {"tenant": "crm", "db": "crm2025"},
        {"tenant": "crm", "db": "crm2026"},
        {"tenant": "partner", "db": "deals"},
    ],
    "filter": {"status": {"$ne": "lost"}},
    "categories": ["year", {"path": "customer", "desc": True}],
    "sort": ["amount:desc"],
    "columns": ["title", {"name": "Amount", "path": "amount"}],
    "totals": [
        {"op": "count"},
        {"name": "sum", "op": "sum", "path": "amount"},
        {"name": "min", "op": "min", "path": "amount"},
        {"name": "max", "op": "max", "path": "amount"},
        {"name": "avg", "op": "avg", "path": "amount"},
    ],
}


def crm_and_partner(make_node: MakeNode) -> tuple[Node, Node, list[dict[str, Any]]]:
    """Node ``me`` holds tenant crm (sharded by year) and is a member of ``partner``'s tenant;
    returns every document written (the brute-force truth)."""
    rng = random.Random(7)
    me, partner = make_node("me"), make_node("partner")
    crm = me.create_tenant("crm")
    theirs = partner.create_tenant("partner")
    me.join(partner.invite(theirs, me.public_identity()))
    written: list[dict[str, Any]] = []
    for year in YEARS:
        db = crm.create_db(f"crm{year}")
        with db.batch():
            for i in range(15):
                doc = {
                    "year": year,
                    "customer": rng.choice(CUSTOMERS),
                    "amount": rng.randrange(0, 500) if i % 7 else 12.5,
                    "status": rng.choice(["open", "won", "lost"]),
                    "title": f"deal {year}-{i}",
                }
                db.create_document(doc)
                written.append(doc)
    deals = theirs.create_db("deals")
    for i in range(10):
        doc = {
            "year": rng.choice(YEARS),
            "customer": rng.choice(CUSTOMERS),
            "amount": rng.randrange(0, 500),
            "status": "open",
            "title": f"partner deal {i}",
        }
        if i == 3:
            del doc["amount"]  # a document without a value: counted, not summed
        deals.create_document(doc)
        written.append(doc)
    copy_tenant(partner, me, theirs)
    return me, partner, written


def brute_totals(docs: list[dict[str, Any]]) -> dict[str, Any]:
    amounts = [d["amount"] for d in docs if "amount" in d]
    return {
        "count": len(docs),
        "sum": sum(amounts),
        "min": min(amounts) if amounts else None,
        "max": max(amounts) if amounts else None,
        "avg": sum(amounts) / len(amounts) if amounts else None,
    }


def test_view_over_three_shards_and_a_partner_tenant_matches_brute_force(
    make_node: MakeNode,
) -> None:
    me, _partner, written = crm_and_partner(make_node)
    crm = me.tenant("crm")
    assert me.views.define(crm, "pipeline", VIEW) == "shared"
    view = me.views.reader(crm, "pipeline")
    live = [d for d in written if d["status"] != "lost"]
    tree = view.tree(expand_all=True, row_limit=1000)
    assert tree["count"] == len(live)
    assert tree["totals"] == pytest.approx(brute_totals(live))
    assert [c["value"] for c in tree["categories"]] == sorted({d["year"] for d in live})
    for year_node in tree["categories"]:
        in_year = [d for d in live if d["year"] == year_node["value"]]
        assert year_node["totals"] == pytest.approx(brute_totals(in_year))
        customers = [c["value"] for c in year_node["categories"]]
        assert customers == sorted({d["customer"] for d in in_year}, reverse=True)
        for customer_node in year_node["categories"]:
            docs = [d for d in in_year if d["customer"] == customer_node["value"]]
            assert customer_node["count"] == len(docs)
            assert customer_node["totals"] == pytest.approx(brute_totals(docs))
            titles = [r["values"]["title"] for r in customer_node["rows"]]
            by_amount = sorted(docs, key=lambda d: (-d.get("amount", -1), d["title"]))
            assert sorted(titles) == sorted(d["title"] for d in by_amount)
            amounts = [r["values"]["Amount"] for r in customer_node["rows"]]
            present = [a for a in amounts if a is not None]
            assert present == sorted(present, reverse=True)
    # collapsed by default; expanding one path opens only that branch
    collapsed = view.tree()
    assert all("categories" not in c for c in collapsed["categories"])
    first_year = collapsed["categories"][0]["value"]
    opened = view.tree(expand=[[first_year]])
    assert "categories" in opened["categories"][0]
    assert all("categories" not in c for c in opened["categories"][1:])
    text_path = view.tree(expand=[[str(first_year)]])  # as a command line gives it
    assert "categories" in text_path["categories"][0]
    # the flat list, page by page, is the whole view in category then sort order
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = view.rows(limit=7, cursor=cursor)
        seen.extend(r.values for r in page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(live)
    order = [(s["year"], s["customer"]) for s in seen]
    assert order == sorted(order, key=lambda k: (k[0], [-ord(ch) for ch in k[1]]))


@pytest.mark.parametrize(
    ("definition", "names"),
    [
        ({}, "view.sources: expected a non-empty list"),
        ({**VIEW, "colums": []}, "view: unknown keys ['colums']"),
        ({**VIEW, "totals": [{"op": "median", "path": "a"}]}, "view.totals[0].op"),
        ({**VIEW, "totals": [{"op": "sum"}]}, "view.totals[0]: sum needs a path"),
        ({**VIEW, "categories": ["year", "bad path"]}, "view.categories[1]: invalid path"),
        ({**VIEW, "filter": {"a": {"$nope": 1}}}, "view.filter.a.$nope"),
        ({**VIEW, "sources": [{"tenant": "crm"}]}, "view.sources[0]"),
        ("{not json", "view: not JSON"),
    ],
)
def test_malformed_view_definitions_name_the_part(definition: Any, names: str) -> None:
    with pytest.raises(QueryError) as caught:
        ViewDefinition.parse(definition)
    assert names in str(caught.value)


def test_shared_views_sync_and_local_views_stay_private(make_node: MakeNode) -> None:
    me, partner, _written = crm_and_partner(make_node)
    theirs = partner.tenant("partner")
    definition = {"sources": [{"tenant": "partner", "db": "deals"}], "categories": ["year"]}
    partner.views.define(theirs, "by-year", definition)
    partner.views.define(theirs, "mine-only", definition, local=True)
    copy_tenant(partner, me, theirs)
    mine = me.tenant("partner")
    listed = {v["name"]: v["scope"] for v in me.views.definitions(mine)}
    assert listed == {"by-year": "shared"}
    assert SHARED_VIEWS_DB in mine.databases()
    assert me.views.reader(mine, "by-year").tree()["count"] == 10
    assert {v["name"] for v in partner.views.definitions(theirs)} == {"by-year", "mine-only"}
    with pytest.raises(NotFoundError):
        me.views.reader(mine, "mine-only")
    assert partner.views.remove(theirs, "by-year") == "shared"
    copy_tenant(partner, me, theirs)
    assert me.views.definitions(mine) == []


async def test_live_view_changes_when_a_peers_write_arrives(make_node: MakeNode) -> None:
    me, partner, _written = crm_and_partner(make_node)
    crm = me.tenant("crm")
    me.views.define(crm, "pipeline", VIEW, local=True)
    view = me.views.reader(crm, "pipeline")
    theirs = partner.tenant("partner")
    deals = theirs.open_db("deals")
    send, receive = trio.open_memory_channel[Any](4)
    with trio.fail_after(20):
        async with view.watch() as watching, trio.open_nursery() as nursery:

            async def watch() -> None:
                async for change in watching:
                    await send.send(change)

            nursery.start_soon(watch)
            new = deals.create_document(
                {"year": 2031, "customer": "Acme", "amount": 5, "status": "open", "title": "n"}
            )
            copy_tenant(partner, me, theirs)  # the peer's write arrives
            first = await receive.receive()
            deals.update(new, {"amount": 7})
            copy_tenant(partner, me, theirs)
            second = await receive.receive()
            nursery.cancel_scope.cancel()
    assert [r["id"] for r in first.added] == [new] and not first.removed
    paths = {tuple(t["path"]) for t in first.totals}
    assert {(), (2031,), (2031, "Acme")} <= paths
    assert [r["values"]["Amount"] for r in second.changed] == [7]
    grand = next(t for t in second.totals if t["path"] == [])
    assert grand["totals"]["max"] >= 7


def test_view_totals_follow_edits_and_deletes(make_node: MakeNode) -> None:
    """The view's facet table (kept by triggers) follows every change of the documents."""
    me, _partner, _written = crm_and_partner(make_node)
    crm = me.tenant("crm")
    me.views.define(crm, "pipeline", VIEW, local=True)
    view = me.views.reader(crm, "pipeline")
    view.tree()  # the facet table exists from here on
    db = crm.open_db("crm2025")
    ids = db.list_documents()
    db.update(ids[0], {"amount": 100_000, "status": "open", "customer": "Zeta"})
    db.delete(ids[1])
    db.update(ids[2], {"status": "lost"})
    theirs = me.tenant("partner").open_db("deals")
    live = [
        d
        for source in (*(crm.open_db(f"crm{y}") for y in YEARS), theirs)
        for d in (source.get(i) for i in source.list_documents())
        if d["status"] != "lost"
    ]
    tree = view.tree(expand_all=True)
    assert tree["count"] == len(live)
    assert tree["totals"] == pytest.approx(brute_totals(live))
    year = next(c for c in tree["categories"] if c["value"] == 2025)
    zeta = next(c for c in year["categories"] if c["value"] == "Zeta")
    assert zeta["count"] == 1 and zeta["totals"]["max"] == 100_000


def test_a_view_keeps_following_after_a_shred_moves_the_index(make_node: MakeNode) -> None:
    """A shred re-encrypts the index into a new file: facet tables and their triggers come
    along, and the view drops the shredded documents."""
    node = make_node("n")
    tenant = node.create_tenant("acme")
    tenant.create_key("hr")
    db = tenant.create_db("notes")
    kept = db.create_document({"team": "a", "n": 1})
    db.create_document({"team": "a", "n": 10}, key="hr")
    definition = {
        "sources": ["acme/notes"],
        "categories": ["team"],
        "totals": [{"name": "sum", "op": "sum", "path": "n"}],
    }
    node.views.define(tenant, "teams", definition, local=True)
    view = node.views.reader(tenant, "teams")
    assert view.tree()["totals"] == {"sum": 11}
    tenant.shred_key("hr")
    assert view.tree()["totals"] == {"sum": 1}
    db.update(kept, {"n": 5})
    db.create_document({"team": "b", "n": 2})
    tree = view.tree()
    assert tree["totals"] == {"sum": 7}
    assert [(c["value"], c["count"]) for c in tree["categories"]] == [("a", 1), ("b", 1)]
    assert tree["coverage"] == {"indexed": 2, "skipped": {"no_key": 1}}


def test_a_members_malformed_shared_definitions_are_left_out(make_node: MakeNode) -> None:
    """Attack: a member shares malformed definitions, among them JSON nested so deeply
    (under the 64 KB limit) that the parser raised RecursionError, which broke every shared
    view of the tenant. Each is skipped and listed as broken; the good view still works."""
    node = make_node("n")
    tenant = node.create_tenant("acme")
    tenant.create_db("notes").create_document({"a": 1})
    views = tenant.create_db(SHARED_VIEWS_DB)
    views.create_document({"name": "huge", "definition": "[" * 70_000})
    views.create_document({"name": "deep", "definition": "[" * 30_000 + "]" * 30_000})
    views.create_document({"name": "bad name!", "definition": "{}"})
    views.create_document({"name": "notjson", "definition": "{nope"})
    views.create_document({"name": "number", "definition": 5})
    node.views.define(tenant, "good", {"sources": ["acme/notes"]})
    listed = node.views.definitions(tenant)
    assert [v["name"] for v in listed if v["scope"] != "broken"] == ["good"]
    broken = {v["name"]: v["error"] for v in listed if v["scope"] == "broken"}
    assert set(broken) == {"huge", "deep", "notjson", "number"}
    assert "nested too deeply" in broken["deep"]
    assert node.views.reader(tenant, "good").tree()["count"] == 1


# -- a view's computed values cannot stop the index ----------------------------------------------
ABS_VIEW: dict[str, Any] = {
    "sources": [{"tenant": "crm", "db": "*"}],
    "categories": [{"name": "a", "expr": {"$abs": "$n"}}],
}


def facet_tables(node: Node) -> list[str]:
    rows = node.index.store.read(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'vf%'"
    )
    return [str(r[0]) for r in rows]


def test_an_int64_minimum_under_a_shared_abs_category_stops_no_index(make_node: MakeNode) -> None:
    """Attack: a member shares a view categorised by {"$abs": "$n"} (a facet table filled
    by triggers on every document of the node), then writes n = -2**63. SQLite's abs()
    raised "integer overflow" in the trigger: every later index write on the node failed,
    in every tenant, and removing the view left the trigger. Now the value is 2.0**63,
    the index goes on, and removing the view drops its facet table."""
    node = make_node("n")
    crm, other = node.create_tenant("crm"), node.create_tenant("other")
    db = crm.create_db("d")
    db.create_document({"n": 5})
    node.views.define(crm, "evil", ABS_VIEW)
    assert node.views.reader(crm, "evil").tree()["count"] == 1
    assert facet_tables(node)
    db.create_document({"n": -(2**63)})
    db.create_document({"n": 7, "status": "later"})
    odb = other.create_db("o")
    odb.create_document({"n": -(2**63)})
    odb.create_document({"k": "later"})
    assert len(node.index.query(node.index.all_sources(crm), where={"status": "later"}).rows) == 1
    assert len(node.index.query(node.index.all_sources(other), where={"k": "later"}).rows) == 1
    tree = node.views.reader(crm, "evil").tree()
    assert tree["count"] == 3
    node.views.remove(crm, "evil")
    assert facet_tables(node) == []


def test_a_failing_facet_trigger_is_dropped_not_blocking_writes(make_node: MakeNode) -> None:
    """Attack, against a store written by the previous version: its facet trigger still
    computes abs() in SQL, which raises on n = -2**63. The write that fails is retried
    without the facet tables (dropped, with a warning): the document is indexed, other
    tenants go on, and the view rebuilds its facets (now total) when next read."""
    node = make_node("n")
    crm, other = node.create_tenant("crm"), node.create_tenant("other")
    crm.create_db("d").create_document({"n": 5})
    node.views.define(crm, "v", ABS_VIEW, local=True)
    node.views.reader(crm, "v").tree()
    (table,) = facet_tables(node)
    with node.index.store.transaction() as tx:  # the trigger the previous version wrote
        tx.execute(f"DROP TRIGGER {table}_ins")
        tx.execute(
            f"CREATE TRIGGER {table}_ins AFTER INSERT ON docs BEGIN INSERT INTO {table}"
            f" VALUES (new.id, new.source, abs(json_extract(new.body, '$.n'))); END"
        )
    odb = other.create_db("o")
    odb.create_document({"n": -(2**63), "k": "poison"})
    odb.create_document({"k": "later"})
    found = node.index.query(
        node.index.all_sources(other), where={"k": {"$in": ["poison", "later"]}}
    )
    assert len(found.rows) == 2
    assert facet_tables(node) == []
    assert node.views.reader(crm, "v").tree()["count"] == 1
    assert len(facet_tables(node)) == 1


def test_a_sum_total_past_int64_is_exact_not_an_error(make_node: MakeNode) -> None:
    """Attack: a member writes two amounts of 2**62 into a database a view totals with
    "sum": SQLite's sum() raised "integer overflow" and the view failed for every reader.
    The sum is now exact (a Python int past int64), and real when any value is real."""
    node = make_node("n")
    crm = node.create_tenant("crm")
    db = crm.create_db("d")
    for n in (2**62, 2**62, 5, -(2**63), 2**63 - 1):
        db.create_document({"n": n, "g": "int"})
    db.create_document({"n": 1.5, "g": "real"})
    db.create_document({"n": 2**62, "g": "real"})
    definition = {
        "sources": [{"tenant": "crm", "db": "*"}],
        "categories": ["g"],
        "totals": [
            {"name": "s", "op": "sum", "path": "n"},
            {"name": "a", "op": "avg", "path": "n"},
        ],
    }
    node.views.define(crm, "sums", definition, local=True)
    tree = node.views.reader(crm, "sums").tree()
    by_group = {c["value"]: c["totals"] for c in tree["categories"]}
    assert by_group["int"]["s"] == 2**63 + 4
    assert by_group["real"]["s"] == pytest.approx(2.0**62 + 1.5)
    assert tree["totals"]["s"] == pytest.approx(2.0**63 + 2.0**62 + 5.5)
