"""The LMDB entry store: append-only, content-addressed, crash-safe, indexed.

`EntryStore.append(entries, authorize)` contract, in order:

1. bytes are decoded with `Entry.decode` (DecodeError -> `Rejected`, the rest continue);
2. entries already stored, or repeated earlier in the batch, are duplicates (not verified);
3. signatures are verified with `crypto.verify_many` (all cores) -> `Rejected("bad signature")`;
4. entries of the tenant log (`TENANT_LOG`) go first, sorted by (author_seq, timestamp_ms),
   then the others in the order given; ``authorize(entry)`` is called for each and may reject;
5. ONE durable LMDB write transaction stores every accepted entry and all index rows.

A bad entry is rejected alone; the rest of the batch lands. Nothing is ever overwritten.
"""

from ._layout import scope_key
from ._local_append import AuthorPositions, SealInTransaction
from .entry_store import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    MAX_FEED_PAGE,
    MAX_SNAPSHOT_SIZE,
    EntryStore,
)
from .results import (
    AppendResult,
    Authorizer,
    FeedItem,
    FsckProblem,
    FsckReport,
    Rejected,
)

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_FEED_PAGE",
    "MAX_SNAPSHOT_SIZE",
    "AppendResult",
    "AuthorPositions",
    "Authorizer",
    "EntryStore",
    "FeedItem",
    "FsckProblem",
    "FsckReport",
    "Rejected",
    "SealInTransaction",
    "scope_key",
]
