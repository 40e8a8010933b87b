"""Views: declarative, categorized, sorted, totalled lists over one or more databases.

A view definition is JSON (validated by `ViewDefinition.parse`, errors name the part)::

    {
      "sources":    [{"tenant": "crm", "db": "crm2025"}, {"tenant": "partner", "db": "*"}],
      "filter":     {"status": "open"},                       # a where expression (optional)
      "categories": ["year", {"path": "customer", "desc": true}],   # nested, outermost first
      "sort":       ["amount:desc"],                          # within a category (optional)
      "columns":    ["customer", {"name": "Amount", "path": "amount"}],
      "totals":     [{"op": "count"}, {"name": "sum", "op": "sum", "path": "amount"}]
    }

``db: "*"`` means every database of the tenant. Totals ops: count, sum, min, max, avg (avg =
sum / number of documents holding a value).

Computed values (`computed`, definition version 2): a category or sort key
``{"name": "year", "expr": {"$year": "$date"}}``, a column ``{"name": "Total", "expr":
{"$mul": ["$price", "$qty"]}}`` and a total ``{"op": "sum", "expr": ...}`` compute their value
per document in SQL. ``"version"`` is optional: 1 (paths only; what a definition without it
is) or 2; `ViewDefinition.parse` stamps 2 on a definition that uses expressions, so a node
that reads only version 1 names what it lacks instead of misreading it, and a definition of a
newer version than `VIEW_VERSION` is refused by name.

Reading a view (`ViewReader`) gives the category tree with counts and totals per category
(one grouped SQL query, rolled up here), expanded only where asked (a path of category values;
an expanded innermost category lists its rows), and the flat sorted list with keyset
pagination (`QueryIndex.query` ordered by the categories, then the sort keys).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .computed import Computed, Sql, join, parse_computed, template
from .expressions import (
    Columns,
    JsonPath,
    QueryError,
    SortKey,
    body_columns,
    compile_where,
    parse_path,
    parse_sort,
)
from .follower import IndexedTenant
from .query_index import Coverage, QueryIndex, QueryResult, Row, Source

if TYPE_CHECKING:
    from .watch import ListenedNode, ViewWatch

MAX_SOURCES = 64
MAX_CATEGORIES = 4
MAX_COLUMNS = 32
MAX_TOTALS = 16
MAX_DEFINITION_BYTES = 64 * 1024
TOTAL_OPS = ("count", "sum", "min", "max", "avg")
ALL_DATABASES = "*"
_KEYS = {
    *("sources", "filter", "categories", "sort", "columns", "totals", "description"),
    "version",
}
ARRIVAL_CHECK_SECONDS = 0.05
"""Seconds between two looks of a view watch at the store's change counter (`watch`)."""
VIEW_VERSION = 2
"""Definitions this code reads: 1 (paths only), 2 (computed values)."""
Operand = JsonPath | Computed
"""What a column or a total reads: a document path or a computed value."""


_TOTAL_FORMS = (
    # SQLite's sum() raises "integer overflow" (a member's two large integers would break
    # the view for every reader): integers are summed as their high and low 32 bits, which
    # cannot overflow, and joined exactly in Python; everything else by total(), as sum()
    # would (text as its leading number), making the sum real when there is any.
    ("sum", "CASE WHEN typeof({0}) = 'integer' THEN {0} >> 32 END"),
    ("sum", "CASE WHEN typeof({0}) = 'integer' THEN {0} & 4294967295 END"),
    ("total", "CASE WHEN typeof({0}) != 'integer' THEN {0} END"),
    ("count", "CASE WHEN typeof({0}) NOT IN ('integer', 'null') THEN 1 END"),
    ("count", "{0}"),
    ("min", "{0}"),
    ("max", "{0}"),
)
"""The aggregates a total selects: (aggregate function, its argument per row)."""


