"""Sorting an offered batch into accepted, duplicate and rejected entries, before any write.

Pure apart from two callbacks (which of these ids are stored? may this entry be stored?): no
LMDB here. The checks themselves are the admission pipeline's (`mindoo_p2p.admission`), so an
entry is decoded and verified once, whoever offers it. The steps follow the
`EntryStore.append` contract:

1. bytes are decoded with `Entry.decode` (MALFORMED -> rejected, the rest continue); an `Entry`
   object must carry ``id == sha256(raw)``; a `VerifiedEntry` (already through the pipeline)
   is taken as it is;
2. ids already stored, or repeated in the batch, are duplicates and are not verified again;
3. signatures are checked with `crypto.verify_many` (all cores);
4. tenant-log entries go first, sorted by (author_seq, timestamp_ms), then the others in the
   order given; the optional, stateless ``authorize`` filter sees each in that order and may
   reject it (membership is the caller's business: `Node` admits entries with
   `admission.admit` before it appends them).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ..admission import BAD_SIGNATURE, CheckedBatch, VerifiedEntry, check_entries
from ..entry import TENANT_LOG, Entry
from .results import Authorizer, Rejected

__all__ = ["BAD_SIGNATURE", "PreparedBatch", "prepare_batch"]


@dataclass(slots=True)
class PreparedBatch:
    """The outcome of the checks that need no write transaction."""

    accepted: list[Entry]
    """Verified, authorized, not stored when checked: to be written, in this (commit) order."""
    duplicates: list[bytes]
    rejected: list[Rejected]
    repeats: list[bytes]
    """Ids offered again later in the batch; resolved once the first copy's fate is known."""


def _checked_already(
    offered: Sequence[VerifiedEntry], stored: Callable[[list[bytes]], Collection[bytes]]
) -> CheckedBatch:
    """`check_entries` over items that are all `VerifiedEntry` (`Node.ingest` hands them over
    after the admission pipeline): nothing to decode or verify, so one pass sets repeats and
    stored ids aside, with the same outcome."""
    order: dict[bytes, int] = {}
    repeats: list[bytes] = []
    first: list[VerifiedEntry] = []
    for index, item in enumerate(offered):
        entry_id = item.entry.id
        if entry_id in order:
            repeats.append(entry_id)
        else:
            order[entry_id] = index
            first.append(item)
    held = set(stored(list(order))) if first else set()
    duplicates = [v.entry.id for v in first if v.entry.id in held] if held else []
    verified = [v for v in first if v.entry.id not in held] if held else first
    return CheckedBatch(verified, duplicates, [], repeats, order)


def prepare_batch(
    offered: Sequence[Entry | bytes | VerifiedEntry],
    stored: Callable[[list[bytes]], Collection[bytes]],
    authorize: Authorizer | None,
    *,
    check_signatures: bool = True,
) -> PreparedBatch:
    """Decode, deduplicate, verify, order and authorize ``offered``.

    ``check_signatures=False`` is only for entries the caller has just sealed itself (they
    cannot carry a bad signature); everything else is still checked.

    ``stored(ids)`` returns those of ``ids`` the store already holds. Exceptions raised by
    ``authorize`` propagate (nothing has been written at that point). Raises TypeError for an
    item that is neither an Entry, a VerifiedEntry nor bytes.
    """
    ready = [item for item in offered if isinstance(item, VerifiedEntry)]
    checked = (
        _checked_already(ready, stored)
        if len(ready) == len(offered)
        else check_entries(offered, stored, own_seals=not check_signatures)
    )
    tenant_log: list[Entry] = []
    others: list[Entry] = []
    for item in checked.verified:
        entry = item.entry
        (tenant_log if entry.header.database == TENANT_LOG else others).append(entry)
    tenant_log.sort(key=lambda e: (e.header.author_seq, e.header.timestamp_ms))

    if authorize is None:
        accepted = tenant_log + others
        rejected = list(checked.rejected)
    else:
        accepted = []
        rejected = list(checked.rejected)
        for entry in tenant_log + others:
            refusal = authorize(entry)
            if refusal is None:
                accepted.append(entry)
            else:
                rejected.append(refusal)

    rejected.sort(key=lambda r: checked.order.get(r.entry_id, len(offered)))
    return PreparedBatch(accepted, checked.duplicates, rejected, checked.repeats)
