"""Value objects (Counter, Text) and the mapping between Python values and Automerge scalars.

Writing (Python -> Automerge), checked in this order: bool -> Boolean, int -> Int (signed
64-bit, else ValueError), float -> F64, str -> Str, bytes -> Bytes, None -> Null,
datetime -> Timestamp (milliseconds since the epoch; a naive datetime is taken as UTC; finer
precision is rounded away). Containers (dict, list/tuple, Text, Counter) are not scalars and are
handled by the proxies.

Reading (Automerge -> Python): Str -> str, Int/Uint -> int, F64 -> float, Boolean -> bool,
Null -> None, Bytes -> bytes, Timestamp -> timezone-aware UTC datetime (None when outside
Python's datetime range), Unknown -> None.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from automerge.core import ScalarType

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ONE_MS = dt.timedelta(milliseconds=1)


def check_i64(value: int, what: str) -> int:
    """``value`` if it is an int (not a bool) that fits a signed 64-bit integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not I64_MIN <= value <= I64_MAX:
        raise ValueError(f"{what} {value} does not fit a signed 64-bit integer")
    return value


class Counter:
    """A CRDT counter value: concurrent increments add up. ``doc["views"] = Counter(0)``."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value: int = check_i64(value, "counter value")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Counter):
            return self.value == other.value
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Counter({self.value})"


class Text:
    """Collaborative text: concurrent edits merge per character. ``doc["body"] = Text("hi")``."""

    __slots__ = ("value",)

    def __init__(self, value: str = "") -> None:
        if not isinstance(value, str):
            raise TypeError(f"Text value must be a str, not {type(value).__name__}")
        self.value: str = value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Text):
            return self.value == other.value
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Text({self.value!r})"


def scalar_for(value: object, key: str | int) -> tuple[ScalarType, Any]:
    """The Automerge scalar type and value for a Python scalar.

    Raises TypeError (naming the type and ``key``) for anything that is not a scalar, and
    ValueError for an int outside the signed 64-bit range.
    """
    if isinstance(value, bool):
        return ScalarType.Boolean, value
    if isinstance(value, int):
        return ScalarType.Int, check_i64(value, f"value of {key!r}")
    if isinstance(value, float):
        return ScalarType.F64, value
    if isinstance(value, str):
        return ScalarType.Str, value
    if isinstance(value, bytes):
        return ScalarType.Bytes, value
    if value is None:
        return ScalarType.Null, None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return ScalarType.Timestamp, aware
    raise TypeError(f"cannot store a value of type {type(value).__name__} at {key!r}")


def is_scalar(value: object) -> bool:
    """True if :func:`scalar_for` accepts the type of ``value``."""
    return value is None or isinstance(value, bool | int | float | str | bytes | dt.datetime)


def datetime_from_ms(ms: int) -> dt.datetime | None:
    """The aware UTC datetime ``ms`` milliseconds after the epoch; None if out of range."""
    try:
        return EPOCH + ms * ONE_MS
    except OverflowError:
        return None


def python_value(scalar_type: ScalarType, raw: Any) -> Any:
    """Convert a scalar as the binding returns it to the Python value (see module docstring)."""
    if scalar_type == ScalarType.Bytes:
        return bytes(raw)
    if scalar_type == ScalarType.Timestamp:
        # The binding builds a naive *local-time* datetime (with fold set correctly).
        try:
            aware = raw.astimezone(dt.UTC)
        except (OverflowError, ValueError):
            return None
        return datetime_from_ms(round((aware - EPOCH) / ONE_MS))
    if scalar_type in (ScalarType.Unknown, ScalarType.Counter):
        return None
    return raw