def _exact_sum(high: int | None, low: int | None, others: float, not_integers: int) -> Any:
    """What SQLite's sum() gives for the parts `_TOTAL_FORMS` select, without its overflow:
    an int when every value was an integer (0 for none), else a float."""
    integers = (high or 0) * 2**32 + (low or 0)
    return float(integers) + others if not_integers else integers


def operand_sql(operand: Operand, columns: Columns = body_columns) -> Sql:
    if isinstance(operand, Computed):
        return operand.sql(columns)
    return Sql(columns(operand, False), (), "any", True)


def operand_paths(operand: Operand) -> tuple[JsonPath, ...]:
    return operand.paths if isinstance(operand, Computed) else (operand,)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    tenant: str
    database: str

    def to_dict(self) -> dict[str, str]:
        return {"tenant": self.tenant, "db": self.database}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    value: Operand


@dataclass(frozen=True, slots=True)
class Total:
    name: str
    op: str
    value: Operand | None


@dataclass(frozen=True)
class ViewDefinition:
    sources: tuple[SourceSpec, ...]
    filter: object
    categories: tuple[SortKey, ...]
    sort: tuple[SortKey, ...]
    columns: tuple[Column, ...]
    totals: tuple[Total, ...]
    raw: dict[str, Any]

    @classmethod
    def parse(cls, data: object) -> ViewDefinition:
        """Validate a definition (a dict, or its JSON text). QueryError names the part."""
        if isinstance(data, str | bytes):
            if len(data) > MAX_DEFINITION_BYTES:
                raise QueryError(f"view: definition larger than {MAX_DEFINITION_BYTES} bytes")
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise QueryError(f"view: not JSON ({exc})") from None
            except RecursionError:
                raise QueryError("view: JSON nested too deeply") from None
        if not isinstance(data, Mapping):
            raise QueryError("view: expected a JSON object")
        unknown = set(data) - _KEYS
        if unknown:
            raise QueryError(
                f"view: unknown keys {sorted(unknown)} (expected {', '.join(sorted(_KEYS))})"
            )
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise QueryError(f"view.version: expected 1 or 2, not {version!r}")
        if version > VIEW_VERSION:
            raise QueryError(
                f"view.version: this definition is version {version}; this node reads up to"
                f" {VIEW_VERSION}: update mindoo to read it"
            )
        sources = _parse_sources(data.get("sources"))
        view_filter = data.get("filter")
        compiled = compile_where(view_filter, "view.filter")
        categories = parse_sort(data.get("categories"), "view.categories")
        if len(categories) > MAX_CATEGORIES:
            raise QueryError(f"view.categories: at most {MAX_CATEGORIES} levels")
        labels = [k.label for k in categories]
        for i, key in enumerate(categories):
            if key.computed is not None and labels.count(key.label) > 1:
                raise QueryError(f"view.categories[{i}].name: {key.label!r} names two categories")
        sort = parse_sort(data.get("sort"), "view.sort")
        columns = _parse_columns(data.get("columns"))
        totals = _parse_totals(data.get("totals"))
        raw = json.loads(json.dumps(dict(data)))
        computes = (
            bool(compiled.computed_paths)
            or any(k.computed is not None for k in (*categories, *sort))
            or any(isinstance(c.value, Computed) for c in columns)
            or any(isinstance(t.value, Computed) for t in totals)
        )
        if computes:
            raw["version"] = max(2, version)
        return cls(sources, view_filter, categories, sort, columns, totals, raw)


