"""Mutable views of a document inside ``AutomergeDocument.change()``.

``MapProxy`` and ``ListProxy`` behave like ``dict`` and ``list``; ``TextProxy`` edits
collaborative text. Reading a nested map, list or text returns a proxy of it; reading a counter
returns a :class:`~mindoo_p2p.crdt.values.Counter` (use ``increment`` to change it so that
concurrent increments add up); other scalars read as plain Python values (see
:mod:`mindoo_p2p.crdt.values`).

Assignable values: the scalars of :mod:`.values`, ``dict`` (any Mapping with str keys),
``list``/``tuple``, :class:`Text`, :class:`Counter`, and proxies (copied by value). A value is
checked whole before anything is written, so a TypeError or ValueError leaves the document as it
was. Text positions count Unicode code points. Proxies are only valid inside their block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, MutableSequence
from typing import Any, overload

from automerge.core import ObjType, ScalarType

from .reader import MAX_NESTING, UNCONVERTIBLE, Slot, readout_value
from .session import ChangeSession
from .values import (
    I64_MAX,
    I64_MIN,
    Counter,
    Text,
    check_i64,
    is_scalar,
    python_value,
    scalar_for,
)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"map keys must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("map keys must not be empty")
    return key


def _plain(value: Any) -> Any:
    """A proxy's content as assignable values (counters stay Counter, text stays Text)."""
    if isinstance(value, TextProxy):
        return Text(str(value))
    if isinstance(value, MapProxy):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, ListProxy):
        return [_plain(item) for item in value]
    return value


def _check_value(value: Any, key: str | int, depth: int = 0) -> None:
    """Raise TypeError/ValueError now for anything :func:`_write_value` would refuse."""
    if depth > MAX_NESTING:
        raise ValueError(f"value at {key!r} is nested deeper than {MAX_NESTING} levels")
    if isinstance(value, Counter | Text):
        return
    if is_scalar(value):
        scalar_for(value, key)
        return
    if isinstance(value, Mapping):
        for item_key, item in value.items():
            _check_value(item, _check_key(item_key), depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, index, depth + 1)
        return
    raise TypeError(f"cannot store a value of type {type(value).__name__} at {key!r}")


def _write_value(
    session: ChangeSession, obj: bytes, prop: str | int, value: Any, *, insert: bool
) -> None:
    """Put (or, in a list, insert before ``prop``) an already checked value."""
    if isinstance(value, Counter):
        session.put_counter(obj, prop, value.value, insert=insert)
        return
    if is_scalar(value):
        scalar_type, scalar = scalar_for(value, prop)
        if insert:
            assert isinstance(prop, int)
            session.insert(obj, prop, scalar_type, scalar)
        else:
            session.put(obj, prop, scalar_type, scalar)
        return
    if isinstance(value, Text):
        obj_type = ObjType.Text
    elif isinstance(value, Mapping):
        obj_type = ObjType.Map
    else:
        obj_type = ObjType.List
    if insert:
        assert isinstance(prop, int)
        child = session.insert_object(obj, prop, obj_type)
    else:
        child = session.put_object(obj, prop, obj_type)
    if isinstance(value, Text):
        session.insert_text(child, 0, value.value)
    elif isinstance(value, Mapping):
        for item_key, item in value.items():
            _write_value(session, child, item_key, item, insert=False)
    else:
        for index, item in enumerate(value):
            _write_value(session, child, index, item, insert=True)


_INT = ScalarType.Int
_PLAIN_SCALARS: dict[type, ScalarType] = {
    str: ScalarType.Str,
    int: _INT,
    float: ScalarType.F64,
    bool: ScalarType.Boolean,
    bytes: ScalarType.Bytes,
    type(None): ScalarType.Null,
}
"""Exact built-in types whose value `scalar_for` passes through unchanged (an int once its
range is checked): assigning one skips the general checks (the usual write is a scalar)."""


def _assign(
    session: ChangeSession, obj: bytes, prop: str | int, value: Any, *, insert: bool
) -> None:
    scalar_type = _PLAIN_SCALARS.get(type(value))
    if scalar_type is _INT:
        check_i64(value, f"value of {prop!r}")
    if scalar_type is not None:  # what `scalar_for` gives, without the detour
        if insert:
            assert isinstance(prop, int)
            session.insert(obj, prop, scalar_type, value)
        else:
            session.put(obj, prop, scalar_type, value)
        return
    value = _plain(value)
    _check_value(value, prop)
    _write_value(session, obj, prop, value, insert=insert)


def _read(session: ChangeSession, obj: bytes, prop: str | int, slot: Slot) -> Any:
    """The proxy or Python value of a slot that is present."""
    if slot is UNCONVERTIBLE:
        return readout_value(session.readout(obj, prop), counters_as_int=False)
    assert isinstance(slot, tuple)
    value, exid = slot
    if isinstance(value, ObjType):
        if value == ObjType.Map:
            return MapProxy(session, exid)
        if value == ObjType.List:
            return ListProxy(session, exid)
        return TextProxy(session, exid)
    scalar_type, raw = value
    if session.is_new_counter(exid):
        return Counter(raw)
    return python_value(scalar_type, raw)


