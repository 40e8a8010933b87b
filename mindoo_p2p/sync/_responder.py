"""The responder of a sync session, sans I/O: answers the initiator's requests in order and
stores its pushes (see :mod:`.protocol` for the session)."""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from collections.abc import Iterator, Sequence

from ..entry import TENANT_LOG
from ..entry_fields import database_of_raw
from ..errors import DecodeError
from ..recon import ReconResponder
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
    MAX_DATABASES,
    MAX_RECON_PAYLOAD,
    DatabaseList,
    DatabaseSummary,
    Denied,
    Entries,
    EntryFragment,
    FetchEnd,
    FetchRequest,
    Finish,
    Finished,
    IndexPage,
    IndexRequest,
    ProtocolViolation,
    ReconReply,
    ReconRequest,
    encode_message,
)


class ResponderPhase(enum.Enum):
    ANNOUNCE_DATABASES = "announcing the database list (version 2)"
    AWAIT_ANNOUNCED = "awaiting the database list (ours sent)"
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
    FINISH_RECEIVED_UNPUSHED = "finish received, nothing pushed (version 3: no finished)"
    FINISHED_SENT = "finished sent"


_RP = ResponderPhase
_RE = ResponderEvent
_RESPONDER_TRANSITIONS: dict[tuple[ResponderPhase, ResponderEvent], ResponderPhase] = {
    (_RP.ANNOUNCE_DATABASES, _RE.DATABASES_SENT): _RP.AWAIT_ANNOUNCED,
    (_RP.ANNOUNCE_DATABASES, _RE.DATABASES_RECEIVED): _RP.SEND_DATABASES,
    (_RP.ANNOUNCE_DATABASES, _RE.DENIAL_RECEIVED): _RP.REFUSED,
    (_RP.AWAIT_ANNOUNCED, _RE.DATABASES_RECEIVED): _RP.SERVING,
    (_RP.AWAIT_ANNOUNCED, _RE.DENIAL_RECEIVED): _RP.REFUSED,
    (_RP.AWAIT_DATABASES, _RE.DATABASES_RECEIVED): _RP.SEND_DATABASES,
    (_RP.AWAIT_DATABASES, _RE.DENIAL_RECEIVED): _RP.REFUSED,
    (_RP.SEND_DATABASES, _RE.DATABASES_SENT): _RP.SERVING,
    (_RP.SERVING, _RE.FINISH_RECEIVED): _RP.SEND_FINISHED,
    (_RP.SERVING, _RE.FINISH_RECEIVED_UNPUSHED): _RP.DONE,
    (_RP.SEND_FINISHED, _RE.FINISHED_SENT): _RP.DONE,
}
_RESPONDER_ACCEPTS: dict[ResponderPhase, tuple[type, ...]] = {
    _RP.ANNOUNCE_DATABASES: (DatabaseList, Denied),
    _RP.AWAIT_ANNOUNCED: (DatabaseList, Denied),
    _RP.AWAIT_DATABASES: (DatabaseList, Denied),
    _RP.SERVING: (ReconRequest, IndexRequest, FetchRequest, Entries, EntryFragment, Finish),
}
_RESPONDER_ACCEPTS_V3: dict[ResponderPhase, tuple[type, ...]] = {
    **_RESPONDER_ACCEPTS,
    _RP.ANNOUNCE_DATABASES: (DatabaseSummary, Denied),  # a version-3 initiator summarizes too
    _RP.AWAIT_ANNOUNCED: (DatabaseSummary, Denied),
}
_REQUESTS = (ReconRequest, IndexRequest, FetchRequest)
Request = ReconRequest | IndexRequest | FetchRequest


