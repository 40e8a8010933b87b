"""Sync sessions with connected peers, both sides, and what the daemon does when one ends.

`SyncSessions` opens a sync stream per tenant as the initiator (`sync_tenant`: only for the
tenants the `ProofGate` lets this node prove toward the peer, `tenants_to_prove`) and answers
the peer's streams as the responder (`serve`, the host's stream handler). Either way:

- the stream's time bounds are the session's (`SyncLimits`), not the transport's per-frame
  timeout;
- received entries are stored through `SessionIngest` (holding the Node; large batches in a
  worker thread), and the handshake's proof check holds the Node too (`hold_for_handshake`);
- the peer that authenticates is proven (the `ProofGate` and the host's inbound policy hear
  it at the handshake, not at the end: a clone can outlast the proof deadline);
- a session that ended well may lift the tenant's restore mark (`restore_settle`, before it
  is recorded, so ``sync wait`` never reports caught up while the mark still refuses writes),
  is recorded (peer table, scheduler, activity) and confirms what the peer holds
  (`HeldLedger`);
- a failed session is recorded in the peer's status and logged; an oversized frame bans the
  peer; a denied one marks the tenant unshared with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from ..errors import StoreError
from ..net.framing import FramedStream, FrameTooLarge, TransportError
from ..net.host import PeerHost
from ..net.peer_identity import to_libp2p_id
from ..node import Node
from ..sync.auth import AuthDenied, ProofGate
from ..sync.driver import (
    SyncTimeout,
    VersionRefused,
    run_initiator,
    run_responder,
    run_with_version_fallback,
)
from ..sync.ingest_pipeline import IngestStages
from ..sync.messages import SUMMARY_VERSION, ProtocolViolation
from ..sync.protocol import SyncLimits, SyncReport
from ..sync.tenant_adapter import TenantSyncAuthority, TenantSyncStore
from ..tenant import Tenant
from .activity import Activity
from .entry_events import Origin
from .held_ledger import HeldLedger, feed_positions
from .node_access import NodeAccess
from .peer_table import BAN_THRESHOLD, PeerTable
from .restore_settle import session_completes_restore
from .scheduler import SyncScheduler
from .sync_ingest import SessionIngest

logger = logging.getLogger(__name__)

SYNC_PROTOCOL = "/mindoo/sync/1.0.0"

Penalize = Callable[[bytes | str, int, str], None]


def peer_sent_oversized(exc: BaseException) -> bool:
    """Whether a failed session's error, or one it hid, is an oversized frame the peer sent
    (`FrameTooLarge.incoming`; one we failed to send is ours). The driver raises one failure
    of its send and receive tasks: the peer's oversized frame resets the stream, and a send
    under way may then fail first with StreamClosed, so the group it came from (its
    ``__context__``) is searched too."""
    if isinstance(exc, FrameTooLarge):
        return exc.incoming
    group = exc.__context__
    if isinstance(group, BaseExceptionGroup):
        return group.subgroup(lambda e: isinstance(e, FrameTooLarge) and e.incoming) is not None
    return False


class SyncSessions:
    """Both sides of the daemon's sync sessions; see the module docstring."""

    def __init__(
        self,
        node: Node,
        host: PeerHost,
        access: NodeAccess,
        *,
        peer_table: PeerTable,
        scheduler: SyncScheduler,
        activity: Activity,
        proof_gate: ProofGate,
        held: HeldLedger,
        limits: SyncLimits,
        penalize: Penalize,
        refresh_admission: Callable[[str], None],
    ) -> None:
        """``penalize(peer, points, reason)`` scores a peer that sent invalid data;
        ``refresh_admission(peer_id)`` re-reads what gossip admits of a peer whose shared
        tenants changed."""
        self._node = node
        self._host = host
        self._local_peer = to_libp2p_id(host.peer_id).to_bytes()
        self._access = access
        self._peer_table = peer_table
        self._scheduler = scheduler
        self._activity = activity
        self._proof_gate = proof_gate
        self._held = held
        self._limits = limits
        self._penalize = penalize
        self._refresh_admission = refresh_admission

    # -- initiator ---------------------------------------------------------------------------
    @asynccontextmanager
    async def initiating(self, peer_id: str) -> AsyncIterator[None]:
        """A round of initiator sessions with ``peer_id``: the peer table and the scheduler
        know it runs."""
        self._peer_table.session_started(peer_id)
        self._scheduler.session_started(peer_id)
        try:
            yield
        finally:
            self._peer_table.session_ended(peer_id)
            self._scheduler.session_ended(peer_id)

    def tenants_to_prove(self, peer_id: str) -> Iterator[Tenant]:
        """The tenants to run a session for with ``peer_id``, read as the round goes (a denial
        marks a tenant unshared): not those it shares not, and only those this node may prove
        toward it (`ProofGate`: a peer we dialled, or one that proved the tenant first)."""
        state = self._peer_table.peer(peer_id)
        dialled = self._host.dialled(peer_id)
        for tenant in self._node.tenants():
            if tenant.id in state.unshared_tenants:
                continue
            if not self._proof_gate.may_prove(peer_id, tenant.id, dialled=dialled):
                continue
            yield tenant

    async def sync_tenant(self, peer_id: str, tenant: Tenant) -> SyncReport | None:
        """One initiator session for ``tenant`` with ``peer_id``; its report, or None when it
        could not run or failed (recorded in the peer's status).

        It announces the version the peer table says the peer speaks (`sync_version`); a
        peer that denies that version (an older node) gets one new session announcing the
        version below, and is asked so until the peer table's recheck (`version_refused`).
        The version only falls, so this ends after at most one session per version we speak.
        """
        try:
            return await run_with_version_fallback(
                lambda version: self._session(peer_id, tenant, version),
                self._peer_table.sync_version(peer_id),
                lambda version: self._version_refused(peer_id, version),
            )
        except VersionRefused as exc:  # it speaks no version we do
            self._peer_table.failed(peer_id, f"sync of {tenant.name} failed: {exc}")
            self._activity.session_failed(
                peer_id, tenant.id, tenant.name, role="initiator", outcome="failed", error=str(exc)
            )
            return None

    def _version_refused(self, peer_id: str, version: int) -> int | None:
        older = self._peer_table.version_refused(peer_id, version)
        if older is not None:
            logger.info(
                "%s does not speak sync protocol version %d: version %d until it upgrades",
                peer_id,
                version,
                older,
            )
        return older

    async def _session(self, peer_id: str, tenant: Tenant, version: int) -> SyncReport | None:
        """One initiator session announcing ``version``: its report, or None when it could not
        run or failed (recorded); raises `VersionRefused` when the peer denied that version
        (nothing recorded: the caller may try an older one)."""
        host = self._host
        if not host.is_connected(peer_id):
            return None
        opened = trio.current_time()
        try:
            # Optimistic: the protocol proposal rides the HELLO (every version of this node
            # serves SYNC_PROTOCOL), so opening the stream costs no round trip of its own.
            stream = await host.open_stream(peer_id, SYNC_PROTOCOL, optimistic=True)
        except TransportError as exc:
            self._peer_table.failed(peer_id, f"cannot open a sync stream: {exc}")
            return None
        self._activity.session_started(peer_id, tenant.id, tenant.name)
        self._leave_bounds_to_the_driver(stream)
        try:
            # Inside the try: a store failure here (it reads LMDB) must reset the open stream,
            # or the peer's listener would wait in negotiation for its timeout.
            positions = feed_positions(self._node, tenant.id)
            trusted = self._peer_table.trusts_summary(peer_id, tenant.id)
            report = await run_initiator(
                stream,
                self._local_peer,
                to_libp2p_id(peer_id).to_bytes(),
                TenantSyncAuthority(tenant),
                TenantSyncStore(self._node, tenant),
                on_progress=lambda live: self._progress(peer_id, tenant, live),
                on_penalty=self._penalize,
                limits=self._limits,
                ingest_stages=self._ingest_stages(peer_id),
                hold_store=self._hold_for_handshake,
                on_authenticated=self._proven(peer_id),
                version=version,
                trust_summary=trusted,
            )
        except VersionRefused:
            with trio.CancelScope(shield=True):
                await stream.reset()
            raise
        except AuthDenied as exc:
            self._activity.session_failed(
                peer_id, tenant.id, tenant.name, role="initiator", outcome="denied", error=str(exc)
            )
            if self._peer_table.denied(peer_id, tenant.id):
                self._refresh_admission(peer_id)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return None
        except (ProtocolViolation, SyncTimeout, TransportError) as exc:
            if peer_sent_oversized(exc):  # not one we failed to send
                self._penalize(peer_id, BAN_THRESHOLD, f"oversized frame: {exc}")
            self._peer_table.failed(peer_id, f"sync of {tenant.name} failed: {exc}")
            self._activity.session_failed(
                peer_id, tenant.id, tenant.name, role="initiator", outcome="failed", error=str(exc)
            )
            logger.info("sync with %s failed: %s", peer_id, exc)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return None
        except Exception as exc:  # ours, not the peer's: our store (e.g. every LMDB reader
            # slot taken), a bug, a raw library error; contained as on the responder side
            self._failed_here(peer_id, tenant, "initiator", exc)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return None
        with trio.CancelScope(shield=True):
            await stream.close()
        # The session's time is the peer's wait: from opening its stream to its end.
        report.elapsed_seconds = trio.current_time() - opened
        full = not trusted or report.protocol_version < SUMMARY_VERSION
        self._peer_table.summary_session_done(peer_id, tenant.id, full=full)
        await self._ended_well(peer_id, tenant, report, positions)
        return report

    # -- responder ---------------------------------------------------------------------------
    async def serve(self, stream: Any) -> None:
        """Answer a sync stream the peer opened (the host's handler for `SYNC_PROTOCOL`)."""
        peer_id = stream.remote_peer_id
        self._peer_table.peer(peer_id)
        if not self._peer_table.may_dial(peer_id):
            return
        self._leave_bounds_to_the_driver(stream)
        authorities = {
            tenant.id: (TenantSyncAuthority(tenant), TenantSyncStore(self._node, tenant))
            for tenant in self._node.tenants()
        }
        self._scheduler.session_started(peer_id)
        positions: dict[str, int] = {}
        proven = self._proven(peer_id)

        def authenticated(tenant_id: bytes) -> None:
            positions.update(feed_positions(self._node, tenant_id))
            proven(tenant_id)

        try:
            report = await run_responder(
                stream,
                self._local_peer,
                to_libp2p_id(peer_id).to_bytes(),
                authorities,
                on_penalty=self._penalize,
                limits=self._limits,
                ingest_stages=self._ingest_stages(peer_id),
                hold_store=self._hold_for_handshake,
                on_authenticated=authenticated,
            )
        except (AuthDenied, ProtocolViolation, SyncTimeout) as exc:
            self._peer_table.failed(peer_id, f"inbound sync failed: {exc}")
            outcome = "denied" if isinstance(exc, AuthDenied) else "failed"
            self._activity.session_failed(
                peer_id, None, None, role="responder", outcome=outcome, error=str(exc)
            )
            return
        except StoreError as exc:  # ours, not the peer's (e.g. every LMDB reader slot taken)
            self._failed_here(peer_id, None, "responder", exc)
            return
        except TransportError as exc:
            if peer_sent_oversized(exc):  # the peer's; one we failed to send is not
                self._penalize(peer_id, BAN_THRESHOLD, f"oversized frame: {exc}")
            raise
        finally:
            self._scheduler.session_ended(peer_id)
        if report is not None:
            tenant = self._node.tenant(report.tenant_id)
            await self._ended_well(peer_id, tenant, report, positions)

    # -- both sides --------------------------------------------------------------------------
    def _failed_here(self, peer_id: str, tenant: Tenant | None, role: str, exc: Exception) -> None:
        """A session ended by this node, not the peer: its own store (a StoreError, logged as
        a warning) or an unexpected error (logged with its traceback). Recorded, not held
        against the peer (no penalty); the daemon carries on and the next session retries."""
        if isinstance(exc, StoreError):
            error = f"this node's store failed: {exc}"
        else:
            error = f"internal error: {type(exc).__name__}: {exc}"
        self._peer_table.failed(peer_id, error)
        self._activity.session_failed(
            peer_id,
            None if tenant is None else tenant.id,
            None if tenant is None else tenant.name,
            role=role,
            outcome="failed",
            error=error,
        )
        if isinstance(exc, StoreError):
            logger.warning("sync with %s (%s) failed: %s", peer_id, role, error)
        else:
            logger.error("sync with %s (%s) failed unexpectedly", peer_id, role, exc_info=exc)

    async def _ended_well(
        self, peer_id: str, tenant: Tenant, report: SyncReport, positions: dict[str, int]
    ) -> None:
        await self._settle_restored(peer_id, tenant, report)
        self._record(peer_id, tenant, report)
        await self._held.confirm(peer_id, report, positions)

    def _ingest_stages(self, peer_id: str) -> IngestStages:
        return SessionIngest(self._access, self._activity.refused, peer_id=peer_id).stages()

    def _proven(self, peer_id: str) -> Callable[[bytes], None]:
        """The sessions' ``on_authenticated``: the peer proved that it shares a tenant, so its
        inbound connection is no longer unproven (see net/inbound_policy.py)."""

        def proven(tenant_id: bytes) -> None:
            self._proof_gate.peer_proved(peer_id, tenant_id)
            self._host.mark_proven(peer_id)

        return proven

    def _hold_for_handshake(self) -> AbstractAsyncContextManager[object]:
        """The sessions' `StoreHolder`: checking a peer's proof reads membership and may store
        its membership evidence, so it takes its turn with the Node (on the loop)."""
        return self._access.hold(Origin.SYNC)

    def _leave_bounds_to_the_driver(self, stream: FramedStream) -> None:
        """A sync stream's time bounds are the session's (`SyncLimits`: the wall time, and
        the idle bound, which counts frames either way): the transport's per-frame timeout
        (30 s) would cut a session whose peer rightly says nothing while we push to it."""
        stream.timeout = max(stream.timeout, self._limits.session_seconds)

    async def _settle_restored(self, peer_id: str, tenant: Tenant, report: SyncReport) -> None:
        """Lift the tenant's restore mark (`restore_guard`) when the session reconciled
        everything. Costs nothing once no tenant is marked."""
        if tenant.id not in self._node.restore_guard.marked():
            return
        if not session_completes_restore(report):
            return
        settled = await self._access.run(lambda node: node.settle_restored(tenant))
        if settled.cleared:
            logger.info("tenant %s synced with %s: own writes allowed again", tenant.name, peer_id)
        elif settled.gaps:
            logger.warning(
                "tenant %s stays restored after syncing with %s: %s",
                tenant.name,
                peer_id,
                "; ".join(gap.describe() for gap in settled.gaps),
            )

    def _record(self, peer_id: str, tenant: Tenant, report: SyncReport) -> None:
        self._activity.session_done(peer_id, tenant.name, report)
        self._peer_table.peer_speaks(peer_id, report.protocol_version)
        if self._peer_table.record(peer_id, tenant.id, report, int(time.time() * 1000)):
            self._refresh_admission(peer_id)
        self._scheduler.session_recorded(peer_id)

    def _progress(self, peer_id: str, tenant: Tenant, live: SyncReport) -> None:
        self._peer_table.progress(peer_id, live.received, live.sent)
        self._peer_table.live(peer_id, tenant.id, live)
        self._activity.session_progress(peer_id, tenant.id, tenant.name, live.received, live.sent)


__all__ = ["SYNC_PROTOCOL", "SyncSessions"]
