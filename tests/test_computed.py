"""Computed values (index/computed.py): the SQL they compile to gives what a plain Python
reading of the language gives, over documents with missing fields and mismatched types; the
SQL is parameterized; malformed expressions name the offending part."""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

import pytest
import sqlcipher3
from computed_reference import evaluate, is_number

from mindoo_p2p.index import QueryError
from mindoo_p2p.index.computed import parse_computed
from mindoo_p2p.index.expressions import compile_where

pytestmark = pytest.mark.timeout(60)

DOCS: list[dict[str, Any]] = [
    {"n": 3, "m": 4, "s": "Hello", "d": "2025-02-28", "t": " 12 ", "b": True},
    {"n": 2.5, "m": 0, "s": "ÄrgER x", "d": "2024-12-31T23:30:00-05:00", "t": "1e3"},
    {"n": "7", "m": -2, "s": "", "d": "2025-02-30", "t": "12abc", "l": [1, 2]},
    {"n": None, "m": 1.25, "s": "abc", "d": "2026-01-05x", "t": "-0.5", "b": False},
    {"m": 10, "s": 5, "d": 20250101, "t": "true", "o": {"k": 1}},
    {},
    {"n": -4, "m": 3, "s": "MiXeD", "d": "2023-11-02", "t": "0x10"},
]


# -- random expressions --------------------------------------------------------------------------
PATHS = ["$n", "$m", "$s", "$d", "$t", "$b", "$l", "$o.k", "$missing"]
CONDITIONS = [
    {"s": "abc"},
    {"n": {"$gte": 3}},
    {"m": {"$exists": True}},
    {"b": 1},
]


OPERATIONS = (
    *("$add", "$sub", "$mul", "$div", "$abs", "$round", "$concat", "$lower", "$upper"),
    *("$substr", "$year", "$month", "$day", "$number", "$string", "$coalesce", "$if"),
)


def leaf(rng: random.Random) -> Any:
    return rng.choice(
        [*PATHS, *PATHS, 2, -1.5, 0, "x", "2025-06-07", True, None, {"$literal": "$x"}]
    )


def number_leaf(rng: random.Random) -> Any:
    return rng.choice([*PATHS, 2, -1.5, 0, 0.25, True, None])


def text_leaf(rng: random.Random) -> Any:
    return rng.choice([*PATHS, "x", "-", "2025-06-07", None, {"$literal": "$x"}])


def expression(rng: random.Random, depth: int) -> Any:
    if depth == 0:
        return leaf(rng)

    def sub(kind: str = "any") -> Any:
        if rng.random() < 0.4:
            return {"number": number_leaf, "text": text_leaf}.get(kind, leaf)(rng)
        return expression(rng, depth - 1)

    op = rng.choice(OPERATIONS)
    if op in ("$add", "$mul"):
        return {op: [sub("number") for _ in range(rng.randint(2, 3))]}
    if op in ("$sub", "$div"):
        return {op: [sub("number"), sub("number")]}
    if op == "$abs":
        return {op: sub("number")}
    if op == "$round":
        return {op: [sub("number"), rng.randint(0, 2)]}
    if op == "$concat":
        return {op: [sub("text") for _ in range(rng.randint(2, 3))]}
    if op in ("$lower", "$upper", "$year", "$month", "$day"):
        return {op: sub("text")}
    if op == "$substr":
        return {op: [sub("text"), rng.randint(0, 3), *([rng.randint(0, 4)] * rng.randint(0, 1))]}
    if op in ("$number", "$string"):
        return {op: sub()}
    if op == "$coalesce":
        return {op: [sub(), sub(), sub()]}
    return {op: [rng.choice(CONDITIONS), sub(), *([sub()] * rng.randint(0, 1))]}


def literal_type_errors(expr: Any) -> bool:
    """Whether the compiler refuses ``expr`` for a literal of the wrong type."""
    try:
        parse_computed(expr)
    except QueryError as exc:
        assert re.search(r"not a (number|text) (literal|value)|ISO date", str(exc)), exc
        return True
    return False


def same(a: Any, b: Any) -> bool:
    if is_number(a) and is_number(b):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return bool(a == b and type(a) is type(b))


@pytest.fixture
def docs_table() -> sqlcipher3.Connection:
    conn = sqlcipher3.connect(":memory:")
    conn.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.executemany("INSERT INTO docs (body) VALUES (?)", [(json.dumps(d),) for d in DOCS])
    return conn


def computed_values(conn: sqlcipher3.Connection, expr: Any) -> list[Any]:
    sql = parse_computed(expr).sql()
    return [r[0] for r in conn.execute(f"SELECT {sql.text} FROM docs ORDER BY id", sql.params)]


