"""The sync protocol after authentication, sans I/O: reconcile, fetch and push one tenant.

Both sides run a state machine that takes frames in (:meth:`receive`) and hands frames out
(:meth:`next_frame`); entries received are handed out as :class:`IngestJob` values for the
driver to pass to :meth:`SyncStore.ingest`, whose :class:`IngestOutcome` comes back through
:meth:`ingested`. Store reads (lists, reconciliation snapshots, raw entries) are synchronous
calls on the :class:`SyncStore`. Neither machine touches the network or the clock.

The session, after the handshake of :mod:`.auth`::

    I -> R  DATABASE_LIST (I's databases and entry counts)
    R -> I  DATABASE_LIST (R's)          both sides now agree on the union, tenant log first

(Protocol version 2, announced in the HELLO: R sends its DATABASE_LIST right after its proof,
without waiting for I's; I's list and its first requests then leave in one flight. R answers
an initiator of version 1 in the order above. Version 3: both lists are DATABASE_SUMMARY
messages (each database's count and fingerprint), R's first and I's after it; a database
both summaries show alike is in sync without reconciling, and FINISHED follows FINISH only
when I pushed entries, so an idle session is HELLO, proofs with R's summary, I's summary
with FINISH: two round trips.)
    for each database of the union (the initiator drives, R answers in order):
      bulk, when I holds less than half of a large database:
        I -> R  INDEX_REQUEST(after position)  R -> I INDEX_PAGE   (one page in flight)
        I -> R  FETCH_REQUEST(ids I lacks)     R -> I ENTRIES/ENTRY_FRAGMENT* FETCH_END
      then reconciliation:
        I -> R  RECON_REQUEST(negentropy)      R -> I RECON_REPLY  (until settled)
        I -> R  FETCH_REQUEST(ids I needs)     R -> I ENTRIES* FETCH_END
        I -> R  ENTRIES/ENTRY_FRAGMENT (push: ids R needs; not acknowledged)
    I -> R  FINISH                             R -> I FINISHED(added, refused)

Scopes in one flight: the reconciliation of the current database and of the next few
(``max_outstanding`` in all) runs at once, so the first message of every scope leaves in the
flight after the database lists, and two nodes in sync need one reconciliation round trip
whatever the number of databases. Entries still move database by database, in the agreed
order: index pages, fetches and pushes are only for the current database, and the next one
becomes current once the current one's entries are stored (the tenant log's membership lands
before the entries it authorizes). The responder counts a pushed entry under the database its
header names. Each scope reconciling holds a read snapshot; beyond the current database's, only
with a slot of the process-wide `~.snapshot_budget.SnapshotBudget` (without one it waits until
it is current), so sessions cannot take every reader slot of the home.

Requests are pipelined (at most ``max_outstanding`` unanswered) and answered in order, so each
answer belongs to the oldest open request. Everything is bounded: frame size (decoding), ids
per request, bytes per fetch answer, items per index page, reconciliation rounds per database,
frames per session, databases per tenant (the driver bounds time). A frame that does not
decode, does not answer the open request, or carries entries nobody asked for, raises
:class:`~.messages.ProtocolViolation`; so do entries that fail verification, but only after
the valid entries of the same frame were handed on to be stored.
"""

from __future__ import annotations

from ._initiator import (
    DatabaseEvent,
    DatabasePhase,
    InitiatorEvent,
    InitiatorPhase,
    SyncInitiator,
)
from ._responder import ResponderEvent, ResponderPhase, SyncResponder
from ._session_api import (
    DEFAULT_LIMITS,
    IngestJob,
    IngestOutcome,
    SyncLimits,
    SyncStateError,
    SyncStore,
)
from ._session_common import database_order, entry_frames, local_databases
from ._session_report import DatabaseReport, SyncReport

__all__ = [
    "DEFAULT_LIMITS",
    "DatabaseEvent",
    "DatabasePhase",
    "DatabaseReport",
    "IngestJob",
    "IngestOutcome",
    "InitiatorEvent",
    "InitiatorPhase",
    "ResponderEvent",
    "ResponderPhase",
    "SyncInitiator",
    "SyncLimits",
    "SyncReport",
    "SyncResponder",
    "SyncStateError",
    "SyncStore",
    "database_order",
    "entry_frames",
    "local_databases",
]