class SyncResponder:
    """The answering side after authentication: answers requests in order, stores pushes.

    Driven like :class:`SyncInitiator`. A DENIED as the first frame (the initiator refused our
    proof) ends it in ``REFUSED``. With ``announce`` (an initiator of protocol version 2 or
    later) our database list is the first frame we send, without waiting for the initiator's:
    the initiator then sends its list and its first requests in one flight. With
    ``version3`` (an initiator of version 3; implies ``announce``) what we announce is a
    DATABASE_SUMMARY (each database's fingerprint beside its count), and a FINISH after a
    session in which the initiator pushed nothing (no ENTRIES or ENTRY_FRAGMENT frame) ends it
    without a FINISHED.
    """

    def __init__(
        self,
        store: SyncStore,
        limits: SyncLimits = DEFAULT_LIMITS,
        *,
        announce: bool = False,
        version3: bool = False,
    ) -> None:
        if version3 and not announce:
            raise ValueError("version3 implies announce (version 2)")
        self._store = store
        self._limits = limits
        self._phase = ResponderPhase.ANNOUNCE_DATABASES if announce else _RP.AWAIT_DATABASES
        self._quiet_finish = version3
        self._accepts = _RESPONDER_ACCEPTS_V3 if version3 else _RESPONDER_ACCEPTS
        self._pushed = False
        """The initiator sent an ENTRIES or ENTRY_FRAGMENT frame (version 3: FINISHED follows)."""
        self.report = SyncReport(store.tenant_id, "responder")
        self._summary = local_summary(store) if version3 else None
        self._local = self._summary.databases if self._summary else local_databases(store)
        self._union: list[str] = []
        self._union_names: frozenset[str] = frozenset()
        self._requests: deque[Request] = deque()
        self._max_queued = max(16, 2 * limits.max_outstanding)
        self._answer: Iterator[bytes] | None = None
        self._recon_rounds: dict[int, int] = {}
        self._assembly = FragmentAssembly()
        self._jobs: list[IngestJob] = []
        self._jobs_open = 0
        self._frames_received = 0
        self._added = 0
        self._refused = 0
        self._current_database = TENANT_LOG
        """The database of the last request."""
        self._push_database = TENANT_LOG
        """The database pushed entries are counted under: the one the entry (or the first
        piece of a fragmented one) names, else the database of the last request."""

    # -- state ------------------------------------------------------------------------------
    @property
    def phase(self) -> ResponderPhase:
        return self._phase

    @property
    def receiving(self) -> bool:
        return self._phase in (
            ResponderPhase.ANNOUNCE_DATABASES,
            ResponderPhase.AWAIT_ANNOUNCED,
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
        if self._phase in (ResponderPhase.ANNOUNCE_DATABASES, ResponderPhase.SEND_DATABASES):
            self._move(ResponderEvent.DATABASES_SENT)
            if self._summary is not None:
                return encode_message(self._summary)
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
            for start in range(0, len(request.ids), READ_CHUNK):
                for raw in self._store.get_raw(request.ids[start : start + READ_CHUNK]):
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
        message = decode_frame(frame, self._phase, self._accepts.get(self._phase, ()))
        if isinstance(message, Denied):
            self._move(ResponderEvent.DENIAL_RECEIVED)
        elif isinstance(message, DatabaseList | DatabaseSummary):
            names = [info.name for info in (*self._local, *message.databases)]
            self._union = database_order(names)
            self._union_names = frozenset(self._union)
            if len(self._union) > MAX_DATABASES:
                raise ProtocolViolation(f"the peer's databases make more than {MAX_DATABASES}")
            for name in self._union:
                self.report.database(name)
            if isinstance(message, DatabaseSummary):
                self._note_alike(message)
            self._move(ResponderEvent.DATABASES_RECEIVED)
        elif isinstance(message, _REQUESTS):
            self._on_request(message, len(frame))
        elif isinstance(message, Entries | EntryFragment):
            self._pushed = True
            self._push_database = self._pushed_database(message)
            report = self.report.database(self._push_database)
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
            if self._quiet_finish and not self._pushed:
                if self._requests:
                    # An honest initiator finishes only when every request is answered; a
                    # quiet FINISH ends the session here, and would drop these unanswered.
                    raise ProtocolViolation(
                        f"FINISH with {len(self._requests)} requests not yet answered"
                    )
                self._move(ResponderEvent.FINISH_RECEIVED_UNPUSHED)  # nothing to acknowledge
            else:
                self._move(ResponderEvent.FINISH_RECEIVED)

    def _note_alike(self, theirs: DatabaseSummary) -> None:
        """Mark the databases the initiator's summary shows held alike with ours: it will not
        reconcile them, and they are in sync (what the durability ledger learns)."""
        assert self._summary is not None
        ours = dict(zip(self._summary.databases, self._summary.fingerprints, strict=True))
        for info, fingerprint in zip(theirs.databases, theirs.fingerprints, strict=True):
            if ours.get(info) == fingerprint:
                self.report.database(info.name).alike = True

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

    def _pushed_database(self, message: Entries | EntryFragment) -> str:
        """Which database a push frame is counted under. The initiator reconciles several
        databases at once, so the last request may be about another one than the entries it
        pushes; each frame holds one database's entries, named in their headers (read for the
        count only: the store checks everything)."""
        if isinstance(message, EntryFragment):
            if message.offset != 0:
                return self._push_database  # the rest of the entry begun before
            first = message.data
        else:
            first = message.raws[0] if message.raws else b""
        named = database_of_raw(first)
        return named if named in self._union_names else self._current_database

    def _on_pushed(self, raws: Sequence[bytes]) -> None:
        """Queue pushed entries for storing, counted under the database they name."""
        self._queue_job(IngestJob(self._push_database, tuple(raws)))

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
        problems = record_outcome(self.report.database(job.database), job, outcome)
        if problems:
            raise ProtocolViolation(problem_summary(problems))
