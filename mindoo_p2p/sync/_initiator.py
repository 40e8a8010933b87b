"""The initiator of a sync session, sans I/O: drives every database of the tenant to convergence
(see :mod:`.protocol` for the session)."""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from ..errors import DecodeError
from ..recon import ReconInitiator, ReconItem
from ._session_api import (
    DEFAULT_LIMITS,
    IngestJob,
    IngestOutcome,
    SyncLimits,
    SyncStateError,
    SyncStore,
)
from ._session_common import (
    READ_CHUNK,
    FragmentAssembly,
    database_order,
    decode_frame,
    entry_frames,
    local_databases,
    local_summary,
    problem_summary,
    record_outcome,
)
from ._session_report import DatabaseReport, SyncReport
from .messages import (
    LIST_FIRST_VERSION,
    MAX_DATABASES,
    MAX_RECON_PAYLOAD,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    SUMMARY_VERSION,
    DatabaseInfo,
    DatabaseList,
    DatabaseSummary,
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
    encode_message,
)
from .snapshot_budget import SHARED_SNAPSHOT_BUDGET, SnapshotBudget

RECON_SCOPES = 8
"""At most this many scopes (the current database and those after it) reconcile at once, each
with one request in flight and one read snapshot open: an idle re-sync of up to this many
databases is one reconciliation round trip. A scope beyond the current database's holds a slot
of the session's `SnapshotBudget` while its snapshot is open (see :mod:`.snapshot_budget`)."""
_QUEUE_HIGH = 4096
"""The initiator sends its next reconciliation or index request only while fewer ids than
this wait to be fetched (and pushed): the queues stay bounded however large the difference."""


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
    """A request of ours the peer has not finished answering, and the database it is about."""

    kind: _RequestKind
    db: _DatabaseSync
    wave: int = 0
    """(Reconciliation) how many reconciliation round trips led up to this request's answer."""
    after: ReconItem | None = None
    limit: int = 0
    ids: frozenset[bytes] = frozenset()
    delivered: set[bytes] = field(default_factory=set)


class InitiatorPhase(enum.Enum):
    AWAIT_PEER_LIST = "awaiting the peer's database list before ours (version 3)"
    SEND_DATABASES = "sending the database list"
    SEND_DATABASES_KNOWN = "sending the database list (the peer's received)"
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
    FINISH_SENT_UNPUSHED = "finish sent, nothing pushed (version 3: no finished follows)"
    FINISHED_RECEIVED = "finished received"


