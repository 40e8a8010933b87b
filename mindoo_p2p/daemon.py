"""The node daemon: a `Node` kept in sync with its peers over libp2p.

One trio task tree, owned by `NodeDaemon.run`:

- the libp2p host (`net.host.PeerHost`, TCP + Noise + Yamux) listening on the configured
  addresses, with the sync protocol's stream handler (the responder side);
- the dialer, keeping bootstrap and address-book peers connected, with backoff;
- one worker per connected peer that runs sync sessions (the initiator side) whenever it is
  woken: on connect, when entries arrive or are written here (store and forward: what one peer
  sends us is offered to the others), and every ``sync_interval_s`` ± 20 % for a random peer;
- the control socket (`control.ControlServer`) for the CLI and local apps, with an event stream
  of arriving entries.

Every session is bounded (frames, sizes, wall time); a failed or stalled session is logged,
recorded in the peer's status and retried on the next wake-up. A peer that sends invalid data
is penalised; past `BAN_THRESHOLD` points it is disconnected and refused for `BAN_SECONDS`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import admission
from .address_book_file import load_address_book, save_address_book
from .admission import VerifiedEntry
from .config import NodeConfig
from .control import ControlServer, EventHub, control_socket
from .entry import TENANT_LOG, Entry
from .errors import MindooError
from .keyring import MEMBERSHIP_KEY
from .membership import MembershipLog
from .net.address_book import AddressBook
from .net.dialer import maintain_connections
from .net.framing import FrameTooLarge, TransportError
from .net.gossip import GossipError, GossipService, topic_name
from .net.host import HostConfig, PeerHost
from .net.peer_identity import to_libp2p_id
from .node import Node
from .rejection import Rejected
from .sync.auth import AuthDenied
from .sync.driver import SyncTimeout, run_initiator, run_responder
from .sync.messages import ProtocolViolation
from .sync.protocol import DEFAULT_LIMITS, SyncLimits, SyncReport
from .sync.tenant_adapter import TenantSyncAuthority, TenantSyncStore
from .tenant import Tenant

logger = logging.getLogger(__name__)

SYNC_PROTOCOL = "/mindoo/sync/1.0.0"
LOCK_FILE = "daemon.lock"
BAN_THRESHOLD = 100
BAN_SECONDS = 600.0
GOSSIP_PENALTY = 5
MAX_PEER_STATES = 4096
PUBLISH_QUEUE = 4096
REPAIR_DELAY = 0.5
"""Seconds after an entry is written here or arrives by gossip before sessions with every peer
repair what gossip may have missed (coalesced: a burst of entries costs one round)."""
CONNECT_FOLLOWER_DELAY = 2.0
"""On a new connection the peer with the smaller id starts the first session at once; the other
waits this long (it would only fetch the same entries twice)."""
FORWARD_DELAY = 0.05
"""Seconds to gather entries that arrived by reconciliation before offering them on."""


class DaemonError(MindooError):
    """The daemon cannot start (another daemon runs on this home, bad address, ...)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def daemon_lock(home: Path) -> Iterator[None]:
    """Hold the home's daemon lock; DaemonError if another daemon holds it."""
    path = home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DaemonError(
                f"another daemon is already running on {home} (pid {other})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class DatabaseSyncState:
    """What this node knows of one database's sync state with one peer."""

    caught_up_ms: int | None = None
    received: int = 0
    sent: int = 0
    missing: int = 0


@dataclass
class PeerState:
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
    wake: trio.Event = field(default_factory=trio.Event)
    sessions: int = 0

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
            "tenants": sorted(tenant_names.get(t, t.hex()) for t in self.shared_tenants),
        }


