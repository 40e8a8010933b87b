"""Which top-level fields of a document hold competing values, and which changes wrote them.

Automerge keeps every value that concurrent changes put in one map field (none saw the
others) and shows one of them, chosen deterministically, as the field's value; the binding
(1.0.0rc1) shows only that one and has no ``get_all``. So the competing values are found from
the change graph:

* a change *wrote* field ``k`` when the value op visible at the change differs from the one
  visible at its dependencies (`get` at heads returns the op id too);
* a write *survives* when no later change (a descendant in the change graph) wrote ``k``:
  any later write overwrote every value its writer could see;
* the field is in conflict when two or more surviving writes put a value (a surviving delete
  concurrent with a put leaves only the put, as in Automerge).

A cheap test comes first: a document whose history is one line of changes cannot hold a
conflict, and one whose full diff flags none (``conflict: true``) holds none. Only then are
fields examined, one op read per change. Conflicts inside nested objects are not examined
(the field holding the object is shown with its one value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from automerge.core import ROOT, Document


@dataclass(frozen=True, slots=True)
class FieldWrites:
    """A top-level field with competing values: the changes whose writes survive, the one
    whose value the document shows first."""

    field: str
    changes: tuple[bytes, ...]


def conflicting_fields(doc: Document) -> list[FieldWrites]:
    """The top-level fields of ``doc`` holding competing values, sorted by name."""
    changes = doc.get_changes([])
    if all(len(change.deps) <= 1 for change in changes) and len(doc.get_heads()) <= 1:
        return []  # one line of changes: nothing was ever concurrent
    if "conflict: true" not in repr(doc.diff([], doc.get_heads())):
        return []
    deps = {change.hash: tuple(change.deps) for change in changes}
    found = []
    for key in sorted(doc.keys(ROOT)):
        survivors = _surviving_writers(doc, key, deps)
        if len(survivors) > 1:
            current = _op_at(doc, key, None)
            survivors.sort(key=lambda h: (_op_at(doc, key, [h]) != current, h))
            found.append(FieldWrites(key, tuple(survivors)))
    return found


def _op_at(doc: Document, key: str, heads: Sequence[bytes] | None) -> bytes | None:
    """The id of the op whose value ``key`` shows at ``heads`` (None: absent)."""
    got = doc.get(ROOT, key, list(heads)) if heads is not None else doc.get(ROOT, key)
    return None if got is None else bytes(got[1])


def _surviving_writers(
    doc: Document, key: str, deps: dict[bytes, tuple[bytes, ...]]
) -> list[bytes]:
    """The changes that put a value in ``key`` that no later change overwrote or deleted."""
    at = {change: _op_at(doc, key, [change]) for change in deps}
    writers: list[bytes] = []
    overwriting: list[bytes] = []
    for change, parents in deps.items():
        if len(parents) == 1:
            before = at.get(parents[0])
        else:
            before = _op_at(doc, key, parents) if parents else None
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