_IP = InitiatorPhase
_IE = InitiatorEvent
_INITIATOR_TRANSITIONS: dict[tuple[InitiatorPhase, InitiatorEvent], InitiatorPhase] = {
    (_IP.AWAIT_PEER_LIST, _IE.DATABASES_RECEIVED): _IP.SEND_DATABASES_KNOWN,
    (_IP.SEND_DATABASES, _IE.DATABASES_SENT): _IP.AWAIT_DATABASES,
    (_IP.SEND_DATABASES, _IE.DATABASES_RECEIVED): _IP.SEND_DATABASES_KNOWN,
    (_IP.SEND_DATABASES_KNOWN, _IE.DATABASES_SENT): _IP.SYNCING,
    (_IP.AWAIT_DATABASES, _IE.DATABASES_RECEIVED): _IP.SYNCING,
    (_IP.SYNCING, _IE.ALL_SYNCED): _IP.SEND_FINISH,
    (_IP.SEND_FINISH, _IE.FINISH_SENT): _IP.AWAIT_FINISHED,
    (_IP.SEND_FINISH, _IE.FINISH_SENT_UNPUSHED): _IP.DONE,
    (_IP.AWAIT_FINISHED, _IE.FINISHED_RECEIVED): _IP.DONE,
}
_INITIATOR_ACCEPTS: dict[InitiatorPhase, tuple[type, ...]] = {
    _IP.AWAIT_PEER_LIST: (DatabaseSummary,),  # version 3: the responder's summary first
    _IP.SEND_DATABASES: (DatabaseList,),  # a responder of version 2 announces its list first
    _IP.AWAIT_DATABASES: (DatabaseList,),
    _IP.SYNCING: (ReconReply, IndexPage, Entries, EntryFragment, FetchEnd),
    _IP.AWAIT_FINISHED: (Finished,),
}
_INITIATOR_ACCEPTS_V1: dict[InitiatorPhase, tuple[type, ...]] = {
    **_INITIATOR_ACCEPTS,
    _IP.SEND_DATABASES: (),  # a responder of version 1 answers our list; it never speaks first
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
    open_requests: int = 0
    """Requests about this database the peer has not finished answering."""
    jobs_open: int = 0
    """Batches of this database's entries handed out to be stored, not reported back yet."""
    wave: int = 0
    """The wave of this database's last reconciliation reply (0: none yet)."""


class SyncInitiator:
    """The dialing side after authentication: drives every database to convergence.

    Call :meth:`next_frame` until it returns None (then wait for a frame), :meth:`receive`
    for each frame of the peer while :attr:`receiving`, run the :meth:`take_jobs` through
    :meth:`SyncStore.ingest` and report each with :meth:`ingested`. Done when
    :attr:`finished`. Call :meth:`close` at the end whatever happened (it releases snapshots).

    ``version`` is the one the handshake's HELLO announced: from `LIST_FIRST_VERSION` on, the
    responder's list may come first and up to `RECON_SCOPES` scopes reconcile at once;
    from `SUMMARY_VERSION` on, our list waits for the responder's summary (so it and every
    scope's first request leave in one flight), a database we hold with the count and
    fingerprint the summary gives is in sync without reconciling, and a session in which we
    pushed nothing ends as FINISH leaves (the responder sends no FINISHED then); version 1 is
    exactly what 063fa60's initiator sent (our list first, one scope at a time).
    ``trust_summary=False`` (version 3; a periodic full check, decided by the caller) reads the
    peer's summary as a plain list: every database reconciles, held alike or not, so two sets
    made to share a fingerprint (an additive one, which an insider can grind) are still found
    to differ now and then.

    The current database's snapshot is the session's own; every other scope of the window
    enters only with a slot of ``snapshot_budget`` (shared by every session of the process),
    given back when its snapshot closes. Without a slot it waits until it becomes current.
    """

    def __init__(
        self,
        store: SyncStore,
        limits: SyncLimits = DEFAULT_LIMITS,
        *,
        version: int = PROTOCOL_VERSION,
        snapshot_budget: SnapshotBudget = SHARED_SNAPSHOT_BUDGET,
        trust_summary: bool = True,
    ) -> None:
        if type(version) is not int or not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
            raise ValueError(
                f"a session speaks a version from {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            )
        self._store = store
        self._limits = limits
        self._budget = snapshot_budget
        list_first = version >= LIST_FIRST_VERSION
        self._accepts = _INITIATOR_ACCEPTS if list_first else _INITIATOR_ACCEPTS_V1
        self._quiet_finish = version >= SUMMARY_VERSION
        self._summary = local_summary(store) if self._quiet_finish else None
        """(Version 3) our databases' counts and fingerprints: our list, and what the peer's
        summary is compared with."""
        self._fingerprints: dict[DatabaseInfo, bytes] = (
            dict(zip(self._summary.databases, self._summary.fingerprints, strict=True))
            if self._summary
            else {}
        )
        self._trust_summary = trust_summary
        """(Version 3) a database held alike by the summaries starts done; else it reconciles."""
        self._phase = _IP.AWAIT_PEER_LIST if self._quiet_finish else _IP.SEND_DATABASES
        self._pushed = False
        """An ENTRIES or ENTRY_FRAGMENT frame of ours left (version 3: FINISHED will follow)."""
        self.report = SyncReport(store.tenant_id, "initiator")
        self._local = self._summary.databases if self._summary else local_databases(store)
        self._databases: list[_DatabaseSync] = []
        self._by_name: dict[str, _DatabaseSync] = {}
        # Version 1 (063fa60 and earlier) reconciles one database at a time: its responder
        # counts pushed entries under the database last asked about, so a later scope's
        # request must not come before the current database's pushes.
        scopes = RECON_SCOPES if list_first else 1
        self._scopes = min(limits.max_outstanding, scopes)
        self._current = 0
        self._pending: deque[_Request] = deque()
        self._assembly = FragmentAssembly()
        self._jobs: list[IngestJob] = []
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
        if self._phase in (InitiatorPhase.SEND_DATABASES, InitiatorPhase.SEND_DATABASES_KNOWN):
            self._move(InitiatorEvent.DATABASES_SENT)
            self._all_synced_if_empty()
            if self._summary is not None:
                return encode_message(self._summary)
            return encode_message(DatabaseList(self._local))
        while self._phase is InitiatorPhase.SYNCING:
            sent = self._sync_frame()
            if sent is not None:
                frame, db = sent
                db.report.frames_sent += 1
                db.report.bytes_sent += len(frame)
                return frame
            if not self._advance():
                break
        if self._phase is InitiatorPhase.SEND_FINISH:
            if self._quiet_finish and not self._pushed:
                self._move(InitiatorEvent.FINISH_SENT_UNPUSHED)  # nothing to acknowledge
            else:
                self._move(InitiatorEvent.FINISH_SENT)
            return encode_message(Finish())
        return None

    def _window(self) -> list[_DatabaseSync]:
        """The databases that may reconcile now: the current one and the next few (each has
        at most one reconciliation request open and holds one read snapshot)."""
        return self._databases[self._current : self._current + self._scopes]

    def _sync_frame(self) -> tuple[bytes, _DatabaseSync] | None:
        """The next request (the current database's first, then the reconciliation messages
        of the window), else the current database's next push frame."""
        current = self._databases[self._current]
        if len(self._pending) < self._limits.max_outstanding:
            for db in self._window():
                request = self._next_request(db, db is current)
                if request is not None:
                    frame, pending = request
                    self._pending.append(pending)
                    db.open_requests += 1
                    return frame, db
        push = self._next_push(current)
        if push is None:
            return None
        self._pushed = True
        return push, current

    def _next_request(self, db: _DatabaseSync, current: bool) -> tuple[bytes, _Request] | None:
        """``db``'s next request: reconciliation whenever due; index pages and fetches only for
        the current database (entries are stored database by database, in the agreed order)."""
        limits = self._limits
        if (
            current
            and db.phase is DatabasePhase.BULK
            and not db.index_done
            and not db.page_open
            and len(db.fetch_queue) < _QUEUE_HIGH
        ):
            db.page_open = True
            request = IndexRequest(db.index, db.after, limits.index_page)
            pending = _Request(_RequestKind.INDEX, db, after=db.after, limit=limits.index_page)
            return encode_message(request), pending
        if (
            db.recon_message is not None
            and len(db.fetch_queue) < _QUEUE_HIGH
            and len(db.push_queue) < _QUEUE_HIGH
        ):
            message, db.recon_message = db.recon_message, None
            # A scope's first message rides the next flight; a reply's follow-up, the one after.
            wave = (db.wave or self.report.recon_round_trips) + 1
            pending = _Request(_RequestKind.RECON, db, wave=wave)
            return encode_message(ReconRequest(db.index, message)), pending
        if current and db.fetch_queue:
            count = min(len(db.fetch_queue), limits.fetch_batch)
            ids = tuple(db.fetch_queue.popleft() for _ in range(count))
            pending = _Request(_RequestKind.FETCH, db, ids=frozenset(ids))
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
            count = min(READ_CHUNK, len(db.push_queue))
            chunk = [db.push_queue.popleft() for _ in range(count)]
            for raw in self._store.get_raw(chunk):
                db.report.sent += 1
                yield raw

    # -- progress ---------------------------------------------------------------------------
    def _quiet(self, db: _DatabaseSync) -> bool:
        """Nothing of ``db`` is in flight or waiting to be stored."""
        return db.open_requests == 0 and db.jobs_open == 0 and not self._assembly.active

    def _advance(self) -> bool:
        """Take every phase step that is due; True if any was taken."""
        moved = False
        while self._phase is InitiatorPhase.SYNCING:
            for db in self._window():
                if not db.entered and db.phase is DatabasePhase.RECON and self._open_recon(db):
                    db.entered = True  # reconciles beside the current database
                    moved = True
            db = self._databases[self._current]
            if not db.entered:
                db.entered = True
            if self.report.current_database != db.name:
                self.report.current_database = db.name
            if (
                db.phase is DatabasePhase.BULK
                and db.index_done
                and not db.fetch_queue
                and self._quiet(db)
            ):
                self._move_db(db, DatabaseEvent.INDEX_FETCHED)
                self._open_recon(db)  # the current database's: always opens
            elif (
                db.phase is DatabasePhase.DRAIN
                and not db.fetch_queue
                and not db.push_queue
                and db.push_frames is None
                and self._quiet(db)
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

    def _open_recon(self, db: _DatabaseSync) -> bool:
        """Open ``db``'s snapshot and start reconciling it; False (nothing opened) when ``db``
        is not the current database and the snapshot budget has no slot free."""
        if db is not self._databases[self._current]:
            if not self._budget.try_take():
                return False
            # Runs after the snapshot's exit (LIFO), whatever closes it, exactly once.
            db.snapshot.callback(self._budget.give_back)
        try:
            storage = db.snapshot.enter_context(self._store.recon_storage(db.name))
        except BaseException:
            db.snapshot.close()
            raise
        db.recon = ReconInitiator(
            storage, self._limits.recon_frame_size, max_message_size=MAX_RECON_PAYLOAD
        )
        db.recon_message = db.recon.initiate()
        return True

    # -- receiving --------------------------------------------------------------------------
    def receive(self, frame: bytes) -> None:
        """Process one frame of the peer; ProtocolViolation if it breaks the protocol."""
        self._frames_received += 1
        if self._frames_received > self._limits.max_frames:
            raise ProtocolViolation(f"more than {self._limits.max_frames} frames in a session")
        message = decode_frame(frame, self._phase, self._accepts.get(self._phase, ()))
        if isinstance(message, DatabaseSummary):
            names = (info.name for info in message.databases)
            fingerprints = dict(zip(names, message.fingerprints, strict=True))
            self._start(message.listed, fingerprints if self._trust_summary else None)
        elif isinstance(message, DatabaseList):
            self._start(message)
        elif isinstance(message, Finished):
            self.report.peer_added = message.added
            self.report.peer_refused = message.refused
            self._move(InitiatorEvent.FINISHED_RECEIVED)
        else:
            self._answer(message, len(frame))
        self._advance()
        self._note_progress()

    def _note_progress(self) -> None:
        """Bring ``lacking`` / ``peer_lacking`` of every database started up to date."""
        in_flight: dict[int, int] = {}
        for request in self._pending:
            if request.ids:
                missing = len(request.ids) - len(request.delivered)
                in_flight[request.db.index] = in_flight.get(request.db.index, 0) + missing
        for db in self._databases[: self._current + self._scopes]:
            db.report.lacking = len(db.fetch_queue) + in_flight.get(db.index, 0)
            db.report.peer_lacking = len(db.push_queue)
            db.report.settled = db.phase in (DatabasePhase.DRAIN, DatabasePhase.DONE)

    def _start(self, remote: DatabaseList, fingerprints: dict[str, bytes] | None = None) -> None:
        """Agree on the databases. With the peer's ``fingerprints`` by name (version 3: its
        summary), a database we hold with the same count and fingerprint starts done: nothing
        to reconcile, fetch or push there."""
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
            if fingerprints is not None and self._held_alike(name, theirs, fingerprints):
                phase = DatabasePhase.DONE  # in sync already
                report.alike = report.settled = True
            db = _DatabaseSync(name, index, report, phase)
            self._databases.append(db)
            self._by_name[name] = db
        self._move(InitiatorEvent.DATABASES_RECEIVED)
        self._all_synced_if_empty()

    def _held_alike(self, name: str, theirs: int, fingerprints: dict[str, bytes]) -> bool:
        """We hold ``name`` with the count and fingerprint of the peer's summary (our own
        summary's: the snapshot our list was read from)."""
        peer = fingerprints.get(name)
        return peer is not None and self._fingerprints.get(DatabaseInfo(name, theirs)) == peer

    def _all_synced_if_empty(self) -> None:
        """Both lists known and nothing to reconcile: straight to FINISH."""
        if self._phase is InitiatorPhase.SYNCING and not self._databases:
            self._move(InitiatorEvent.ALL_SYNCED)

    def _answer(self, message: Message, size: int) -> None:
        if not self._pending:
            raise ProtocolViolation(f"{type(message).__name__} answers no open request")
        request = self._pending[0]
        db = request.db
        db.report.frames_received += 1
        db.report.bytes_received += size
        if not isinstance(message, _ANSWERS[request.kind]):
            raise ProtocolViolation(
                f"{type(message).__name__} does not answer the open {request.kind.value} request"
            )
        if isinstance(message, ReconReply):
            self._answered()
            db.wave = request.wave
            self.report.recon_round_trips = max(self.report.recon_round_trips, request.wave)
            self._on_recon_reply(db, message)
        elif isinstance(message, IndexPage):
            self._answered()
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
            if self._assembly.active:
                raise ProtocolViolation("FETCH_END inside a fragmented entry")
            self._answered()
            self._on_fetch_end(db, request, message)

    def _answered(self) -> None:
        """The oldest open request is fully answered."""
        request = self._pending.popleft()
        request.db.open_requests -= 1

    def _on_recon_reply(self, db: _DatabaseSync, message: ReconReply) -> None:
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
        good_ids: list[bytes] = []
        problems: list[str] = []
        for raw in raws:
            entry_id = hashlib.sha256(raw).digest()
            if entry_id in request.ids and entry_id not in request.delivered:
                request.delivered.add(entry_id)
                good.append(raw)
                good_ids.append(entry_id)
            else:
                problems.append(f"entry {entry_id.hex()[:16]} was not requested")
        self._jobs.append(IngestJob(db.name, tuple(good), tuple(problems), tuple(good_ids)))
        db.jobs_open += 1

    def _on_fetch_end(self, db: _DatabaseSync, request: _Request, message: FetchEnd) -> None:
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
        db = self._by_name[job.database]
        db.jobs_open -= 1
        problems = record_outcome(db.report, job, outcome)
        if problems:
            raise ProtocolViolation(problem_summary(problems))
        self._advance()
        self._note_progress()
