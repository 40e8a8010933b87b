"""Helpers shared by the document tests (test_docs, test_docs_hostile): the change bytes of a
document, a replica built from them, and an exchange of changes both ways."""

from __future__ import annotations

from mindoo_p2p.crdt import (
    AutomergeDocument,
)


def changes_of(doc: AutomergeDocument, since: list[bytes] | None = None) -> list[bytes]:
    return [info.bytes for info in doc.get_changes(since or ())]


def replica_of(doc: AutomergeDocument) -> AutomergeDocument:
    other = AutomergeDocument()
    other.apply_changes(changes_of(doc))
    return other


def exchange(a: AutomergeDocument, b: AutomergeDocument) -> None:
    """Send each document every change the other lacks (both ways)."""
    a.apply_changes(changes_of(b))
    b.apply_changes(changes_of(a))
