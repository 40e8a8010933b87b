"""What a sync session needs from the node and gives back: the `SyncStore` protocol, the
batches of received entries (`IngestJob`, `IngestOutcome`) and the bounds of a session
(`SyncLimits`). Shared by both roles and the driver; re-exported by :mod:`.protocol`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ..errors import MindooError
from ..recon import DEFAULT_FRAME_SIZE_LIMIT, MIN_FRAME_SIZE_LIMIT, ReconStorage
from ..store.results import Rejected
from .messages import MAX_FETCH_IDS, MAX_INDEX_PAGE, MAX_RECON_PAYLOAD


class SyncStateError(MindooError, RuntimeError):
    """A machine method called in a state that does not allow it (a bug in the caller)."""


# --- what the protocol needs from the node -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What :meth:`SyncStore.ingest` did with a batch. Ids in none of the lists were already
    stored (duplicates)."""

    added: tuple[bytes, ...] = ()
    """Newly stored."""
    rejected: tuple[Rejected, ...] = ()
    """Invalid: undecodable, another tenant, bad signature. The sender is penalized."""
    refused: tuple[Rejected, ...] = ()
    """Authentic but not accepted here (e.g. an author this node knows as revoked): counted,
    not penalized, since an honest peer may hold them."""


class SyncStore(Protocol):
    """One tenant as one node sees it: what the protocol reads and where received entries go.

    No method may raise on an unknown id or database. Reads answer from the node's current
    state; :meth:`recon_storage` gives a snapshot that does not change while it is open.
    """

    @property
    def tenant_id(self) -> bytes:
        """The tenant's 16-byte id."""
        ...

    def databases(self) -> list[str]:
        """The tenant's database names held here, the tenant log (``TENANT_LOG``) included."""
        ...

    def replicates(self, database: str) -> bool:
        """False for a database this node declines (forgotten here): an initiator does not
        reconcile it even when the peer offers it."""
        ...

    def recon_storage(self, database: str) -> AbstractContextManager[ReconStorage]:
        """A read snapshot of the database's (timestamp, id) index (empty when not held)."""
        ...

    def missing(self, ids: Sequence[bytes]) -> list[bytes]:
        """The ids of ``ids`` not stored here, in the order given."""
        ...

    def get_raw(self, ids: Sequence[bytes]) -> list[bytes]:
        """The sealed bytes of the entries of ``ids`` stored here *in this tenant*, in the
        order given; absent ids are skipped."""
        ...

    def ingest(self, raws: Sequence[bytes]) -> IngestOutcome:
        """Verify and store entries from the peer; an invalid entry is rejected alone, the
        others land. Must reject (in ``rejected``) what does not decode, what belongs to
        another tenant, and bad signatures; must refuse (in ``refused``) what membership does
        not allow. The protocol itself only checks that fetched entries were requested."""
        ...


@dataclass(frozen=True, slots=True)
class SyncLimits:
    """The bounds of one session (both roles; the driver applies the two time bounds)."""

    recon_frame_size: int = DEFAULT_FRAME_SIZE_LIMIT
    """Largest Negentropy message we produce (4 KiB-256 KiB)."""
    max_outstanding: int = 8
    """Requests the initiator keeps unanswered at once (pipelining)."""
    fetch_batch: int = 512
    """Ids per fetch request."""
    max_response_bytes: int = 4 * 1024 * 1024
    """Entry bytes per fetch answer (at least one entry is always sent)."""
    index_page: int = MAX_INDEX_PAGE
    """Items per index page in the bulk catch-up."""
    bulk_min_items: int = 1000
    """The bulk catch-up is used for a database of at least this many entries at the peer of
    which we hold less than half."""
    max_recon_rounds: int = 1000
    """Reconciliation rounds per database."""
    max_frames: int = 1_000_000
    """Frames received per session."""
    session_seconds: float = 900.0
    """Wall time of a whole session (driver)."""
    idle_seconds: float = 60.0
    """Longest wait for the peer's next frame (driver)."""

    def __post_init__(self) -> None:
        checks = (
            (
                MIN_FRAME_SIZE_LIMIT <= self.recon_frame_size <= MAX_RECON_PAYLOAD,
                "recon_frame_size",
            ),
            (1 <= self.max_outstanding <= 64, "max_outstanding"),
            (1 <= self.fetch_batch <= MAX_FETCH_IDS, "fetch_batch"),
            (self.max_response_bytes >= 1, "max_response_bytes"),
            (1 <= self.index_page <= MAX_INDEX_PAGE, "index_page"),
            (self.bulk_min_items >= 1, "bulk_min_items"),
            (self.max_recon_rounds >= 1, "max_recon_rounds"),
            (self.max_frames >= 1, "max_frames"),
            (self.session_seconds > 0, "session_seconds"),
            (self.idle_seconds > 0, "idle_seconds"),
        )
        for ok, name in checks:
            if not ok:
                raise ValueError(f"SyncLimits: {name} out of range")


DEFAULT_LIMITS = SyncLimits()


@dataclass(frozen=True, slots=True)
class IngestJob:
    """Entries received for ``database``, to pass to :meth:`SyncStore.ingest`; ``problems``
    names the entries of the same frames refused before that (each one a violation)."""

    database: str
    raws: tuple[bytes, ...]
    problems: tuple[str, ...] = ()
    ids: tuple[bytes, ...] = ()
    """The id (SHA-256) of each of ``raws``, in order, when the machine computed them already
    (checking the entries against its request); empty otherwise. Spares a second hash."""