def test_random_expressions_compute_what_python_computes(
    docs_table: sqlcipher3.Connection,
) -> None:
    rng = random.Random(5)
    checked = 0
    for _ in range(400):
        expr = expression(rng, rng.randint(1, 4))
        if literal_type_errors(expr):
            continue
        got = computed_values(docs_table, expr)
        want = [evaluate(expr, d) for d in DOCS]
        assert all(same(g, w) for g, w in zip(got, want, strict=True)), (expr, got, want)
        checked += 1
    assert checked > 250


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        # arithmetic: numbers only; text, null and missing give null; /0 gives null
        ({"$add": ["$n", "$m"]}, [7, 2.5, None, None, None, None, -1]),
        ({"$div": ["$n", "$m"]}, [0.75, None, None, None, None, None, -4 / 3]),
        ({"$mul": ["$n", {"$number": "$n"}]}, [9, 6.25, None, None, None, None, 16]),
        # date parts of the date as written (no time-zone shift); invalid dates give null
        ({"$year": "$d"}, [2025, 2024, None, 2026, None, None, 2023]),
        ({"$day": "$d"}, [28, 31, None, 5, None, None, 2]),
        # conversions
        ({"$number": "$t"}, [12, 1000.0, None, -0.5, None, None, None]),
        ({"$string": "$n"}, ["3", "2.5", "7", None, None, None, "-4"]),
        ({"$upper": "$s"}, ["HELLO", "ÄRGER X", "", "ABC", None, None, "MIXED"]),
        ({"$coalesce": ["$n", "$m", "none"]}, [3, 2.5, "7", 1.25, 10, "none", -4]),
        ({"$if": [{"m": {"$gte": 3}}, "big"]}, ["big", None, None, None, "big", None, "big"]),
        ({"$round": [{"$div": ["$m", 8]}, 2]}, [0.5, 0.0, -0.25, 0.16, 1.25, None, 0.38]),
    ],
)
def test_null_missing_and_type_mismatch_semantics(
    docs_table: sqlcipher3.Connection, expr: Any, want: list[Any]
) -> None:
    got = computed_values(docs_table, expr)
    assert all(same(g, w) for g, w in zip(got, want, strict=True)), got
    assert all(same(evaluate(expr, d), w) for d, w in zip(DOCS, want, strict=True))


def test_compiled_sql_is_parameterized(docs_table: sqlcipher3.Connection) -> None:
    attack = "x'); DROP TABLE docs; --"
    expr = {"$concat": [{"$literal": attack}, "$s", {"$coalesce": ["$t", "' OR 1=1 --"]}]}
    sql = parse_computed(expr).sql()
    assert attack not in sql.text and "OR 1=1" not in sql.text
    assert attack in sql.params
    got = computed_values(docs_table, expr)
    assert got[0] == attack + "Hello 12 "
    assert docs_table.execute("SELECT count(*) FROM docs").fetchone()[0] == len(DOCS)
    # the same in a filter's $expr: the text is a value, never SQL
    where = compile_where({"$expr": [{"$concat": ["$s", attack]}, "Hello" + attack]})
    assert attack not in where.sql
    found = docs_table.execute(f"SELECT id FROM docs WHERE {where.sql}", where.params).fetchall()
    assert found == [(1,)]


