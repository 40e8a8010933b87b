"""Reading values out of a document (or an open transaction) as plain Python.

Every read goes through :func:`read_slot`, which shields the caller from the binding's panics
on values it cannot convert (counters, unknown types, out-of-range timestamps): such a slot
reads as :data:`UNCONVERTIBLE`, and the caller resolves it from
:func:`~mindoo_p2p.crdt.diff_values.scalar_readouts`. :func:`materialize` builds the plain
Python form of a whole document, optionally at given heads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from automerge.core import ROOT, ObjType

from ..errors import DecodeError
from .binding import guarded, is_panic, quiet_panics
from .diff_values import ObjKey, Place, Readout, obj_key_of_exid
from .values import Counter, datetime_from_ms, python_value

MAX_NESTING = 200
"""Deepest nesting of maps and lists read or written (keeps recursion bounded)."""


class _Unconvertible:
    def __repr__(self) -> str:
        return "UNCONVERTIBLE"


UNCONVERTIBLE: Final = _Unconvertible()
"""What :func:`read_slot` returns for a value the binding cannot convert."""

Slot = tuple[Any, bytes] | None | _Unconvertible
"""``(ObjType or (ScalarType, raw value), id)``, None when absent, or UNCONVERTIBLE."""


class Source(Protocol):
    """What both ``Document`` and ``Transaction`` offer for reading."""

    def get(self, obj_id: bytes, prop: str | int, heads: list[bytes] | None = None) -> Any: ...
    def keys(self, obj_id: bytes, heads: list[bytes] | None = None) -> list[str]: ...
    def values(self, obj_id: bytes, heads: list[bytes] | None = None) -> list[Any]: ...
    def length(self, obj_id: bytes, heads: list[bytes] | None = None) -> int: ...
    def text(self, obj_id: bytes, heads: list[bytes] | None = None) -> str: ...
    def object_type(self, obj_id: bytes) -> ObjType: ...


def read_slot(source: Source, obj: bytes, prop: str | int, heads: list[bytes] | None) -> Slot:
    """One map entry or list element, shielded from conversion panics."""
    try:
        with quiet_panics():
            result: Slot = source.get(obj, prop, heads)
    except Exception as exc:
        raise DecodeError(f"automerge could not read {prop!r}: {exc}") from exc
    except BaseException as exc:
        if is_panic(exc):
            return UNCONVERTIBLE
        raise
    return result


def readout_value(readout: Readout | None, *, counters_as_int: bool) -> Any:
    """The Python value of a readout (None for unknown types or out-of-range timestamps)."""
    if readout is None:
        return None
    kind, number = readout
    if kind == "counter" and number is not None:
        return number if counters_as_int else Counter(number)
    if kind == "timestamp" and number is not None:
        return datetime_from_ms(number)
    return None


class _Materializer:
    def __init__(
        self, source: Source, heads: list[bytes] | None, readouts: ReadoutsFn, eager: bool
    ) -> None:
        self._source = source
        self._heads = heads
        self._readouts_fn = readouts
        self._readouts: dict[Place, Readout] | None = None
        self._special_objs: set[ObjKey] = set()
        if eager:
            self._ensure_readouts()

    def _ensure_readouts(self) -> dict[Place, Readout]:
        if self._readouts is None:
            self._readouts = self._readouts_fn()
            self._special_objs = {obj for obj, _ in self._readouts}
        return self._readouts

    def _unconvertible(self, obj: bytes, prop: str | int) -> Any:
        readout = self._ensure_readouts().get((obj_key_of_exid(obj), prop))
        return readout_value(readout, counters_as_int=True)

    def value(self, obj: bytes, prop: str | int, slot: Slot, depth: int) -> Any:
        if isinstance(slot, _Unconvertible):
            return self._unconvertible(obj, prop)
        if slot is None:
            return None
        value, exid = slot
        if isinstance(value, ObjType):
            return self.object(exid, value, depth + 1)
        scalar_type, raw = value
        return python_value(scalar_type, raw)

    def _bulk(self, obj: bytes, expected: int) -> list[Any] | None:
        try:
            with quiet_panics():
                values = self._source.values(obj, self._heads)
        except Exception as exc:
            raise DecodeError(f"automerge could not read an object: {exc}") from exc
        except BaseException as exc:
            if is_panic(exc):
                return None
            raise
        return values if len(values) == expected else None

    def _one(self, obj: bytes, prop: str | int, depth: int, key: ObjKey) -> Any:
        """One slot of an object that holds unconvertible values (``key`` names the object)."""
        readout = self._ensure_readouts().get((key, prop))
        if readout is not None:
            return readout_value(readout, counters_as_int=True)
        return self.value(obj, prop, read_slot(self._source, obj, prop, self._heads), depth)

    def object(self, obj: bytes, obj_type: ObjType, depth: int) -> Any:
        if depth > MAX_NESTING:
            raise DecodeError(f"document nested deeper than {MAX_NESTING} levels")
        source, heads = self._source, self._heads
        if obj_type == ObjType.Text:
            return guarded(lambda: source.text(obj, heads), "read a text")
        key = obj_key_of_exid(obj)
        special = key in self._special_objs
        if obj_type == ObjType.Map:
            keys = guarded(lambda: source.keys(obj, heads), "read a map's keys")
            bulk = None if special else self._bulk(obj, len(keys))
            if bulk is not None:
                return {k: self.value(obj, k, s, depth) for k, s in zip(keys, bulk, strict=True)}
            return {k: self._one(obj, k, depth, key) for k in keys}
        length = guarded(lambda: source.length(obj, heads), "read a list's length")
        bulk = None if special else self._bulk(obj, length)
        if bulk is not None:
            return [self.value(obj, i, s, depth) for i, s in enumerate(bulk)]
        return [self._one(obj, i, depth, key) for i in range(length)]


ReadoutsFn = Callable[[], dict[Place, Readout]]


def materialize(
    source: Source, heads: list[bytes] | None, readouts: ReadoutsFn, *, eager: bool = False
) -> dict[str, Any]:
    """The whole document as plain Python (see :mod:`.values`; counters read as int).

    ``readouts`` is called at most once: up front if ``eager`` (the document is known to hold
    values the binding cannot convert, so those are never asked of it), else only when a value
    turns out to need it.
    """
    reader = _Materializer(source, heads, readouts, eager)
    result: dict[str, Any] = reader.object(ROOT, ObjType.Map, 0)
    return result
