"""Which map fields of a document hold competing values, and which changes wrote them.

Automerge keeps every value that concurrent changes put in one map field (none saw the
others) and shows one of them, chosen deterministically, as the field's value; the binding
(1.0.0rc1) shows only that one and has no ``get_all``. So the competing values are found from
the change graph:

* a change *wrote* field ``k`` of map ``m`` when the value op visible at the change differs
  from the one visible at its dependencies (`get` at heads returns the op id too);
* a write *survives* when no later change (a descendant in the change graph) wrote ``k``:
  any later write overwrote every value its writer could see;
* the field is in conflict when two or more surviving writes put a value (a surviving delete
  concurrent with a put leaves only the put, as in Automerge).

Cheap tests come first: a document whose history is one line of changes cannot hold a
conflict, and one whose full diff flags none (``conflict: true``) holds none. The flagged
patches also say *where*: only those fields are examined, one op read per change each.

Nested maps are examined too: a field is named by its ``path``, the keys from the root map
down (``("address", "city")``), and shown as ``field``, the keys joined by ``.`` with ``.``
and ``\\`` inside a key escaped by ``\\`` (`field_name`), so a top-level field keeps its plain
name and ``"a.b"`` (one key) differs from ``a.b`` (two). Work is bounded: paths deeper than
`MAX_CONFLICT_DEPTH` keys and fields beyond the first `MAX_CONFLICT_FIELDS` (by path) are not
examined. Lists, and everything inside a list, are not examined: a concurrent edit of a list
element is an insert or a put at a position, which Automerge merges without the "one value
hides the other" loss this view exists for (the diff's flag on a list element is skipped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from automerge.core import ROOT, Document, ObjType

from .debug_repr import Node, parse_debug

MAX_CONFLICT_DEPTH = 32
"""The deepest field examined, in keys from the root map (a top-level field is 1)."""

MAX_CONFLICT_FIELDS = 256
"""The most fields of one document examined for competing values (the first by path)."""


@dataclass(frozen=True, slots=True)
class FieldWrites:
    """A map field with competing values: the changes whose writes survive, the one whose
    value the document shows first."""

    path: tuple[str, ...]
    """The keys from the root map down to the field (one key: a top-level field)."""
    changes: tuple[bytes, ...]

    @property
    def field(self) -> str:
        """The field's name: `field_name` of its path."""
        return field_name(self.path)


def field_name(path: Sequence[str]) -> str:
    """The keys joined by ``.``, each ``\\`` and ``.`` inside a key escaped by ``\\``."""
    return ".".join(key.replace("\\", "\\\\").replace(".", "\\.") for key in path)


def conflicting_fields(doc: Document) -> list[FieldWrites]:
    """The map fields of ``doc`` holding competing values, sorted by path."""
    changes = doc.get_changes([])
    if all(len(change.deps) <= 1 for change in changes) and len(doc.get_heads()) <= 1:
        return []  # one line of changes: nothing was ever concurrent
    flagged = sorted(set(_flagged_paths(doc)))[:MAX_CONFLICT_FIELDS]
    if not flagged:
        return []
    deps = {change.hash: tuple(change.deps) for change in changes}
    found = []
    for path in flagged:
        obj = _map_at(doc, path[:-1])
        if obj is None:
            continue
        key = path[-1]
        survivors = _surviving_writers(doc, obj, key, deps)
        if len(survivors) > 1:
            current = _op_at(doc, obj, key, None)
            survivors.sort(key=lambda h: (_op_at(doc, obj, key, [h]) != current, h))
            found.append(FieldWrites(path, tuple(survivors)))
    return found


def _flagged_paths(doc: Document) -> Iterator[tuple[str, ...]]:
    """The paths of the map fields the full diff flags ``conflict: true``, reached through
    maps only and at most `MAX_CONFLICT_DEPTH` keys deep."""
    for patch in doc.diff([], doc.get_heads()):
        text = repr(patch)
        if "conflict: true" not in text:
            continue  # user text is escaped in the Debug output and cannot forge this
        node = parse_debug(text)
        action = node.fields.get("action") if isinstance(node, Node) else None
        if not (isinstance(action, Node) and action.name == "PutMap"):
            continue  # a list element (PutSeq): lists are not examined
        if action.fields.get("conflict") is not True or not isinstance(
            action.fields.get("key"), str
        ):
            continue
        keys = _map_keys(node.fields.get("path"))
        if keys is not None and len(keys) < MAX_CONFLICT_DEPTH:
            yield (*keys, action.fields["key"])


def _map_keys(path: object) -> tuple[str, ...] | None:
    """The keys of a patch's path, ``[(obj, Map("k")), ...]``; None if it goes through a list."""
    if not isinstance(path, list):
        return None
    keys = []
    for step in path:
        prop = step.args[1] if isinstance(step, Node) and len(step.args) == 2 else None
        if not (isinstance(prop, Node) and prop.name == "Map" and len(prop.args) == 1):
            return None
        if not isinstance(prop.args[0], str):
            return None
        keys.append(prop.args[0])
    return tuple(keys)


def _map_at(doc: Document, keys: Sequence[str]) -> bytes | None:
    """The id of the map the document shows at ``keys`` (None: not a map there)."""
    obj = ROOT
    for key in keys:
        got = doc.get(obj, key)
        if got is None or got[0] != ObjType.Map:
            return None
        obj = bytes(got[1])
    return obj


def _op_at(doc: Document, obj: bytes, key: str, heads: Sequence[bytes] | None) -> bytes | None:
    """The id of the op whose value ``key`` of map ``obj`` shows at ``heads`` (None: absent,
    or the map did not exist yet)."""
    got = doc.get(obj, key, list(heads)) if heads is not None else doc.get(obj, key)
    return None if got is None else bytes(got[1])


def _surviving_writers(
    doc: Document, obj: bytes, key: str, deps: dict[bytes, tuple[bytes, ...]]
) -> list[bytes]:
    """The changes that put a value in ``key`` of ``obj`` that no later change overwrote or
    deleted."""
    at = {change: _op_at(doc, obj, key, [change]) for change in deps}
    writers: list[bytes] = []
    overwriting: list[bytes] = []
    for change, parents in deps.items():
        if len(parents) == 1:
            before = at.get(parents[0])
        else:
            before = _op_at(doc, obj, key, parents) if parents else None
        if at[change] != before:
            overwriting.append(change)  # a put, or a delete of what it saw
            if at[change] is not None:
                writers.append(change)
    overwritten: set[bytes] = set()
    for change in overwriting:
        overwritten |= _ancestors(change, deps)
    return [change for change in writers if change not in overwritten]


def _ancestors(change: bytes, deps: dict[bytes, tuple[bytes, ...]]) -> set[bytes]:
    seen: set[bytes] = set()
    stack = list(deps.get(change, ()))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(deps.get(current, ()))
    return seen
