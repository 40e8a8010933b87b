"""Computed values: a small JSON expression language compiled to parameterized SQL. Pure.

A *value expression* computes one value per document. It is used as a view's value column,
category or sort key, inside totals, as a query sort key, and on the left of a filter
(``{"$expr": [E, CONDITION]}``, see `expressions`)::

    "$customer.name"                 the value at a path (a string starting with $)
    42, 2.5, true, null, "open"      literals (true/false read as 1/0, as JSON paths read them)
    {"$literal": "$5 off"}           a string literal that starts with $
    {"$add": [E, E, ...]}            sum            {"$sub": [E, E]}       difference
    {"$mul": [E, E, ...]}            product        {"$div": [E, E]}       quotient (real)
    {"$abs": E}                      absolute value {"$round": E} / {"$round": [E, DIGITS]}
    {"$concat": [E, E, ...]}         text joined    {"$lower": E} {"$upper": E} (ASCII letters)
    {"$substr": [E, START, LENGTH]}  characters from START (0-based), LENGTH optional
    {"$year": E} {"$month": E} {"$day": E}     date parts of an ISO date text (YYYY-MM-DD...)
    {"$number": E}                   a number, or text holding a JSON number, as a number
    {"$string": E}                   a number or text as text
    {"$coalesce": [E, E, ...]}       the first value that is not null
    {"$if": [WHERE, E, E]}           a where expression (the filter language) chooses; the
                                     else branch is optional (null)
    {"$case": [{"when": WHERE, "then": E}, ..., {"else": E}]}

Nulls and types: a missing path reads as null. Every operator takes the types it names and
gives null for anything else, never a guess: arithmetic, $abs and $round take numbers (a
text such as "12" gives null: convert it with $number), text operators take text (convert a
number with $string), date parts take text starting with a valid calendar date (the date as
written: no time-zone shift), anything else gives null. Null in, null out (but $coalesce,
$if and $case, which exist to choose). Division by zero gives null. $round rounds half away
from zero and gives a real number. Every operator is total: no document value makes its SQL
raise (integer overflow in + - * and $abs of -2**63 give a real, as SQLite does), because a
facet table's triggers run it on every document written. A literal of the wrong type for an
operator (``{"$add": ["a", 1]}``) is an error of the definition, not a null.

Compilation: every operator maps to a fixed SQL template; literals are bound parameters
(`Sql.params`, in the order their ``?`` appear), paths are validated (`parse_path`) before
they are written into SQL, and nothing a user wrote is ever concatenated into it. A template
that needs one argument twice (a type check, then the value) reads a compound argument once,
through a one-row subquery (``(SELECT ... FROM (SELECT arg AS _vN))``), so the SQL grows
linearly with the expression. One `ExpressionBudget` counts the parts and depth of a value
and of the where expressions nested in it, and theirs (at most 256 parts, 32 levels). Errors
name the offending part (``view.columns[2].expr.$add[1]``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .expressions import (
    Columns,
    ExpressionBudget,
    JsonPath,
    QueryError,
    body_columns,
    compile_where,
    parse_path,
)

MAX_ROUND_DIGITS = 12
MAX_SUBSTR = 1_000_000
_NUMBER, _TEXT, _ANY = "number", "text", "any"


@dataclass(frozen=True, slots=True)
class Sql:
    """A fragment of SQL, its parameters (in the order of its ``?``) and the static type of
    its value (number, text or any). ``simple``: a column or a literal, cheap to repeat."""

    text: str
    params: tuple[Any, ...] = ()
    kind: str = _ANY
    simple: bool = False


def join(*pieces: str | Sql, kind: str = _ANY) -> Sql:
    """Pieces of SQL in order: the parameters follow the text."""
    text: list[str] = []
    params: list[Any] = []
    for piece in pieces:
        if isinstance(piece, Sql):
            text.append(piece.text)
            params.extend(piece.params)
        else:
            text.append(piece)
    return Sql("".join(text), tuple(params), kind)


@dataclass(frozen=True)
class Computed:
    """A validated value expression: ``key`` its canonical JSON (what it is equal and hashed
    by), ``raw`` as written, the document paths it reads (``paths``) and those its conditions
    test for existence (``condition_paths``)."""

    key: str
    raw: Any = field(compare=False)
    where: str = field(compare=False)
    paths: tuple[JsonPath, ...] = field(default=(), compare=False)
    condition_paths: tuple[JsonPath, ...] = field(default=(), compare=False)

    def sql(self, columns: Columns = body_columns) -> Sql:
        """The SQL computing the value, reading each path through ``columns``."""
        return _Compiler(columns).value(self.raw, self.where)


def parse_computed(raw: object, where: str = "expr") -> Computed:
    """A `Computed`, or QueryError naming the offending part."""
    compiler = _Compiler(body_columns)
    compiler.value(raw, where)
    return Computed(
        json.dumps(raw, sort_keys=True, separators=(",", ":")),
        json.loads(json.dumps(raw)),
        where,
        tuple(dict.fromkeys(compiler.paths)),
        tuple(dict.fromkeys(compiler.condition_paths)),
    )


def template(form: str, args: list[Sql], kind: str, lets: Iterator[int]) -> Sql:
    """``form`` (fixed SQL, no ``?``) with ``{i}`` replaced by ``args[i]``. An argument used
    twice that is not simple is computed once, in a one-row subquery whose column is named
    ``_v`` + the next of ``lets`` (unique within one statement)."""
    used = {i: form.count("{" + str(i) + "}") for i in range(len(args))}
    bound: list[tuple[str, Sql]] = []
    names: list[Sql] = []
    for i, arg in enumerate(args):
        if used[i] > 1 and not arg.simple:
            name = f"_v{next(lets)}"
            bound.append((name, arg))
            names.append(Sql(name, (), arg.kind, True))
        else:
            names.append(arg)
    pieces: list[str | Sql] = []
    rest = form
    while rest:
        start = rest.find("{")
        if start < 0:
            pieces.append(rest)
            break
        end = rest.index("}", start)
        pieces += [rest[:start], names[int(rest[start + 1 : end])]]
        rest = rest[end + 1 :]
    body = join(*pieces, kind=kind)
    if not bound:
        return body
    inner: list[str | Sql] = []
    for i, (name, arg) in enumerate(bound):
        inner += [", " if i else "", join(arg, f" AS {name}")]
    return join("(SELECT ", body, " FROM (SELECT ", *inner, "))", kind=kind)


_ISO_DATE = (
    "CASE WHEN typeof({0}) = 'text' AND {0} GLOB"
    " '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"
    " AND date(substr({0}, 1, 10)) = substr({0}, 1, 10)"
    " THEN CAST(substr({0}, %d, %d) AS INTEGER) END"
)
_DATE_PARTS = {"$year": (1, 4), "$month": (6, 2), "$day": (9, 2)}
_NUMBER_FROM = (
    "CASE WHEN typeof({0}) IN ('integer', 'real') THEN {0}"
    " WHEN typeof({0}) = 'text' THEN CASE WHEN json_valid({0}) THEN"
    " CASE WHEN json_type({0}) IN ('integer', 'real') THEN json_extract({0}, '$') END END END"
)
_STRING_FROM = "CASE WHEN typeof({0}) IN ('integer', 'real', 'text') THEN CAST({0} AS TEXT) END"
_VARIADIC = {"$add": " + ", "$mul": " * ", "$concat": " || "}
OPERATORS = (
    *("$add", "$sub", "$mul", "$div", "$abs", "$round", "$concat", "$lower", "$upper"),
    *("$substr", "$year", "$month", "$day", "$number", "$string", "$coalesce", "$if"),
    *("$case", "$literal"),
)
MAX_ARGUMENTS = 32


class _Compiler:
    def __init__(
        self,
        columns: Columns,
        lets: Iterator[int] | None = None,
        budget: ExpressionBudget | None = None,
    ) -> None:
        self.columns = columns
        self.lets = lets if lets is not None else itertools.count()
        self.budget = budget if budget is not None else ExpressionBudget()
        self.paths: list[JsonPath] = []
        self.condition_paths: list[JsonPath] = []

    def value(self, expr: object, where: str) -> Sql:
        with self.budget.part(where):
            return self._value(expr, where)

    def _value(self, expr: object, where: str) -> Sql:
        if isinstance(expr, str):
            if expr.startswith("$"):
                path = parse_path(expr[1:], where)
                self.paths.append(path)
                return Sql(self.columns(path, False), (), _ANY, True)
            return Sql("?", (expr,), _TEXT, True)
        if isinstance(expr, bool):
            return Sql("?", (int(expr),), _NUMBER, True)
        if isinstance(expr, int | float):
            if expr != expr or expr in (float("inf"), float("-inf")):
                raise QueryError(f"{where}: {expr} is not a value")
            return Sql("?", (expr,), _NUMBER, True)
        if expr is None:
            return Sql("NULL", (), _ANY, True)
        if isinstance(expr, Mapping):
            if len(expr) != 1:
                raise QueryError(
                    f"{where}: an operation is an object with one key, the operator"
                    f" (one of {', '.join(OPERATORS)}); got {sorted(map(str, expr)) or 'none'}"
                )
            ((op, arg),) = expr.items()
            op = str(op)
            handler = _HANDLERS.get(op)
            if handler is None:
                raise QueryError(
                    f"{where}: unknown operator {op!r} (expected one of {', '.join(OPERATORS)};"
                    ' a path is a string starting with $, e.g. "$amount")'
                )
            return handler(self, arg, f"{where}.{op}")
        raise QueryError(
            f'{where}: expected a value, a path ("$path") or an operation, not'
            f" {type(expr).__name__}"
        )

    def arguments(self, arg: object, where: str, low: int, high: int) -> list[object]:
        items = arg if isinstance(arg, list) else [arg]
        if not low <= len(items) <= high:
            wanted = f"{low}" if low == high else f"{low} to {high}"
            plural = "" if wanted == "1" else "s"
            raise QueryError(f"{where}: expected {wanted} argument{plural}, got {len(items)}")
        return items

    def typed(self, arg: object, where: str, kind: str) -> Sql:
        compiled = self.value(arg, where)
        if compiled.kind not in (kind, _ANY):
            what = "literal" if compiled.simple else "value (what this operation gives)"
            raise QueryError(f"{where}: expected a {kind}, not a {compiled.kind} {what}")
        if compiled.kind == kind:
            return compiled
        check = "IN ('integer', 'real')" if kind == _NUMBER else "= 'text'"
        return template(f"CASE WHEN typeof({{0}}) {check} THEN {{0}} END", [compiled], kind,
                        self.lets)  # fmt: skip

    def condition(self, where_expr: object, where: str) -> Sql:
        compiled = compile_where(where_expr, where, self.columns, self.budget)
        self.paths.extend(compiled.paths)
        self.paths.extend(compiled.computed_paths)
        self.condition_paths.extend(compiled.paths)
        return Sql(f"({compiled.sql})", compiled.params, _ANY)

    # -- operators ------------------------------------------------------------------------
    def variadic(self, op: str, arg: object, where: str) -> Sql:
        kind = _TEXT if op == "$concat" else _NUMBER
        items = self.arguments(arg, where, 2, MAX_ARGUMENTS)
        parts = [self.typed(item, f"{where}[{i}]", kind) for i, item in enumerate(items)]
        pieces: list[str | Sql] = ["("]
        for i, part in enumerate(parts):
            pieces += [_VARIADIC[op] if i else "", part]
        return join(*pieces, ")", kind=kind)

    def subtract(self, arg: object, where: str) -> Sql:
        a, b = self.arguments(arg, where, 2, 2)
        return join("(", self.typed(a, f"{where}[0]", _NUMBER), " - ",
                    self.typed(b, f"{where}[1]", _NUMBER), ")", kind=_NUMBER)  # fmt: skip

    def divide(self, arg: object, where: str) -> Sql:
        a, b = self.arguments(arg, where, 2, 2)
        return join("(CAST(", self.typed(a, f"{where}[0]", _NUMBER), " AS REAL) / ",
                    self.typed(b, f"{where}[1]", _NUMBER), ")", kind=_NUMBER)  # fmt: skip

    def absolute(self, arg: object, where: str) -> Sql:
        (a,) = self.arguments(arg, where, 1, 1)
        # SQLite's abs() raises "integer overflow" on -2**63 (a valid int64 in a document):
        # that one value (and only it: integer comparison) gives the real 2.0**63 instead,
        # as + - * give a real on overflow. No input makes this raise.
        return template(
            "CASE WHEN {0} < -9223372036854775807 THEN -CAST({0} AS REAL) ELSE abs({0}) END",
            [self.typed(a, where, _NUMBER)],
            _NUMBER,
            self.lets,
        )

    def round(self, arg: object, where: str) -> Sql:
        items = self.arguments(arg, where, 1, 2)
        digits = items[1] if len(items) == 2 else 0
        if (
            not isinstance(digits, int)
            or isinstance(digits, bool)
            or not 0 <= digits <= MAX_ROUND_DIGITS
        ):
            raise QueryError(f"{where}[1]: digits must be a whole number from 0 to 12")
        here = f"{where}[0]" if isinstance(arg, list) else where
        return join("round(", self.typed(items[0], here, _NUMBER), ", ?)", Sql("", (digits,)),
                    kind=_NUMBER)  # fmt: skip

    def case_of(self, op: str, arg: object, where: str) -> Sql:
        (a,) = self.arguments(arg, where, 1, 1)
        function = "lower" if op == "$lower" else "upper"
        return join(f"{function}(", self.typed(a, where, _TEXT), ")", kind=_TEXT)

    def substring(self, arg: object, where: str) -> Sql:
        items = self.arguments(arg, where, 2, 3)
        bounds: list[int] = []
        for i, n in enumerate(items[1:], start=1):
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_SUBSTR:
                raise QueryError(f"{where}[{i}]: expected a whole number from 0 to {MAX_SUBSTR}")
            bounds.append(n)
        text = self.typed(items[0], f"{where}[0]", _TEXT)
        marks = ", ?" * len(bounds)
        return join("substr(", text, f"{marks})", Sql("", (bounds[0] + 1, *bounds[1:])),
                    kind=_TEXT)  # fmt: skip

    def date_part(self, op: str, arg: object, where: str) -> Sql:
        (a,) = self.arguments(arg, where, 1, 1)
        value = self.value(a, where)
        if value.kind == _NUMBER:
            raise QueryError(f"{where}: expected an ISO date text, not a number literal")
        return template(_ISO_DATE % _DATE_PARTS[op], [value], _NUMBER, self.lets)

    def to_number(self, arg: object, where: str) -> Sql:
        (a,) = self.arguments(arg, where, 1, 1)
        value = self.value(a, where)
        if value.kind == _NUMBER:
            return value
        return template(_NUMBER_FROM, [value], _NUMBER, self.lets)

    def to_string(self, arg: object, where: str) -> Sql:
        (a,) = self.arguments(arg, where, 1, 1)
        value = self.value(a, where)
        if value.kind == _TEXT:
            return value
        return template(_STRING_FROM, [value], _TEXT, self.lets)

    def coalesce(self, arg: object, where: str) -> Sql:
        items = self.arguments(arg, where, 2, MAX_ARGUMENTS)
        parts = [self.value(item, f"{where}[{i}]") for i, item in enumerate(items)]
        pieces: list[str | Sql] = ["coalesce("]
        for i, part in enumerate(parts):
            pieces += [", " if i else "", part]
        return join(*pieces, ")", kind=_common(parts))

    def if_then(self, arg: object, where: str) -> Sql:
        items = self.arguments(arg, where, 2, 3)
        test = self.condition(items[0], f"{where}[0]")
        then = self.value(items[1], f"{where}[1]")
        otherwise = self.value(items[2], f"{where}[2]") if len(items) == 3 else None
        pieces: list[str | Sql] = ["CASE WHEN ", test, " THEN ", then]
        if otherwise is not None:
            pieces += [" ELSE ", otherwise]
        kinds = [then] if otherwise is None else [then, otherwise]
        return join(*pieces, " END", kind=_common(kinds))

    def case(self, arg: object, where: str) -> Sql:
        if not isinstance(arg, list) or not arg:
            raise QueryError(f"{where}: expected a list of {{when, then}} and a last {{else}}")
        if len(arg) > MAX_ARGUMENTS:
            raise QueryError(f"{where}: more than {MAX_ARGUMENTS} branches")
        pieces: list[str | Sql] = ["CASE"]
        results: list[Sql] = []
        for i, branch in enumerate(arg):
            here = f"{where}[{i}]"
            if isinstance(branch, Mapping) and set(branch) == {"else"} and i == len(arg) - 1:
                result = self.value(branch["else"], f"{here}.else")
                pieces += [" ELSE ", result]
            elif isinstance(branch, Mapping) and set(branch) == {"when", "then"}:
                test = self.condition(branch["when"], f"{here}.when")
                result = self.value(branch["then"], f"{here}.then")
                pieces += [" WHEN ", test, " THEN ", result]
            else:
                raise QueryError(
                    f'{here}: expected {{"when": WHERE, "then": VALUE}} (or, last,'
                    ' {"else": VALUE})'
                )
            results.append(result)
        if len(pieces) == 3:  # only an else
            raise QueryError(f"{where}: give at least one {{when, then}} branch")
        return join(*pieces, " END", kind=_common(results))

    def literal(self, arg: object, where: str) -> Sql:
        if isinstance(arg, str):
            return Sql("?", (arg,), _TEXT, True)
        if isinstance(arg, list | Mapping):
            raise QueryError(f"{where}: a literal is a string, number, boolean or null")
        return self.value(arg, where)


def compile_value(
    expr: object, where: str, columns: Columns, lets: Iterator[int], budget: ExpressionBudget
) -> tuple[Sql, list[JsonPath]]:
    """The SQL of a value expression (for `expressions`' ``$expr``) and the paths it reads;
    its parts and depth count in the enclosing where expression's ``budget``."""
    compiler = _Compiler(columns, lets, budget)
    return compiler.value(expr, where), compiler.paths


def _common(parts: list[Sql]) -> str:
    kinds = {p.kind for p in parts if p.text != "NULL"}
    return kinds.pop() if len(kinds) == 1 else _ANY


Handler = Callable[[_Compiler, object, str], Sql]
_HANDLERS: dict[str, Handler] = {
    "$add": lambda c, a, w: c.variadic("$add", a, w),
    "$mul": lambda c, a, w: c.variadic("$mul", a, w),
    "$concat": lambda c, a, w: c.variadic("$concat", a, w),
    "$sub": _Compiler.subtract,
    "$div": _Compiler.divide,
    "$abs": _Compiler.absolute,
    "$round": _Compiler.round,
    "$lower": lambda c, a, w: c.case_of("$lower", a, w),
    "$upper": lambda c, a, w: c.case_of("$upper", a, w),
    "$substr": _Compiler.substring,
    "$year": lambda c, a, w: c.date_part("$year", a, w),
    "$month": lambda c, a, w: c.date_part("$month", a, w),
    "$day": lambda c, a, w: c.date_part("$day", a, w),
    "$number": _Compiler.to_number,
    "$string": _Compiler.to_string,
    "$coalesce": _Compiler.coalesce,
    "$if": _Compiler.if_then,
    "$case": _Compiler.case,
    "$literal": _Compiler.literal,
}
