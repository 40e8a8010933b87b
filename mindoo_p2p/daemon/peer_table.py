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
version            a responder that denied our HELLO's version (an older node) is asked with
                   the version below it (`sync_version`) until `VERSION_RECHECK_SECONDS`
                   pass, doubling with each refusal up to `VERSION_RECHECK_MAX_SECONDS`; then
                   the version just above it is tried (one HELLO it may deny per recheck,
                   however old it is). Kept across reconnects: an old node adds penalty
                   points for every HELLO it denies and never forgets them, so probing on each
                   reconnect would get us banned there. A session with a version above the
                   cap (it upgraded) lifts the cap at once (`peer_speaks`).
full check         of the sessions we start with a peer for a tenant (version 3), one in
                   `SUMMARY_FULL_CHECK_EVERY` reconciles every database, held alike by the
                   summaries or not (`trusts_summary`); it stays due until one ends well
                   (`summary_session_done`). Counted in memory from this process's start.
=================  ==========================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..entry import TENANT_LOG
from ..sync.messages import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
from ..sync.protocol import SyncReport

BAN_THRESHOLD = 100
"""Penalty points at which a peer is disconnected and refused."""
BAN_SECONDS = 600.0
"""How long a banned peer is refused."""
MAX_PEER_STATES = 4096
"""Default bound of the peer table."""
SUMMARY_FULL_CHECK_EVERY = 16
"""One session in this many that we start with a peer for a tenant ignores "held alike": the
summaries' additive fingerprints can be made to collide by a member grinding entry ids, and
two sets that collide would otherwise never be reconciled by that pair (docs/security.md)."""
VERSION_RECHECK_SECONDS = 3600.0
"""How long after its first refusal of a protocol version a peer is asked with an older one
before the version above that is tried again (the wait doubles with each further refusal)."""
VERSION_RECHECK_MAX_SECONDS = 86400.0
"""The longest such wait: an upgraded peer that never starts a session itself is asked with a
newer version again within a day."""


