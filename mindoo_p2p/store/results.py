"""The values the entry store hands back: append outcomes, feed items, fsck reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..entry import Entry, EntryKind
from ..rejection import Rejected, RejectionKind

__all__ = [
    "AppendResult",
    "Authorizer",
    "FeedItem",
    "FsckProblem",
    "FsckReport",
    "Rejected",
    "RejectionKind",
]

Authorizer = Callable[[Entry], Rejected | None]
"""An optional, stateless filter `EntryStore.append` calls for each entry whose hash and
signature are valid and that is not yet stored, in batch order (tenant-log entries first):
None accepts, a `Rejected` refuses. Membership is not checked by the store: `Node` admits
entries with `mindoo_p2p.admission` before it appends them."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one `EntryStore.append` call did with each offered entry."""

    added: list[bytes]
    """Ids newly stored, in commit order (the order of their feed sequence numbers)."""
    duplicates: list[bytes]
    """Ids already stored, or repeated in the batch after an accepted copy: no-ops."""
    rejected: list[Rejected]
    """Entries not stored, in the order they were offered."""


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One row of a database's arrival feed, with the entry's clear header fields."""

    seq: int
    """Per-(tenant, database) local arrival sequence, starting at 1."""
    entry_id: bytes
    document_id: bytes
    kind: EntryKind
    author: bytes
    author_seq: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class FsckProblem:
    """One inconsistency found by `EntryStore.fsck`."""

    entry_id: bytes | None
    """The entry concerned, when the problem belongs to one."""
    where: str
    """The sub-database (or check) where it was found, e.g. "entries", "feed", "doc_idx"."""
    reason: str


@dataclass
class FsckReport:
    """The outcome of a full consistency check."""

    entries_checked: int
    problems: list[FsckProblem] = field(default_factory=list)
    notices: list[FsckProblem] = field(default_factory=list)
    """Findings that are no damage (e.g. a document whose heads stop short of its entries
    because the reading rules skip a member's bad change): reported, not failing."""

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems
