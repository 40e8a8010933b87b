"""The query index: queries, pagination, full-text search, coverage, erasure and rebuilds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD
from helpers import copy_tenant

from mindoo_p2p.index import QueryError, Source, index_path
from mindoo_p2p.index.expressions import parse_path
from mindoo_p2p.index.index_store import IndexStore
from mindoo_p2p.node import Node
from mindoo_p2p.tenant import Tenant

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
MARKER = "zebrafinch-7f3a quarterly secret"


def crm(node: Node) -> tuple[Tenant, list[Source]]:
    tenant = node.create_tenant("crm")
    sources = []
    for year in (2024, 2025):
        db = tenant.create_db(f"crm{year}")
        for i in range(12):
            db.create_document(
                {
                    "year": year,
                    "customer": ["Acme", "Globex", "Initech"][i % 3],
                    "amount": i * 10 + (year - 2024),
                    "status": "open" if i % 2 else "closed",
                    "title": f"ticket {i} of {year}",
                }
            )
        sources.append(node.index.source(tenant, db.name))
    return tenant, sources


def all_rows(node: Node, sources: list[Source], **query: Any) -> list[dict[str, Any]]:
    """Every page of a query, following cursors."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = node.index.query(sources, cursor=cursor, **query)
        out.extend(r.values for r in page.rows)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def test_query_filters_sorts_projects_and_pages_over_several_databases(
    make_node: MakeNode,
) -> None:
    node = make_node("n")
    _tenant, sources = crm(node)
    where = {"status": "open", "amount": {"$gte": 20, "$lt": 100}, "customer": {"$ne": "Acme"}}
    rows = all_rows(
        node,
        sources,
        where=where,
        sort=["amount:desc", "customer"],
        limit=3,
        fields=["customer", "amount"],
    )
    everything = [
        node.tenant("crm").open_db(s.database).get(d)
        for s in sources
        for d in node.tenant("crm").open_db(s.database).list_documents()
    ]
    expected = sorted(
        (
            {"customer": d["customer"], "amount": d["amount"]}
            for d in everything
            if d["status"] == "open" and 20 <= d["amount"] < 100 and d["customer"] != "Acme"
        ),
        key=lambda d: (-d["amount"], d["customer"]),
    )
    assert rows == expected and len(expected) > 3
    # or / in / not / exists / prefix
    found = node.index.query(
        sources,
        where={
            "$or": [{"customer": {"$in": ["Initech"]}}, {"title": {"$prefix": "ticket 1 "}}],
            "$not": {"year": 2024},
            "missing": {"$exists": False},
        },
        limit=100,
    )
    assert sorted(r.values["title"] for r in found.rows) == sorted(
        d["title"]
        for d in everything
        if d["year"] != 2024 and (d["customer"] == "Initech" or d["title"].startswith("ticket 1 "))
    )
    assert found.coverage.indexed == 24 and found.coverage.skipped == {}
    # databases are sources too: db.query(...) is node.index.query(db, ...)
    db2024, db2025 = (node.tenant("crm").open_db(f"crm{y}") for y in (2024, 2025))
    assert node.index.count(db2024) == 12
    assert node.index.query([db2024, db2025], where={"amount": 1}).rows[0].database == "crm2025"
    with pytest.raises(QueryError, match="neither a Source nor a Database"):
        node.index.query(["crm2024"])  # type: ignore[list-item]