def _parse_sources(spec: object) -> tuple[SourceSpec, ...]:
    if not isinstance(spec, list) or not spec:
        raise QueryError("view.sources: expected a non-empty list of {tenant, db}")
    if len(spec) > MAX_SOURCES:
        raise QueryError(f"view.sources: at most {MAX_SOURCES}")
    out = []
    for i, item in enumerate(spec):
        here = f"view.sources[{i}]"
        if isinstance(item, str) and "/" in item:
            tenant, _, database = item.partition("/")
            item = {"tenant": tenant, "db": database}
        if not isinstance(item, Mapping) or set(item) != {"tenant", "db"}:
            raise QueryError(f'{here}: expected {{"tenant": NAME, "db": NAME or "*"}}')
        tenant, database = item["tenant"], item["db"]
        if (
            not isinstance(tenant, str)
            or not tenant
            or not isinstance(database, str)
            or not database
        ):
            raise QueryError(f"{here}: tenant and db must be non-empty strings")
        out.append(SourceSpec(tenant, database))
    return tuple(out)


def _parse_columns(spec: object) -> tuple[Column, ...]:
    if spec is None:
        return ()
    if not isinstance(spec, list):
        raise QueryError("view.columns: expected a list of paths or {name, path}")
    if len(spec) > MAX_COLUMNS:
        raise QueryError(f"view.columns: at most {MAX_COLUMNS}")
    out = []
    for i, item in enumerate(spec):
        here = f"view.columns[{i}]"
        if isinstance(item, str):
            out.append(Column(item, parse_path(item, here)))
        elif isinstance(item, Mapping) and set(item) <= {"name", "path"} and "path" in item:
            path = parse_path(item["path"], f"{here}.path")
            name = item.get("name", path.text)
            if not isinstance(name, str) or not name:
                raise QueryError(f"{here}.name: expected a non-empty string")
            out.append(Column(name, path))
        elif isinstance(item, Mapping) and set(item) == {"name", "expr"}:
            name = item["name"]
            if not isinstance(name, str) or not name:
                raise QueryError(f"{here}.name: expected a non-empty string")
            out.append(Column(name, parse_computed(item["expr"], f"{here}.expr")))
        else:
            raise QueryError(f"{here}: expected a path, {{name, path}} or {{name, expr}}")
        if any(c.name == out[-1].name for c in out[:-1]):
            raise QueryError(f"{here}.name: {out[-1].name!r} is used twice")
    return tuple(out)


def _parse_totals(spec: object) -> tuple[Total, ...]:
    if spec is None:
        return ()
    if not isinstance(spec, list):
        raise QueryError("view.totals: expected a list of {op, path, name}")
    if len(spec) > MAX_TOTALS:
        raise QueryError(f"view.totals: at most {MAX_TOTALS}")
    out: list[Total] = []
    for i, item in enumerate(spec):
        here = f"view.totals[{i}]"
        if not isinstance(item, Mapping) or not set(item) <= {"name", "op", "path", "expr"}:
            raise QueryError(f"{here}: expected an object with op, path (or expr) and name")
        op = item.get("op")
        if op not in TOTAL_OPS:
            raise QueryError(f"{here}.op: expected one of {', '.join(TOTAL_OPS)}, not {op!r}")
        value: Operand | None = None
        if op != "count":
            if ("path" in item) == ("expr" in item):
                raise QueryError(f"{here}: {op} needs a path or an expr (one of them)")
            if "path" in item:
                value = parse_path(item["path"], f"{here}.path")
            else:
                value = parse_computed(item["expr"], f"{here}.expr")
                if "name" not in item:
                    raise QueryError(f"{here}.name: a total of an expr needs a name")
        elif set(item) & {"path", "expr"}:
            raise QueryError(f"{here}: count takes no path or expr")
        name = item.get("name", op if not isinstance(value, JsonPath) else f"{op}({value.text})")
        if not isinstance(name, str) or not name:
            raise QueryError(f"{here}.name: expected a non-empty string")
        if any(t.name == name for t in out):
            raise QueryError(f"{here}.name: {name!r} is used twice")
        out.append(Total(name, str(op), value))
    return tuple(out)


