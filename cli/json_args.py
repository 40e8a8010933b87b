"""Parsing JSON given on the command line into values a document can hold.

`parse_json_argument` accepts standard JSON only and refuses, as a usage error naming the
argument, what a document could not store or what could not be printed back as JSON:
NaN/Infinity (and numbers that overflow to infinity), integers outside the signed 64-bit range,
empty map keys, and nesting deeper than the document layer allows.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

import click

from mindoo_p2p.crdt.reader import MAX_NESTING
from mindoo_p2p.crdt.values import I64_MAX, I64_MIN


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not standard JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is too large for a 64-bit float")
    return value


def _i64(text: str) -> int:
    value = int(text)
    if not I64_MIN <= value <= I64_MAX:
        raise ValueError(f"integer {text} does not fit a signed 64-bit integer")
    return value


def _check_keys_and_depth(value: Any) -> None:
    """Raise ValueError for an empty map key or nesting deeper than MAX_NESTING (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_NESTING:
            raise ValueError(f"nested deeper than {MAX_NESTING} levels")
        if isinstance(item, dict):
            if "" in item:
                raise ValueError("map keys must not be empty")
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def parse_json_argument(text: str, param_hint: str) -> Any:
    """``text`` parsed as JSON; click.BadParameter (exit 2) naming ``param_hint`` if refused."""
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_i64
        )
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc.msg} (at position {exc.pos})", param_hint=param_hint
        ) from None
    except RecursionError:
        raise click.BadParameter(
            "not valid JSON: nested too deeply", param_hint=param_hint
        ) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None
    try:
        _check_keys_and_depth(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None
    return value