def test_cursor_is_stable_while_documents_change(make_node: MakeNode) -> None:
    node = make_node("n")
    tenant, sources = crm(node)
    first = node.index.query(sources, sort=["amount"], limit=5, fields=["amount"])
    seen = [r.values["amount"] for r in first.rows]
    db = tenant.open_db("crm2024")
    db.create_document({"amount": -5})  # sorts before the cursor: not on a later page
    db.create_document({"amount": 1000})  # after it: on a later page
    rest = []
    cursor = first.next_cursor
    while cursor is not None:
        page = node.index.query(sources, sort=["amount"], limit=5, fields=["amount"], cursor=cursor)
        rest.extend(r.values["amount"] for r in page.rows)
        cursor = page.next_cursor
    assert -5 not in rest and rest[-1] == 1000
    assert seen + rest == sorted(seen + rest) and len(set(seen) & set(rest)) == 0
    with pytest.raises(QueryError, match="cursor"):
        node.index.query(sources, sort=["amount", "year"], cursor=first.next_cursor)


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ({"amount": {"$gtx": 1}}, "where.amount.$gtx: unknown operator '$gtx'"),
        ({"$or": [{"a": 1}, {"b.": 2}]}, "where.$or[1].b.: invalid path 'b.'"),
        ({"$and": []}, "where.$and: expected a non-empty list"),
        ({"a": {"$in": "x"}}, "where.a.$in: expected a non-empty list"),
        ({"a": {"$gt": None}}, "where.a.$gt: null can only be compared"),
        ({"a": {"$gt": [1]}}, "where.a.$gt: expected a string, number"),
        ({"x'); DROP TABLE docs; --": 1}, "invalid path"),
        (["a"], "where: expected an object"),
    ],
)
def test_malformed_expressions_name_the_offending_part(
    make_node: MakeNode, where: Any, names: str
) -> None:
    node = make_node("n")
    _tenant, sources = crm(node)
    with pytest.raises(QueryError) as caught:
        node.index.query(sources, where=where)
    assert names in str(caught.value)
    assert node.index.count(sources) == 24  # nothing dropped


def test_sorted_filtered_query_walks_a_composite_path_index(make_node: MakeNode) -> None:
    node = make_node("n")
    _tenant, sources = crm(node)
    node.index.query(sources, where={"status": "open"}, sort=["amount:desc"], limit=5)
    plan = " | ".join(
        str(row[-1])
        for row in node.index.store.read(
            "EXPLAIN QUERY PLAN SELECT id FROM docs WHERE json_extract(body, '$.status') = ?"
            " ORDER BY json_extract(body, '$.amount') DESC LIMIT 5",
            ["open"],
        )
    )
    # equality path then sort path: the matches are read from the index in order
    assert "SEARCH docs USING COVERING INDEX ix_" in plan and "TEMP B-TREE" not in plan


def test_search_ranks_prefixes_and_phrases_across_tenants(make_node: MakeNode) -> None:
    node = make_node("n")
    one, two = node.create_tenant("one"), node.create_tenant("two")
    a = one.create_db("notes")
    b = two.create_db("notes")
    best = a.create_document({"title": "kingfisher kingfisher", "body": "by the river"})
    a.create_document({"title": "heron", "body": "a kingfisher flew by the old mill"})
    b.create_document({"title": "kingfishers", "body": "nothing else"})
    b.create_document({"title": "unrelated", "body": "the mill river"})
    sources = [node.index.source(one, "notes"), node.index.source(two, "notes")]
    hits = node.index.search(sources, "kingfisher").hits
    assert hits[0].document_id == best and len(hits) == 2
    assert "[kingfisher]" in hits[0].snippet
    assert {h.tenant for h in node.index.search(sources, "kingfish*").hits} == {"one", "two"}
    phrase = node.index.search(sources, '"old mill"').hits
    assert len(phrase) == 1 and "the [old mill]" in phrase[0].snippet
    assert node.index.search(sources, '"mill old"').hits == []
    for bad in ("", "AND(", '""'):
        with pytest.raises(QueryError, match="search"):
            node.index.search(sources, bad)


def test_coverage_counts_documents_under_a_key_this_node_lacks(make_node: MakeNode) -> None:
    admin, member = make_node("admin"), make_node("member")
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key("hr")
    notes = tenant.create_db("notes")
    notes.create_document({"text": "everyone"})
    for i in range(3):
        notes.create_document({"text": f"salary {i}"}, key="hr")
    copy_tenant(admin, member, tenant)
    mine = member.tenant("acme")
    sources = [member.index.source(mine, "notes")]
    result = member.index.query(sources)
    assert [r.values["text"] for r in result.rows] == ["everyone"]
    assert result.coverage.to_dict() == {"indexed": 1, "skipped": {"no_key": 3}}
    details = member.index.skipped(sources)
    assert {d["detail"] for d in details} == {"no key 'hr' for this document"}
    # a key import makes them readable: indexed without a rebuild
    member.import_key(admin.export_key(tenant, "hr", to=member.public_identity()))
    result = member.index.query(sources, sort=["text"])
    assert [r.values["text"] for r in result.rows] == [
        "everyone",
        "salary 0",
        "salary 1",
        "salary 2",
    ]
    assert result.coverage.skipped == {}


