"""Views with computed values (issue 11): categories by the year of an ISO date, columns, sort
keys, totals and filters computed by expressions, checked against a brute-force Python
computation over the same documents; definitions are versioned."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cmp_to_key
from typing import Any

import pytest
from computed_reference import evaluate

from mindoo_p2p.index import QueryError, ViewDefinition
from mindoo_p2p.index.views import sql_order_key
from mindoo_p2p.node import Node

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
CUSTOMERS = ("Acme", "globex", "Initech", None)
TOTAL = {"$mul": ["$price", "$qty"]}
YEAR = {"$year": "$date"}
VIEW: dict[str, Any] = {
    "sources": [{"tenant": "crm", "db": "*"}],
    "filter": {"status": {"$ne": "lost"}},
    "categories": [{"name": "year", "expr": YEAR}, {"path": "customer", "desc": True}],
    "sort": [{"name": "total", "expr": TOTAL, "desc": True}],
    "columns": [
        "customer",
        {"name": "total", "expr": TOTAL},
        {
            "name": "label",
            "expr": {"$concat": [{"$upper": "$customer"}, " x", {"$string": "$qty"}]},
        },
    ],
    "totals": [
        {"op": "count"},
        {"name": "revenue", "op": "sum", "expr": TOTAL},
        {"name": "avg", "op": "avg", "expr": TOTAL},
        {"name": "min", "op": "min", "expr": TOTAL},
        {"name": "max", "op": "max", "expr": TOTAL},
        {"name": "won", "op": "sum", "expr": {"$if": [{"status": "won"}, 1, 0]}},
    ],
}


def crm_with_dates(node: Node) -> list[dict[str, Any]]:
    """A CRM sharded by year, with dates as written by people: datetimes with a zone, an
    invalid date, a missing one; prices and quantities sometimes missing or text."""
    rng = random.Random(3)
    crm = node.create_tenant("crm")
    written: list[dict[str, Any]] = []
    for year in (2024, 2025, 2026):
        db = crm.create_db(f"crm{year}")
        with db.batch():
            for i in range(14):
                doc: dict[str, Any] = {
                    "date": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "customer": rng.choice(CUSTOMERS),
                    "price": rng.choice([rng.randrange(1, 100), rng.randrange(1, 100) + 0.5]),
                    "qty": rng.randrange(0, 5),
                    "status": rng.choice(["open", "won", "lost"]),
                }
                if i == 3:
                    doc["date"] += "T23:30:00-05:00"  # the year as written, not in UTC
                if i == 4:
                    doc["date"] = f"{year}-02-30"  # not a date: no year
                if i == 5:
                    del doc["date"]
                if i == 6:
                    doc["qty"] = "3"  # text: no total
                if i == 7:
                    del doc["price"]
                if doc["customer"] is None:
                    del doc["customer"]
                db.create_document(doc)
                written.append(doc)
    return written


def brute_totals(docs: list[dict[str, Any]]) -> dict[str, Any]:
    totals = [t for t in (evaluate(TOTAL, d) for d in docs) if t is not None]
    return {
        "count": len(docs),
        "revenue": sum(totals),
        "avg": sum(totals) / len(totals) if totals else None,
        "min": min(totals) if totals else None,
        "max": max(totals) if totals else None,
        "won": sum(1 for d in docs if d["status"] == "won"),
    }


def view_order(a: dict[str, Any], b: dict[str, Any]) -> int:
    """year ascending, customer descending, total descending (SQLite's order of values)."""
    for key, desc in (("year", False), ("customer", True), ("total", True)):
        ka, kb = sql_order_key(a[key]), sql_order_key(b[key])
        if ka != kb:
            return (1 if ka > kb else -1) * (-1 if desc else 1)
    return 0


def test_categories_columns_sort_and_totals_by_expressions_match_brute_force(
    make_node: MakeNode,
) -> None:
    me = make_node("me")
    written = crm_with_dates(me)
    crm = me.tenant("crm")
    me.views.define(crm, "revenue", VIEW)
    view = me.views.reader(crm, "revenue")
    live = [d for d in written if d["status"] != "lost"]
    tree = view.tree(expand_all=True, row_limit=1000)
    assert tree["count"] == len(live)
    assert tree["totals"] == pytest.approx(brute_totals(live))
    years = sorted({evaluate(YEAR, d) for d in live}, key=sql_order_key)
    assert None in years and 2024 in years  # the undated and invalid dates: a null category
    assert [c["value"] for c in tree["categories"]] == years
    for year_node in tree["categories"]:
        in_year = [d for d in live if evaluate(YEAR, d) == year_node["value"]]
        assert year_node["totals"] == pytest.approx(brute_totals(in_year))
        customers = sorted({d.get("customer") for d in in_year}, key=sql_order_key)[::-1]
        assert [c["value"] for c in year_node["categories"]] == customers
        for node in year_node["categories"]:
            docs = [d for d in in_year if d.get("customer") == node["value"]]
            assert node["totals"] == pytest.approx(brute_totals(docs))
            rows = [r["values"] for r in node["rows"]]
            want_totals = sorted((evaluate(TOTAL, d) for d in docs), key=sql_order_key)
            assert [r["total"] for r in rows] == pytest.approx(want_totals[::-1])
            labels = sorted(evaluate(VIEW["columns"][2]["expr"], d) or "" for d in docs)
            assert sorted(r["label"] or "" for r in rows) == labels
    # the flat list, page by page (the cursor carries computed keys), in the view's order
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = view.rows(limit=4, cursor=cursor)
        seen.extend(r.values for r in page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    want = sorted(
        (
            {"year": evaluate(YEAR, d), "customer": d.get("customer"), "total": evaluate(TOTAL, d)}
            for d in live
        ),
        key=cmp_to_key(view_order),
    )
    assert [(s["year"], s["customer"], s["total"]) for s in seen] == [
        (w["year"], w["customer"], pytest.approx(w["total"])) for w in want
    ]


def test_the_view_follows_edits_of_the_values_its_expressions_read(make_node: MakeNode) -> None:
    me = make_node("me")
    crm = me.create_tenant("crm")
    db = crm.create_db("crm2025")
    doc = db.create_document({"date": "2025-03-01", "price": 10, "qty": 2, "status": "open"})
    me.views.define(crm, "revenue", VIEW, local=True)
    view = me.views.reader(crm, "revenue")
    assert view.tree()["totals"]["revenue"] == 20
    db.update(doc, {"date": "2026-01-01", "price": 10, "qty": 5, "status": "open"})
    tree = view.tree()
    assert [c["value"] for c in tree["categories"]] == [2026]
    assert tree["totals"]["revenue"] == 50


def test_queries_filter_and_sort_on_computed_values(make_node: MakeNode) -> None:
    me = make_node("me")
    written = crm_with_dates(me)
    crm = me.tenant("crm")
    sources = me.index.all_sources(crm)
    where = {"$expr": [TOTAL, {"$gte": 100}], "status": {"$ne": "lost"}}
    result = me.index.query(sources, where=where, sort=[{"expr": TOTAL, "desc": True}], limit=1000)
    want = [
        evaluate(TOTAL, d)
        for d in written
        if d["status"] != "lost" and (evaluate(TOTAL, d) or 0) >= 100
    ]
    got = [evaluate(TOTAL, r.values) for r in result.rows]
    assert got == pytest.approx(sorted(want, reverse=True))
    assert len(got) > 5


def test_definitions_are_versioned(make_node: MakeNode) -> None:
    old = {"sources": [{"tenant": "crm", "db": "*"}], "categories": ["year"]}
    assert "version" not in ViewDefinition.parse(old).raw  # read as before, stored as before
    assert ViewDefinition.parse(VIEW).raw["version"] == 2  # expressions: version 2
    with pytest.raises(QueryError, match=r"view\.version: this definition is version 3"):
        ViewDefinition.parse({**VIEW, "version": 3})
    with pytest.raises(QueryError, match=r"view\.version: expected 1 or 2"):
        ViewDefinition.parse({**VIEW, "version": "2"})
    # a shared definition with expressions is stored with its version and read back
    me = make_node("me")
    crm_with_dates(me)
    crm = me.tenant("crm")
    me.views.define(crm, "revenue", VIEW)
    (listed,) = me.views.definitions(crm)
    assert listed["definition"]["version"] == 2
    assert me.views.reader(crm, "revenue").tree()["count"] > 0


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (
            {"columns": ["a", "b", {"name": "t", "expr": {"$add": ["$a", "x"]}}]},
            "view.columns[2].expr.$add[1]: expected a number",
        ),
        ({"categories": [{"expr": {"$yaer": "$date"}}]}, "view.categories[0].expr: unknown"),
        (
            {"totals": [{"op": "sum", "expr": TOTAL}]},
            "view.totals[0].name: a total of an expr needs a name",
        ),
        (
            {"totals": [{"op": "sum", "path": "a", "expr": TOTAL, "name": "x"}]},
            "view.totals[0]: sum needs a path or an expr (one of them)",
        ),
        ({"sort": [{"expr": TOTAL, "asc": True}]}, "view.sort[0]: unknown keys ['asc']"),
        ({"filter": {"$expr": [TOTAL]}}, "view.filter.$expr: expected [VALUE, CONDITION]"),
        ({"columns": [{"name": "t", "expr": "$bad..path"}]}, "view.columns[0].expr: invalid"),
    ],
)
def test_malformed_expressions_in_views_name_the_part(change: dict[str, Any], names: str) -> None:
    with pytest.raises(QueryError) as caught:
        ViewDefinition.parse({**VIEW, **change})
    assert names in str(caught.value)


