"""The query expression language (JSON) and its compiler to parameterized SQL. Pure.

A *path* names a value inside a document: dot-separated segments, each a name
(``[A-Za-z_][A-Za-z0-9_]*``) or a list index (digits): ``customer.name``, ``items.0.sku``.

A *where* expression is a JSON object::

    {"status": "open"}                          equality (null matches a missing value)
    {"amount": {"$gte": 10, "$lt": 100}}        comparisons: $eq $ne $gt $gte $lt $lte
    {"tag": {"$in": ["a", "b"]}}                $in / $nin: a list of values
    {"email": {"$exists": true}}                the path exists (even when its value is null)
    {"name": {"$prefix": "Ac"}}                 text starting with the prefix
    {"$and": [...]}, {"$or": [...]}, {"$not": {...}}
    {"$expr": [VALUE, CONDITION]}               a computed value (`computed`: ``{"$mul":
                                                ["$price", "$qty"]}``) meets a condition
                                                (a value, or an object of the operators above)
    several keys in one object: all must hold

Values are JSON scalars (strings, numbers, booleans, null); dates are ISO strings and compare as
text. Comparisons follow SQLite's order across types (null < numbers < text), the order `sort`
uses, so a range never mixes types by accident.

Compilation never concatenates a value into SQL: every value is a bound parameter. Paths are
validated against the grammar above and only then written into the SQL as a quoted literal,
because SQLite uses an expression index only when the query's expression matches it
textually (`json_extract(body, '$.amount')`), and a bound path would match no index. A
malformed expression raises `QueryError` naming the offending part (``where.$or[1].amount``).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import MindooError

if TYPE_CHECKING:
    from .computed import Computed

MAX_PATH_CHARS = 200
MAX_PATH_DEPTH = 16
MAX_IN_VALUES = 1000
MAX_EXPRESSION_NODES = 256
MAX_EXPRESSION_DEPTH = 32
MAX_SORT_KEYS = 8
MAX_FIELDS = 64

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INDEX = re.compile(r"[0-9]{1,9}\Z")
_COMPARISONS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = (*_COMPARISONS, "$in", "$nin", "$exists", "$prefix")
_TEXT_MAX = "\U0010ffff"

Scalar = str | int | float | bool | None
SqlParams = list[Any]


class QueryError(MindooError, ValueError):
    """A malformed query, view definition or search: the message names the offending part."""


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A validated document path; `sql` is the expression that reads it from ``body``."""

    text: str
    json_path: str

    @property
    def sql(self) -> str:
        return f"json_extract(body, '{self.json_path}')"

    @property
    def exists_sql(self) -> str:
        return f"json_type(body, '{self.json_path}')"

    def sql_on(self, row: str, *, exists: bool = False) -> str:
        """`sql` (or `exists_sql`) reading ``row.body`` (``new``/``old`` in a trigger)."""
        function = "json_type" if exists else "json_extract"
        return f"{function}({row}.body, '{self.json_path}')"


def parse_path(text: object, where: str = "path") -> JsonPath:
    """A `JsonPath`, or QueryError naming ``where`` and what is wrong."""
    if not isinstance(text, str) or not text:
        raise QueryError(f"{where}: a path must be a non-empty string, not {text!r}")
    if len(text) > MAX_PATH_CHARS:
        raise QueryError(f"{where}: path longer than {MAX_PATH_CHARS} characters")
    parts = text.split(".")
    if len(parts) > MAX_PATH_DEPTH:
        raise QueryError(f"{where}: path {text!r} deeper than {MAX_PATH_DEPTH} levels")
    json_path = "$"
    for part in parts:
        if _NAME.match(part):
            json_path += f".{part}"
        elif _INDEX.match(part) and json_path != "$":
            json_path += f"[{int(part)}]"
        else:
            raise QueryError(
                f"{where}: invalid path {text!r}: segment {part!r} must be a name"
                " (letters, digits, _; not starting with a digit) or a list index"
            )
    return JsonPath(text, json_path)


def _scalar(value: object, where: str) -> Scalar:
    if value is None or isinstance(value, str | bool | int | float):
        if isinstance(value, float) and value != value:
            raise QueryError(f"{where}: NaN is not a value")
        return value
    raise QueryError(
        f"{where}: expected a string, number, boolean or null, not {type(value).__name__}"
    )


