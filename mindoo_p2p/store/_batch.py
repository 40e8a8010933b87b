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

from ..admission import BAD_SIGNATURE, VerifiedEntry, check_entries
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
    checked = check_entries(offered, stored, own_seals=not check_signatures)
    verified = checked.verified
    tenant_log = [v for v in verified if v.database == TENANT_LOG]
    tenant_log.sort(key=lambda v: (v.entry.header.author_seq, v.entry.header.timestamp_ms))
    others = [v for v in verified if v.database != TENANT_LOG]

    accepted: list[Entry] = []
    rejected = list(checked.rejected)
    for item in tenant_log + others:
        refusal = authorize(item.entry) if authorize is not None else None
        if refusal is None:
            accepted.append(item.entry)
        else:
            rejected.append(refusal)

    rejected.sort(key=lambda r: checked.order.get(r.entry_id, len(offered)))
    return PreparedBatch(accepted, checked.duplicates, rejected, checked.repeats)
