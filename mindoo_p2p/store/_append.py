"""`EntryStore.append` step by step: bound the batch, check it with no lock held, store what
is accepted in ONE durable write transaction, account for what another writer stored meanwhile.

The contract is in :mod:`mindoo_p2p.store`; the checks are `_batch.prepare_batch`, the rows
`_writer.write_entries`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeAlias

import lmdb

from ..admission import VerifiedEntry
from ..entry import Entry
from ._batch import prepare_batch
from ._layout import Tables
from ._writer import write_entries
from .results import AppendResult, Authorizer

MAX_BATCH_ENTRIES = 50_000
"""Most entries one `append` call takes (ValueError beyond)."""
MAX_BATCH_BYTES = 128 * 1024 * 1024
"""Most sealed bytes one `append` call takes (ValueError beyond)."""

Transaction: TypeAlias = Callable[[], "AbstractContextManager[lmdb.Transaction[bytes]]"]


def check_batch_bounds(entries: Sequence[Entry | bytes | VerifiedEntry]) -> None:
    """ValueError when the batch is over MAX_BATCH_ENTRIES or MAX_BATCH_BYTES."""
    if len(entries) > MAX_BATCH_ENTRIES:
        raise ValueError(f"batch of {len(entries)} entries, over {MAX_BATCH_ENTRIES}")
    total = sum(len(e.raw) if isinstance(e, Entry | VerifiedEntry) else len(e) for e in entries)
    if total > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {total} bytes, over {MAX_BATCH_BYTES}")


def append_batch(
    reading: Transaction,
    writing: Transaction,
    tables: Tables,
    entries: Sequence[Entry | bytes | VerifiedEntry],
    authorize: Authorizer | None,
    *,
    check_signatures: bool,
) -> AppendResult:
    """Check ``entries`` against a read snapshot (no lock held), store the accepted ones in one
    write transaction, and report added, duplicate and rejected ids."""
    if not entries:
        return AppendResult([], [], [])
    if all(isinstance(e, VerifiedEntry) for e in entries):
        # Nothing to decode or verify: an entry stored already is found by the write itself
        # (reported as a duplicate), so no read transaction looks first.
        prepared = prepare_batch(entries, lambda ids: (), authorize)
    else:
        ids_db = tables.ids
        with reading() as txn:
            prepared = prepare_batch(
                entries,
                lambda ids: [i for i in ids if txn.get(i, db=ids_db) is not None],
                authorize,
                check_signatures=check_signatures,
            )
    added: list[Entry] = []
    if prepared.accepted:
        with writing() as wtxn:
            added = write_entries(wtxn, tables, prepared.accepted)

    added_ids = [entry.id for entry in added]
    duplicates = prepared.duplicates
    rejected = prepared.rejected
    if len(added) != len(prepared.accepted):
        landed = set(added_ids)
        duplicates += [e.id for e in prepared.accepted if e.id not in landed]
    if prepared.repeats:
        refusals = {r.entry_id: r for r in rejected}
        for entry_id in prepared.repeats:
            refusal = refusals.get(entry_id)
            if refusal is None:
                duplicates.append(entry_id)
            else:
                rejected.append(refusal)
    return AppendResult(added_ids, duplicates, rejected)


__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_ENTRIES", "append_batch", "check_batch_bounds"]
