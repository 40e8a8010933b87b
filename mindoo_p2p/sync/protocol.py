"""The sync protocol after authentication, sans I/O: reconcile, fetch and push one tenant.

Both sides run a state machine that takes frames in (:meth:`receive`) and hands frames out
(:meth:`next_frame`); entries received are handed out as :class:`IngestJob` values for the
driver to pass to :meth:`SyncStore.ingest`, whose :class:`IngestOutcome` comes back through
:meth:`ingested`. Store reads (lists, reconciliation snapshots, raw entries) are synchronous
calls on the :class:`SyncStore`. Neither machine touches the network or the clock.

The session, after the handshake of :mod:`.auth`::

    I -> R  DATABASE_LIST (I's databases and entry counts)
    R -> I  DATABASE_LIST (R's)          both sides now agree on the union, tenant log first
    for each database of the union, in order (the initiator drives, R answers in order):
      bulk, when I holds less than half of a large database:
        I -> R  INDEX_REQUEST(after position)  R -> I INDEX_PAGE   (one page in flight)
        I -> R  FETCH_REQUEST(ids I lacks)     R -> I ENTRIES/ENTRY_FRAGMENT* FETCH_END
      then reconciliation:
        I -> R  RECON_REQUEST(negentropy)      R -> I RECON_REPLY  (until settled)
        I -> R  FETCH_REQUEST(ids I needs)     R -> I ENTRIES* FETCH_END
        I -> R  ENTRIES/ENTRY_FRAGMENT (push: ids R needs; not acknowledged)
    I -> R  FINISH                             R -> I FINISHED(added, refused)

Requests are pipelined (at most ``max_outstanding`` unanswered) and answered in order, so each
answer belongs to the oldest open request. Everything is bounded: frame size (decoding), ids
per request, bytes per fetch answer, items per index page, reconciliation rounds per database,
frames per session, databases per tenant (the driver bounds time). A frame that does not
decode, does not answer the open request, or carries entries nobody asked for, raises
:class:`~.messages.ProtocolViolation`; so do entries that fail verification, but only after
the valid entries of the same frame were handed on to be stored.
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Protocol

from ..entry import TENANT_LOG
from ..errors import DecodeError, MindooError
from ..recon import (
    DEFAULT_FRAME_SIZE_LIMIT,
    MIN_FRAME_SIZE_LIMIT,
    ReconInitiator,
    ReconItem,
    ReconResponder,
    ReconStorage,
)
from ..store.results import Rejected
from .messages import (
    MAX_DATABASES,
    MAX_ENTRIES_PER_FRAME,
    MAX_FETCH_IDS,
    MAX_FRAME_SIZE,
    MAX_INDEX_PAGE,
    MAX_RECON_PAYLOAD,
    DatabaseInfo,
    DatabaseList,
    Denied,
    Entries,
    EntryFragment,
    FetchEnd,
    FetchRequest,
    Finish,
    Finished,
    IndexPage,
    IndexRequest,
    Message,
    ProtocolViolation,
    ReconReply,
    ReconRequest,
    decode_message,
    encode_message,
    len_varint,
)

_ENTRIES_BUDGET = MAX_FRAME_SIZE - 8
"""Bytes of (length-prefixed) entries in one ENTRIES frame: the type byte and count fit in 8."""
_FRAGMENT_CHUNK = MAX_FRAME_SIZE - 32
"""Data bytes in one ENTRY_FRAGMENT frame (type byte and three varints fit in 32)."""
_READ_CHUNK = 64
"""Ids per `SyncStore.get_raw` call while building frames."""
_QUEUE_HIGH = 4096
"""The initiator sends its next reconciliation or index request only while fewer ids than
this wait to be fetched (and pushed): the queues stay bounded however large the difference."""


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


@dataclass(slots=True)
class DatabaseReport:
    """What one session did for one database, seen from one side."""

    database: str
    bulk: bool = False
    """The bulk catch-up (index paging) was used."""
    received: int = 0
    """Entries received from the peer and newly stored here."""
    sent: int = 0
    """Entries sent to the peer (fetched by it, or pushed to it)."""
    rejected: int = 0
    """Entries from the peer that failed verification."""
    refused: int = 0
    """Authentic entries from the peer that this node did not accept."""
    unavailable: int = 0
    """Ids we wanted that the peer did not deliver."""
    round_trips: int = 0
    """Requests answered (reconciliation, index pages and fetches)."""
    recon_rounds: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    # Progress (initiator; kept up to date after every frame received):
    peer_items: int = 0
    """Entries the peer holds, as its database list said at the start."""
    local_items: int = 0
    """Entries this node held at the start."""
    lacking: int = 0
    """Ids reconciliation (or the peer's index) showed we lack, not received yet."""
    peer_lacking: int = 0
    """Ids reconciliation showed the peer lacks, not sent yet."""
    settled: bool = False
    """Reconciliation of this database finished: ``lacking`` is all we lack."""

    @property
    def outstanding(self) -> int:
        """What we know we still lack from the peer: ``lacking``, and until reconciliation
        settles at least what the peer holds beyond what we hold and received."""
        if self.settled:
            return self.lacking
        beyond = self.peer_items - self.local_items - self.received - self.lacking
        return self.lacking + max(0, beyond)


@dataclass(slots=True)
class SyncReport:
    """What one session did, per database. Session totals include the handshake frames."""

    tenant_id: bytes
    role: str
    databases: dict[str, DatabaseReport] = field(default_factory=dict)
    current_database: str | None = None
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    elapsed_seconds: float = 0.0
    peer_added: int = 0
    """(Initiator) entries our pushes added at the peer, as the peer says."""
    peer_refused: int = 0
    """(Initiator) entries of our pushes the peer did not accept, as the peer says."""

    def database(self, name: str) -> DatabaseReport:
        found = self.databases.get(name)
        if found is None:
            found = self.databases[name] = DatabaseReport(name)
        return found

    @property
    def received(self) -> int:
        return sum(each.received for each in self.databases.values())

    @property
    def sent(self) -> int:
        return sum(each.sent for each in self.databases.values())

    @property
    def rejected(self) -> int:
        return sum(each.rejected for each in self.databases.values())

    @property
    def round_trips(self) -> int:
        return sum(each.round_trips for each in self.databases.values())


@dataclass(frozen=True, slots=True)
class IngestJob:
    """Entries received for ``database``, to pass to :meth:`SyncStore.ingest`; ``problems``
    names the entries of the same frames refused before that (each one a violation)."""

    database: str
    raws: tuple[bytes, ...]
    problems: tuple[str, ...] = ()


# --- helpers shared by both roles --------------------------------------------------------------


def database_order(names: Iterable[str]) -> list[str]:
    """The agreed sync order: the tenant log first (membership before what it authorizes),
    then by name; each name once."""
    return sorted(set(names), key=lambda name: (name != TENANT_LOG, name))


def local_databases(store: SyncStore) -> tuple[DatabaseInfo, ...]:
    """Our database list for the peer: every database of ``store`` with its entry count."""
    infos = []
    for name in sorted(set(store.databases())):
        with store.recon_storage(name) as storage:
            infos.append(DatabaseInfo(name, storage.size()))
    if len(infos) > MAX_DATABASES:
        raise ValueError(f"a tenant syncs at most {MAX_DATABASES} databases, not {len(infos)}")
    return tuple(infos)


def entry_frames(raws: Iterable[bytes]) -> Iterator[bytes]:
    """ENTRIES frames packing ``raws`` in order, and ENTRY_FRAGMENT frames for an entry too
    large for one frame."""
    batch: list[bytes] = []
    size = 0
    for raw in raws:
        cost = len_varint(len(raw)) + len(raw)
        if batch and (size + cost > _ENTRIES_BUDGET or len(batch) == MAX_ENTRIES_PER_FRAME):
            yield encode_message(Entries(tuple(batch)))
            batch, size = [], 0
        if cost > _ENTRIES_BUDGET:
            for offset in range(0, len(raw), _FRAGMENT_CHUNK):
                piece = raw[offset : offset + _FRAGMENT_CHUNK]
                yield encode_message(EntryFragment(len(raw), offset, piece))
            continue
        batch.append(raw)
        size += cost
    if batch:
        yield encode_message(Entries(tuple(batch)))


def _decode(frame: bytes, phase: enum.Enum, accepted: tuple[type, ...]) -> Message:
    try:
        message = decode_message(frame)
    except DecodeError as exc:
        raise ProtocolViolation(f"undecodable frame: {exc}") from None
    if not isinstance(message, accepted):
        raise ProtocolViolation(f"unexpected {type(message).__name__} while {phase.value}")
    return message


def _problem_summary(problems: Sequence[str]) -> str:
    return f"{len(problems)} invalid entries from the peer (first: {problems[0]})"


class _Assembly:
    """An entry arriving in ENTRY_FRAGMENT pieces (at most one at a time)."""

    __slots__ = ("_buffer", "_total")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._total = 0

    @property
    def active(self) -> bool:
        return self._total > 0

    def add(self, fragment: EntryFragment) -> bytes | None:
        """The whole entry once its last piece arrived, else None."""
        if not self.active:
            if fragment.offset != 0:
                raise ProtocolViolation("an entry fragment that does not start at offset 0")
            self._total = fragment.total_size
        elif fragment.total_size != self._total or fragment.offset != len(self._buffer):
            raise ProtocolViolation("entry fragments out of order or of differing sizes")
        self._buffer += fragment.data
        if len(self._buffer) < self._total:
            return None
        raw = bytes(self._buffer)
        self._buffer = bytearray()
        self._total = 0
        return raw


class _RequestKind(enum.Enum):
    RECON = "reconciliation"
    INDEX = "index page"
    FETCH = "fetch"


_ANSWERS: dict[_RequestKind, tuple[type, ...]] = {
    _RequestKind.RECON: (ReconReply,),
    _RequestKind.INDEX: (IndexPage,),
    _RequestKind.FETCH: (Entries, EntryFragment, FetchEnd),
}
"""Which messages may answer the oldest open request."""


@dataclass(slots=True)
class _Request:
    """A request of ours the peer has not finished answering."""

    kind: _RequestKind
    after: ReconItem | None = None
    limit: int = 0
    ids: frozenset[bytes] = frozenset()
    delivered: set[bytes] = field(default_factory=set)


# --- the initiator -----------------------------------------------------------------------------


class InitiatorPhase(enum.Enum):
    SEND_DATABASES = "sending the database list"
    AWAIT_DATABASES = "awaiting the database list"
    SYNCING = "syncing databases"
    SEND_FINISH = "sending finish"
    AWAIT_FINISHED = "awaiting finished"
    DONE = "done"


class InitiatorEvent(enum.Enum):
    DATABASES_SENT = "database list sent"
    DATABASES_RECEIVED = "database list received"
    ALL_SYNCED = "every database synced"
    FINISH_SENT = "finish sent"
    FINISHED_RECEIVED = "finished received"


_IP = InitiatorPhase
_IE = InitiatorEvent
_INITIATOR_TRANSITIONS: dict[tuple[InitiatorPhase, InitiatorEvent], InitiatorPhase] = {
    (_IP.SEND_DATABASES, _IE.DATABASES_SENT): _IP.AWAIT_DATABASES,
    (_IP.AWAIT_DATABASES, _IE.DATABASES_RECEIVED): _IP.SYNCING,
    (_IP.SYNCING, _IE.ALL_SYNCED): _IP.SEND_FINISH,
    (_IP.SEND_FINISH, _IE.FINISH_SENT): _IP.AWAIT_FINISHED,
    (_IP.AWAIT_FINISHED, _IE.FINISHED_RECEIVED): _IP.DONE,
}
_INITIATOR_ACCEPTS: dict[InitiatorPhase, tuple[type, ...]] = {
    _IP.AWAIT_DATABASES: (DatabaseList,),
    _IP.SYNCING: (ReconReply, IndexPage, Entries, EntryFragment, FetchEnd),
    _IP.AWAIT_FINISHED: (Finished,),
}


class DatabasePhase(enum.Enum):
    BULK = "bulk catch-up"
    RECON = "reconciliation"
    DRAIN = "draining fetches and pushes"
    DONE = "done"


class DatabaseEvent(enum.Enum):
    INDEX_FETCHED = "index paged and fetched"
    RECON_SETTLED = "reconciliation settled"
    DRAINED = "fetches answered and pushes sent"


_DATABASE_TRANSITIONS: dict[tuple[DatabasePhase, DatabaseEvent], DatabasePhase] = {
    (DatabasePhase.BULK, DatabaseEvent.INDEX_FETCHED): DatabasePhase.RECON,
    (DatabasePhase.RECON, DatabaseEvent.RECON_SETTLED): DatabasePhase.DRAIN,
    (DatabasePhase.DRAIN, DatabaseEvent.DRAINED): DatabasePhase.DONE,
}


@dataclass(slots=True)
class _DatabaseSync:
    """The initiator's progress on one database."""

    name: str
    index: int
    report: DatabaseReport
    phase: DatabasePhase
    entered: bool = False
    after: ReconItem | None = None
    page_open: bool = False
    index_done: bool = False
    recon: ReconInitiator | None = None
    snapshot: ExitStack = field(default_factory=ExitStack)
    recon_message: bytes | None = None
    fetch_queue: deque[bytes] = field(default_factory=deque)
    push_queue: deque[bytes] = field(default_factory=deque)
    push_frames: Iterator[bytes] | None = None


class SyncInitiator:
    """The dialing side after authentication: drives every database to convergence.

    Call :meth:`next_frame` until it returns None (then wait for a frame), :meth:`receive`
    for each frame of the peer while :attr:`receiving`, run the :meth:`take_jobs` through
    :meth:`SyncStore.ingest` and report each with :meth:`ingested`. Done when
    :attr:`finished`. Call :meth:`close` at the end whatever happened (it releases snapshots).
    """

    def __init__(self, store: SyncStore, limits: SyncLimits = DEFAULT_LIMITS) -> None:
        self._store = store
        self._limits = limits
        self._phase = InitiatorPhase.SEND_DATABASES
        self.report = SyncReport(store.tenant_id, "initiator")
        self._local = local_databases(store)
        self._databases: list[_DatabaseSync] = []
        self._current = 0
        self._pending: deque[_Request] = deque()
        self._assembly = _Assembly()
        self._jobs: list[IngestJob] = []
        self._jobs_open = 0
        self._frames_received = 0

    # -- state ------------------------------------------------------------------------------
    @property
    def phase(self) -> InitiatorPhase:
        return self._phase

    @property
    def receiving(self) -> bool:
        """More frames from the peer are expected."""
        return self._phase is not InitiatorPhase.DONE

    @property
    def sending(self) -> bool:
        """We may still have frames to send."""
        return self._phase not in (InitiatorPhase.AWAIT_FINISHED, InitiatorPhase.DONE)

    @property
    def finished(self) -> bool:
        return self._phase is InitiatorPhase.DONE

    def _move(self, event: InitiatorEvent) -> None:
        after = _INITIATOR_TRANSITIONS.get((self._phase, event))
        if after is None:
            raise SyncStateError(f"sync is {self._phase.value}: {event.value} is not allowed")
        self._phase = after

    def _move_db(self, db: _DatabaseSync, event: DatabaseEvent) -> None:
        after = _DATABASE_TRANSITIONS.get((db.phase, event))
        if after is None:
            raise SyncStateError(
                f"database {db.name!r} is {db.phase.value}: {event.value} is not allowed"
            )
        db.phase = after

    def close(self) -> None:
        """Release every reconciliation snapshot still open."""
        for db in self._databases:
            db.snapshot.close()

    # -- sending ----------------------------------------------------------------------------
    def next_frame(self) -> bytes | None:
        """The next frame to send, or None when we must wait for the peer (or are done)."""
        if self._phase is InitiatorPhase.SEND_DATABASES:
            self._move(InitiatorEvent.DATABASES_SENT)
            return encode_message(DatabaseList(self._local))
        while self._phase is InitiatorPhase.SYNCING:
            db = self._databases[self._current]
            frame = self._sync_frame(db)
            if frame is not None:
                db.report.frames_sent += 1
                db.report.bytes_sent += len(frame)
                return frame
            if not self._advance():
                break
        if self._phase is InitiatorPhase.SEND_FINISH:
            self._move(InitiatorEvent.FINISH_SENT)
            return encode_message(Finish())
        return None

    def _sync_frame(self, db: _DatabaseSync) -> bytes | None:
        if len(self._pending) < self._limits.max_outstanding:
            request = self._next_request(db)
            if request is not None:
                frame, pending = request
                self._pending.append(pending)
                return frame
        return self._next_push(db)

    def _next_request(self, db: _DatabaseSync) -> tuple[bytes, _Request] | None:
        limits = self._limits
        if (
            db.phase is DatabasePhase.BULK
            and not db.index_done
            and not db.page_open
            and len(db.fetch_queue) < _QUEUE_HIGH
        ):
            db.page_open = True
            request = IndexRequest(db.index, db.after, limits.index_page)
            pending = _Request(_RequestKind.INDEX, after=db.after, limit=limits.index_page)
            return encode_message(request), pending
        if (
            db.recon_message is not None
            and len(db.fetch_queue) < _QUEUE_HIGH
            and len(db.push_queue) < _QUEUE_HIGH
        ):
            message, db.recon_message = db.recon_message, None
            return encode_message(ReconRequest(db.index, message)), _Request(_RequestKind.RECON)
        if db.fetch_queue:
            count = min(len(db.fetch_queue), limits.fetch_batch)
            ids = tuple(db.fetch_queue.popleft() for _ in range(count))
            pending = _Request(_RequestKind.FETCH, ids=frozenset(ids))
            return encode_message(FetchRequest(db.index, ids)), pending
        return None

    def _next_push(self, db: _DatabaseSync) -> bytes | None:
        while True:
            if db.push_frames is None:
                if not db.push_queue:
                    return None
                db.push_frames = entry_frames(self._push_raws(db))
            frame = next(db.push_frames, None)
            if frame is not None:
                return frame
            db.push_frames = None

    def _push_raws(self, db: _DatabaseSync) -> Iterator[bytes]:
        while db.push_queue:
            count = min(_READ_CHUNK, len(db.push_queue))
            chunk = [db.push_queue.popleft() for _ in range(count)]
            for raw in self._store.get_raw(chunk):
                db.report.sent += 1
                yield raw

    # -- progress ---------------------------------------------------------------------------
    def _quiet(self) -> bool:
        """Nothing of the current database is in flight or waiting to be stored."""
        return not self._pending and self._jobs_open == 0 and not self._assembly.active

    def _advance(self) -> bool:
        """Take every phase step that is due; True if any was taken."""
        moved = False
        while self._phase is InitiatorPhase.SYNCING:
            db = self._databases[self._current]
            if not db.entered:
                db.entered = True
                self.report.current_database = db.name
                if db.phase is DatabasePhase.RECON:
                    self._open_recon(db)
            elif (
                db.phase is DatabasePhase.BULK
                and db.index_done
                and not db.fetch_queue
                and self._quiet()
            ):
                self._move_db(db, DatabaseEvent.INDEX_FETCHED)
                self._open_recon(db)
            elif (
                db.phase is DatabasePhase.DRAIN
                and not db.fetch_queue
                and not db.push_queue
                and db.push_frames is None
                and self._quiet()
            ):
                self._move_db(db, DatabaseEvent.DRAINED)
            elif db.phase is DatabasePhase.DONE:
                if self._current + 1 < len(self._databases):
                    self._current += 1
                else:
                    self.report.current_database = None
                    self._move(InitiatorEvent.ALL_SYNCED)
            else:
                return moved
            moved = True
        return moved

    def _open_recon(self, db: _DatabaseSync) -> None:
        storage = db.snapshot.enter_context(self._store.recon_storage(db.name))
        db.recon = ReconInitiator(
            storage, self._limits.recon_frame_size, max_message_size=MAX_RECON_PAYLOAD
        )
        db.recon_message = db.recon.initiate()

    # -- receiving --------------------------------------------------------------------------
    def receive(self, frame: bytes) -> None:
        """Process one frame of the peer; ProtocolViolation if it breaks the protocol."""
        self._frames_received += 1
        if self._frames_received > self._limits.max_frames:
            raise ProtocolViolation(f"more than {self._limits.max_frames} frames in a session")
        message = _decode(frame, self._phase, _INITIATOR_ACCEPTS.get(self._phase, ()))
        if isinstance(message, DatabaseList):
            self._start(message)
        elif isinstance(message, Finished):
            self.report.peer_added = message.added
            self.report.peer_refused = message.refused
            self._move(InitiatorEvent.FINISHED_RECEIVED)
        else:
            db = self._databases[self._current]
            db.report.frames_received += 1
            db.report.bytes_received += len(frame)
            self._answer(db, message)
        self._advance()
        self._note_progress()

    def _note_progress(self) -> None:
        """Bring ``lacking`` / ``peer_lacking`` of the databases done and the current one up
        to date (requests in flight are the current database's)."""
        in_flight = sum(len(r.ids) - len(r.delivered) for r in self._pending if r.ids)
        for db in self._databases[: self._current + 1]:
            current = db.index == self._databases[self._current].index
            db.report.lacking = len(db.fetch_queue) + (in_flight if current else 0)
            db.report.peer_lacking = len(db.push_queue)
            db.report.settled = db.phase in (DatabasePhase.DRAIN, DatabasePhase.DONE)

    def _start(self, remote: DatabaseList) -> None:
        names = database_order([info.name for info in (*self._local, *remote.databases)])
        if len(names) > MAX_DATABASES:
            raise ProtocolViolation(f"the peer's databases make more than {MAX_DATABASES}")
        local_counts = {info.name: info.item_count for info in self._local}
        remote_counts = {info.name: info.item_count for info in remote.databases}
        for index, name in enumerate(names):
            if not self._store.replicates(name):
                continue  # forgotten here: the peer's offer is declined
            theirs = remote_counts.get(name, 0)
            bulk = theirs >= self._limits.bulk_min_items and local_counts.get(name, 0) * 2 < theirs
            report = self.report.database(name)
            report.peer_items, report.local_items = theirs, local_counts.get(name, 0)
            report.bulk = bulk
            phase = DatabasePhase.BULK if bulk else DatabasePhase.RECON
            self._databases.append(_DatabaseSync(name, index, report, phase))
        self._move(InitiatorEvent.DATABASES_RECEIVED)
        if not self._databases:
            self._move(InitiatorEvent.ALL_SYNCED)

    def _answer(self, db: _DatabaseSync, message: Message) -> None:
        if not self._pending:
            raise ProtocolViolation(f"{type(message).__name__} answers no open request")
        request = self._pending[0]
        if not isinstance(message, _ANSWERS[request.kind]):
            raise ProtocolViolation(
                f"{type(message).__name__} does not answer the open {request.kind.value} request"
            )
        if isinstance(message, ReconReply):
            self._on_recon_reply(db, message)
        elif isinstance(message, IndexPage):
            self._on_index_page(db, request, message)
        elif isinstance(message, Entries):
            if self._assembly.active:
                raise ProtocolViolation("ENTRIES inside a fragmented entry")
            self._on_fetched(db, request, message.raws)
        elif isinstance(message, EntryFragment):
            raw = self._assembly.add(message)
            if raw is not None:
                self._on_fetched(db, request, (raw,))
        elif isinstance(message, FetchEnd):
            self._on_fetch_end(db, request, message)

    def _on_recon_reply(self, db: _DatabaseSync, message: ReconReply) -> None:
        self._pending.popleft()
        db.report.round_trips += 1
        db.report.recon_rounds += 1
        if db.report.recon_rounds > self._limits.max_recon_rounds:
            raise ProtocolViolation(f"reconciliation of {db.name!r} takes too many rounds")
        assert db.recon is not None
        try:
            following, have, need = db.recon.reconcile(message.payload)
        except DecodeError as exc:
            raise ProtocolViolation(f"undecodable reconciliation reply: {exc}") from None
        db.fetch_queue.extend(need)
        db.push_queue.extend(have)
        if following is None:
            db.snapshot.close()
            db.recon = None
            self._move_db(db, DatabaseEvent.RECON_SETTLED)
        else:
            db.recon_message = following

    def _on_index_page(self, db: _DatabaseSync, request: _Request, message: IndexPage) -> None:
        self._pending.popleft()
        db.page_open = False
        items = message.items
        if len(items) > request.limit:
            raise ProtocolViolation(f"index page of {len(items)} items, {request.limit} asked")
        if items and request.after is not None and items[0] <= request.after:
            raise ProtocolViolation("index page does not start after the requested position")
        if message.more and not items:
            raise ProtocolViolation("empty index page announcing more")
        db.report.round_trips += 1
        if items:
            db.after = items[-1]
        if not message.more:
            db.index_done = True
        db.fetch_queue.extend(self._store.missing([item.id for item in items]))

    def _on_fetched(self, db: _DatabaseSync, request: _Request, raws: Sequence[bytes]) -> None:
        """Queue the entries that answer ``request`` for storing; any other entry is a problem
        reported after those were stored."""
        good: list[bytes] = []
        problems: list[str] = []
        for raw in raws:
            entry_id = hashlib.sha256(raw).digest()
            if entry_id in request.ids and entry_id not in request.delivered:
                request.delivered.add(entry_id)
                good.append(raw)
            else:
                problems.append(f"entry {entry_id.hex()[:16]} was not requested")
        self._jobs.append(IngestJob(db.name, tuple(good), tuple(problems)))
        self._jobs_open += 1

    def _on_fetch_end(self, db: _DatabaseSync, request: _Request, message: FetchEnd) -> None:
        if self._assembly.active:
            raise ProtocolViolation("FETCH_END inside a fragmented entry")
        self._pending.popleft()
        unsent = set(message.unsent)
        if (
            not unsent <= request.ids
            or unsent & request.delivered
            or len(unsent) + len(request.delivered) != len(request.ids)
        ):
            raise ProtocolViolation("FETCH_END does not account for the requested ids")
        db.report.round_trips += 1
        if request.delivered:
            db.fetch_queue.extendleft(reversed(message.unsent))
        else:
            db.report.unavailable += len(unsent)

    # -- storing ----------------------------------------------------------------------------
    def take_jobs(self) -> list[IngestJob]:
        """The received entries to store now; report each with :meth:`ingested`."""
        jobs, self._jobs = self._jobs, []
        return jobs

    def ingested(self, job: IngestJob, outcome: IngestOutcome) -> None:
        """Record what the store did with ``job``; ProtocolViolation if any entry of it was
        invalid (the valid ones are stored by then)."""
        self._jobs_open -= 1
        problems = _record_outcome(self.report.database(job.database), job, outcome)
        if problems:
            raise ProtocolViolation(_problem_summary(problems))
        self._advance()
        self._note_progress()


def _record_outcome(report: DatabaseReport, job: IngestJob, outcome: IngestOutcome) -> list[str]:
    """Count ``outcome`` in ``report``; the invalid entries of the job, described."""
    report.received += len(outcome.added)
    report.refused += len(outcome.refused)
    report.rejected += len(job.problems) + len(outcome.rejected)
    problems = list(job.problems)
    problems += [f"entry {each.entry_id.hex()[:16]}: {each.reason}" for each in outcome.rejected]
    return problems


# --- the responder -----------------------------------------------------------------------------


class ResponderPhase(enum.Enum):
    AWAIT_DATABASES = "awaiting the database list"
    SEND_DATABASES = "sending the database list"
    SERVING = "serving requests"
    SEND_FINISHED = "sending finished"
    DONE = "done"
    REFUSED = "refused by the initiator"


class ResponderEvent(enum.Enum):
    DATABASES_RECEIVED = "database list received"
    DENIAL_RECEIVED = "denial received"
    DATABASES_SENT = "database list sent"
    FINISH_RECEIVED = "finish received"
    FINISHED_SENT = "finished sent"


_RP = ResponderPhase
_RE = ResponderEvent
_RESPONDER_TRANSITIONS: dict[tuple[ResponderPhase, ResponderEvent], ResponderPhase] = {
    (_RP.AWAIT_DATABASES, _RE.DATABASES_RECEIVED): _RP.SEND_DATABASES,
    (_RP.AWAIT_DATABASES, _RE.DENIAL_RECEIVED): _RP.REFUSED,
    (_RP.SEND_DATABASES, _RE.DATABASES_SENT): _RP.SERVING,
    (_RP.SERVING, _RE.FINISH_RECEIVED): _RP.SEND_FINISHED,
    (_RP.SEND_FINISHED, _RE.FINISHED_SENT): _RP.DONE,
}
_RESPONDER_ACCEPTS: dict[ResponderPhase, tuple[type, ...]] = {
    _RP.AWAIT_DATABASES: (DatabaseList, Denied),
    _RP.SERVING: (ReconRequest, IndexRequest, FetchRequest, Entries, EntryFragment, Finish),
}
_REQUESTS = (ReconRequest, IndexRequest, FetchRequest)
Request = ReconRequest | IndexRequest | FetchRequest


class SyncResponder:
    """The answering side after authentication: answers requests in order, stores pushes.

    Driven like :class:`SyncInitiator`. A DENIED as the first frame (the initiator refused our
    proof) ends it in ``REFUSED``.
    """

    def __init__(self, store: SyncStore, limits: SyncLimits = DEFAULT_LIMITS) -> None:
        self._store = store
        self._limits = limits
        self._phase = ResponderPhase.AWAIT_DATABASES
        self.report = SyncReport(store.tenant_id, "responder")
        self._local = local_databases(store)
        self._union: list[str] = []
        self._requests: deque[Request] = deque()
        self._max_queued = max(16, 2 * limits.max_outstanding)
        self._answer: Iterator[bytes] | None = None
        self._recon_rounds: dict[int, int] = {}
        self._assembly = _Assembly()
        self._jobs: list[IngestJob] = []
        self._jobs_open = 0
        self._frames_received = 0
        self._added = 0
        self._refused = 0
        self._current_database = TENANT_LOG
        """The database of the last request: pushed entries are counted there."""

    # -- state ------------------------------------------------------------------------------
    @property
    def phase(self) -> ResponderPhase:
        return self._phase

    @property
    def receiving(self) -> bool:
        return self._phase in (
            ResponderPhase.AWAIT_DATABASES,
            ResponderPhase.SEND_DATABASES,
            ResponderPhase.SERVING,
        )

    @property
    def sending(self) -> bool:
        return self._phase not in (ResponderPhase.DONE, ResponderPhase.REFUSED)

    @property
    def finished(self) -> bool:
        return self._phase in (ResponderPhase.DONE, ResponderPhase.REFUSED)

    @property
    def refused(self) -> bool:
        """The initiator refused our proof (a DENIED instead of its database list)."""
        return self._phase is ResponderPhase.REFUSED

    def _move(self, event: ResponderEvent) -> None:
        after = _RESPONDER_TRANSITIONS.get((self._phase, event))
        if after is None:
            raise SyncStateError(f"sync is {self._phase.value}: {event.value} is not allowed")
        self._phase = after

    def close(self) -> None:
        """Drop any answer under way."""
        self._answer = None
        self._requests.clear()

    # -- sending ----------------------------------------------------------------------------
    def next_frame(self) -> bytes | None:
        """The next frame to send, or None when we must wait for the peer (or are done)."""
        if self._phase is ResponderPhase.SEND_DATABASES:
            self._move(ResponderEvent.DATABASES_SENT)
            return encode_message(DatabaseList(self._local))
        if self._phase not in (ResponderPhase.SERVING, ResponderPhase.SEND_FINISHED):
            return None
        while True:
            if self._answer is not None:
                frame = next(self._answer, None)
                if frame is not None:
                    return frame
                self._answer = None
            if not self._requests:
                break
            self._answer = self._answer_frames(self._requests.popleft())
        if self._phase is ResponderPhase.SEND_FINISHED and self._jobs_open == 0:
            self._move(ResponderEvent.FINISHED_SENT)
            return encode_message(Finished(self._added, self._refused))
        return None

    def _answer_frames(self, request: Request) -> Iterator[bytes]:
        report = self.report.database(self._union[request.database])
        if isinstance(request, ReconRequest):
            frames = self._answer_recon(request)
        elif isinstance(request, IndexRequest):
            frames = self._answer_index(request)
        else:
            frames = self._answer_fetch(request, report)
        for frame in frames:
            report.frames_sent += 1
            report.bytes_sent += len(frame)
            yield frame
        report.round_trips += 1

    def _answer_recon(self, request: ReconRequest) -> Iterator[bytes]:
        name = self._union[request.database]
        with self._store.recon_storage(name) as storage:
            responder = ReconResponder(
                storage, self._limits.recon_frame_size, max_message_size=MAX_RECON_PAYLOAD
            )
            try:
                reply = responder.reconcile(request.payload)
            except DecodeError as exc:
                raise ProtocolViolation(f"undecodable reconciliation request: {exc}") from None
        yield encode_message(ReconReply(reply))

    def _answer_index(self, request: IndexRequest) -> Iterator[bytes]:
        name = self._union[request.database]
        with self._store.recon_storage(name) as storage:
            size = storage.size()
            start = 0
            if request.after is not None:
                start = storage.lower_bound(0, size, request.after)
                if start < size and storage.item(start) == request.after:
                    start += 1
            end = min(size, start + min(request.limit, self._limits.index_page))
            items = tuple(storage.items(start, end))
        yield encode_message(IndexPage(items, end < size))

    def _answer_fetch(self, request: FetchRequest, report: DatabaseReport) -> Iterator[bytes]:
        wanted = set(request.ids)
        sent: set[bytes] = set()
        budget = self._limits.max_response_bytes

        def raws() -> Iterator[bytes]:
            total = 0
            for start in range(0, len(request.ids), _READ_CHUNK):
                for raw in self._store.get_raw(request.ids[start : start + _READ_CHUNK]):
                    entry_id = hashlib.sha256(raw).digest()
                    if entry_id not in wanted or entry_id in sent:
                        continue
                    if sent and total + len(raw) > budget:
                        return
                    sent.add(entry_id)
                    total += len(raw)
                    report.sent += 1
                    yield raw

        yield from entry_frames(raws())
        yield encode_message(FetchEnd(tuple(i for i in request.ids if i not in sent)))

    # -- receiving --------------------------------------------------------------------------
    def receive(self, frame: bytes) -> None:
        """Process one frame of the initiator; ProtocolViolation if it breaks the protocol."""
        self._frames_received += 1
        if self._frames_received > self._limits.max_frames:
            raise ProtocolViolation(f"more than {self._limits.max_frames} frames in a session")
        message = _decode(frame, self._phase, _RESPONDER_ACCEPTS.get(self._phase, ()))
        if isinstance(message, Denied):
            self._move(ResponderEvent.DENIAL_RECEIVED)
        elif isinstance(message, DatabaseList):
            names = [info.name for info in (*self._local, *message.databases)]
            self._union = database_order(names)
            if len(self._union) > MAX_DATABASES:
                raise ProtocolViolation(f"the peer's databases make more than {MAX_DATABASES}")
            for name in self._union:
                self.report.database(name)
            self._move(ResponderEvent.DATABASES_RECEIVED)
        elif isinstance(message, _REQUESTS):
            self._on_request(message, len(frame))
        elif isinstance(message, Entries | EntryFragment):
            report = self.report.database(self._current_database)
            report.frames_received += 1
            report.bytes_received += len(frame)
            if isinstance(message, EntryFragment):
                raw = self._assembly.add(message)
                if raw is not None:
                    self._on_pushed((raw,))
            elif self._assembly.active:
                raise ProtocolViolation("ENTRIES inside a fragmented entry")
            else:
                self._on_pushed(message.raws)
        elif isinstance(message, Finish):
            if self._assembly.active:
                raise ProtocolViolation("FINISH inside a fragmented entry")
            self._move(ResponderEvent.FINISH_RECEIVED)

    def _on_request(self, request: Request, size: int) -> None:
        if self._assembly.active:
            raise ProtocolViolation("a request inside a fragmented entry")
        if request.database >= len(self._union):
            raise ProtocolViolation(f"database index {request.database} is not in the list")
        if len(self._requests) >= self._max_queued:
            raise ProtocolViolation(f"more than {self._max_queued} unanswered requests")
        if isinstance(request, ReconRequest):
            rounds = self._recon_rounds.get(request.database, 0) + 1
            if rounds > self._limits.max_recon_rounds:
                raise ProtocolViolation("too many reconciliation rounds for one database")
            self._recon_rounds[request.database] = rounds
            self.report.database(self._union[request.database]).recon_rounds = rounds
        self._current_database = self._union[request.database]
        report = self.report.database(self._current_database)
        report.frames_received += 1
        report.bytes_received += size
        self._requests.append(request)

    def _on_pushed(self, raws: Sequence[bytes]) -> None:
        """Queue pushed entries for storing. The initiator pushes a database's entries while it
        reconciles that database, so they are counted for the database last asked about."""
        self._queue_job(IngestJob(self._current_database, tuple(raws)))

    def _queue_job(self, job: IngestJob) -> None:
        self._jobs.append(job)
        self._jobs_open += 1

    # -- storing ----------------------------------------------------------------------------
    def take_jobs(self) -> list[IngestJob]:
        """The pushed entries to store now; report each with :meth:`ingested`."""
        jobs, self._jobs = self._jobs, []
        return jobs

    def ingested(self, job: IngestJob, outcome: IngestOutcome) -> None:
        """Record what the store did with ``job``; ProtocolViolation if any entry of it was
        invalid (the valid ones are stored by then)."""
        self._jobs_open -= 1
        self._added += len(outcome.added)
        self._refused += len(outcome.refused)
        problems = _record_outcome(self.report.database(job.database), job, outcome)
        if problems:
            raise ProtocolViolation(_problem_summary(problems))
