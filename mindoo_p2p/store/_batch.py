"""Sorting an offered batch into accepted, duplicate and rejected entries, before any write.

Pure apart from two callbacks (is this id stored? may this entry be stored?): no LMDB here. The
steps follow the `EntryStore.append` contract:

1. bytes are decoded with `Entry.decode` (DecodeError -> rejected, the rest continue); an
   `Entry` object must carry ``id == sha256(raw)``;
2. ids already stored, or repeated in the batch, are duplicates and are not verified again;
3. signatures are checked with `crypto.verify_many` (all cores);
4. tenant-log entries go first, sorted by (author_seq, timestamp_ms), then the others in the
   order given; the authorizer sees each in that order and may reject it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..crypto import verify_many
from ..entry import SIGNING_DOMAIN, TENANT_LOG, Entry
from ..errors import DecodeError
from .results import Authorizer, Rejected

BAD_SIGNATURE = "bad signature"


@dataclass(slots=True)
class PreparedBatch:
    """The outcome of the checks that need no write transaction."""

    accepted: list[Entry]
    """Verified, authorized, not stored when checked: to be written, in this (commit) order."""
    duplicates: list[bytes]
    rejected: list[Rejected]
    repeats: list[bytes]
    """Ids offered again later in the batch; resolved once the first copy's fate is known."""


def _decode(item: Entry | bytes) -> Entry | Rejected:
    if isinstance(item, Entry):
        if hashlib.sha256(item.raw).digest() != item.id:
            return Rejected(hashlib.sha256(item.raw).digest(), "entry id does not match its bytes")
        return item
    if not isinstance(item, bytes | bytearray | memoryview):
        raise TypeError(f"append takes Entry or bytes items, not {type(item).__name__}")
    data = bytes(item)
    try:
        return Entry.decode(data)
    except DecodeError as exc:
        return Rejected(hashlib.sha256(data).digest(), f"decode error: {exc}")


def prepare_batch(
    offered: Sequence[Entry | bytes],
    is_stored: Callable[[bytes], bool],
    authorize: Authorizer | None,
    *,
    check_signatures: bool = True,
) -> PreparedBatch:
    """Decode, deduplicate, verify, order and authorize ``offered``.

    ``check_signatures=False`` is only for entries the caller has just sealed itself (they
    cannot carry a bad signature); everything else is still checked.

    ``is_stored(id)`` says whether the store already holds an id. Exceptions raised by
    ``authorize`` propagate (nothing has been written at that point). Raises TypeError for an
    item that is neither an Entry nor bytes.
    """
    rejected: list[tuple[int, Rejected]] = []
    duplicates: list[bytes] = []
    repeats: list[bytes] = []
    candidates: list[tuple[int, Entry]] = []
    seen: set[bytes] = set()
    for index, item in enumerate(offered):
        decoded = _decode(item)
        if isinstance(decoded, Rejected):
            rejected.append((index, decoded))
            continue
        entry_id = decoded.id
        if entry_id in seen:
            repeats.append(entry_id)
            continue
        seen.add(entry_id)
        if is_stored(entry_id):
            duplicates.append(entry_id)
            continue
        candidates.append((index, decoded))

    if check_signatures:
        verdicts = verify_many(
            [
                (e.header.author, SIGNING_DOMAIN + e.raw[: e.signed_end], e.signature)
                for _, e in candidates
            ]
        )
    else:
        verdicts = [True] * len(candidates)
    verified: list[tuple[int, Entry]] = []
    for (index, entry), valid in zip(candidates, verdicts, strict=True):
        if valid:
            verified.append((index, entry))
        else:
            rejected.append((index, Rejected(entry.id, BAD_SIGNATURE)))

    tenant_log = [item for item in verified if item[1].header.database == TENANT_LOG]
    tenant_log.sort(key=lambda item: (item[1].header.author_seq, item[1].header.timestamp_ms))
    others = [item for item in verified if item[1].header.database != TENANT_LOG]

    accepted: list[Entry] = []
    for index, entry in tenant_log + others:
        reason = authorize(entry) if authorize is not None else None
        if reason is None:
            accepted.append(entry)
        else:
            rejected.append((index, Rejected(entry.id, reason or "rejected by the authorizer")))

    rejected.sort(key=lambda item: item[0])
    return PreparedBatch(accepted, duplicates, [r for _, r in rejected], repeats)
