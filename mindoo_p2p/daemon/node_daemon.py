"""`NodeDaemon`: the composition root that keeps a `Node` in sync with its peers over libp2p.

It builds the parts, wires them together and owns their tasks; the decisions live in the parts:

=====================  =========================================================================
part                   responsibility
=====================  =========================================================================
`PeerTable`            per-peer state, penalties, bans, blocks, the table's bound (pure)
`SyncScheduler`        when to run sessions with which peer (pure, injected clock; `run_wakes`
                       is its trio task)
`PeerWorkers`          the connection watcher: one session worker per connected peer, with the
                       connection's keepalive
`SyncSessions`         both sides of a session, and what follows one that ended (restore
                       mark, peer table, `HeldLedger`)
`StoredEntries`        stored entries as `EntryEvent`s with their origin (`EntryEventQueue`,
                       bounded, never blocking the writer) to peers, gossip and subscribers
`NodeAccess`           the Node serialised: long work in a worker thread, short work on the loop
`GossipBridge`         topics, admission, validation, delivery, publishing
`PeerDirectory`        the address book and the peer commands; mDNS finds
`ConnectionRequests`   dials and disconnects asked for by callbacks, carried out by one task
`PeerHost`             the libp2p host (TCP + Noise + Yamux); `SyncSessions.serve` handles its
                       sync streams
`ControlServer`        the control socket (`control_handlers`), with an event stream
`Activity`             what happened, as events (`EventHub`) and Prometheus metrics
`DurabilityCounter`    the status's durability rows, counted at start and on large arrivals
                       in a worker thread (progress in `WorkProgress`: ``busy`` in the status)
`LoopThread`           calls from a forwarded command's worker thread carried to the loop
`long_work`            imports in batches and forwarded commands, in a worker thread
HTTP server            the local HTTP API, web page and /metrics (`mindoo_p2p.http`), when the
                       config names a port
=====================  =========================================================================

One trio task tree, owned by `run`: the host; gossip; the wake loop; one consumer of entry
events; the store watch; one task that carries out connection requests in its own nursery; the
connection watcher, which runs one worker per connected peer in its own nursery; the dialer;
mDNS; the control server; the HTTP server; the event-loop lag probe. Nothing is spawned from a
callback: callbacks only feed the pure parts or put a request on a bounded channel.

Every session is bounded (frames, sizes, wall time); a failed or stalled session is logged,
recorded in the peer's status and retried on the next wake-up. A peer that sends invalid data
is penalised; past `BAN_THRESHOLD` points it is disconnected and refused for `BAN_SECONDS`.
Forwarded CLI commands and large ingests run in a worker thread holding the Node, so the loop
keeps serving peers and ``status`` meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from functools import partial
from typing import Any

import trio

from ..config import NodeConfig
from ..control import ControlServer, EventHub, control_socket
from ..crypto.signing import start_verify_workers
from ..durability import DurabilityLedger
from ..entry import Entry
from ..http.endpoint import HttpEndpoint
from ..http.metrics import DaemonMetrics
from ..net.address_book import AddressBook
from ..net.dialer import maintain_connections
from ..net.gossip import GossipService
from ..net.host import HostConfig, PeerHost
from ..net.keepalive import DEAD_AFTER, PING_INTERVAL
from ..node import Node
from ..store import AppendResult
from ..sync.auth import ProofGate
from ..sync.protocol import DEFAULT_LIMITS, SyncLimits, SyncReport
from ..tenant import Tenant
from .activity import Activity
from .connection_requests import ConnectionRequests, Disconnect
from .control_handlers import control_handlers
from .durability_counter import DurabilityCounter
from .entry_events import ENTRY_EVENT_QUEUE, EntryEventQueue
from .gossip_bridge import GossipBridge
from .held_ledger import HeldLedger
from .home_lock import LOCK_FILE, DaemonError, daemon_lock
from .long_work import IMPORT_BATCH, CommandRunner, import_in_batches, run_forwarded
from .loop_thread import LoopThread
from .node_access import NodeAccess
from .peer_directory import PeerDirectory
from .peer_table import PeerState, PeerTable
from .peer_workers import PeerWorkers
from .scheduler import SyncScheduler, run_wakes
from .startup_heap import STARTUP_HEAP
from .status import StoreStatus, daemon_status, read_store
from .store_watch import StoreWatch, watch_store
from .stored_entries import ConflictsKnown, StoredEntries
from .sync_sessions import SYNC_PROTOCOL, SyncSessions
from .view_stream import view_streams
from .work_progress import WorkProgress

logger = logging.getLogger(__name__)

STOP_GRACE = 0.1
"""Seconds between a stop request and the shutdown (the control reply goes out first)."""


def now_ms() -> int:
    return int(time.time() * 1000)


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
        command_runner: CommandRunner | None = None,
        entry_event_capacity: int = ENTRY_EVENT_QUEUE,
        keepalive: tuple[float, float] | None = (PING_INTERVAL, DEAD_AFTER),
        freeze_startup_heap: bool = False,
    ) -> None:
        """``keepalive``: (seconds between pings, seconds without an answer after which the
        path is dead), or None for no keepalive. ``freeze_startup_heap``: once started, move
        the process's objects out of the garbage collector's full scans (`STARTUP_HEAP`): a
        process-wide change, for a process that is the daemon (`mindoo node run`), not for
        an application or a test that runs a daemon among its own objects."""
        self.node = node
        self._freeze_startup_heap = freeze_startup_heap
        self.config = config
        self._keepalive = keepalive
        self._entry_event_capacity = entry_event_capacity
        self._host_config = host_config
        self._sync_limits = sync_limits
        self._control_enabled = control
        self._gossip_enabled = gossip
        self._command_runner = command_runner
        self.host: PeerHost | None = None
        self.events = EventHub()
        self.metrics = DaemonMetrics(
            entries_held=lambda: node.store.count(),
            connected_peers=lambda: len(self.peer_table.connected_peers()),
        )
        self.activity = Activity(self.events, self.metrics)
        self.http: HttpEndpoint | None = None
        """The HTTP API while it runs (set by `mindoo_p2p.http.server.serve_http`)."""
        self.peer_table = PeerTable()
        self.directory = PeerDirectory(node.home, self.peer_table)
        """The address book and the peer commands (`add_peer`, `name_peer`, ...)."""
        self._proof_gate = ProofGate()
        """Toward whom sessions start: peers we dialled, or that proved the tenant first."""
        self.held = HeldLedger(node.home)
        """What peers are known to hold (`mindoo_p2p.durability`), saved after every change."""
        self.work = WorkProgress()
        """Long background work and its progress (``busy`` in the status)."""
        self.durability_count = DurabilityCounter(node, self.held.ledger, self.work)
        """The status's durability rows, counted off the status path (replaceable before
        `run`: tests inject a slow count)."""
        self._loop = LoopThread()
        self._conflicts_known: ConflictsKnown = {}
        # The parts that live while `run` runs (None before and after):
        self._access: NodeAccess | None = None
        self._scheduler: SyncScheduler | None = None
        self._sessions: SyncSessions | None = None
        self._workers: PeerWorkers | None = None
        self._bridge: GossipBridge | None = None
        self._requests: ConnectionRequests | None = None
        self._stop_requested: trio.Event | None = None
        self._stopped: trio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``task_status.started(self)`` once listening."""
        node = self.node
        with daemon_lock(node.home):
            host = PeerHost(node.peer_seed(), self.config.listen, config=self._host_config)
            self.host = host
            # Banned or blocked peers are refused right after Noise, in both directions.
            host.set_peer_gate(self.peer_table.may_dial)
            requests = self._requests = ConnectionRequests()
            self.directory.attach(host, requests)
            self._loop.attach()
            access = self._access = NodeAccess(node)
            scheduler = self._scheduler = SyncScheduler(
                sync_interval_s=self.config.sync_interval_s, gossip=self._gossip_enabled
            )
            sessions = self._sessions = SyncSessions(
                node,
                host,
                access,
                peer_table=self.peer_table,
                scheduler=scheduler,
                activity=self.activity,
                proof_gate=self._proof_gate,
                held=self.held,
                limits=self._sync_limits,
                penalize=self._penalize,
                refresh_admission=self._refresh_admission,
            )
            workers = self._workers = PeerWorkers(
                host,
                self.peer_table,
                scheduler,
                self.activity,
                sync_with_peer=self.sync_with_peer,
                on_disconnected=self._forget_proofs,
                keepalive=self._keepalive,
            )
            store = node.store
            watch = StoreWatch(store.last_arrival())
            entry_events = EntryEventQueue(self._entry_event_capacity)
            stored = StoredEntries(
                node,
                access,
                entry_events,
                watch,
                events=self.events,
                activity=self.activity,
                peer_table=self.peer_table,
                scheduler=scheduler,
                conflicts_known=self._conflicts_known,
            )
            host.set_stream_handler(SYNC_PROTOCOL, sessions.serve)
            node.add_listener(stored.on_entries)
            self._stop_requested, self._stopped = trio.Event(), trio.Event()
            try:
                async with host.run(), trio.open_nursery() as nursery:
                    nursery.start_soon(self._stop_when_asked, nursery.cancel_scope)
                    if self._gossip_enabled:
                        # Pubsub must run before any connection is made (py-libp2p defect 3).
                        bridge = GossipBridge(
                            access,
                            self.peer_table,
                            wake=scheduler.wake,
                            penalize=self._penalize,
                            metrics=self.metrics,
                        )
                        await nursery.start(bridge.run, host)
                        self._bridge = stored.bridge = bridge
                    await nursery.start(run_wakes, scheduler, workers.wake)
                    nursery.start_soon(stored.consume)
                    nursery.start_soon(self.durability_count.run)
                    # The first large sync should not wait for the workers' start-up.
                    nursery.start_soon(partial(trio.to_thread.run_sync, start_verify_workers))
                    nursery.start_soon(
                        partial(watch_store, busy=lambda: access.in_use),
                        watch, store.last_arrival, store.raws_after, stored.stored_elsewhere,
                    )  # fmt: skip
                    nursery.start_soon(requests.run, self.directory.carry_out)
                    nursery.start_soon(workers.watch)
                    nursery.start_soon(
                        lambda: maintain_connections(
                            host,
                            self.address_book,
                            self.config.bootstrap,
                            on_change=lambda _book: self.directory.save(),
                        )
                    )
                    if self.config.mdns:
                        await nursery.start(
                            self.directory.run_mdns, host, self.config.mdns_interfaces
                        )
                    if self._control_enabled:
                        server = ControlServer(
                            control_socket(node.home),
                            control_handlers(self),
                            self.events,
                            streams=view_streams(self.access),
                        )
                        await nursery.start(server.serve)
                    if self.config.http_port is not None:
                        from ..http.server import serve_http

                        await nursery.start(serve_http, self)
                    nursery.start_soon(self.metrics.run_lag_probe)
                    logger.info("node %s listening on %s", host.peer_id, host.listen_addrs())
                    if self._freeze_startup_heap:
                        # The start-up objects live as long as the process: out of the
                        # collector's full scans (a catch-up sets one off every second or so).
                        STARTUP_HEAP.freeze_once()
                    task_status.started(self)
            finally:
                self._stopped.set()
                self.http = None
                node.remove_listener(stored.on_entries)
                entry_events.close()
                requests.close()
                self.directory.detach()
                self._requests = self._bridge = None
                workers.clear()

    def stop(self) -> None:
        """Ask a running daemon to stop: `run` returns shortly after (a control reply in
        flight still goes out). No-op when it is not running."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def wait_stopped(self) -> None:
        """Return once `run` has ended (at once when it never started)."""
        if self._stopped is not None:
            await self._stopped.wait()

    async def _stop_when_asked(self, scope: trio.CancelScope) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        logger.info("stop requested: stopping")
        await trio.sleep(STOP_GRACE)
        scope.cancel()

    # -- what it is --------------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        if self.host is None:
            raise DaemonError("the daemon is not running")
        return self.host.peer_id

    def listen_addrs(self) -> list[str]:
        return self.host.listen_addrs() if self.host is not None else []

    @property
    def peers(self) -> dict[str, PeerState]:
        """Peer id -> what this daemon knows of it (the peer table's states)."""
        return self.peer_table.states

    @property
    def address_book(self) -> AddressBook:
        return self.directory.address_book

    @property
    def ledger(self) -> DurabilityLedger:
        """The durability ledger (`HeldLedger.ledger`)."""
        return self.held.ledger

    @property
    def gossip(self) -> GossipService | None:
        """The running gossip service, None when gossip is off or not running."""
        return self._bridge.service if self._bridge is not None else None

    @property
    def access(self) -> NodeAccess:
        """The serialised access to the Node (while running)."""
        if self._access is None:
            raise DaemonError("the daemon is not running")
        return self._access

    @property
    def runs_commands(self) -> bool:
        """Whether this daemon runs forwarded CLI commands (it was given a runner)."""
        return self._command_runner is not None

    # -- peers (the user's commands: `PeerDirectory`) ----------------------------------------
    async def add_peer(self, addr: str) -> str:
        """Remember ``addr`` (a multiaddr ending in /p2p/PEER_ID) and connect to it now."""
        return await self.directory.add(addr)

    def request_peer(self, addr: str) -> str:
        """Remember ``addr`` and connect to it in the background; returns its peer id. Safe
        from a forwarded command's worker thread."""
        return self._loop.call(lambda: self.directory.request_add(addr))

    def name_peer(self, peer: str, name: str | None) -> str:
        """Name the address-book peer ``peer`` (a name, id or id prefix); its peer id. Safe
        from a forwarded command's worker thread."""
        return self._loop.call(lambda: self.directory.name(peer, name))

    def forget_peer(self, peer: str) -> str:
        """Remove ``peer`` (a name, id or id prefix) from the address book and close its
        connection: it is not dialed again (it may still dial us). Its peer id. Safe from a
        forwarded command's worker thread."""
        return self._loop.call(lambda: self.directory.forget(peer))

    async def block_peer(self, peer_id: str) -> None:
        """Disconnect ``peer_id`` and refuse it until `unblock_peer` (partitions in tests)."""
        await self.directory.block(peer_id)

    def unblock_peer(self, peer_id: str) -> None:
        self.directory.unblock(peer_id)

    def wake_peers(self, except_peer: str | None = None) -> int:
        """Ask every connected peer's worker to run a session (coalesced); how many peers
        were asked."""
        peers = [p for p in self.peer_table.connected_peers() if p != except_peer]
        if self._workers is not None:
            self._workers.wake_all(peers)
        return len(peers)

    def _penalize(self, peer: bytes | str, points: int, reason: str) -> None:
        peer_id = peer if isinstance(peer, str) else _peer_id_text(peer)
        logger.warning("peer %s penalised %d points: %s", peer_id, points, reason)
        self.activity.penalty(peer_id, points, reason)
        if self.peer_table.penalize(peer_id, points, reason) and self._requests is not None:
            logger.warning("disconnecting peer %s for %.0f s", peer_id, self.peer_table.ban_seconds)
            self.directory.request(Disconnect(peer_id))

    def _refresh_admission(self, peer_id: str) -> None:
        if self._bridge is not None:
            self._bridge.refresh_admission(peer_id)

    def _forget_proofs(self, peer_id: str) -> None:
        """A peer disconnected: what it proved goes (sessions and gossip admission)."""
        self._proof_gate.forget(peer_id)
        self._refresh_admission(peer_id)

    # -- sessions (`SyncSessions`) -----------------------------------------------------------
    async def sync_with_peer(self, peer_id: str) -> list[SyncReport]:
        """Run one session per tenant this node holds with ``peer_id`` (initiator side), for
        the tenants it may prove toward that peer (`sync.auth.ProofGate`: a peer we dialled,
        or one that proved the tenant to us first). None while the daemon is not running."""
        sessions = self._sessions
        reports: list[SyncReport] = []
        if sessions is None or self.host is None:
            return reports
        async with sessions.initiating(peer_id):
            for tenant in sessions.tenants_to_prove(peer_id):
                report = await self._sync_tenant(peer_id, tenant)
                if report is not None:
                    reports.append(report)
        return reports

    async def _sync_tenant(self, peer_id: str, tenant: Tenant) -> SyncReport | None:
        assert self._sessions is not None
        return await self._sessions.sync_tenant(peer_id, tenant)

    # -- long work ---------------------------------------------------------------------------
    async def import_entries(self, raws: Sequence[Entry | bytes]) -> AppendResult:
        """Ingest ``raws`` (a bundle's entries, say) in a worker thread, `IMPORT_BATCH` at a
        time, letting go of the Node between batches so sessions and ``status`` go on."""
        return await import_in_batches(self.access, raws)

    async def run_command(self, argv: list[str], cwd: str, env: dict[str, str]) -> dict[str, Any]:
        """Run a forwarded CLI command with the ``command_runner``, in a worker thread that
        holds the Node (the loop keeps serving peers and ``status``)."""
        if self._command_runner is None:
            raise ValueError("this daemon does not run CLI commands")
        return await run_forwarded(self.access, self._command_runner, argv, cwd, env)

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The daemon's state: this node, its peers, and its databases' sync state.

        Reads the peer table and the entry store only (LMDB snapshots: it never waits for the
        Node). Safe from a forwarded command's worker thread (it runs on the loop)."""
        return self._loop.call(lambda: self._status_from(self._read_store()))

    async def status_off_loop(self) -> dict[str, Any]:
        """`status`, with its store reads (a count of every database's documents) in a worker
        thread, so a large store does not hold up the event loop."""
        stored = await trio.to_thread.run_sync(self._read_store)
        return self._status_from(stored)

    def _read_store(self) -> StoreStatus:
        counter = self.durability_count
        return read_store(self.node, counter.rows, self.work.rows, lambda: counter.error)

    def _status_from(self, stored: StoreStatus) -> dict[str, Any]:
        return daemon_status(
            stored,
            self.peer_table,
            home=str(self.node.home),
            peer_id=self.host.peer_id if self.host else None,
            listen_addrs=self.listen_addrs(),
        )

    def sync_progress(self, since_ms: int) -> dict[str, Any]:
        """Whether this node is caught up with its connected peers by sessions that ended at
        or after ``since_ms`` (`PeerTable.sync_progress`): what ``mindoo sync wait`` polls
        after waking every peer (``sync_now``)."""
        return self.peer_table.sync_progress(since_ms, (t.id for t in self.node.tenants()))

    # -- the HTTP API ------------------------------------------------------------------------
    @property
    def http_url(self) -> str | None:
        """The HTTP API's base URL while it runs (``http://127.0.0.1:PORT``)."""
        return self.http.base_url if self.http is not None else None

    def http_login(self) -> dict[str, Any]:
        """`HttpEndpoint.login` (a one-time link to the web page); DaemonError when the HTTP
        API is off. Safe from a forwarded command's worker thread (it runs on the loop)."""
        return self._loop.call(lambda: self._http_endpoint().login())

    def http_info(self) -> dict[str, Any]:
        """`HttpEndpoint.info`; DaemonError when the HTTP API is off."""
        return self._http_endpoint().info()

    def _http_endpoint(self) -> HttpEndpoint:
        if self.http is None:
            raise DaemonError(
                "the HTTP API is off on this node (http.enabled = false in config.toml, or"
                " --no-http)"
            )
        return self.http


def _peer_id_text(peer: bytes) -> str:
    from libp2p.peer.id import ID

    with suppress(Exception):
        return str(ID(peer).to_base58())
    return peer.hex()


__all__ = [
    "IMPORT_BATCH",
    "LOCK_FILE",
    "STOP_GRACE",
    "SYNC_PROTOCOL",
    "CommandRunner",
    "DaemonError",
    "NodeDaemon",
    "daemon_lock",
    "now_ms",
]
