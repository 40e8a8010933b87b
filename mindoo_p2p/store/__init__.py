"""The LMDB entry store: append-only, content-addressed, crash-safe, indexed.

`EntryStore.append(entries, authorize)` contract, in order:

1. bytes are decoded with `Entry.decode` (-> `Rejected` of kind MALFORMED, the rest continue);
   a `VerifiedEntry` (already through `mindoo_p2p.admission`) skips steps 1 and 3;
2. entries already stored, or repeated earlier in the batch, are duplicates (not verified);
3. signatures are verified with `crypto.verify_many` (all cores) -> kind BAD_SIGNATURE;
4. entries of the tenant log (`TENANT_LOG`) go first, sorted by (author_seq, timestamp_ms),
   then the others in the order given; the optional stateless ``authorize(entry)`` filter
   is called for each and may reject (membership is checked by the caller, before);
5. ONE durable LMDB write transaction stores every accepted entry and all index rows.

A bad entry is rejected alone; the rest of the batch lands. Nothing is ever overwritten.

`EntryStore.append_local(seal, authorize)` stores this node's own new entries, numbered and
sealed inside its write transaction, all or nothing (contract in `_local_append`).
"""

from ._layout import scope_key
from ._local_append import AuthorPositions, OwnAuthorizer, SealInTransaction
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
    RejectionKind,
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
    "OwnAuthorizer",
    "Rejected",
    "RejectionKind",
    "SealInTransaction",
    "scope_key",
]