class NodeDaemon:
    """Runs a node's networking; see the module docstring."""

    def __init__(
        self,
        node: Node,
        config: NodeConfig,
        *,
        host_config: HostConfig | None = None,
        sync_limits: SyncLimits = DEFAULT_LIMITS,
        control: bool = True,
        gossip: bool = True,
        command_runner: Callable[[list[str], str, dict[str, str]], dict[str, Any]] | None = None,
    ) -> None:
        self.node = node
        self.config = config
        self._host_config = host_config
        self._sync_limits = sync_limits
        self._control_enabled = control
        self._command_runner = command_runner
        self.host: PeerHost | None = None
        self.events = EventHub()
        self.address_book = self._load_address_book()
        self.peers: dict[str, PeerState] = {}
        self._nursery: trio.Nursery | None = None
        self._local_peer = b""
        self._started = trio.Event()
        self._blocked: set[str] = set()
        self._gossip_enabled = gossip
        self.gossip: GossipService | None = None
        self._topics: dict[str, tuple[bytes, str]] = {}
        self._publish_send, self._publish_receive = trio.open_memory_channel[tuple[str, bytes]](
            PUBLISH_QUEUE
        )
        self._from_gossip = False
        self._wake_deadline: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``task_status.started(self)`` once listening."""
        with daemon_lock(self.node.home):
            host = PeerHost(self.node.peer_seed(), self.config.listen, config=self._host_config)
            self.host = host
            self._local_peer = to_libp2p_id(host.peer_id).to_bytes()
            host.set_stream_handler(SYNC_PROTOCOL, self._serve_sync)
            self.node.add_listener(self._on_entries)
            try:
                async with host.run(), trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self._gossip_enabled:
                        # Pubsub must run before any connection is made (py-libp2p defect 3).
                        await self._start_gossip(host, nursery)
                    nursery.start_soon(self._watch_connections, host)
                    nursery.start_soon(
                        lambda: maintain_connections(
                            host,
                            self.address_book,
                            self.config.bootstrap,
                            on_change=lambda _book: self._save_address_book(),
                        )
                    )
                    nursery.start_soon(self._periodic_sync)
                    if self.config.mdns:
                        await nursery.start(self._run_mdns, host)
                    if self._control_enabled:
                        server = ControlServer(
                            control_socket(self.node.home), self._handlers(), self.events
                        )
                        await nursery.start(server.serve)
                    logger.info("node %s listening on %s", host.peer_id, host.listen_addrs())
                    self._started.set()
                    task_status.started(self)
            finally:
                self.node.remove_listener(self._on_entries)
                self._nursery = None
                self.gossip = None

    @property
    def peer_id(self) -> str:
        if self.host is None:
            raise DaemonError("the daemon is not running")
        return self.host.peer_id

    def listen_addrs(self) -> list[str]:
        return self.host.listen_addrs() if self.host is not None else []

    # -- address book ------------------------------------------------------------------------
    def _load_address_book(self) -> AddressBook:
        return load_address_book(self.node.home)

    def _save_address_book(self) -> None:
        save_address_book(self.node.home, self.address_book)

    # -- peers -------------------------------------------------------------------------------
    def _peer(self, peer_id: str) -> PeerState:
        state = self.peers.get(peer_id)
        if state is None:
            if len(self.peers) >= MAX_PEER_STATES:
                self._forget_idle_peers()
            state = self.peers[peer_id] = PeerState(peer_id)
        return state

    def _forget_idle_peers(self) -> None:
        """Bound the peer table: drop disconnected peers that are not banned, oldest first."""
        now = time.monotonic()
        idle = [
            s
            for s in self.peers.values()
            if not s.connected and not s.syncing and s.banned_until <= now
        ]
        idle.sort(key=lambda s: s.last_sync_ms or 0)
        for state in idle[: max(1, len(idle) // 2)]:
            del self.peers[state.peer_id]

    async def _run_mdns(
        self, host: PeerHost, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        from .net.mdns import MdnsDiscovery, MdnsError

        if not self.config.mdns_interfaces:
            raise DaemonError(
                "mDNS needs the IP addresses of the interfaces to use (mdns_interfaces in"
                " config.toml): it never runs on every interface"
            )
        try:
            discovery = MdnsDiscovery(
                host.peer_id,
                host.listen_addrs(),
                self.config.mdns_interfaces,
                on_peer=self._on_mdns_peer,
            )
        except MdnsError as exc:
            raise DaemonError(f"cannot start mDNS: {exc}") from None
        await discovery.run(task_status=task_status)

    def _on_mdns_peer(self, peer_id: str, addrs: list[str]) -> None:
        """A peer announced itself on the LAN: dial it (not remembered: LAN announcements are
        unauthenticated until Noise checks the peer id, and must not evict the address book)."""
        if self._nursery is None or not addrs or not self._may_dial(peer_id):
            return
        if self.host is not None and self.host.is_connected(peer_id):
            return
        self._nursery.start_soon(self._connect_quietly_once, addrs[0])

    async def _connect_quietly_once(self, addr: str) -> None:
        if self.host is None:
            return
        try:
            await self.host.connect(addr)
        except TransportError as exc:
            logger.info("connecting to LAN peer %s failed: %s", addr, exc)

    def _may_dial(self, peer_id: str) -> bool:
        state = self.peers.get(peer_id)
        banned = state is not None and state.banned_until > time.monotonic()
        return not banned and peer_id not in self._blocked

    async def add_peer(self, addr: str) -> str:
        """Remember ``addr`` (a multiaddr ending in /p2p/PEER_ID) and connect to it now."""
        peer_id = self.address_book.add(addr)
        self._save_address_book()
        if self.host is None:
            raise DaemonError("the daemon is not running")
        self._blocked.discard(peer_id)
        await self.host.connect(addr)
        self._peer(peer_id).address = addr
        return peer_id

    def request_peer(self, addr: str) -> str:
        """Remember ``addr`` and connect to it in the background; returns its peer id."""
        peer_id = self.address_book.add(addr)
        self._save_address_book()
        self._blocked.discard(peer_id)
        if self._nursery is not None:
            self._nursery.start_soon(self._connect_quietly, addr)
        return peer_id

    async def _connect_quietly(self, addr: str) -> None:
        try:
            await self.add_peer(addr)
        except TransportError as exc:
            logger.info("connecting to %s failed: %s", addr, exc)

    async def block_peer(self, peer_id: str) -> None:
        """Disconnect ``peer_id`` and refuse it until `unblock_peer` (partitions in tests)."""
        self._blocked.add(peer_id)
        if self.host is not None:
            await self.host.disconnect(peer_id)

    def unblock_peer(self, peer_id: str) -> None:
        self._blocked.discard(peer_id)

    async def _watch_connections(self, host: PeerHost) -> None:
        assert self._nursery is not None
        for peer_id in host.connected_peers():
            self._on_connected(peer_id)
        async for event in host.connection_events:
            if event.connected:
                if not self._may_dial(event.peer_id):
                    await host.disconnect(event.peer_id)
                    continue
                self._on_connected(event.peer_id)
            else:
                state = self._peer(event.peer_id)
                state.connected = False
                state.shared_tenants.clear()
                state.unshared_tenants.clear()
                self._refresh_admission(event.peer_id)
                state.wake.set()  # lets its worker notice and stop

    def _on_connected(self, peer_id: str) -> None:
        assert self._nursery is not None
        state = self._peer(peer_id)
        if state.connected:
            return
        state.connected = True
        state.wake = trio.Event()
        self._nursery.start_soon(self._peer_worker, peer_id)
        if self.host is None or self.host.peer_id < peer_id:
            state.wake.set()  # sync at once
        else:
            self._nursery.start_soon(self._wake_later, state, state.sessions)
        self.events.publish({"type": "peer", "peer_id": peer_id, "connected": True})

    async def _wake_later(self, state: PeerState, sessions_before: int) -> None:
        await trio.sleep(CONNECT_FOLLOWER_DELAY)
        if state.connected and state.sessions == sessions_before:  # the peer did not sync
            state.wake.set()

    def wake_peers(self, except_peer: str | None = None) -> None:
        """Ask every connected peer's worker to run a session (coalesced)."""
        for peer_id, state in self.peers.items():
            if state.connected and peer_id != except_peer:
                state.wake.set()

    async def _peer_worker(self, peer_id: str) -> None:
        state = self._peer(peer_id)
        while True:
            await state.wake.wait()
            if not state.connected or self.host is None or not self.host.is_connected(peer_id):
                state.connected = False
                return
            state.wake = trio.Event()
            await self.sync_with_peer(peer_id)

    async def _periodic_sync(self) -> None:
        interval = self.config.sync_interval_s
        while True:
            await trio.sleep(interval * random.uniform(0.8, 1.2))
            connected = [p for p, s in self.peers.items() if s.connected]
            if connected:
                self.peers[random.choice(connected)].wake.set()

    def _penalize(self, peer: bytes | str, points: int, reason: str) -> None:
        peer_id = peer if isinstance(peer, str) else _peer_id_text(peer)
        state = self._peer(peer_id)
        state.penalty += points
        state.last_error = f"penalised {points}: {reason}"
        logger.warning("peer %s penalised %d points: %s", peer_id, points, reason)
        if state.penalty >= BAN_THRESHOLD and self._nursery is not None:
            state.banned_until = time.monotonic() + BAN_SECONDS
            logger.warning("disconnecting peer %s for %.0f s", peer_id, BAN_SECONDS)
            if self.host is not None:
                self._nursery.start_soon(self.host.disconnect, peer_id)

    # -- gossip ------------------------------------------------------------------------------
    async def _start_gossip(self, host: PeerHost, nursery: trio.Nursery) -> None:
        gossip = GossipService(
            host,
            on_entry=self._on_gossip_entry,
            validate=self._validate_gossip,
            on_announce=self._on_announce,
            admit=self._admit,
            on_invalid=self._on_gossip_invalid,
        )
        await nursery.start(gossip.run)
        self.gossip = gossip
        await self._refresh_topics()
        nursery.start_soon(self._publisher)

    def _topic(self, tenant: Tenant, database: str) -> str:
        secret = tenant.keyring.current(MEMBERSHIP_KEY).secret
        return topic_name(secret, tenant.id, database)

    async def _refresh_topics(self) -> None:
        """Subscribe to the topic of every (tenant, database) held here."""
        if self.gossip is None:
            return
        for tenant in self.node.tenants():
            for database in tenant.databases():
                topic = self._topic(tenant, database)
                if topic not in self._topics:
                    self._topics[topic] = (tenant.id, database)
                    await self.gossip.subscribe(topic)

    def _admit(self, peer_id: str, topic: str) -> bool:
        """Gossip only with peers that proved, in a sync session, that they share the tenant."""
        found = self._topics.get(topic)
        state = self.peers.get(peer_id)
        return found is not None and state is not None and found[0] in state.shared_tenants

    def _refresh_admission(self, peer_id: str) -> None:
        if self.gossip is not None:
            self.gossip.refresh_admission(peer_id)

    def _validate_gossip(self, raw: bytes) -> VerifiedEntry | bool | None:
        """The admission pipeline for one gossiped entry (`admission.check_gossip`: decode,
        signature, membership against the tenant's immutable snapshot; tenant-log entries
        travel by reconciliation only). May run in a worker thread: it reads only immutable
        snapshots. Returns the `VerifiedEntry` (handed to `_on_gossip_entry` as it is), False
        when the forwarder misbehaved (it is scored), None when the entry is refused through
        nobody's fault (`RejectionKind.sender_at_fault`), e.g. an author revoked after the
        forwarder stored it."""
        checked = admission.check_gossip(raw, self._membership_of)
        if isinstance(checked, Rejected):
            return False if checked.sender_at_fault else None
        return checked

    def _membership_of(self, tenant_id: bytes) -> MembershipLog | None:
        tenant = self.node.tenant_or_none(tenant_id)
        return tenant.membership if tenant is not None else None

    async def _on_gossip_entry(self, item: VerifiedEntry | bytes, peer_id: str) -> None:
        """Store a gossiped entry: the `VerifiedEntry` the validator made (not decoded or
        verified again; membership is checked again against the snapshot of now), or raw
        bytes when the validator's result was not kept."""
        self._from_gossip = True
        try:
            result = self.node.ingest([item])
        finally:
            self._from_gossip = False
        if not result.added:
            return
        entry = (
            item.entry if isinstance(item, VerifiedEntry) else self.node.store.get(result.added[0])
        )
        if entry is not None and self.node.store.missing(entry.deps):
            # A gap: its causal parents never reached us. Reconcile with the sender.
            self._peer(peer_id).wake.set()

    def _on_announce(self, entry_id: bytes, peer_id: str) -> None:
        if not self.node.store.has(entry_id):
            self._peer(peer_id).wake.set()

    def _on_gossip_invalid(self, peer_id: str, reason: str) -> None:
        self._penalize(peer_id, GOSSIP_PENALTY, f"invalid gossip: {reason}")

    async def _publisher(self) -> None:
        async for topic, raw in self._publish_receive:
            gossip = self.gossip
            if gossip is None:
                continue
            try:
                await gossip.publish_entry(topic, raw)
            except (GossipError, TransportError) as exc:
                logger.info("gossip publish failed (reconciliation will deliver it): %s", exc)

    def _publish(self, entries: list[Entry]) -> None:
        if self.gossip is None:
            return
        for entry in entries:
            if entry.database == TENANT_LOG:
                continue
            tenant = self.node.tenant_or_none(entry.tenant_id)
            if tenant is None:
                continue
            try:
                self._publish_send.send_nowait((self._topic(tenant, entry.database), entry.raw))
            except trio.WouldBlock:
                logger.info("gossip queue full: reconciliation will deliver the rest")
                return

    def _schedule_wake(self, delay: float) -> None:
        """Wake every peer worker after ``delay`` seconds (coalesced)."""
        if self._nursery is None:
            return
        deadline = trio.current_time() + delay
        if self._wake_deadline is not None and self._wake_deadline <= deadline:
            return
        self._wake_deadline = deadline
        self._nursery.start_soon(self._wake_at, deadline)

    async def _wake_at(self, deadline: float) -> None:
        await trio.sleep_until(deadline)
        if self._wake_deadline == deadline:
            self._wake_deadline = None
            self.wake_peers()

    # -- sessions ----------------------------------------------------------------------------
    async def sync_with_peer(self, peer_id: str) -> list[SyncReport]:
        """Run one session per tenant this node holds with ``peer_id`` (initiator side)."""
        state = self._peer(peer_id)
        reports = []
        state.syncing = True
        try:
            for tenant in self.node.tenants():
                if tenant.id in state.unshared_tenants:
                    continue
                report = await self._sync_tenant(peer_id, tenant, state)
                if report is not None:
                    reports.append(report)
        finally:
            state.syncing = False
            state.progress = {}
        return reports

    async def _sync_tenant(
        self, peer_id: str, tenant: Tenant, state: PeerState
    ) -> SyncReport | None:
        host = self.host
        if host is None or not host.is_connected(peer_id):
            return None
        try:
            stream = await host.open_stream(peer_id, SYNC_PROTOCOL)
        except TransportError as exc:
            state.last_error = f"cannot open a sync stream: {exc}"
            return None
        try:
            report = await run_initiator(
                stream,
                self._local_peer,
                to_libp2p_id(peer_id).to_bytes(),
                TenantSyncAuthority(tenant),
                TenantSyncStore(self.node, tenant),
                on_progress=lambda live: self._progress(state, live),
                on_penalty=self._penalize,
                limits=self._sync_limits,
            )
        except AuthDenied:
            state.unshared_tenants.add(tenant.id)
            if tenant.id in state.shared_tenants:
                state.shared_tenants.discard(tenant.id)
                self._refresh_admission(peer_id)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return None
        except (ProtocolViolation, SyncTimeout, TransportError) as exc:
            if isinstance(exc, FrameTooLarge):
                self._penalize(peer_id, BAN_THRESHOLD, f"oversized frame: {exc}")
            state.last_error = f"sync of {tenant.name} failed: {exc}"
            logger.info("sync with %s failed: %s", peer_id, exc)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return None
        with trio.CancelScope(shield=True):
            await stream.close()
        self._record(state, tenant, report)
        return report

    async def _serve_sync(self, stream: Any) -> None:
        peer_id = stream.remote_peer_id
        state = self._peer(peer_id)
        if not self._may_dial(peer_id):
            return
        authorities = {
            tenant.id: (TenantSyncAuthority(tenant), TenantSyncStore(self.node, tenant))
            for tenant in self.node.tenants()
        }
        try:
            report = await run_responder(
                stream,
                self._local_peer,
                to_libp2p_id(peer_id).to_bytes(),
                authorities,
                on_penalty=self._penalize,
                limits=self._sync_limits,
            )
        except (AuthDenied, ProtocolViolation, SyncTimeout) as exc:
            state.last_error = f"inbound sync failed: {exc}"
            return
        except FrameTooLarge as exc:
            self._penalize(peer_id, BAN_THRESHOLD, f"oversized frame: {exc}")
            raise
        if report is not None:
            tenant = self.node.tenant(report.tenant_id)
            self._record(state, tenant, report)

    def _progress(self, state: PeerState, live: SyncReport) -> None:
        state.progress = {"received": live.received, "sent": live.sent}

    def _record(self, state: PeerState, tenant: Tenant, report: SyncReport) -> None:
        at = now_ms()
        state.last_sync_ms = at
        state.sessions += 1
        state.last_error = None
        if tenant.id not in state.shared_tenants:
            state.shared_tenants.add(tenant.id)
            self._refresh_admission(state.peer_id)
        for name, db_report in report.databases.items():
            db_state = state.databases.setdefault((tenant.id, name), DatabaseSyncState())
            db_state.received += db_report.received
            db_state.sent += db_report.sent
            db_state.missing = db_report.unavailable
            if db_report.unavailable == 0 and db_report.rejected == 0:
                db_state.caught_up_ms = at

    # -- local events ------------------------------------------------------------------------
    def _on_entries(self, entries: list[Entry], local: bool) -> None:
        """Entries were stored: tell subscribers, and offer them to the peers."""
        if self.events.subscriber_count:
            self._publish_events(entries, local)
        if any(entry.database == TENANT_LOG for entry in entries):
            # Membership changed: peers denied before may be members now.
            for state in self.peers.values():
                state.unshared_tenants.clear()
        if self._nursery is None:
            return
        if self.gossip is not None:
            held = set(self._topics.values())
            fresh = {(e.tenant_id, e.database) for e in entries if e.database != TENANT_LOG}
            if fresh - held:
                self._nursery.start_soon(self._refresh_topics)
        if local:
            self._publish(entries)
        if self.gossip is None:
            self._schedule_wake(0.0)
        elif local or self._from_gossip:
            # Gossip carries it at once; sessions a little later repair what gossip missed on
            # any hop (peers not yet in the mesh, dropped messages).
            self._schedule_wake(REPAIR_DELAY)
        else:
            # Arrived by reconciliation: offer it on to the other peers (store and forward).
            self._schedule_wake(FORWARD_DELAY)

    def _publish_events(self, entries: list[Entry], local: bool) -> None:
        names = {t.id: t.name for t in self.node.tenants()}
        for entry in entries:
            self.events.publish(
                {
                    "type": "entry",
                    "origin": "local" if local else "peer",
                    "tenant": entry.tenant_id.hex(),
                    "tenant_name": names.get(entry.tenant_id),
                    "database": entry.database,
                    "document_id": entry.document_id.hex(),
                    "entry_id": entry.id.hex(),
                    "kind": entry.kind.name.lower(),
                    "timestamp_ms": entry.timestamp_ms,
                }
            )

    # -- status and control ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        names = {t.id: t.name for t in self.node.tenants()}
        databases = []
        for tenant in self.node.tenants():
            for name in tenant.databases():
                stats = tenant.open_db(name).stats()
                caught_up = []
                missing = 0
                for peer_id, state in self.peers.items():
                    db_state = state.databases.get((tenant.id, name))
                    if db_state is None:
                        continue
                    missing = max(missing, db_state.missing)
                    if db_state.caught_up_ms is not None:
                        caught_up.append({"peer_id": peer_id, "at_ms": db_state.caught_up_ms})
                databases.append(
                    {
                        "tenant": tenant.name,
                        "tenant_id": tenant.id_hex,
                        "database": name,
                        "entries": stats["entries"],
                        "documents": stats["documents"],
                        "missing": missing,
                        "caught_up": caught_up,
                    }
                )
        return {
            "peer_id": self.host.peer_id if self.host else None,
            "listen_addrs": self.listen_addrs(),
            "home": str(self.node.home),
            "entries": self.node.store.count(),
            "peers": [s.to_dict(names) for s in sorted(self.peers.values(), key=_by_peer)],
            "databases": databases,
        }

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        async def ping(params: dict[str, Any]) -> str:
            return "pong"

        async def status(params: dict[str, Any]) -> dict[str, Any]:
            return self.status()

        async def peers_add(params: dict[str, Any]) -> dict[str, Any]:
            addr = params.get("addr")
            if not isinstance(addr, str):
                raise ValueError("peers.add needs an 'addr' string")
            try:
                peer_id = await self.add_peer(addr)
            except TransportError as exc:
                return {"peer_id": None, "added": True, "connected": False, "error": str(exc)}
            return {"peer_id": peer_id, "added": True, "connected": True}

        async def sync_now(params: dict[str, Any]) -> dict[str, Any]:
            self.wake_peers()
            return {"woken": sum(1 for s in self.peers.values() if s.connected)}

        async def run_command(params: dict[str, Any]) -> dict[str, Any]:
            argv = params.get("argv")
            cwd = params.get("cwd")
            if self._command_runner is None:
                raise ValueError("this daemon does not run CLI commands")
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError("'argv' must be a list of strings")
            if not isinstance(cwd, str):
                raise ValueError("'cwd' must be a string")
            env = params.get("env") or {}
            if not isinstance(env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items()
            ):
                raise ValueError("'env' must map names to strings")
            return self._command_runner(argv, cwd, env)

        return {
            "ping": ping,
            "status": status,
            "peers.add": peers_add,
            "sync": sync_now,
            "cli": run_command,
        }


def _by_peer(state: PeerState) -> tuple[bool, str]:
    return (not state.connected, state.peer_id)


def _peer_id_text(peer: bytes) -> str:
    from libp2p.peer.id import ID

    with suppress(Exception):
        return str(ID(peer).to_base58())
    return peer.hex()
