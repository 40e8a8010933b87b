"""The daemon's peer table: what this node knows of each peer, and the penalty/ban rules.

Pure and I/O-free: the composition root (`NodeDaemon`) feeds it facts (connected, penalised,
synced, denied) and asks it questions (may I dial this peer? what does `status` show?). The
clock is injected (``clock()``: monotonic seconds, for bans), so tests drive it directly.

Rules:

=================  ==========================================================================
penalty            points add up per peer; a reason is kept as ``last_error``
ban                at `BAN_THRESHOLD` points the peer is banned for `BAN_SECONDS` (from its
                   latest penalty): refused inbound, never dialed; `penalize` returns True so
                   the caller disconnects it
block              `block` / `unblock` (partitions in tests, an operator): refused until unblocked
bound              at most ``max_peers`` states; when full, the idle half (disconnected, not
                   syncing, not banned) is forgotten, oldest sync first; live peers never are
tenants            a session records the tenant as shared (gossip admission), a denial as
                   unshared (skipped until membership changes: `membership_changed`)
=================  ==========================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..sync.protocol import SyncReport

BAN_THRESHOLD = 100
"""Penalty points at which a peer is disconnected and refused."""
BAN_SECONDS = 600.0
"""How long a banned peer is refused."""
MAX_PEER_STATES = 4096
"""Default bound of the peer table."""


@dataclass
class DatabaseSyncState:
    """What this node knows of one database's sync state with one peer."""

    caught_up_ms: int | None = None
    received: int = 0
    sent: int = 0
    missing: int = 0


@dataclass
class PeerState:
    """One peer as the daemon knows it (status reads it; only the trio thread writes it)."""

    peer_id: str
    connected: bool = False
    address: str | None = None
    last_sync_ms: int | None = None
    last_error: str | None = None
    penalty: int = 0
    banned_until: float = 0.0
    syncing: bool = False
    progress: dict[str, int] = field(default_factory=dict)
    shared_tenants: set[bytes] = field(default_factory=set)
    unshared_tenants: set[bytes] = field(default_factory=set)
    databases: dict[tuple[bytes, str], DatabaseSyncState] = field(default_factory=dict)
    sessions: int = 0
    last_session: dict[str, Any] | None = None
    """The last session that ended well, as its own report tells it (`session_summary`)."""
    dead_path: str | None = None
    """Why the keepalive closed the connection last (no answer for so long); cleared when
    the peer connects again."""
    keepalive: dict[str, Any] | None = None
    """The connection's keepalive (`net.keepalive`): ``rtt_ms`` of the last answered ping,
    ``last_answer_ms`` (wall clock), ``unanswered_pings`` since; None when not connected."""

    def to_dict(self, tenant_names: dict[bytes, str]) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "connected": self.connected,
            "address": self.address,
            "last_sync_ms": self.last_sync_ms,
            "last_error": self.last_error,
            "penalty": self.penalty,
            "syncing": self.syncing,
            "progress": dict(self.progress),
            "sessions": self.sessions,
            "last_session": dict(self.last_session) if self.last_session else None,
            "keepalive": dict(self.keepalive) if self.keepalive else None,
            "dead_path": self.dead_path,
            "tenants": sorted(tenant_names.get(t, t.hex()) for t in self.shared_tenants),
        }


def session_summary(report: SyncReport) -> dict[str, Any]:
    """What `status` shows of one session: its role, its own duration (handshake to finish,
    timed by the driver), round trips (reconciliation rounds among them), entries and frame
    bytes each way. Wire bytes (Noise, Yamux) are not counted here."""
    return {
        "role": report.role,
        "elapsed_ms": round(report.elapsed_seconds * 1000, 1),
        "round_trips": report.round_trips,
        "recon_rounds": sum(each.recon_rounds for each in report.databases.values()),
        "received": report.received,
        "sent": report.sent,
        "bytes_sent": report.bytes_sent,
        "bytes_received": report.bytes_received,
    }


