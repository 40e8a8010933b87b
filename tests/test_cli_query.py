"""The query, search, index and view commands: output, --json, and one-line errors."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD

from cli.main import Invocation, run
from mindoo_p2p.node import Node

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]


@pytest.fixture
def home(make_node: MakeNode, tmp_path: Path) -> Path:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    for year in (2025, 2026):
        db = tenant.create_db(f"crm{year}")
        for i in range(6):
            db.create_document(
                {
                    "year": year,
                    "customer": "Acme" if i % 2 else "Globex",
                    "amount": i * 10,
                    "status": "open" if i % 3 else "closed",
                    "note": f"call back about invoice {year}-{i}",
                }
            )
    node.close()
    return tmp_path / "n"


def mindoo(home: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(
        ["--home", str(home), *argv],
        Invocation(home.parent, {"MINDOO_PASSWORD": PASSWORD}, out, err),
    )
    return code, out.getvalue(), err.getvalue()


def as_json(home: Path, *argv: str) -> Any:
    code, out, err = mindoo(home, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_query_search_and_index_commands(home: Path) -> None:
    open_by_amount = (
        "query",
        "acme",
        "crm2025",
        "--source",
        "acme/crm2026",
        "--where",
        '{"status": "open"}',
        "--sort",
        "amount:desc",
        "--sort",
        "year",
        "--limit",
        "3",
        "--fields",
        "amount,year",
    )
    data = as_json(home, *open_by_amount)
    assert [r["values"] for r in data["rows"]] == [
        {"amount": 50, "year": 2025},
        {"amount": 50, "year": 2026},
        {"amount": 40, "year": 2025},
    ]
    assert data["coverage"] == {"indexed": 12, "skipped": {}}
    page2 = as_json(home, *open_by_amount, "--cursor", data["next_cursor"])
    assert [r["values"]["amount"] for r in page2["rows"]] == [40, 20, 20]
    code, out, _err = mindoo(home, "query", "acme", "crm2025", "--where", '{"amount": 0}')
    assert code == 0 and "12 documents indexed" not in out and "6 documents indexed" in out
    hits = as_json(home, "search", "acme", "invoic* 2026")["hits"]
    assert len(hits) == 6 and all(h["db"] == "crm2026" for h in hits)
    code, out, _err = mindoo(home, "search", "acme", '"call back"', "--db", "crm2025")
    assert code == 0 and out.count("[call back]") == 6
    status = as_json(home, "index", "status")
    assert not status["stale"] and {s["db"] for s in status["sources"]} >= {"crm2025", "crm2026"}
    code, out, err = mindoo(home, "index", "rebuild")
    assert code == 0 and "12 documents indexed" in out, err


def test_view_commands(home: Path, tmp_path: Path) -> None:
    (tmp_path / "v.json").write_text(
        json.dumps(
            {
                "sources": ["acme/crm2025", "acme/crm2026"],
                "categories": ["year", "customer"],
                "sort": ["amount:desc"],
                "columns": ["amount"],
                "totals": [{"name": "sum", "op": "sum", "path": "amount"}],
            }
        )
    )
    assert mindoo(home, "view", "define", "acme", "pipeline", "v.json")[0] == 0
    assert mindoo(home, "view", "define", "acme", "mine", "v.json", "--local")[0] == 0
    listed = as_json(home, "view", "list", "acme")
    assert [(v["name"], v["scope"]) for v in listed] == [("mine", "local"), ("pipeline", "shared")]
    code, out, err = mindoo(home, "view", "show", "acme", "pipeline", "--expand", "2025/Acme")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "all (12)  sum=300"
    assert "  - 2025 (6)  sum=150" in lines and "  + 2026 (6)  sum=150" in lines
    assert "    - Acme (3)  sum=90" in lines and "    + Globex (3)  sum=60" in lines
    tree = as_json(home, "view", "show", "acme", "pipeline", "--all")
    assert [c["count"] for c in tree["categories"]] == [6, 6]
    rows = as_json(home, "view", "show", "acme", "pipeline", "--rows", "--limit", "5")
    assert len(rows["rows"]) == 5 and rows["next_cursor"]


def test_views_and_queries_with_computed_values(home: Path, tmp_path: Path) -> None:
    (tmp_path / "v.json").write_text(
        json.dumps(
            {
                "sources": ["acme/*"],
                "categories": [{"name": "customer", "expr": {"$lower": "$customer"}}],
                "columns": [{"name": "net", "expr": {"$mul": ["$amount", 0.5]}}],
                "totals": [{"name": "net", "op": "sum", "expr": {"$mul": ["$amount", 0.5]}}],
            }
        )
    )
    assert mindoo(home, "view", "define", "acme", "net", "v.json")[0] == 0
    code, out, err = mindoo(home, "view", "show", "acme", "net")
    assert code == 0, err
    assert out.splitlines()[:3] == [
        "all (12)  net=150",
        "  + acme (6)  net=90",
        "  + globex (6)  net=60",
    ]
    rows = as_json(home, "view", "show", "acme", "net", "--rows", "--limit", "3")
    values = [r["values"] for r in rows["rows"]]
    assert [v["customer"] for v in values] == ["acme"] * 3
    assert {v["net"] for v in values} <= {5.0, 15.0, 25.0}
    by_total = '{"expr": {"$mul": ["$amount", -1]}}'
    data = as_json(home, "query", "acme", "crm2025", "--sort", by_total, "--fields", "amount")
    assert [r["values"]["amount"] for r in data["rows"]] == [50, 40, 30, 20, 10, 0]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["query", "acme", "crm2025", "--where", '{"amount": {"$gtx": 1}}'],
            1,
            "error: where.amount.$gtx: unknown operator '$gtx'",
        ),
        (["query", "acme", "crm2025", "--where", "{nope"], 2, "--where"),
        (
            ["query", "acme", "crm2025", "--sort", "amount:sideways"],
            1,
            "error: sort[0]: direction must be asc or desc",
        ),
        (["query", "acme", "crm2025", "--cursor", "garbage!"], 1, "error: cursor:"),
        (["search", "acme", "AND("], 1, "error: search: term 'AND(' is not a word"),
        (["view", "show", "acme", "nothing"], 1, "error: no view 'nothing'"),
        (["view", "define", "acme", "bad", "bad.json"], 1, "error: view.totals[0].op"),
        (["view", "define", "acme", "bad name", "bad.json"], 1, "error: invalid view name"),
        (["view", "define", "acme", "v", "missing.json"], 2, "does not exist"),
        (
            ["view", "define", "acme", "bad", "expr.json"],
            1,
            "error: view.columns[1].expr.$mul[1]: expected a number, not a text literal",
        ),
        (
            ["query", "acme", "crm2025", "--where", '{"$expr": [{"$yeer": "$d"}, 1]}'],
            1,
            "error: where.$expr[0]: unknown operator '$yeer'",
        ),
        (["query", "acme", "crm2025", "--sort", '{"expr": 1'], 2, "--sort"),
    ],
)
def test_malformed_input_gives_one_line_errors(
    home: Path, argv: list[str], code: int, message: str
) -> None:
    (home.parent / "bad.json").write_text(
        json.dumps({"sources": ["acme/crm2025"], "totals": [{"op": "median", "path": "a"}]})
    )
    columns = ["amount", {"name": "t", "expr": {"$mul": ["$amount", "2"]}}]
    (home.parent / "expr.json").write_text(
        json.dumps({"sources": ["acme/crm2025"], "columns": columns})
    )
    got, out, err = mindoo(home, *argv)
    assert got == code and out == ""
    assert len(err.splitlines()) == 1 and message in err, err
    assert "Traceback" not in err


def test_fsck_reports_a_stale_index(home: Path) -> None:
    code, out, _err = mindoo(home, "fsck")
    assert code == 0 and "query index" not in out  # none yet
    assert as_json(home, "fsck")["index"]["summary"] == "none yet (built on the first query)"
    assert mindoo(home, "query", "acme", "crm2025")[0] == 0
    assert "query index: up to date" in mindoo(home, "fsck")[1]
    with Node.open(home, PASSWORD) as node:  # a write the index has not followed yet
        node.tenant("acme").open_db("crm2025").create_document({"amount": 1})
    code, out, _err = mindoo(home, "fsck")
    assert code == 0 and "query index: stale (1 entries behind the log)" in out
    report = as_json(home, "fsck")
    assert report["ok"] and report["index"]["stale"] and report["index"]["behind"] == 1
    assert mindoo(home, "query", "acme", "crm2025")[0] == 0
    assert as_json(home, "fsck")["index"]["stale"] is False


def test_index_fields_chooses_what_search_covers(home: Path) -> None:
    assert as_json(home, "index", "fields", "acme", "crm2025")["fields"] is None
    code, out, err = mindoo(home, "index", "fields", "acme", "crm2025", "customer")
    assert code == 0 and out.strip() == "crm2025: full-text search covers customer", err
    assert as_json(home, "search", "acme", "invoice", "--db", "crm2025")["hits"] == []
    assert len(as_json(home, "search", "acme", "globex", "--db", "crm2025")["hits"]) == 3
    assert mindoo(home, "index", "fields", "acme", "crm2025", "--all")[0] == 0
    assert len(as_json(home, "search", "acme", "invoice", "--db", "crm2025")["hits"]) == 6
    code, _out, err = mindoo(home, "index", "fields", "acme", "crm2025", "a b")
    assert code == 1 and "error: fields[0]: invalid path 'a b'" in err
