"""Do a document's materialized heads agree with its entries? (fsck and the cluster harness)

A document's *entry heads* are its CHANGE entries that no other CHANGE entry of it names as a
causal parent. A change entry's deps are the entry ids of its Automerge change's deps (see
`materializer.DocumentMaterializer.dependencies`), so when every change is applied the
document's Automerge heads are exactly the changes its entry heads carry. When they differ,
some change is not applied: skipped by the reading rules (`materializer`: another key family,
an actor that is not its author's, refused by Automerge, key not held), or waiting for a
change that is not here. Replicas holding the same entries apply the same rules, so they
reach the same heads; a difference the rules do not explain is a split the entry sets cannot
show (how actor squatting went unnoticed before actors were bound to authors).

fsck (`Node.fsck`) reports a mismatch the rules explain as a notice (a member's skipped change
is no damage), and one they do not explain as a problem. Pure: the caller supplies the entries
and what the materializer made of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from .entry import Entry, EntryKind

MAX_LISTED = 5
"""Entry ids named per report line (the count says how many more)."""


def entry_heads(entries: Iterable[Entry]) -> set[bytes]:
    """Ids of the CHANGE entries no other CHANGE entry among ``entries`` names as a parent."""
    changes = [e for e in entries if e.kind is EntryKind.CHANGE]
    named = {dep for e in changes for dep in e.deps}
    return {e.id for e in changes if e.id not in named}


@dataclass(frozen=True, slots=True)
class HeadMismatch:
    """A document whose materialized heads are not its entry heads."""

    line: str
    """Readable: the document, and each entry head not applied with why."""
    explained: bool
    """Every entry head not applied is explained by the reading rules (skipped with a reason,
    or waiting for a change that is not here): the same on every replica holding these
    entries. False means a bug or a split: fsck reports it as a problem."""


def head_mismatch(
    document_id: bytes,
    entries: Iterable[Entry],
    materialized: Collection[bytes],
    skipped: Mapping[bytes, str],
    *,
    waiting: bool,
) -> HeadMismatch | None:
    """How the entry ids carrying the document's Automerge heads (``materialized``) differ
    from its entry heads, naming the entries not applied and why (``skipped``: entry id ->
    reason; ``waiting``: changes wait for one that is not here); None when they agree."""
    expected = entry_heads(entries)
    if expected == set(materialized):
        return None
    behind = sorted(expected - set(materialized))
    explained = bool(behind)
    reasons = []
    for index, entry_id in enumerate(behind):
        if entry_id in skipped:
            why = skipped[entry_id]
        elif waiting:
            why = "waits for a change that is not here"
        else:
            why = "not applied, for no reason the reading rules give"
            explained = False
        if index < MAX_LISTED:
            reasons.append(f"{entry_id.hex()[:16]}: {why}")
    more = f" (+{len(behind) - MAX_LISTED} more)" if len(behind) > MAX_LISTED else ""
    line = (
        f"document {document_id.hex()}: heads materialized from {len(materialized)} entries,"
        f" but its entries end at {len(expected)}; not applied: "
        + ("; ".join(reasons) or "none (a head with no entry)")
        + more
    )
    return HeadMismatch(line, explained)


__all__ = ["HeadMismatch", "entry_heads", "head_mismatch"]
