"""The trio driver: runs the handshake and the sync state machines over a framed stream.

All protocol decisions live in :mod:`.auth` and :mod:`.protocol`; this module only moves
frames, has received entries stored beside the session by an `IngestPipeline` (several frames
per batch; through ``run_ingest(store, raws)``, by default :meth:`SyncStore.ingest` called in
place, or through ``ingest_stages``, checks then commit, overlapping across batches: the daemon
passes stages that run in worker threads, so verifying and writing does not stall the event
loop; each frame the handshake receives is handled inside ``hold_store()``, since checking a
peer's proof may store its membership evidence),
and applies the two time bounds (the whole session, and the wait for each frame of the peer).
The handshake runs in lock step; the sync phase runs full duplex (one task sends whatever the
machine has to say while the other receives), so neither side can block the other however
little the transport buffers.

On a :class:`~.messages.ProtocolViolation` or a timeout, the driver reports a penalty through
``on_penalty(remote_peer, points, reason)``, closes the stream and raises; the exception's
``report`` holds what the session did until then (what was valid stays stored). A clean
session leaves the stream open: it belongs to the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar, runtime_checkable

import trio

from ..errors import MindooError
from .auth import (
    AuthDenied,
    AuthInitiator,
    AuthResponder,
    InitiatorState,
    ResponderState,
    TenantAuthority,
)
from .ingest_pipeline import IngestPipeline, IngestRunner, IngestStages
from .messages import (
    LIST_FIRST_VERSION,
    MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    SUMMARY_VERSION,
    ProtocolViolation,
)
from .protocol import (
    DEFAULT_LIMITS,
    IngestJob,
    IngestOutcome,
    SyncInitiator,
    SyncLimits,
    SyncReport,
    SyncResponder,
    SyncStore,
)
from .snapshot_budget import SHARED_SNAPSHOT_BUDGET, SnapshotBudget

TIMEOUT_PENALTY = 10
"""Score points for a peer that stalls past a time bound (it may just be slow)."""
DENIAL_PENALTY = 5
"""Score points for a peer whose proof we denied (revoked, misconfigured, or probing)."""
_CLOSE_SECONDS = 2.0

PenaltyCallback = Callable[[bytes, int, str], None]
"""``on_penalty(remote_peer, points, reason)``."""
ProgressCallback = Callable[[SyncReport], None]
"""Called with the live report after each frame of the sync phase."""


async def ingest_in_place(store: SyncStore, raws: Sequence[bytes]) -> IngestOutcome:
    """The default `IngestRunner`: :meth:`SyncStore.ingest` on the calling (trio) thread."""
    return store.ingest(raws)


StoreHolder = Callable[[], AbstractAsyncContextManager[object]]
"""``hold_store()``: held while the handshake handles a received frame (checking a peer's
proof may store its membership evidence)."""


def no_hold() -> AbstractAsyncContextManager[object]:
    """The default `StoreHolder`: nothing to wait for."""
    return contextlib.nullcontext()


class FrameStream(Protocol):
    """What the driver needs from a transport stream (``net.framing.FramedStream`` has it)."""

    async def send_frame(self, data: bytes) -> None: ...

    async def receive_frame(self) -> bytes: ...

    async def close(self) -> None: ...


@runtime_checkable
class FlightStream(FrameStream, Protocol):
    """A `FrameStream` that can also send several frames in one write (``FramedStream``):
    the driver then sends each flight (the frames a machine has ready at once) that way, one
    transport message instead of one per frame. The bytes on the wire are the same."""

    async def send_frames(self, frames: Sequence[bytes]) -> None: ...


FLIGHT_BYTES = 64 * 1024
"""A flight takes further ready frames while it holds fewer bytes than this."""


class VersionRefused(AuthDenied):
    """The responder denied our HELLO, before any proof: it does not speak ``version`` (an older
    node). The caller may start a new session announcing an older version (`PeerTable`'s
    version memory decides which); nothing was proven or revealed in this one."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"the peer does not speak sync protocol version {version}"
            " (it runs an older mindoo; sessions it starts still work)"
        )
        self.version = version


_Result = TypeVar("_Result")


async def run_with_version_fallback(
    attempt: Callable[[int], Awaitable[_Result]],
    version: int,
    refused: Callable[[int], int | None],
) -> _Result:
    """``attempt(version)`` (one initiator session on a new stream, announcing ``version``);
    when it raises :class:`VersionRefused`, ``refused(version)`` says which older version to
    try next (and remembers the peer's answer), or None: then the refusal is raised. The
    version strictly falls, so there is at most one session per version we speak: a peer
    cannot make us loop."""
    while True:
        try:
            return await attempt(version)
        except VersionRefused as exc:
            older = refused(exc.version)
            if older is None or older >= exc.version:
                raise
            version = older


