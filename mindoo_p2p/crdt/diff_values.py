"""Read the values the binding cannot convert, from the Debug text of a whole-document diff.

``Document.get``/``values`` panic (without harm to the document) on a counter, on a value of
an unknown type and on a timestamp outside Python's datetime range: the binding never
implemented those conversions. ``Document.diff([], heads)`` still describes the whole document
at ``heads`` as patches whose Debug text holds every value, so this module replays those
patches on a light model (maps and lists of "readouts") and answers, for any (object, key or
index), what the binding could not convert. Only objects' map entries and list elements are
modelled; text objects are read with ``Document.text``, which never fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from automerge.core import ROOT, Document

from ..codec import Reader
from ..errors import DecodeError
from .binding import EXID_TAG, MAX_ACTOR_ID_SIZE, guarded
from .debug_repr import Node, parse_debug
from .values import datetime_from_ms

ObjKey = tuple[int, bytes] | None
"""An object named by its op (counter, actor); None is the root map."""

Readout = tuple[str, int | None]
"""("counter", current value), ("timestamp", milliseconds) or ("unknown", None)."""

Place = tuple[ObjKey, str | int]

COUNTER_MARKER = "Counter(Counter {"
"""In a patch's text, the mark of a counter value (user text is escaped and cannot forge it
followed by a struct; a false positive only costs a slower, equally correct read)."""

_RELEVANT_MARKERS = ("Counter(", "Timestamp(", "Unknown", "Insert {", "Seq {", "Increment {")
"""A patch whose text has none of these is a map put of a value the binding converts itself:
a diff from the empty document puts each map entry once, so it can be skipped unparsed."""


def obj_key_of_exid(exid: bytes) -> ObjKey:
    """The ObjKey of an object id as the binding returns it (root: b"\\x00")."""
    if exid == ROOT:
        return None
    reader = Reader(exid, "automerge object id")
    if reader.u8("tag") != EXID_TAG:
        raise DecodeError(f"not an automerge object id: {exid.hex()}")
    actor = reader.blob("actor", MAX_ACTOR_ID_SIZE)
    reader.varint("actor index")
    counter = reader.varint("op counter")
    reader.end()
    return (counter, actor)


def _obj_key_of_node(node: Any) -> ObjKey:
    if isinstance(node, Node) and node.name == "Root" and not node.args:
        return None
    if isinstance(node, Node) and node.name == "Id" and len(node.args) == 3:
        counter, actor_node, _index = node.args
        if (
            isinstance(counter, int)
            and isinstance(actor_node, Node)
            and actor_node.name == "ActorID"
            and len(actor_node.args) == 1
            and isinstance(actor_node.args[0], str)
        ):
            try:
                return (counter, bytes.fromhex(actor_node.args[0]))
            except ValueError:
                pass
    raise DecodeError(f"unexpected object id in an automerge patch: {node!r}")


def _readout(value: Any) -> Readout | None:
    """The readout of a ``Scalar(...)`` node; None for values the binding converts itself."""
    if not (isinstance(value, Node) and value.name == "Scalar" and len(value.args) == 1):
        return None
    scalar = value.args[0]
    if not isinstance(scalar, Node):
        return None
    if scalar.name == "Counter" and len(scalar.args) == 1:
        inner = scalar.args[0]
        current = inner.fields.get("current") if isinstance(inner, Node) else None
        if not isinstance(current, int):
            raise DecodeError(f"unexpected counter in an automerge patch: {scalar!r}")
        return ("counter", current)
    if scalar.name == "Timestamp" and len(scalar.args) == 1 and isinstance(scalar.args[0], int):
        return ("timestamp", scalar.args[0])
    if scalar.name == "Unknown":
        return ("unknown", None)
    return None


@dataclass(frozen=True, slots=True)
class ObjRef:
    """A nested object in a full replay: its key and type name (Map, List, Text)."""

    key: ObjKey
    kind: str


Convert = Callable[[Any, Any], Any]
"""(value node, id node) -> what the model stores for it."""


def _convert_readout(value: Any, _id: Any) -> Readout | None:
    return _readout(value)


def _scalar_python(scalar: Any) -> Any:
    if not isinstance(scalar, Node):
        raise DecodeError(f"unexpected scalar in an automerge patch: {scalar!r}")
    arg = scalar.args[0] if len(scalar.args) == 1 else None
    name = scalar.name
    if name in ("Str", "Int", "Uint", "Boolean") and isinstance(arg, str | int | bool):
        return arg
    if name == "F64":
        if isinstance(arg, int | float):
            return float(arg)
        if isinstance(arg, Node) and arg.name in ("NaN", "inf"):
            return float(arg.name.lower())
    if name == "Null":
        return None
    if name == "Bytes" and isinstance(arg, list):
        return bytes(arg)
    readout = _readout(Node("Scalar", args=(scalar,)))
    if readout is not None:
        return readout_python(readout)
    raise DecodeError(f"unexpected scalar in an automerge patch: {scalar!r}")


def _convert_full(value: Any, id_node: Any) -> Any:
    if isinstance(value, Node) and value.name == "Object" and len(value.args) == 1:
        kind = value.args[0]
        if isinstance(kind, Node) and kind.name in ("Map", "List", "Text"):
            return ObjRef(_obj_key_of_node(id_node), kind.name)
        raise DecodeError(f"unsupported object type in an automerge patch: {kind!r}")
    if isinstance(value, Node) and value.name == "Scalar" and len(value.args) == 1:
        return _scalar_python(value.args[0])
    raise DecodeError(f"unexpected value in an automerge patch: {value!r}")


def readout_python(readout: Readout) -> Any:
    """The Python value of a readout: counters as int (None for unknown or out of range)."""
    kind, number = readout
    if kind == "counter":
        return number
    if kind == "timestamp" and number is not None:
        return datetime_from_ms(number)
    return None


def _pair(pair: Any) -> tuple[Any, Any]:
    if isinstance(pair, Node) and pair.name == "" and len(pair.args) >= 2:
        return pair.args[0], pair.args[1]
    raise DecodeError(f"unexpected value in an automerge patch: {pair!r}")


def _tree_elements(node: Any, convert: Convert, out: list[Any], depth: int = 0) -> None:
    """Append the values of a SequenceTreeNode in order (children interleave elements)."""
    if depth > 64 or not (isinstance(node, Node) and node.name == "SequenceTreeNode"):
        raise DecodeError("unexpected sequence tree in an automerge patch")
    elements = node.fields.get("elements")
    children = node.fields.get("children")
    if not isinstance(elements, list) or not isinstance(children, list):
        raise DecodeError("unexpected sequence tree node in an automerge patch")
    if children and len(children) != len(elements) + 1:
        raise DecodeError("unexpected sequence tree shape in an automerge patch")
    for position, element in enumerate(elements):
        if children:
            _tree_elements(children[position], convert, out, depth + 1)
        out.append(convert(*_pair(element)))
    if children:
        _tree_elements(children[-1], convert, out, depth + 1)


def _inserted(values: Any, convert: Convert) -> list[Any]:
    out: list[Any] = []
    if isinstance(values, Node) and values.name == "SequenceTreeInternal":
        root = values.fields.get("root_node")
        if isinstance(root, Node) and root.name == "Some" and len(root.args) == 1:
            _tree_elements(root.args[0], convert, out)
        elif not (isinstance(root, Node) and root.name == "None"):
            raise DecodeError("unexpected sequence tree root in an automerge patch")
    elif isinstance(values, list):
        out.extend(convert(*_pair(value)) for value in values)
    else:
        raise DecodeError("unexpected inserted values in an automerge patch")
    return out


class _Model:
    """Maps and lists rebuilt from patches; what a value becomes is up to ``convert``."""

    def __init__(self, convert: Convert) -> None:
        self.convert = convert
        self.maps: dict[ObjKey, dict[str, Any]] = {}
        self.lists: dict[ObjKey, list[Any]] = {}

    def _index(self, obj: ObjKey, index: Any, extra: int = 0) -> tuple[list[Any], int]:
        items = self.lists.setdefault(obj, [])
        if not isinstance(index, int) or not 0 <= index < len(items) + extra:
            raise DecodeError(f"automerge patch index {index!r} out of range")
        return items, index

    def apply(self, patch: Any) -> None:
        if not (isinstance(patch, Node) and patch.name == "Patch"):
            raise DecodeError("unexpected automerge patch")
        obj = _obj_key_of_node(patch.fields.get("obj"))
        action = patch.fields.get("action")
        if not isinstance(action, Node):
            raise DecodeError("unexpected automerge patch action")
        fields = action.fields
        if action.name == "PutMap":
            self.maps.setdefault(obj, {})[fields["key"]] = self.convert(*_pair(fields["value"]))
        elif action.name == "DeleteMap":
            self.maps.setdefault(obj, {}).pop(fields["key"], None)
        elif action.name == "PutSeq":
            items, index = self._index(obj, fields["index"])
            items[index] = self.convert(*_pair(fields["value"]))
        elif action.name == "Insert":
            items, index = self._index(obj, fields["index"], extra=1)
            items[index:index] = _inserted(fields["values"], self.convert)
        elif action.name == "DeleteSeq":
            items, index = self._index(obj, fields["index"], extra=1)
            del items[index : index + int(fields.get("length", 1))]
        elif action.name == "Increment":
            raise DecodeError("unexpected increment in a diff from the empty document")


def patch_texts(doc: Document, heads: list[bytes]) -> list[str]:
    """The Debug text of each patch of the diff from the empty document to ``heads``."""
    patches = guarded(lambda: doc.diff([], heads), "diff the document")
    return [repr(patch) for patch in patches]


def _replay(texts: list[str], convert: Convert, everything: bool) -> _Model:
    model = _Model(convert)
    for text in texts:
        if not everything and not any(marker in text for marker in _RELEVANT_MARKERS):
            continue
        try:
            model.apply(parse_debug(text))
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"unexpected automerge patch: {exc!r}") from exc
    return model


def scalar_readouts(doc: Document, heads: list[bytes]) -> dict[Place, Readout]:
    """For the document at ``heads``: every map entry and list element holding a counter, an
    unknown-type value or a timestamp, keyed by (object, key or index).

    The document must have no open transaction. Raises :class:`DecodeError` if the binding's
    patch text is not what this module expects.
    """
    model = _replay(patch_texts(doc, heads), _convert_readout, everything=False)
    out: dict[Place, Readout] = {}
    for obj, entries in model.maps.items():
        for key, readout in entries.items():
            if readout is not None:
                out[(obj, key)] = readout
    for obj, items in model.lists.items():
        for index, readout in enumerate(items):
            if readout is not None:
                out[(obj, index)] = readout
    return out


def materialize_from_diff(texts: list[str], max_depth: int) -> dict[str, Any]:
    """The whole document as plain Python, read from its diff (see :func:`patch_texts`) alone.

    Used for time travel in documents with counters: the binding's ``keys``/``get`` at past
    heads leave out counters that were incremented since, but the diff is right.
    """
    model = _replay(texts, _convert_full, everything=True)

    def build(value: Any, depth: int) -> Any:
        if not isinstance(value, ObjRef):
            return value
        if depth > max_depth:
            raise DecodeError(f"document nested deeper than {max_depth} levels")
        if value.kind == "Map":
            entries = model.maps.get(value.key, {})
            return {key: build(item, depth + 1) for key, item in entries.items()}
        items = model.lists.get(value.key, [])
        if value.kind == "Text":
            return "".join(item if isinstance(item, str) else "\ufffc" for item in items)
        return [build(item, depth + 1) for item in items]

    result: dict[str, Any] = build(ObjRef(None, "Map"), 0)
    return result