@dataclass
class DatabaseSyncState:
    """What this node knows of one database's sync state with one peer."""

    caught_up_ms: int | None = None
    received: int = 0
    sent: int = 0
    missing: int = 0
    # Live, from the reconciliation of the session running now (or the last one):
    syncing: bool = False
    held: int | None = None
    """Entries of the database held here (at the session's start plus those received)."""
    lacking: int = 0
    """Entries the peer holds that we are known to lack (`DatabaseReport.outstanding`)."""
    peer_lacking: int = 0
    """Entries we hold that the peer is known to lack, not sent yet."""
    started: float | None = None
    """When the running session started (the table's clock)."""
    received_now: int = 0
    """Entries received in the running session."""

    def completion(self, now: float) -> dict[str, Any]:
        """What status shows: state, held, lacking, peer_lacking, percent, rate, ETA.

        ``state``: ``syncing`` while a session runs; ``up to date`` when the last session
        reconciled everything (as of ``caught_up_ms``: entries written since may be
        unknown to either side); ``behind`` when it ended with entries we could not get;
        ``not synced`` before any session. ``percent`` = held / (held + lacking)."""
        if self.syncing:
            state = "syncing"
        elif self.caught_up_ms is not None and self.missing == 0:
            state = "up to date"
        elif self.held is None and self.caught_up_ms is None:
            state = "not synced"
        else:
            state = "behind"
        percent = None
        if self.held is not None:
            total = self.held + self.lacking
            percent = 100.0 if total == 0 else round(100.0 * self.held / total, 1)
        rate = eta = None
        if self.syncing and self.started is not None:
            elapsed = now - self.started
            if elapsed >= 0.5 and self.received_now > 0:
                rate = self.received_now / elapsed
                eta = self.lacking / rate
        return {
            "state": state,
            "held": self.held,
            "lacking": self.lacking,
            "peer_lacking": self.peer_lacking,
            "percent": percent,
            "rate": None if rate is None else round(rate, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "caught_up_ms": self.caught_up_ms,
        }


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
    version_cap: int | None = None
    """The newest sync protocol version to announce to the peer, after it denied a newer one
    (None: the newest we speak)."""
    version_recheck_at: float = 0.0
    """When (the table's clock) the cap lapses and the newest version is tried again."""
    version_refusals: int = 0
    """HELLOs the peer denied for their version since it last spoke a newer one."""
    summary_sessions: dict[bytes, int] = field(default_factory=dict)
    """Per tenant: our sessions with the peer that trusted the summaries since the last full
    one (`trusts_summary`)."""

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
    timed by the driver), round trips (reconciliation rounds among them, summed over the
    databases, and the reconciliation round trips the scopes took side by side), entries and frame
    bytes each way. Wire bytes (Noise, Yamux) are not counted here."""
    return {
        "role": report.role,
        "elapsed_ms": round(report.elapsed_seconds * 1000, 1),
        "round_trips": report.round_trips,
        "recon_rounds": sum(each.recon_rounds for each in report.databases.values()),
        "recon_round_trips": report.recon_round_trips,
        "received": report.received,
        "sent": report.sent,
        "bytes_sent": report.bytes_sent,
        "bytes_received": report.bytes_received,
        "protocol_version": report.protocol_version,
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

    def live(self, peer_id: str, tenant_id: bytes, report: SyncReport) -> None:
        """A running session's report (initiator), after a frame: each database's progress."""
        state = self.peer(peer_id)
        now = self._clock()
        for name, db_report in report.databases.items():
            db_state = state.databases.setdefault((tenant_id, name), DatabaseSyncState())
            if not db_state.syncing:
                db_state.syncing, db_state.started = True, now
            db_state.received_now = db_report.received
            db_state.held = db_report.local_items + db_report.received
            db_state.lacking = db_report.outstanding
            db_state.peer_lacking = db_report.peer_lacking

    def session_started(self, peer_id: str) -> None:
        self.peer(peer_id).syncing = True

    def session_ended(self, peer_id: str) -> None:
        state = self.peer(peer_id)
        state.syncing = False
        state.progress = {}
        for db_state in state.databases.values():
            db_state.syncing = False
            db_state.started = None

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

    # -- protocol versions ------------------------------------------------------------------
    def sync_version(self, peer_id: str) -> int:
        """The sync protocol version to announce in a session we start with ``peer_id``."""
        state = self._states.get(peer_id)
        if state is None or state.version_cap is None:
            return PROTOCOL_VERSION
        if self._clock() >= state.version_recheck_at:
            # Time to see whether it upgraded (the cap stays till then): one version above
            # the cap, so a recheck costs one denied HELLO at most, however old the peer.
            return min(state.version_cap + 1, PROTOCOL_VERSION)
        return state.version_cap

    def version_refused(self, peer_id: str, version: int) -> int | None:
        """``peer_id`` denied a HELLO announcing ``version`` (before any proof): the older
        version to try now, or None when we speak none older (the session cannot run). At
        most one retry per version we speak: a peer cannot make us loop."""
        state = self.peer(peer_id)
        state.version_refusals += 1
        wait = VERSION_RECHECK_SECONDS * 2.0 ** min(state.version_refusals - 1, 32)
        state.version_recheck_at = self._clock() + min(wait, VERSION_RECHECK_MAX_SECONDS)
        older = version - 1
        if older < MIN_PROTOCOL_VERSION:
            state.version_cap = MIN_PROTOCOL_VERSION
            return None
        state.version_cap = older
        return older

    # -- full checks --------------------------------------------------------------------------
    def trusts_summary(self, peer_id: str, tenant_id: bytes) -> bool:
        """May our next session with ``peer_id`` for ``tenant_id`` skip the databases the
        summaries show held alike? False once in `SUMMARY_FULL_CHECK_EVERY` sessions (a
        full check), and until that session ends well: a peer cannot dodge it by failing it."""
        state = self._states.get(peer_id)
        trusted = state.summary_sessions.get(tenant_id, 0) if state is not None else 0
        return trusted < SUMMARY_FULL_CHECK_EVERY - 1

    def summary_session_done(self, peer_id: str, tenant_id: bytes, *, full: bool) -> None:
        """Our session with ``peer_id`` for ``tenant_id`` ended well; ``full``: it reconciled
        every database (a full check, or a version without summaries)."""
        sessions = self.peer(peer_id).summary_sessions
        if full:
            sessions.pop(tenant_id, None)
        else:
            sessions[tenant_id] = sessions.get(tenant_id, 0) + 1

    def peer_speaks(self, peer_id: str, version: int) -> None:
        """A session with ``peer_id`` authenticated speaking ``version`` (its HELLO when it
        started it, or ours when it answered): a version above the cap means it upgraded."""
        state = self._states.get(peer_id)
        if state is None or state.version_cap is None or version <= state.version_cap:
            return
        state.version_cap = None
        state.version_refusals = 0
        state.version_recheck_at = 0.0

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
            db_state.syncing = False
            if report.role == "initiator":
                db_state.held = db_report.local_items + db_report.received
                db_state.lacking = db_report.outstanding
                db_state.peer_lacking = db_report.peer_lacking
            if db_report.unavailable == 0 and db_report.rejected == 0:
                db_state.caught_up_ms = at_ms
                db_state.lacking = 0
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

    def completion(self, peer_id: str, tenant_names: dict[bytes, str]) -> list[dict[str, Any]]:
        """Per database, the sync state with ``peer_id`` (`DatabaseSyncState.completion`)."""
        state = self._states.get(peer_id)
        if state is None:
            return []
        now = self._clock()
        rows = []
        for (tenant_id, name), db_state in sorted(state.databases.items()):
            if name == TENANT_LOG:
                continue
            tenant = tenant_names.get(tenant_id, tenant_id.hex())
            rows.append({"tenant": tenant, "database": name, **db_state.completion(now)})
        return rows

    def database_completion(self, tenant_id: bytes, database: str) -> dict[str, Any]:
        """A database's sync state over the connected peers that share its tenant: ``state``
        ``syncing`` while any session runs, ``up to date`` when every one of them reconciled
        it completely in its last session (and at least one exists), ``not synced`` when none
        did yet, else ``behind``; ``percent`` the lowest, ``eta_s`` the longest."""
        now = self._clock()
        rows = [
            s.databases[(tenant_id, database)].completion(now)
            for s in self._states.values()
            if s.connected and (tenant_id, database) in s.databases
        ]
        shared = [s for s in self._states.values() if s.connected and tenant_id in s.shared_tenants]
        states = {row["state"] for row in rows}
        if "syncing" in states:
            overall = "syncing"
        elif rows and states == {"up to date"} and len(rows) >= len(shared):
            overall = "up to date"
        elif not rows:
            overall = "not synced"
        else:
            overall = "behind"
        percents = [row["percent"] for row in rows if row["percent"] is not None]
        etas = [row["eta_s"] for row in rows if row["eta_s"] is not None]
        return {
            "state": overall,
            "percent": min(percents) if percents else None,
            "eta_s": max(etas) if etas else None,
            "lacking": max((row["lacking"] for row in rows), default=0),
            "peers": len(rows),
        }

    def sync_progress(self, since_ms: int, tenant_ids: Iterable[bytes]) -> dict[str, Any]:
        """Whether this node is caught up with every connected peer (``mindoo sync wait``):
        a peer counts unless it denied every tenant of ``tenant_ids``; it is caught up when no
        session with it runs, one ended at or after ``since_ms`` (wall clock, ms) and every
        database of its last sessions was reconciled completely. With the entries still
        lacking, the completion over the databases known, and the longest ETA."""
        tenants = set(tenant_ids)
        waiting: list[str] = []
        peers = held = lacking = 0
        etas: list[float] = []
        now = self._clock()
        for state in self._states.values():
            shared = tenants - state.unshared_tenants
            if not state.connected or not shared:
                continue
            peers += 1
            rows = [
                db_state
                for (tenant_id, name), db_state in state.databases.items()
                if tenant_id in shared and name != TENANT_LOG
            ]
            caught_up = (
                not state.syncing
                and (state.last_sync_ms or 0) >= since_ms
                and all(not r.syncing and r.missing == 0 for r in rows)
            )
            if not caught_up:
                waiting.append(state.peer_id)
            for row in rows:
                if row.held is not None:
                    held += row.held
                    lacking += row.lacking
                eta = row.completion(now)["eta_s"]
                if eta is not None:
                    etas.append(eta)
        total = held + lacking
        return {
            "done": not waiting,
            "peers": peers,
            "waiting": sorted(waiting),
            "held": held,
            "lacking": lacking,
            "percent": 100.0 if total == 0 else round(100.0 * held / total, 1),
            "eta_s": max(etas) if etas else None,
        }

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