class SyncTimeout(MindooError):
    """The session ran past its wall time, or the peer was silent past the idle bound."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.penalty = TIMEOUT_PENALTY
        self.report: SyncReport | None = None


Handshake = AuthInitiator | AuthResponder
AuthenticatedCallback = Callable[[bytes], None]
"""``on_authenticated(tenant_id)``: the peer proved, in this session's handshake, that it may
replicate the tenant (before the sync phase, however long that takes)."""
Machine = SyncInitiator | SyncResponder


class _Session:
    """One stream as the driver sees it: frame counting, the idle bound, the duplex loop."""

    def __init__(
        self,
        stream: FrameStream,
        limits: SyncLimits,
        on_progress: ProgressCallback | None,
        run_ingest: IngestRunner = ingest_in_place,
        hold_store: StoreHolder = no_hold,
        ingest_stages: IngestStages | None = None,
    ) -> None:
        self.stream = stream
        self._flight_stream = stream if isinstance(stream, FlightStream) else None
        """The stream, when it sends a flight in one write (checked once: a runtime protocol
        check costs microseconds, paid per flight otherwise)."""
        self.limits = limits
        self.on_progress = on_progress
        self.ingest_stages = ingest_stages or IngestStages.single(run_ingest)
        self.hold_store = hold_store
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.started = trio.current_time()
        self._changed = trio.Event()
        self._idle: trio.CancelScope | None = None
        """The idle bound of the receive under way, if any."""

    async def send(self, frame: bytes) -> None:
        await self.send_flight([frame])

    async def send_flight(self, frames: Sequence[bytes]) -> None:
        """Send ``frames`` in order, in one write when the stream can (`FlightStream`)."""
        if len(frames) > 1 and self._flight_stream is not None:
            await self._flight_stream.send_frames(frames)
        else:
            for frame in frames:
                await self.stream.send_frame(frame)
        self.frames_sent += len(frames)
        self.bytes_sent += sum(len(frame) for frame in frames)
        idle = self._idle
        if idle is not None:  # the peer took a frame in: the session is not idle
            idle.deadline = trio.current_time() + self.limits.idle_seconds

    async def receive(self) -> bytes:
        """The peer's next frame. The idle bound counts frames either way: while we push
        entries the peer may rightly say nothing (it stores them; it answers at the end), so
        each frame it takes in from us moves the deadline on."""
        with trio.move_on_after(self.limits.idle_seconds) as idle:
            self._idle = idle
            try:
                frame = await self.stream.receive_frame()
            finally:
                self._idle = None
        if idle.cancelled_caught:
            raise SyncTimeout(
                f"the peer sent nothing for {self.limits.idle_seconds} s"
                " and took in nothing we sent"
            )
        if len(frame) > MAX_FRAME_SIZE:
            raise ProtocolViolation(f"a frame of {len(frame)} bytes, over {MAX_FRAME_SIZE}")
        self.frames_received += 1
        self.bytes_received += len(frame)
        return frame

    def fill(self, report: SyncReport) -> SyncReport:
        """Copy the session totals into ``report``."""
        report.frames_sent = self.frames_sent
        report.frames_received = self.frames_received
        report.bytes_sent = self.bytes_sent
        report.bytes_received = self.bytes_received
        report.elapsed_seconds = trio.current_time() - self.started
        return report

    async def lockstep(self, handshake: Handshake) -> bytes | None:
        """Run the handshake to its end: send what it has, else receive what it waits for.
        A frame that authenticates the handshake as it is sent (the responder's proof) is not
        sent but returned, to lead the sync phase's first flight; anything else is sent at
        once (a denial, above all)."""
        while not handshake.finished:
            frame = handshake.next_frame()
            if frame is not None:
                if handshake.finished and handshake.authenticated:
                    return frame
                await self.send(frame)
            elif handshake.wants_frame:
                incoming = await self.receive()
                async with self.hold_store():
                    handshake.receive(incoming)
            else:  # pragma: no cover - the transition tables make this unreachable
                raise RuntimeError("handshake stalled")
        return None

    async def duplex(self, machine: Machine, store: SyncStore, lead: bytes | None = None) -> None:
        """Run a sync machine to its end, sending, receiving and storing what was received at
        the same time (storing batches several frames while the next ones arrive:
        `IngestPipeline`). ``lead`` (the handshake's last frame, held back by `lockstep`)
        leaves first, in the machine's first flight."""

        def ingested(job: IngestJob, outcome: IngestOutcome) -> None:
            try:
                machine.ingested(job, outcome)
            finally:
                self._changed.set()
            if self.on_progress is not None:
                self.on_progress(self.fill(machine.report))

        pipeline = IngestPipeline(store, self.ingest_stages, ingested)
        try:
            receiving = trio.CancelScope()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, machine, lead, receiving)
                nursery.start_soon(pipeline.run)
                try:
                    with receiving:
                        await self._receive_loop(machine, pipeline)
                finally:
                    pipeline.close()
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _receive_loop(self, machine: Machine, pipeline: IngestPipeline) -> None:
        while machine.receiving:
            machine.receive(await self.receive())
            jobs = machine.take_jobs()
            self._changed.set()
            for job in jobs:
                await pipeline.put(job)
            if self.on_progress is not None and not jobs:
                self.on_progress(self.fill(machine.report))

    async def _send_loop(
        self, machine: Machine, lead: bytes | None, receiving: trio.CancelScope
    ) -> None:
        """Send what the machine has to say, a flight at a time: every frame it has ready
        (up to `FLIGHT_BYTES`) in one write. When its last frame finished the machine (a
        version-3 initiator that pushed nothing: no FINISHED comes), the receive loop, which
        waits for a frame that will not come, is ended (``receiving``), but only when that
        frame was delivered to the stream: a machine is done once it produced its last frame,
        and a FINISH the peer never took in is no success. Then the receive loop ends the
        session as it would in version 2 (the peer's end of stream, its silence past the idle
        bound, or a frame it had no right to send)."""
        delivered = await self._send_flights(machine, lead)
        if delivered and machine.finished:
            receiving.cancel()

    async def _send_flights(self, machine: Machine, lead: bytes | None) -> bool:
        """Send flights until the machine has nothing more to say: True when every frame was
        delivered to the stream, False when the peer closed its end first."""
        flight = [] if lead is None else [lead]
        while machine.sending or flight:
            size = sum(len(frame) for frame in flight)
            while machine.sending and size < FLIGHT_BYTES:
                frame = machine.next_frame()
                if frame is None:
                    break
                flight.append(frame)
                size += len(frame)
            if not flight:
                await self._changed.wait()
                self._changed = trio.Event()
            else:
                try:
                    await self.send_flight(flight)
                    flight = []
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The peer closed its end (a version-2 responder may announce its list
                    # just as the initiator refuses its proof): stop sending, and let the
                    # receive loop read what the peer sent before (its DENIED) or the end.
                    return False
        return True


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to raise for a failed duplex loop: a protocol violation if one of the
    tasks found one, else the first failure that is not a cancellation."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        elif not isinstance(error, trio.Cancelled):
            leaves.append(error)

    collect(group)
    for leaf in leaves:
        if isinstance(leaf, ProtocolViolation):
            return leaf
    return leaves[0] if leaves else group


async def _close_quietly(stream: FrameStream) -> None:
    with trio.move_on_after(_CLOSE_SECONDS) as scope:
        scope.shield = True
        with contextlib.suppress(Exception):  # the stream is being dropped anyway
            await stream.close()


async def _fail(
    session: _Session,
    error: ProtocolViolation | SyncTimeout,
    remote_peer: bytes,
    on_penalty: PenaltyCallback | None,
    report: SyncReport | None,
) -> None:
    """Attach the report so far to ``error``, report the penalty and drop the stream."""
    error.report = session.fill(report) if report is not None else None
    if on_penalty is not None:
        on_penalty(remote_peer, error.penalty, error.reason)
    await _close_quietly(session.stream)


async def run_initiator(
    stream: FrameStream,
    local_peer: bytes,
    remote_peer: bytes,
    authority: TenantAuthority,
    store: SyncStore,
    *,
    on_progress: ProgressCallback | None = None,
    on_penalty: PenaltyCallback | None = None,
    limits: SyncLimits = DEFAULT_LIMITS,
    run_ingest: IngestRunner = ingest_in_place,
    hold_store: StoreHolder = no_hold,
    on_authenticated: AuthenticatedCallback | None = None,
    ingest_stages: IngestStages | None = None,
    version: int = PROTOCOL_VERSION,
    snapshot_budget: SnapshotBudget = SHARED_SNAPSHOT_BUDGET,
    trust_summary: bool = True,
) -> SyncReport:
    """Authenticate for ``authority``'s tenant and sync ``store`` with the peer, announcing
    protocol ``version`` (the newest by default; version 1 speaks as 063fa60 did).

    ``local_peer`` and ``remote_peer`` are the binary libp2p peer ids of this connection.
    ``on_authenticated(tenant_id)`` is called once the handshake succeeded, before the sync
    phase (which may take long: a clone). Reconciliation scopes beyond the current
    database's take their snapshots from ``snapshot_budget`` (see :mod:`.snapshot_budget`).
    ``trust_summary=False`` reconciles every database of a version-3 session, even those the
    summaries show held alike (`SyncInitiator`; the daemon's periodic full check).
    Raises :class:`AuthDenied` when either side refuses the other (the stream is closed;
    :class:`VersionRefused` when the responder does not speak ``version``),
    :class:`ProtocolViolation` or :class:`SyncTimeout` as described in the module docstring.
    """
    if store.tenant_id != authority.tenant_id:
        raise ValueError("the store and the authority are of different tenants")
    session = _Session(stream, limits, on_progress, run_ingest, hold_store, ingest_stages)
    machine: SyncInitiator | None = None
    try:
        with trio.move_on_after(limits.session_seconds):
            handshake = AuthInitiator(local_peer, remote_peer, authority, version)
            await session.lockstep(handshake)
            if handshake.state is not InitiatorState.AUTHENTICATED:
                if handshake.refused_peer and on_penalty is not None:
                    on_penalty(remote_peer, DENIAL_PENALTY, "its proof was refused")
                await _close_quietly(stream)
                if handshake.refused_version:
                    raise VersionRefused(version)
                raise AuthDenied(
                    "the peer could not prove it may replicate the tenant"
                    if handshake.refused_peer
                    else "the peer denied the session"
                )
            if on_authenticated is not None:
                on_authenticated(authority.tenant_id)
            machine = SyncInitiator(
                store,
                limits,
                version=version,
                snapshot_budget=snapshot_budget,
                trust_summary=trust_summary,
            )
            machine.report.protocol_version = version
            await session.duplex(machine, store)
            return session.fill(machine.report)
        raise SyncTimeout(f"the session ran past {limits.session_seconds} s")
    except (ProtocolViolation, SyncTimeout) as error:
        await _fail(
            session, error, remote_peer, on_penalty, machine.report if machine is not None else None
        )
        raise
    finally:
        if machine is not None:
            machine.close()


async def run_responder(
    stream: FrameStream,
    local_peer: bytes,
    remote_peer: bytes,
    authorities: Mapping[bytes, tuple[TenantAuthority, SyncStore]],
    *,
    on_progress: ProgressCallback | None = None,
    on_penalty: PenaltyCallback | None = None,
    limits: SyncLimits = DEFAULT_LIMITS,
    run_ingest: IngestRunner = ingest_in_place,
    hold_store: StoreHolder = no_hold,
    on_authenticated: AuthenticatedCallback | None = None,
    ingest_stages: IngestStages | None = None,
) -> SyncReport | None:
    """Answer a session for whichever tenant of ``authorities`` (tenant id -> (authority,
    store)) the initiator proves itself for; ``on_authenticated(tenant_id)`` once it has.

    Returns None when the peer was denied (it got the one generic denial; the stream is
    closed). Raises :class:`AuthDenied` when the initiator refused our proof, and
    :class:`ProtocolViolation` or :class:`SyncTimeout` as described in the module docstring.
    """
    pairs = list(authorities.values())
    for authority, store in pairs:
        if store.tenant_id != authority.tenant_id:
            raise ValueError("a store and its authority are of different tenants")
    session = _Session(stream, limits, on_progress, run_ingest, hold_store, ingest_stages)
    machine: SyncResponder | None = None
    try:
        with trio.move_on_after(limits.session_seconds):
            handshake = AuthResponder(local_peer, remote_peer, [pair[0] for pair in pairs])
            proof = await session.lockstep(handshake)
            if handshake.state is not ResponderState.AUTHENTICATED:
                if handshake.refused_peer and on_penalty is not None:
                    on_penalty(remote_peer, DENIAL_PENALTY, "its proof was refused")
                await _close_quietly(stream)
                return None
            store = next(store for each, store in pairs if each is handshake.authority)
            if on_authenticated is not None:
                on_authenticated(store.tenant_id)
            machine = SyncResponder(
                store,
                limits,
                announce=handshake.peer_version >= LIST_FIRST_VERSION,
                version3=handshake.peer_version >= SUMMARY_VERSION,
            )
            machine.report.protocol_version = handshake.peer_version
            await session.duplex(machine, store, lead=proof)
            if machine.refused:
                await _close_quietly(stream)
                raise AuthDenied("the peer refused our proof")
            return session.fill(machine.report)
        raise SyncTimeout(f"the session ran past {limits.session_seconds} s")
    except (ProtocolViolation, SyncTimeout) as error:
        await _fail(
            session, error, remote_peer, on_penalty, machine.report if machine is not None else None
        )
        raise
    finally:
        if machine is not None:
            machine.close()
