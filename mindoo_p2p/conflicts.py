"""Conflicts made visible (issue 10): competing values of a field, who wrote each, and when.

When concurrent changes (made on different devices before they synced) set the same field,
every node shows the same one of the values (Automerge's deterministic choice) and keeps the
others. Nothing was shown of the others before, so one value was lost without a trace for the
user. Here:

===========================  ===============================================================
`FieldConflict`              one field, its competing `CompetingValue`s (the shown one first)
`CompetingValue`             a value, the entry that wrote it, its author (member name, and
                             device when a device wrote it), the author's time
`document_conflicts`         a document's conflicts (`Database.conflicts`,
                             ``Database.get(doc, conflicts=True)``)
`ConflictFeed`               a database's documents with unresolved conflicts, remembered per
                             document heads so a feed re-read costs one comparison per
                             unchanged document (`Database.conflicted_documents`)
===========================  ===============================================================

A plain write of the field resolves its conflict (the write overwrites every value its
writer saw). Fields of nested maps count too, named by their path (see `crdt.conflicts`:
``field`` is the dotted name, ``path`` the keys); lists are not examined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .crdt import change_hash
from .entry import Entry, EntryKind
from .errors import MindooError
from .materializer import MaterializedDocument


@dataclass(frozen=True, slots=True)
class CompetingValue:
    """One of the values a field holds."""

    value: Any
    entry_id: str
    author: str
    """The signing key (hex) that wrote it: the member's, or one of its devices'."""
    author_name: str | None
    """The member's name, with the device's in parentheses when a device wrote it."""
    timestamp_ms: int
    """When the author wrote it (the author's clock)."""
    shown: bool
    """The value the document shows (the same on every node)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "entry_id": self.entry_id,
            "author": self.author,
            "author_name": self.author_name,
            "timestamp_ms": self.timestamp_ms,
            "shown": self.shown,
        }


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """A map field holding competing values, the shown one first."""

    field: str
    """The field's name: its path's keys joined by ``.`` (``.`` and ``\\`` in a key escaped by
    ``\\``); a top-level field's name is its key."""
    values: tuple[CompetingValue, ...]
    path: tuple[str, ...] = ()
    """The keys from the document's root map down to the field."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "path": list(self.path),
            "values": [v.to_dict() for v in self.values],
        }


@dataclass(frozen=True, slots=True)
class DocumentView:
    """A document's content with its conflicts (``Database.get(doc, conflicts=True)``)."""

    content: dict[str, Any]
    conflicts: tuple[FieldConflict, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "conflicts": [c.to_dict() for c in self.conflicts]}


def document_conflicts(
    md: MaterializedDocument,
    stored: Iterable[Entry],
    decrypt: Callable[[Entry], bytes],
    author_name: Callable[[bytes], str | None],
) -> tuple[FieldConflict, ...]:
    """The conflicts of the materialized document ``md``; ``stored`` are its entries (to find
    the entry of each competing change: their payloads are decrypted until all are found)."""
    writes = md.doc.conflicts()
    if not writes:
        return ()
    wanted = {change for w in writes for change in w.changes}
    entries: dict[bytes, Entry] = {}
    for entry in stored:
        if entry.kind is not EntryKind.CHANGE or entry.id in md.bad_entries:
            continue
        try:
            hash_ = change_hash(decrypt(entry))
        except MindooError:
            continue
        if hash_ in wanted:
            entries[hash_] = entry
            if len(entries) == len(wanted):
                break
    conflicts = []
    for w in writes:
        values = []
        for index, change in enumerate(w.changes):
            writer = entries.get(change)
            if writer is None:  # a change drafted here and not stored yet: no entry to name
                continue
            values.append(
                CompetingValue(
                    value=_value_at(md.doc.to_py([change]), w.path),
                    entry_id=writer.id.hex(),
                    author=writer.author.hex(),
                    author_name=author_name(writer.author),
                    timestamp_ms=writer.timestamp_ms,
                    shown=index == 0,
                )
            )
        if len(values) > 1:
            conflicts.append(FieldConflict(w.field, tuple(values), w.path))
    return tuple(conflicts)


def _value_at(content: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``content`` (None where a key is missing or not a map)."""
    value: Any = content
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


@dataclass
class ConflictFeed:
    """Which documents of one database hold conflicts, remembered by document heads."""

    _known: dict[bytes, tuple[tuple[bytes, ...], tuple[str, ...]]] = field(default_factory=dict)

    def fields(
        self, document_id: bytes, heads: list[bytes], compute: Callable[[], Iterable[str]]
    ) -> tuple[str, ...]:
        """The conflicting fields of a document at ``heads`` (``compute`` when unknown)."""
        key = tuple(heads)
        known = self._known.get(document_id)
        if known is not None and known[0] == key:
            return known[1]
        found = tuple(compute())
        self._known[document_id] = (key, found)
        return found


__all__ = [
    "CompetingValue",
    "ConflictFeed",
    "DocumentView",
    "FieldConflict",
    "document_conflicts",
]