def _bind(value: Scalar) -> Any:
    """Booleans as JSON reads them back (json_extract gives 1 and 0)."""
    if isinstance(value, bool):
        return int(value)
    return value


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A WHERE fragment and its parameters, and the paths it filters on (for indexes)."""

    sql: str
    params: tuple[Any, ...]
    paths: tuple[JsonPath, ...]
    equality: tuple[JsonPath, ...] = ()
    """Paths every match has one given non-null value at (``{"status": "open"}`` at the top
    level or under a top-level $and): an index led by them serves the query."""
    computed_paths: tuple[JsonPath, ...] = ()
    """Paths read by computed values (``$expr``): not worth an index of their own."""


class ExpressionBudget:
    """The parts and the nesting of one expression, counted across the where language and
    the computed values inside it (``$expr`` in a where, ``$if``/``$case`` conditions in a
    value): one budget for the whole expression, however the two nest. A part is an
    expression object, a path clause or a value (operation, path or literal); the depth is
    how many of them enclose one another. Over `MAX_EXPRESSION_NODES` parts or
    `MAX_EXPRESSION_DEPTH` levels is a QueryError naming the part (before Python's own
    recursion limit can be reached)."""

    __slots__ = ("depth", "parts")

    def __init__(self) -> None:
        self.parts = 0
        self.depth = 0

    def count(self, where: str) -> None:
        """One more part, at ``where``."""
        self.parts += 1
        if self.parts > MAX_EXPRESSION_NODES:
            raise QueryError(f"{where}: expression has more than {MAX_EXPRESSION_NODES} parts")

    @contextlib.contextmanager
    def part(self, where: str) -> Iterator[None]:
        """One more part, holding what is compiled inside the block (one level deeper)."""
        self.count(where)
        if self.depth >= MAX_EXPRESSION_DEPTH:
            raise QueryError(
                f"{where}: expression nested deeper than {MAX_EXPRESSION_DEPTH} levels"
            )
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


Columns = Callable[[JsonPath, bool], str]
"""The SQL that reads a path (``exists``: its JSON type) from the rows queried."""


def body_columns(path: JsonPath, exists: bool) -> str:
    return path.exists_sql if exists else path.sql


class _Compiler:
    def __init__(self, columns: Columns, budget: ExpressionBudget) -> None:
        self.params: SqlParams = []
        self.paths: list[JsonPath] = []
        self.equality: list[JsonPath] = []
        self.computed_paths: list[JsonPath] = []
        self.budget = budget
        self.column = columns
        self.lets = itertools.count()

    def expression(self, expr: object, where: str, conjunctive: bool = False) -> str:
        with self.budget.part(where):
            return self._expression(expr, where, conjunctive)

    def _expression(self, expr: object, where: str, conjunctive: bool) -> str:
        if not isinstance(expr, Mapping):
            raise QueryError(f"{where}: expected an object, not {type(expr).__name__}")
        if not expr:
            return "1"
        parts = [self.clause(str(key), value, where, conjunctive) for key, value in expr.items()]
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def clause(self, key: str, value: object, where: str, conjunctive: bool) -> str:
        here = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise QueryError(f"{here}: expected a non-empty list of expressions")
            joined = f" {key[1:].upper()} ".join(
                self.expression(item, f"{here}[{i}]", conjunctive and key == "$and")
                for i, item in enumerate(value)
            )
            return f"({joined})"
        if key == "$not":
            return f"(NOT {self.expression(value, here)})"
        if key == "$expr":
            return self.computed(value, here)
        if key.startswith("$"):
            raise QueryError(
                f"{here}: unknown operator {key!r} here (expected a path, $and, $or, $not or $expr)"
            )
        self.budget.count(here)
        path = parse_path(key, here)
        self.paths.append(path)
        if isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
            if not value:
                raise QueryError(f"{here}: empty condition")
            parts = [
                self.condition(self.column(path, False), self.column(path, True), str(op), arg,
                               f"{here}.{op}")
                for op, arg in value.items()
            ]  # fmt: skip
            if conjunctive and value.get("$eq") is not None:
                self.equality.append(path)
            return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"
        if conjunctive and value is not None:
            self.equality.append(path)
        return self.condition(self.column(path, False), "", "$eq", value, here)

    def computed(self, value: object, here: str) -> str:
        """``[VALUE, CONDITION]``: the value computed once (a one-row subquery), then
        tested; the condition's parameters precede the value's, as their ``?`` do."""
        from .computed import compile_value  # computed values use where expressions

        if not isinstance(value, list) or len(value) != 2:
            raise QueryError(f"{here}: expected [VALUE, CONDITION]")
        compiled, paths = compile_value(value[0], f"{here}[0]", self.column, self.lets, self.budget)
        self.computed_paths.extend(paths)
        name = f"_x{next(self.lets)}"
        test = value[1]
        if isinstance(test, Mapping) and test and all(str(k).startswith("$") for k in test):
            conditions = [
                self.condition(name, name, str(op), arg, f"{here}[1].{op}")
                for op, arg in test.items()
            ]
            sql = conditions[0] if len(conditions) == 1 else "(" + " AND ".join(conditions) + ")"
        else:
            sql = self.condition(name, name, "$eq", test, f"{here}[1]")
        self.params.extend(compiled.params)
        return f"(SELECT {sql} FROM (SELECT {compiled.text} AS {name}))"

    def condition(self, column: str, exists_column: str, op: str, arg: object, here: str) -> str:
        """``column`` (the SQL reading the value; ``exists_column``: its JSON type, null
        when absent) meets ``op arg``; parameters are appended in the order of their ``?``."""
        if op in _COMPARISONS:
            value = _scalar(arg, here)
            if value is None:
                if op == "$eq":
                    return f"{column} IS NULL"
                if op == "$ne":
                    return f"{column} IS NOT NULL"
                raise QueryError(f"{here}: null can only be compared with $eq or $ne")
            self.params.append(_bind(value))
            if op == "$ne":
                return f"({column} IS NULL OR {column} != ?)"
            return f"{column} {_COMPARISONS[op]} ?"
        if op in ("$in", "$nin"):
            if not isinstance(arg, list) or not arg:
                raise QueryError(f"{here}: expected a non-empty list of values")
            if len(arg) > MAX_IN_VALUES:
                raise QueryError(f"{here}: more than {MAX_IN_VALUES} values")
            values = [_scalar(v, f"{here}[{i}]") for i, v in enumerate(arg)]
            present = [_bind(v) for v in values if v is not None]
            with_null = len(present) != len(values)
            parts: list[str] = []
            if present:
                self.params.extend(present)
                parts.append(f"{column} IN ({', '.join('?' * len(present))})")
            if with_null:
                parts.append(f"{column} IS NULL")
            inside = "(" + " OR ".join(parts) + ")"
            if op == "$in":
                return inside
            return f"(NOT {inside})" if with_null else f"({column} IS NULL OR NOT {inside})"
        if op == "$exists":
            if not isinstance(arg, bool):
                raise QueryError(f"{here}: expected true or false")
            return f"{exists_column} IS {'NOT ' if arg else ''}NULL"
        if op == "$prefix":
            if not isinstance(arg, str) or not arg:
                raise QueryError(f"{here}: expected a non-empty string")
            self.params.extend([arg, arg + _TEXT_MAX])
            return f"({column} >= ? AND {column} < ?)"
        raise QueryError(
            f"{here}: unknown operator {op!r} (expected one of {', '.join(_OPERATORS)})"
        )


def compile_where(
    expr: object,
    where: str = "where",
    columns: Columns = body_columns,
    budget: ExpressionBudget | None = None,
) -> CompiledFilter:
    """Compile a where expression (None: everything) to SQL over the ``body`` column (or over
    the columns ``columns`` names for each path). ``budget``: the parts and depth already
    spent by an enclosing computed value (a fresh budget when None)."""
    if expr is None:
        return CompiledFilter("1", (), ())
    compiler = _Compiler(columns, budget if budget is not None else ExpressionBudget())
    sql = compiler.expression(expr, where, conjunctive=True)
    return CompiledFilter(
        sql,
        tuple(compiler.params),
        tuple(compiler.paths),
        tuple(dict.fromkeys(compiler.equality)),
        tuple(dict.fromkeys(compiler.computed_paths)),
    )


@dataclass(frozen=True, slots=True)
class SortKey:
    """One key of an order (or a view's category): a document path, or a computed value
    (`computed.Computed`, then ``path`` is None) under ``name``."""

    path: JsonPath | None
    descending: bool = False
    computed: Computed | None = None
    name: str = ""

    @property
    def label(self) -> str:
        """What rows name the key's value by: the path, or the computed value's name."""
        return self.name or (self.path.text if self.path is not None else "")

    @property
    def paths(self) -> tuple[JsonPath, ...]:
        """The document paths the key reads."""
        if self.computed is not None:
            return self.computed.paths
        assert self.path is not None
        return (self.path,)

    def sql(self, columns: Columns = body_columns) -> tuple[str, tuple[Any, ...]]:
        """The SQL reading the key (through ``columns``) and its parameters."""
        if self.computed is not None:
            compiled = self.computed.sql(columns)
            return compiled.text, compiled.params
        assert self.path is not None
        return columns(self.path, False), ()

    def to_dict(self) -> dict[str, Any]:
        if self.computed is not None:
            return {"expr": self.computed.raw, "name": self.label, "desc": self.descending}
        return {"path": self.label, "desc": self.descending}


def index_paths(keys: Sequence[SortKey]) -> list[JsonPath]:
    """The paths of the leading path keys (an index on them serves the order up to there)."""
    out: list[JsonPath] = []
    for key in keys:
        if key.path is None:
            break
        out.append(key.path)
    return out


def parse_sort(spec: object, where: str = "sort") -> tuple[SortKey, ...]:
    """``["amount:desc", "name"]``, ``[{"path": "amount", "desc": true}]`` or a computed key
    ``{"expr": VALUE, "name": "total", "desc": true}`` (see `computed`), or one of them."""
    if spec is None:
        return ()
    items = spec if isinstance(spec, list | tuple) else [spec]
    if len(items) > MAX_SORT_KEYS:
        raise QueryError(f"{where}: more than {MAX_SORT_KEYS} sort keys")
    keys: list[SortKey] = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            text, _, direction = item.partition(":")
            if direction not in ("", "asc", "desc"):
                raise QueryError(f"{here}: direction must be asc or desc, not {direction!r}")
            keys.append(SortKey(parse_path(text, here), direction == "desc"))
        elif isinstance(item, Mapping) and "expr" in item:
            from .computed import parse_computed  # computed values build on this module

            unknown = set(item) - {"expr", "desc", "name"}
            if unknown:
                raise QueryError(f"{here}: unknown keys {sorted(unknown)} (expr, name, desc)")
            desc = item.get("desc", False)
            if not isinstance(desc, bool):
                raise QueryError(f"{here}.desc: expected true or false")
            name = item.get("name", f"#{i}")
            if not isinstance(name, str) or not name or len(name) > MAX_PATH_CHARS:
                raise QueryError(f"{here}.name: expected a non-empty string")
            computed = parse_computed(item["expr"], f"{here}.expr")
            keys.append(SortKey(None, desc, computed, name))
        elif isinstance(item, Mapping):
            unknown = set(item) - {"path", "desc"}
            if unknown:
                raise QueryError(f"{here}: unknown keys {sorted(unknown)}")
            desc = item.get("desc", False)
            if not isinstance(desc, bool):
                raise QueryError(f"{here}.desc: expected true or false")
            keys.append(SortKey(parse_path(item.get("path"), f"{here}.path"), desc))
        else:
            raise QueryError(
                f"{here}: expected 'path[:desc]', an object with a path, or one with an expr"
            )
    return tuple(keys)


def parse_fields(spec: object, where: str = "fields") -> tuple[JsonPath, ...] | None:
    """Paths to return (None: the whole document)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s]
    if not isinstance(spec, list | tuple) or not spec:
        raise QueryError(f"{where}: expected a non-empty list of paths")
    if len(spec) > MAX_FIELDS:
        raise QueryError(f"{where}: more than {MAX_FIELDS} fields")
    return tuple(parse_path(p, f"{where}[{i}]") for i, p in enumerate(spec))