def test_a_compound_argument_used_twice_is_computed_once(
    docs_table: sqlcipher3.Connection,
) -> None:
    # $year checks and reads its argument several times: a nested coalesce is bound once
    nested: Any = "$d"
    for _ in range(10):  # 30 levels: within MAX_EXPRESSION_DEPTH
        nested = {"$year": {"$string": {"$coalesce": [nested, "$s"]}}}
    sql = parse_computed(nested).sql()
    assert len(sql.text) < 40_000  # linear, not 4 ** 10
    assert len(computed_values(docs_table, nested)) == len(DOCS)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ({"$add": ["$a", "x"]}, "expr.$add[1]: expected a number, not a text literal"),
        ({"$add": ["$a"]}, "expr.$add: expected 2 to 32 arguments, got 1"),
        ({"$lower": ["$a", "$b"]}, "expr.$lower: expected 1 argument, got 2"),
        (
            {"$mul": [{"$concat": ["$a", "b"]}, 2]},
            "expr.$mul[0]: expected a number, not a text value (what this operation gives)",
        ),
        ({"$sum": ["$a", 1]}, "expr: unknown operator '$sum'"),
        ({"$add": ["$a", 1], "$sub": [1, 2]}, "expr: an operation is an object with one key"),
        ({"$lower": {"$concat": ["$a", ["x"]]}}, "expr.$lower.$concat[1]: expected a value"),
        ("$bad path", "expr: invalid path 'bad path'"),
        ({"$round": ["$a", 99]}, "expr.$round[1]: digits"),
        ({"$substr": ["$a", -1]}, "expr.$substr[1]: expected a whole number"),
        ({"$if": [{"a": {"$nope": 1}}, 1]}, "expr.$if[0].a.$nope"),
        ({"$case": [{"else": 1}]}, "expr.$case: give at least one"),
        ({"$case": [{"when": {}, "then": 1, "x": 2}]}, "expr.$case[0]: expected"),
        ({"$year": 2025}, "expr.$year: expected an ISO date text"),
        ({"$div": [1, float("nan")]}, "expr.$div[1]: nan is not a value"),
    ],
)
def test_malformed_expressions_name_the_offending_part(expr: Any, names: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_computed(expr)
    assert names in str(caught.value)


# -- totality: no document value makes a compiled operator raise -------------------------------
INT64_MIN = -(2**63)
AWKWARD: list[Any] = [
    INT64_MIN, 2**63 - 1, -(2**63) + 1, 2**64, -1e308, 1e308, 5e-324, -0.0, 0,
    "x" * 20_000, "[" * 3000, "1e999", "-9223372036854775808", "9" * 400, "2025-13-45",
    "\U0010ffff\x00", True, None, [INT64_MIN], {"k": INT64_MIN},
]  # fmt: skip
AWKWARD_PATHS = ["n", "m", "s", "d", "t", "b"]


def test_abs_of_the_int64_minimum_is_a_number_not_an_error(
    docs_table: sqlcipher3.Connection,
) -> None:
    """Attack: a member writes n = -2**63 (a valid Automerge int64) where a view computes
    {"$abs": "$n"}; SQLite's abs() raised "integer overflow" for it, in the facet trigger of
    every document insert. It now gives the real 2.0**63, as + - * do on overflow."""
    docs_table.execute("INSERT INTO docs (body) VALUES (?)", (json.dumps({"n": INT64_MIN}),))
    assert computed_values(docs_table, {"$abs": "$n"})[-1] == 2.0**63
    assert computed_values(docs_table, {"$abs": {"$sub": ["$n", 0]}})[-1] == 2.0**63
    assert computed_values(docs_table, {"$abs": "$n"})[:len(DOCS)] == [3, 2.5, None, None,
                                                                      None, None, 4]  # fmt: skip


def test_no_operator_raises_for_any_document_value() -> None:
    """Attack: a member crafts document values at the edges of SQLite's types (int64
    extremes, huge reals, long and malformed texts, deep JSON text) to make a computed
    value's SQL raise: in a facet trigger that would fail every write of the index. 400
    random expressions over documents built from those values must all evaluate."""
    rng = random.Random(11)
    conn = sqlcipher3.connect(":memory:")
    conn.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    bodies = [{p: rng.choice(AWKWARD) for p in AWKWARD_PATHS} for _ in range(40)]
    bodies += [{p: value for p in AWKWARD_PATHS} for value in AWKWARD]
    conn.executemany("INSERT INTO docs (body) VALUES (?)", [(json.dumps(b),) for b in bodies])
    evaluated = 0
    for _ in range(400):
        expr = expression(rng, rng.randint(1, 4))
        try:
            sql = parse_computed(expr).sql()
        except QueryError:
            continue  # a literal of the wrong type: refused when defined, never run
        rows = conn.execute(f"SELECT {sql.text} FROM docs ORDER BY id", sql.params).fetchall()
        assert len(rows) == len(bodies)
        evaluated += 1
    assert evaluated > 250


# -- one budget of parts and depth across values and the conditions inside them ----------------
def nested_through_conditions(levels: int) -> Any:
    value: Any = "$x"
    for _ in range(levels):
        value = {"$if": [{"$expr": [value, 1]}, 1, 0]}
    return value


def test_nesting_values_in_conditions_cannot_escape_the_depth_limit() -> None:
    """Attack: a value inside a condition inside a value (``$if`` -> ``$expr`` -> ...) started
    a fresh part count at each level and had no depth limit: 200 levels (a 7 KB definition)
    raised RecursionError instead of a QueryError. Now refused at 32 levels, naming the part."""
    deep = nested_through_conditions(200)
    assert len(json.dumps(deep)) < 8 * 1024
    with pytest.raises(QueryError, match=r"nested deeper than 32 levels"):
        parse_computed(deep)
    with pytest.raises(QueryError, match=r"nested deeper than 32 levels"):
        compile_where({"$expr": [deep, 1]})
    parse_computed(nested_through_conditions(10))  # a reasonable nesting is fine


def test_the_part_limit_counts_values_and_conditions_together() -> None:
    """Attack: 60 conditions each holding a 33-part value (about 2,000 parts, each facet
    build and trigger evaluating all of them) passed the 256-part limit, because each $expr
    value was counted from zero. The shared count refuses it, naming where it ran over."""
    leaf = {"$add": ["$a"] * 31 + [1]}
    wide = {"$if": [{"$and": [{"$expr": [leaf, {"$gt": 0}]}] * 60}, 1, 0]}
    with pytest.raises(QueryError, match=r"expr\.\$if\[0\]\.\$and\[\d+\].*more than 256 parts"):
        parse_computed(wide)
    with pytest.raises(QueryError, match=r"more than 256 parts"):
        compile_where({"$and": [{"$expr": [leaf, {"$gt": 0}]}] * 60})
    parse_computed({"$if": [{"$and": [{"$expr": [leaf, {"$gt": 0}]}] * 6}, 1, 0]})