def test_without_a_facet_table_the_tree_is_the_same(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = make_node("me")
    crm_with_dates(me)
    crm = me.tenant("crm")
    me.views.define(crm, "revenue", VIEW, local=True)
    with_facets = me.views.reader(crm, "revenue").tree(expand_all=True)
    # too many view shapes: the grouped query reads the documents themselves
    monkeypatch.setattr(type(me.index.store), "ensure_facets", lambda *_a, **_k: None)
    assert me.views.reader(crm, "revenue").tree(expand_all=True) == with_facets


def test_a_computed_category_may_not_take_another_categorys_name() -> None:
    with pytest.raises(QueryError, match=r"view\.categories\[1\]\.name: 'customer' names two"):
        ViewDefinition.parse(
            {**VIEW, "categories": ["customer", {"name": "customer", "expr": YEAR}]}
        )
    ViewDefinition.parse({**VIEW, "categories": ["customer", "customer"]})  # as before


def test_a_computed_category_is_a_facet_column_its_literals_rows_of_a_table(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = make_node("me")
    written = crm_with_dates(me)
    crm = me.tenant("crm")
    attack = "'); DROP TABLE docs; --"
    band = {"$round": [{"$div": ["$price", 25]}, 0]}
    tag = {"$concat": [{"$coalesce": ["$customer", "?"]}, attack]}
    me.views.define(
        crm,
        "bands",
        {
            "sources": [{"tenant": "crm", "db": "*"}],
            "categories": [{"name": "band", "expr": band}, {"name": "tag", "expr": tag}],
            "totals": [{"name": "revenue", "op": "sum", "expr": TOTAL}],
        },
        local=True,
    )
    store = me.index.store
    statements: list[str] = []
    read = store.read
    monkeypatch.setattr(
        store, "read", lambda sql, params=(): statements.append(sql) or read(sql, params)
    )
    tree = me.views.reader(crm, "bands").tree(expand_all=True)
    for band_node in tree["categories"]:
        docs = [d for d in written if evaluate(band, d) == band_node["value"]]
        assert band_node["count"] == len(docs)
        assert [c["value"] for c in band_node["categories"]] == sorted(
            {evaluate(tag, d) for d in docs}
        )
        assert band_node["totals"]["revenue"] == pytest.approx(
            sum(t for d in docs if (t := evaluate(TOTAL, d)) is not None)
        )
    # the groups are read in order from the facet table's index: no sort of the documents
    (grouped,) = [s for s in statements if "GROUP BY" in s and "vf_" in s]
    plan = " ".join(
        str(r[-1]) for r in store.read(f"EXPLAIN QUERY PLAN {grouped}", [1] * grouped.count("?"))
    )
    assert "TEMP B-TREE" not in plan and "COVERING INDEX" in plan, plan
    # the literals live in a table the triggers read: the schema holds none of them
    schema = " ".join(str(r[0]) for r in store.read("SELECT sql FROM sqlite_master"))
    assert attack not in schema and "25" not in schema
    # a write recomputes the column (the trigger)
    doc = crm.open_db("crm2025").create_document({"price": 1000, "qty": 1, "customer": "Z"})
    tree = me.views.reader(crm, "bands").tree()
    assert 40.0 in [c["value"] for c in tree["categories"]]
    crm.open_db("crm2025").delete(doc)
    assert 40.0 not in [c["value"] for c in me.views.reader(crm, "bands").tree()["categories"]]