def keyset_after(
    keys: Sequence[tuple[str, bool]], values: Sequence[Any], tiebreak: str, last: str
) -> tuple[str, list[Any]]:
    """The WHERE fragment selecting rows after ``values`` (then ``last`` on ``tiebreak``) in
    the order ``ORDER BY key1 [DESC], ..., tiebreak``: keyset pagination. ``keys`` are
    (sql expression, descending). NULL sorts first ascending and last descending, as SQLite
    orders it; the fragment follows that order exactly."""
    ors: list[str] = []
    params: list[Any] = []
    equal: list[str] = []
    equal_params: list[Any] = []
    for (sql, desc), value in zip(keys, values, strict=True):
        if value is None:
            after = None if desc else f"{sql} IS NOT NULL"
            after_params: list[Any] = []
        elif desc:
            after, after_params = f"({sql} < ? OR {sql} IS NULL)", [value]
        else:
            after, after_params = f"{sql} > ?", [value]
        if after is not None:
            ors.append("(" + " AND ".join([*equal, after]) + ")")
            params.extend([*equal_params, *after_params])
        equal.append(f"{sql} IS ?")
        equal_params.append(value)
    ors.append("(" + " AND ".join([*equal, f"{tiebreak} > ?"]) + ")")
    params.extend([*equal_params, last])
    return "(" + " OR ".join(ors) + ")", params