# -- reading ----------------------------------------------------------------------------------
def sql_order_key(value: Any) -> tuple[int, Any]:
    """SQLite's order of values (null < numbers < text < other) as a Python sort key."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value.encode())
    return (3, json.dumps(value, sort_keys=True))


@dataclass
class _Acc:
    count: int = 0
    sums: dict[str, float] | None = None
    counts: dict[str, int] | None = None
    mins: dict[str, Any] | None = None
    maxs: dict[str, Any] | None = None


class ViewReader:
    """One view over the index: the tree, the rows, totals. Tenants are resolved by name
    through ``resolve`` (names in a definition are those of this node)."""

    def __init__(
        self,
        index: QueryIndex,
        definition: ViewDefinition,
        resolve: Callable[[str], IndexedTenant],
        node: ListenedNode | None = None,
    ) -> None:
        self.index = index
        self.definition = definition
        self._resolve = resolve
        self._node = node

    def watch(
        self,
        *,
        poll_seconds: float | None = None,
        max_rows: int = 10_000,
        check_seconds: float | None = ARRIVAL_CHECK_SECONDS,
    ) -> ViewWatch:
        """``async for change in reader.watch()`` (or ``async with reader.watch() as w``):
        see `watch.ViewWatch`. Another process's writes show by default (the store's change
        counter is looked at every ``check_seconds``; None: only this process's writes and
        ``poll_seconds``). Call it inside trio."""
        from .watch import watch_view  # watch builds on this module

        if self._node is None:
            raise QueryError("this view reader has no node to watch")
        return watch_view(
            self._node,
            self,
            poll_seconds=poll_seconds,
            max_rows=max_rows,
            check_seconds=check_seconds,
        )

    def sources(self) -> list[Source]:
        out: list[Source] = []
        for spec in self.definition.sources:
            tenant = self._resolve(spec.tenant)
            if spec.database == ALL_DATABASES:
                out.extend(self.index.all_sources(tenant))
            else:
                out.append(self.index.source(tenant, spec.database))
        return list(dict.fromkeys(out))

    def _order(self) -> list[SortKey]:
        return [*self.definition.categories, *self.definition.sort]

    def rows(self, *, limit: int = 100, cursor: str | None = None) -> QueryResult:
        """The flat list: every document, ordered by the categories then the sort keys."""
        d = self.definition
        fields = [k.path.text for k in d.categories if k.path is not None]
        fields += [c.value.text for c in d.columns if isinstance(c.value, JsonPath)]
        computed = self._computed(d.categories)
        result = self.index.query(
            self.sources(),
            where=d.filter,
            sort=[k.to_dict() for k in self._order()],
            limit=limit,
            fields=list(dict.fromkeys(fields)) or None,
            cursor=cursor,
            computed=computed,
        )
        result.rows = [self._named(r, with_categories=True) for r in result.rows]
        return result

    def _named(self, row: Row, *, with_categories: bool) -> Row:
        """A row's values under the column names (and the category paths)."""
        d = self.definition
        if not d.columns and not (with_categories and any(k.computed for k in d.categories)):
            return row
        values = {}
        if with_categories:
            values = {k.label: row.values.get(k.label) for k in d.categories}
        for c in d.columns:
            key = c.value.text if isinstance(c.value, JsonPath) else _COMPUTED + c.name
            values[c.name] = row.values.get(key)
        return Row(row.tenant, row.database, row.document_id, values)

    def _computed(self, categories: Sequence[SortKey]) -> dict[str, Computed]:
        """The computed values a page of rows reads: categories by their name, columns by
        theirs (prefixed: a column may share a name with a category)."""
        out = {k.label: k.computed for k in categories if k.computed is not None}
        for c in self.definition.columns:
            if isinstance(c.value, Computed):
                out[_COMPUTED + c.name] = c.value
        return out

    def groups(self) -> tuple[list[tuple[tuple[Any, ...], _Acc]], Coverage]:
        """Leaf category groups (values, accumulated totals), one grouped query."""
        d = self.definition
        sources = self.sources()
        self.index.refresh()
        coverage = self.index.coverage(sources)
        sids = [
            sid
            for s in sources
            if (sid := self.index.store.find_source(s.tenant_id, s.database)) is not None
        ]
        if not sids:
            return [], coverage
        probe = compile_where(d.filter, "view.filter")
        # categories first (a computed one as a column of its own, computed when a document
        # is indexed, so the covering index orders the groups), then what totals and the
        # filter read
        facet_values: list[JsonPath | Computed] = [_operand_of(k) for k in d.categories]
        facet_values += [p for t in d.totals if t.value is not None for p in operand_paths(t.value)]
        facet_values += [*probe.paths, *probe.computed_paths]
        tested = [*probe.paths, *probe.computed_paths]
        tested += [
            p for t in d.totals if isinstance(t.value, Computed) for p in t.value.condition_paths
        ]
        facets = self.index.store.ensure_facets(
            list(dict.fromkeys(facet_values)), list(dict.fromkeys(tested))
        )
        columns: Columns
        if facets is not None:
            # the facet table: real columns kept by triggers, read from its covering index
            table = facets.table
            compiled = compile_where(d.filter, "view.filter", facets.column)
            columns = facets.column
        else:  # too many view shapes: read the documents themselves
            table = "docs"
            compiled = probe
            for path in probe.paths:
                self.index.store.ensure_path_index(path)
            columns = body_columns

        selected: list[Sql] = []
        group: list[str] = []
        for i, key in enumerate(d.categories):
            if facets is not None and key.computed is not None:
                text, params = facets.computed_column(key.computed), ()
            else:
                text, params = key.sql(columns)
            selected.append(Sql(text, params))
            group.append(str(i + 1) if params else text)  # a result column, or its SQL
        selected.append(Sql("count(*)"))
        lets = itertools.count(1_000_000)  # apart from the names a computed value's SQL uses
        for t in d.totals:
            if t.value is not None:
                c = operand_sql(t.value, columns)
                selected += [
                    join(f"{fn}(", template(form, [c], "any", lets), ")")
                    for fn, form in _TOTAL_FORMS
                ]
        commas: list[str | Sql] = []
        for item in selected:
            commas += [", ", item] if commas else [item]
        select = join(*commas)
        marks = ",".join("?" * len(sids))
        group_by = f" GROUP BY {', '.join(group)}" if group else ""
        sql = (
            f"SELECT {select.text} FROM {table}"
            f" WHERE source IN ({marks}) AND {compiled.sql}{group_by}"
        )
        cats = d.categories
        out = []
        for row in self.index.store.read(sql, [*select.params, *sids, *compiled.params]):
            values = tuple(row[: len(cats)])
            rest = row[len(cats) :]
            acc = _Acc(count=int(rest[0]), sums={}, counts={}, mins={}, maxs={})
            i = 1
            for t in d.totals:
                if t.value is not None:
                    assert acc.sums is not None and acc.counts is not None
                    assert acc.mins is not None and acc.maxs is not None
                    acc.sums[t.name] = _exact_sum(*rest[i : i + 4])
                    acc.counts[t.name] = int(rest[i + 4])
                    acc.mins[t.name], acc.maxs[t.name] = rest[i + 5], rest[i + 6]
                    i += len(_TOTAL_FORMS)
            if acc.count:
                out.append((values, acc))
        return out, coverage

    def totals_of(self, accs: Sequence[_Acc]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in self.definition.totals:
            if t.op == "count":
                out[t.name] = sum(a.count for a in accs)
                continue
            sums = [a.sums[t.name] for a in accs if a.sums is not None]
            counts = sum(a.counts[t.name] for a in accs if a.counts is not None)
            present_min = [a.mins[t.name] for a in accs if a.mins and a.mins[t.name] is not None]
            present_max = [a.maxs[t.name] for a in accs if a.maxs and a.maxs[t.name] is not None]
            if t.op == "sum":
                out[t.name] = sum(sums)
            elif t.op == "avg":
                out[t.name] = (sum(sums) / counts) if counts else None
            elif t.op == "min":
                out[t.name] = min(present_min, key=sql_order_key) if present_min else None
            else:
                out[t.name] = max(present_max, key=sql_order_key) if present_max else None
        return out

    def tree(
        self,
        *,
        expand: Sequence[Sequence[Any]] = (),
        expand_all: bool = False,
        row_limit: int = 100,
    ) -> dict[str, Any]:
        """The category tree: ``{"count", "totals", "categories": [...], "coverage"}``; each
        category ``{"path", "value", "count", "totals"}`` plus ``"categories"`` (or, for the
        innermost level, ``"rows"``: at most ``row_limit``) when its path is expanded.
        Expanding a path expands its parents too."""
        d = self.definition
        groups, coverage = self.groups()
        wanted = {tuple(p) for p in expand}
        for path in list(wanted):
            for n in range(1, len(path)):
                wanted.add(tuple(path[:n]))
        levels = len(d.categories)

        def build(prefix: tuple[Any, ...], members: list[tuple[tuple[Any, ...], _Acc]]) -> Any:
            depth = len(prefix)
            by_value: dict[str, tuple[Any, list[tuple[tuple[Any, ...], _Acc]]]] = {}
            for values, acc in members:
                key = json.dumps(values[depth])
                by_value.setdefault(key, (values[depth], []))[1].append((values, acc))
            key_desc = d.categories[depth].descending
            ordered = sorted(
                by_value.values(), key=lambda item: sql_order_key(item[0]), reverse=key_desc
            )
            nodes = []
            for value, group in ordered:
                path = (*prefix, value)
                node: dict[str, Any] = {
                    "path": list(path),
                    "value": value,
                    "count": sum(a.count for _, a in group),
                    "totals": self.totals_of([a for _, a in group]),
                }
                if expand_all or path in wanted or _str_path(path) in _str_paths(wanted):
                    if depth + 1 < levels:
                        node["categories"] = build(path, group)
                    else:
                        node["rows"] = self._category_rows(path, row_limit)
                nodes.append(node)
            return nodes

        root: dict[str, Any] = {
            "count": sum(a.count for _, a in groups),
            "totals": self.totals_of([a for _, a in groups]),
            "categories": build((), groups) if levels else [],
            "coverage": coverage.to_dict(),
        }
        if not levels and (expand_all or () in wanted):
            root["rows"] = self._category_rows((), row_limit)
        return root

    def _category_rows(self, path: tuple[Any, ...], limit: int) -> list[dict[str, Any]]:
        d = self.definition
        conditions: list[Any] = [d.filter] if d.filter else []
        for key, value in zip(d.categories, path, strict=False):
            if key.computed is not None:
                conditions.append({"$expr": [key.computed.raw, {"$eq": value}]})
            else:
                conditions.append({key.label: value})
        where = {"$and": conditions} if conditions else None
        fields = [c.value.text for c in d.columns if isinstance(c.value, JsonPath)]
        computed = self._computed(())
        result = self.index.query(
            self.sources(),
            where=where,
            sort=[k.to_dict() for k in d.sort],
            limit=limit,
            fields=fields or None,
            computed=computed,
        )
        return [self._named(r, with_categories=False).to_dict() for r in result.rows]


def _operand_of(key: SortKey) -> Operand:
    if key.computed is not None:
        return key.computed
    assert key.path is not None
    return key.path


_COMPUTED = "\x00"
"""Prefix of a computed column's value among a row's values (no path starts with it)."""


def _str_path(path: Sequence[Any]) -> tuple[str, ...]:
    return tuple(v if isinstance(v, str) else json.dumps(v) for v in path)


def _str_paths(paths: set[tuple[Any, ...]]) -> set[tuple[str, ...]]:
    """Paths given on a command line are text: ``2025`` matches the number 2025."""
    return {_str_path(p) for p in paths}
