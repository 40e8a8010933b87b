"""A plain Python reading of the computed-value language (index/computed.py): the brute force
the tests compare the compiled SQL with."""

from __future__ import annotations

import datetime
import json
import math
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


def read(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return value


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def ascii_case(text: str, upper: bool) -> str:
    table = str.maketrans(
        "abcdefghijklmnopqrstuvwxyz" if upper else "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if upper else "abcdefghijklmnopqrstuvwxyz",
    )
    return text.translate(table)


def date_part(v: Any, part: str) -> int | None:
    if not isinstance(v, str) or not re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
        return None
    try:
        day = datetime.date(int(v[:4]), int(v[5:7]), int(v[8:10]))
    except ValueError:
        return None
    return int(getattr(day, part))


def json_number(v: Any) -> Any:
    if is_number(v):
        return v
    if not isinstance(v, str):
        return None

    def no_constants(_name: str) -> None:
        raise ValueError

    try:
        parsed = json.loads(v, parse_constant=no_constants)
    except ValueError:
        return None
    return parsed if is_number(parsed) else None


def as_text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = f"{v:.15g}"
        return text if re.search(r"[.eni]", text) else text + ".0"
    return None


def order(v: Any) -> tuple[int, Any]:
    return (0, 0) if v is None else (1, v) if is_number(v) else (2, v)


def holds(cond: dict[str, Any], doc: dict[str, Any]) -> bool:
    ((path, test),) = cond.items()
    value = read(doc, path)
    if isinstance(test, dict):
        ((op, arg),) = test.items()
        if op == "$exists":
            return (path in doc) == arg  # json_type: a null value exists
        if value is None:
            return False
        assert op == "$gte"
        return order(value) >= order(arg)
    return value is not None and order(value) == order(test)


def evaluate(expr: Any, doc: dict[str, Any]) -> Any:
    if isinstance(expr, str):
        return read(doc, expr[1:]) if expr.startswith("$") else expr
    if isinstance(expr, bool):
        return int(expr)
    if not isinstance(expr, dict):
        return expr
    ((op, arg),) = expr.items()
    args = arg if isinstance(arg, list) else [arg]
    if op == "$literal":
        return arg
    if op in ("$add", "$sub", "$mul", "$div", "$abs", "$round"):
        values = [evaluate(a, doc) for a in (args if op != "$round" else args[:1])]
        if not all(is_number(v) for v in values):
            return None
        if op == "$add":
            return sum(values)
        if op == "$sub":
            return values[0] - values[1]
        if op == "$mul":
            return math.prod(values)
        if op == "$div":
            return None if values[1] == 0 else values[0] / values[1]
        if op == "$abs":
            return abs(values[0])
        digits = args[1] if len(args) > 1 else 0
        exact = Decimal(values[0]).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
        return float(exact)
    if op in ("$concat", "$lower", "$upper", "$substr"):
        first = [evaluate(a, doc) for a in (args if op == "$concat" else args[:1])]
        if not all(isinstance(v, str) for v in first):
            return None
        if op == "$concat":
            return "".join(first)
        if op == "$substr":
            start = args[1]
            return first[0][start : start + args[2]] if len(args) > 2 else first[0][start:]
        return ascii_case(first[0], op == "$upper")
    if op in ("$year", "$month", "$day"):
        return date_part(evaluate(args[0], doc), op[1:])
    if op == "$number":
        return json_number(evaluate(args[0], doc))
    if op == "$string":
        return as_text(evaluate(args[0], doc))
    if op == "$coalesce":
        return next((v for v in (evaluate(a, doc) for a in args) if v is not None), None)
    if op == "$if":
        if holds(args[0], doc):
            return evaluate(args[1], doc)
        return evaluate(args[2], doc) if len(args) > 2 else None
    raise AssertionError(op)