class PeerTable:
    """Every peer this daemon knows, bounded; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        max_peers: int = MAX_PEER_STATES,
        ban_threshold: int = BAN_THRESHOLD,
        ban_seconds: float = BAN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_peers < 1 or ban_threshold < 1 or not ban_seconds > 0:
            raise ValueError("need max_peers >= 1, ban_threshold >= 1 and ban_seconds > 0")
        self.max_peers = max_peers
        self.ban_threshold = ban_threshold
        self.ban_seconds = ban_seconds
        self._clock = clock
        self._states: dict[str, PeerState] = {}
        self._blocked: set[str] = set()

    # -- lookup ------------------------------------------------------------------------------
    @property
    def states(self) -> dict[str, PeerState]:
        """Peer id -> state (read it; change it through the table's methods)."""
        return self._states

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._states

    def get(self, peer_id: str) -> PeerState | None:
        return self._states.get(peer_id)

    def peer(self, peer_id: str) -> PeerState:
        """The state of ``peer_id``, created (and the table bounded) on first use."""
        state = self._states.get(peer_id)
        if state is None:
            if len(self._states) >= self.max_peers:
                self._forget_idle()
            state = self._states[peer_id] = PeerState(peer_id)
        return state

    def connected_peers(self) -> list[str]:
        return [p for p, s in self._states.items() if s.connected]

    def __iter__(self) -> Iterator[PeerState]:
        return iter(list(self._states.values()))

    def _forget_idle(self) -> None:
        now = self._clock()
        idle = [
            s
            for s in self._states.values()
            if not s.connected and not s.syncing and s.banned_until <= now
        ]
        idle.sort(key=lambda s: s.last_sync_ms or 0)
        for state in idle[: max(1, len(idle) // 2)]:
            del self._states[state.peer_id]

    # -- admission ---------------------------------------------------------------------------
    def is_banned(self, peer_id: str) -> bool:
        state = self._states.get(peer_id)
        return state is not None and state.banned_until > self._clock()

    def may_dial(self, peer_id: str) -> bool:
        """Neither banned nor blocked (also: whether an inbound connection is accepted)."""
        return not self.is_banned(peer_id) and peer_id not in self._blocked

    def block(self, peer_id: str) -> None:
        self._blocked.add(peer_id)

    def unblock(self, peer_id: str) -> None:
        self._blocked.discard(peer_id)

    def penalize(self, peer_id: str, points: int, reason: str) -> bool:
        """Add ``points``; True when the peer is at or past the ban threshold: it is banned
        (again) for ``ban_seconds`` from now, and the caller disconnects it."""
        state = self.peer(peer_id)
        state.penalty += points
        state.last_error = f"penalised {points}: {reason}"
        if state.penalty >= self.ban_threshold:
            state.banned_until = self._clock() + self.ban_seconds
            return True
        return False

    # -- connections -------------------------------------------------------------------------
    def connected(self, peer_id: str) -> bool:
        """Mark ``peer_id`` connected; False when it already was."""
        state = self.peer(peer_id)
        if state.connected:
            return False
        state.connected = True
        state.dead_path = None
        return True

    def path_dead(self, peer_id: str, reason: str) -> None:
        """The keepalive heard nothing from ``peer_id`` for too long (it is disconnected
        next): status shows ``reason`` until the peer connects again."""
        state = self.peer(peer_id)
        state.dead_path = reason
        state.last_error = reason

    def disconnected(self, peer_id: str) -> bool:
        """Mark ``peer_id`` gone; True when it had shared tenants (gossip admission changed)."""
        state = self.peer(peer_id)
        state.connected = False
        state.keepalive = None
        had = bool(state.shared_tenants)
        state.shared_tenants.clear()
        state.unshared_tenants.clear()
        return had

    # -- sessions ----------------------------------------------------------------------------
    def progress(self, peer_id: str, received: int, sent: int) -> None:
        self.peer(peer_id).progress = {"received": received, "sent": sent}

    def session_started(self, peer_id: str) -> None:
        self.peer(peer_id).syncing = True

    def session_ended(self, peer_id: str) -> None:
        state = self.peer(peer_id)
        state.syncing = False
        state.progress = {}

    def failed(self, peer_id: str, error: str) -> None:
        self.peer(peer_id).last_error = error

    def denied(self, peer_id: str, tenant_id: bytes) -> bool:
        """The peer may not replicate ``tenant_id``; True when it was shared before (gossip
        admission changed)."""
        state = self.peer(peer_id)
        state.unshared_tenants.add(tenant_id)
        if tenant_id in state.shared_tenants:
            state.shared_tenants.discard(tenant_id)
            return True
        return False

    def record(self, peer_id: str, tenant_id: bytes, report: SyncReport, at_ms: int) -> bool:
        """A session with the peer for ``tenant_id`` ended well; True when the tenant is newly
        shared (gossip admission changed)."""
        state = self.peer(peer_id)
        state.last_sync_ms = at_ms
        state.sessions += 1
        state.last_session = session_summary(report)
        state.last_error = None
        fresh = tenant_id not in state.shared_tenants
        state.shared_tenants.add(tenant_id)
        for name, db_report in report.databases.items():
            db_state = state.databases.setdefault((tenant_id, name), DatabaseSyncState())
            db_state.received += db_report.received
            db_state.sent += db_report.sent
            db_state.missing = db_report.unavailable
            if db_report.unavailable == 0 and db_report.rejected == 0:
                db_state.caught_up_ms = at_ms
        return fresh

    def membership_changed(self) -> None:
        """A tenant log changed: peers denied before may be members now."""
        for state in self._states.values():
            state.unshared_tenants.clear()

    def shares(self, peer_id: str, tenant_id: bytes) -> bool:
        state = self._states.get(peer_id)
        return state is not None and tenant_id in state.shared_tenants

    # -- status ------------------------------------------------------------------------------
    def peers_status(self, tenant_names: dict[bytes, str]) -> list[dict[str, Any]]:
        """Every peer as `NodeDaemon.status` shows it: connected first, then by id."""
        ordered = sorted(self._states.values(), key=lambda s: (not s.connected, s.peer_id))
        return [s.to_dict(tenant_names) for s in ordered]

    def database_status(self, tenant_id: bytes, database: str) -> tuple[int, list[dict[str, Any]]]:
        """(most entries any peer reported unavailable, [{"peer_id", "at_ms"} caught up])."""
        caught_up = []
        missing = 0
        for peer_id, state in self._states.items():
            db_state = state.databases.get((tenant_id, database))
            if db_state is None:
                continue
            missing = max(missing, db_state.missing)
            if db_state.caught_up_ms is not None:
                caught_up.append({"peer_id": peer_id, "at_ms": db_state.caught_up_ms})
        return missing, caught_up