class MapProxy(MutableMapping[str, Any]):
    """A map of the document being changed; behaves like a ``dict`` with str keys."""

    __slots__ = ("_obj", "_session")

    def __init__(self, session: ChangeSession, obj: bytes) -> None:
        self._session = session
        self._obj = obj

    def __getitem__(self, key: str) -> Any:
        slot = self._session.read(self._obj, _check_key(key))
        if slot is None:
            raise KeyError(key)
        return _read(self._session, self._obj, key, slot)

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str or not key:
            key = _check_key(key)
        # The usual write, a plain scalar, inline (what `_assign` does for it).
        scalar_type = _PLAIN_SCALARS.get(type(value))
        if scalar_type is not None and (scalar_type is not _INT or I64_MIN <= value <= I64_MAX):
            self._session.put(self._obj, key, scalar_type, value)
            return
        _assign(self._session, self._obj, key, value, insert=False)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._session.delete(self._obj, key)

    def __contains__(self, key: object) -> bool:
        # Compares keys rather than reading the value: reading a counter is costly.
        if not isinstance(key, str) or not key:
            return False
        return key in self._session.keys(self._obj)

    def __iter__(self) -> Iterator[str]:
        return iter(self._session.keys(self._obj))

    def __len__(self) -> int:
        return len(self._session.keys(self._obj))

    def increment(self, key: str, by: int = 1) -> None:
        """Add ``by`` to the counter at ``key`` (KeyError if absent, TypeError if no counter)."""
        if key not in self:
            raise KeyError(key)
        self._session.increment(self._obj, key, by)

    def __repr__(self) -> str:
        return f"MapProxy({dict(self.items())!r})"


class ListProxy(MutableSequence[Any]):
    """A list of the document being changed; behaves like a ``list``."""

    __slots__ = ("_obj", "_session")

    def __init__(self, session: ChangeSession, obj: bytes) -> None:
        self._session = session
        self._obj = obj

    def _position(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"list indices must be int, not {type(index).__name__}")
        length = len(self)
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError(f"list index {index} out of range (length {length})")
        return position

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = self._position(index)
        slot = self._session.read(self._obj, position)
        if slot is None:
            raise IndexError(f"list index {index} out of range")
        return _read(self._session, self._obj, position, slot)

    @overload
    def __setitem__(self, index: int, value: Any) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Any) -> None: ...
    def __setitem__(self, index: int | slice, value: Any) -> None:
        if isinstance(index, slice):
            raise TypeError("slice assignment is not supported; use insert and del")
        _assign(self._session, self._obj, self._position(index), value, insert=False)

    @overload
    def __delitem__(self, index: int) -> None: ...
    @overload
    def __delitem__(self, index: slice) -> None: ...
    def __delitem__(self, index: int | slice) -> None:
        if isinstance(index, slice):
            for position in sorted(range(*index.indices(len(self))), reverse=True):
                self._session.delete(self._obj, position)
            return
        self._session.delete(self._obj, self._position(index))

    def __len__(self) -> int:
        return self._session.length(self._obj)

    def insert(self, index: int, value: Any) -> None:
        """Insert before ``index``, clamped to the list like ``list.insert``."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"list indices must be int, not {type(index).__name__}")
        length = len(self)
        position = max(0, index + length) if index < 0 else min(index, length)
        _assign(self._session, self._obj, position, value, insert=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListProxy | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def increment(self, index: int, by: int = 1) -> None:
        """Add ``by`` to the counter at ``index`` (TypeError if it is not a counter)."""
        self._session.increment(self._obj, self._position(index), by)

    def __repr__(self) -> str:
        return f"ListProxy({list(self)!r})"


class TextProxy:
    """Collaborative text of the document being changed; positions count code points."""

    __slots__ = ("_obj", "_session")

    def __init__(self, session: ChangeSession, obj: bytes) -> None:
        self._session = session
        self._obj = obj

    def __str__(self) -> str:
        return self._session.text(self._obj)

    def __len__(self) -> int:
        return self._session.length(self._obj)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str | TextProxy):
            return str(self) == str(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _check_range(self, pos: int, count: int) -> None:
        for name, number in (("position", pos), ("count", count)):
            if isinstance(number, bool) or not isinstance(number, int):
                raise TypeError(f"text {name} must be int, not {type(number).__name__}")
        length = len(self)
        if pos < 0 or count < 0 or pos + count > length:
            raise IndexError(f"text range {pos}..{pos + count} outside 0..{length}")

    def insert(self, pos: int, text: str) -> None:
        """Insert ``text`` before code point ``pos`` (0 <= pos <= len)."""
        self.splice(pos, 0, text)

    def delete(self, pos: int, count: int = 1) -> None:
        """Delete ``count`` code points starting at ``pos``."""
        self.splice(pos, count, "")

    def splice(self, pos: int, delete_count: int, text: str = "") -> None:
        """Delete ``delete_count`` code points at ``pos``, then insert ``text`` there."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        self._check_range(pos, delete_count)
        for _ in range(delete_count):
            self._session.delete(self._obj, pos)
        self._session.insert_text(self._obj, pos, text)

    def __repr__(self) -> str:
        return f"TextProxy({str(self)!r})"