def test_shred_erases_from_query_search_and_disk(make_node: MakeNode, tmp_path: Path) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    tenant.create_key("subject-42")
    notes = tenant.create_db("notes")
    kept = notes.create_document({"text": "kept handbook"})
    doomed = notes.create_document({"text": MARKER}, key="subject-42")
    notes.update(doomed, {"more": MARKER + " again"})
    sources = [node.index.source(tenant, "notes")]
    assert len(node.index.search(sources, "zebrafinch").hits) == 1
    old_key = node.index.store._key
    node.index.store.checkpoint()
    left_behind = index_path(tmp_path / "n").read_bytes()  # disk blocks a delete leaves
    tenant.shred_key("subject-42")
    # the index moved to a new key; the old key, the only way into what was left behind,
    # is gone from the keystore
    assert node.index.store._key != old_key
    assert node._keystore.read()["index_key"] == node.index.store._key.hex()
    assert old_key.hex() not in json.dumps(node._keystore.read())
    assert b"zebrafinch" not in left_behind
    assert node.index.search(sources, "zebrafinch").hits == []
    assert node.index.search(sources, "quarterly").hits == []
    result = node.index.query(sources)
    assert [r.document_id for r in result.rows] == [kept]
    assert result.coverage.skipped == {"no_key": 1}
    # nothing readable on disk: the index is encrypted, the log is ciphertext
    for path in sorted((tmp_path / "n").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            assert b"zebrafinch" not in data and b"kept handbook" not in data, path
    # and a rebuild agrees
    node.index.rebuild()
    assert [r.document_id for r in node.index.query(sources).rows] == [kept]
    node.close()
    with Node.open(tmp_path / "n", PASSWORD) as reopened:  # the new key opens the index
        assert [r.document_id for r in reopened.index.query(sources).rows] == [kept]
        assert reopened.index.store.rebuilt_because is None


def test_shred_from_another_process_reaches_the_index_when_it_opens(
    make_node: MakeNode, tmp_path: Path
) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    tenant.create_key("k")
    notes = tenant.create_db("notes")
    notes.create_document({"text": MARKER}, key="k")
    assert len(node.index.search([node.index.source(tenant, "notes")], "zebrafinch").hits) == 1
    node.close()
    with Node.open(tmp_path / "n", PASSWORD) as other:  # index not opened by this process
        other.tenant("acme").shred_key("k")
        assert other._index is not None  # the shred opened it to purge
        rows = other.index.store.read("SELECT count(*) FROM docs")
        assert rows == [(0,)]


def test_damaged_or_missing_index_is_rebuilt_with_nothing_lost(
    make_node: MakeNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node("n")
    _tenant, sources = crm(node)
    before = all_rows(node, sources, sort=["amount", "year"], limit=50)
    node.close()
    path = index_path(tmp_path / "n")
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    for offset in range(4096, len(data), 997):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with Node.open(tmp_path / "n", PASSWORD) as node:
        caplog.set_level("WARNING")
        assert all_rows(node, sources, sort=["amount", "year"], limit=50) == before
        assert node.index.store.rebuilt_because is not None
        assert "damaged" in node.index.store.rebuilt_because
        assert "rebuilding it from the log" in caplog.text
    path.unlink()
    with Node.open(tmp_path / "n", PASSWORD) as node:
        assert all_rows(node, sources, sort=["amount", "year"], limit=50) == before
        assert node.index.store.rebuilt_because == "missing"


def test_writes_of_another_process_are_seen(make_node: MakeNode, tmp_path: Path) -> None:
    node = make_node("n")
    _tenant, sources = crm(node)
    assert node.index.count(sources) == 24
    with Node.open(tmp_path / "n", PASSWORD) as other:
        other.tenant("crm").open_db("crm2025").create_document({"amount": 5})
    assert node.index.count(sources, {"amount": 5}) == 1
    status = node.index.status()
    assert not status["stale"] and {s["db"] for s in status["sources"]} == {"crm2024", "crm2025"}


def test_a_long_catch_up_reports_progress_page_by_page(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mindoo_p2p.index import follower

    monkeypatch.setattr(follower, "PAGE_ENTRIES", 5)
    node = make_node("n")
    _tenant, sources = crm(node)
    seen: list[int] = []
    node.index.refresh(seen.append)
    assert seen == sorted(seen) and len(seen) >= 4 and seen[-1] == 24
    assert node.index.count(sources) == 24


def test_full_text_search_covers_chosen_fields(make_node: MakeNode) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    db = tenant.create_db("notes")
    doc = db.create_document({"title": "kingfisher", "body": "heron", "tags": ["otter"]})
    assert [h.document_id for h in node.index.search(db, "heron").hits] == [doc]
    assert node.index.set_search_fields(db, ["title", "tags"]) == 1
    assert node.index.search(db, "heron").hits == []
    assert len(node.index.search(db, "otter").hits) == 1
    db.create_document({"title": "swift", "body": "heron again"})
    assert node.index.search(db, "heron").hits == []  # new documents follow the choice
    node.index.rebuild()  # the choice is kept (in the keystore), not derived
    assert node.index.search_fields(db) == ["title", "tags"]
    assert node.index.search(db, "heron").hits == []
    node.index.set_search_fields(db, None)
    assert len(node.index.search(db, "heron").hits) == 2
    with pytest.raises(QueryError, match="fields"):
        node.index.set_search_fields(db, ["bad path!"])


def test_a_database_answers_its_own_queries_counts_and_searches(make_node: MakeNode) -> None:
    """Issue 11 spells queries ``db.query(...)``: a Database asks the node's query index
    through its tenant's narrow `DatabaseQueries` (no reference to the node), over itself
    only, with the index's expressions, pages and errors."""
    node = make_node("n")
    tenant, (crm2024, crm2025) = crm(node)
    db = tenant.open_db("crm2025")
    where = {"status": "open", "amount": {"$gte": 20}}
    pages, cursor = [], None
    while True:
        page = db.query(where=where, sort="amount:desc", limit=2, fields=["amount"], cursor=cursor)
        pages.append([r.values for r in page.rows])
        assert {(r.tenant, r.database) for r in page.rows} <= {("crm", "crm2025")}
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    rows = [row for page_rows in pages for row in page_rows]
    assert rows == all_rows(node, [crm2025], where=where, sort="amount:desc", fields=["amount"])
    assert [r["amount"] for r in rows] == [111, 91, 71, 51, 31]
    assert db.count() == 12 and db.count(where) == 5
    assert tenant.open_db("crm2024").count(where) == node.index.count([crm2024], where) == 5
    assert db.search("ticket 3").hits[0].database == "crm2025"
    assert [hit.database for hit in db.search("ticket", limit=30).hits] == ["crm2025"] * 12
    with pytest.raises(QueryError, match="limit"):
        db.query(limit=0)


def test_two_processes_making_one_facet_shape_at_once(tmp_path: Path) -> None:
    """Race: two processes open the same view shape at once. Each looked for the facet table
    before its write transaction; the second then failed with "table already exists". Here
    the other process (a second connection) makes the table just as this one begins its
    transaction: the table is seen inside the transaction and used."""
    key = bytes(range(32))
    path = tmp_path / "query.db"
    mine, theirs = IndexStore(path, key), IndexStore(path, key)
    shape = [parse_path("status")]
    raced: list[str] = []

    def race(statement: str) -> None:
        if statement == "BEGIN IMMEDIATE" and not raced:
            made = theirs.ensure_facets(shape)
            assert made is not None
            raced.append(made.table)

    mine._conn.set_trace_callback(race)
    try:
        facets = mine.ensure_facets(shape)
    finally:
        mine._conn.set_trace_callback(None)
    assert raced and facets is not None and facets.table == raced[0]
    mine.close()
    theirs.close()
