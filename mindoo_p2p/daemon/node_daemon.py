"""`NodeDaemon`: the composition root that keeps a `Node` in sync with its peers over libp2p.

It wires small parts together and owns their tasks; the decisions live in the parts:

==================  ============================================================================
part                responsibility
==================  ============================================================================
`PeerTable`         per-peer state, penalties, bans, blocks, the table's bound (pure)
`SyncScheduler`     when to run sessions with which peer (pure, injected clock; `run_wakes`
                    is its trio task)
`EntryEventQueue`   stored entries as events with their origin, bounded, never blocking the
                    writer (overflow coalesces into one `Resync`)
`NodeAccess`        the Node serialised: long work in a worker thread, short work on the loop
`GossipBridge`      topics, admission, validation, delivery, publishing
`PeerHost`          the libp2p host (TCP + Noise + Yamux), the sync stream handler
`ControlServer`     the control socket for the CLI and local apps, with an event stream
`Activity`          what happened, as events (`EventHub`) and Prometheus metrics
HTTP server         the local HTTP API, web page and /metrics (`mindoo_p2p.http`), when the
                    config names a port
==================  ============================================================================

One trio task tree, owned by `run`: the host; gossip; the wake loop; one consumer of entry
events; one task that carries out connection requests (dials asked for by mDNS or
`request_peer`, disconnects of banned peers) in its own nursery; the connection watcher, which
runs one worker per connected peer in its own nursery (a worker runs one session per shared
tenant whenever it is woken); the dialer; mDNS; the control server; the HTTP server; the
event-loop lag probe. Nothing is spawned from a callback: callbacks only feed the pure parts
or put a request on a bounded channel.

Every session is bounded (frames, sizes, wall time); a failed or stalled session is logged,
recorded in the peer's status and retried on the next wake-up. A peer that sends invalid data
is penalised; past `BAN_THRESHOLD` points it is disconnected and refused for `BAN_SECONDS`.
Forwarded CLI commands and large ingests run in a worker thread holding the Node, so the loop
keeps serving peers and ``status`` meanwhile.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..address_book_file import load_address_book, save_address_book
from ..config import NodeConfig
from ..control import ControlServer, EventHub, control_socket
from ..durability import DurabilityCache, load_ledger, save_ledger
from ..entry import TENANT_LOG, Entry
from ..errors import MindooError
from ..http.endpoint import HttpEndpoint
from ..http.metrics import DaemonMetrics
from ..net.address_book import AddressBook
from ..net.dialer import maintain_connections
from ..net.framing import FramedStream, FrameTooLarge, TransportError
from ..net.gossip import GossipService
from ..net.host import HostConfig, PeerHost
from ..net.keepalive import DEAD_AFTER, PING_INTERVAL, Liveness, keep_alive
from ..net.peer_identity import to_libp2p_id
from ..node import Node
from ..store import AppendResult, Rejected
from ..sync.auth import AuthDenied, ProofGate
from ..sync.driver import SyncTimeout, run_initiator, run_responder
from ..sync.messages import ProtocolViolation
from ..sync.protocol import DEFAULT_LIMITS, SyncLimits, SyncReport
from ..sync.tenant_adapter import TenantSyncAuthority, TenantSyncStore
from ..tenant import Tenant
from .activity import Activity
from .conflict_events import conflict_events
from .entry_events import ENTRY_EVENT_QUEUE, EntryEvent, EntryEventQueue, Origin, Resync
from .gossip_bridge import GossipBridge
from .node_access import NodeAccess
from .peer_table import BAN_THRESHOLD, PeerState, PeerTable
from .restore_settle import session_completes_restore
from .scheduler import SyncScheduler, run_wakes
from .status import StoreStatus, daemon_status, read_store
from .store_watch import StoreWatch, watch_store
from .sync_ingest import SessionIngest
from .view_stream import view_streams

logger = logging.getLogger(__name__)

SYNC_PROTOCOL = "/mindoo/sync/1.0.0"
LOCK_FILE = "daemon.lock"
CONNECTION_REQUESTS = 256
STOP_GRACE = 0.1
"""Seconds between a stop request and the shutdown (the control reply goes out first)."""
"""Dials and disconnects waiting to be carried out, at most (more are dropped and logged: the
dialer retries address-book peers, and a banned peer is refused whenever it comes back)."""
MAX_CONCURRENT_REQUESTS = 4
IMPORT_BATCH = 1000
"""Entries per Node call when the daemon imports: it lets go of the Node between batches."""

CommandRunner = Callable[[list[str], str, dict[str, str]], dict[str, Any]]
"""``runner(argv, cwd, env)`` runs a forwarded CLI command and returns its exit code and
output. The daemon calls it in a worker thread, holding the Node."""


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


@dataclass(frozen=True)
class _Dial:
    addr: str
    remember: bool
    """Through `add_peer` (record the address on the peer) or a bare dial (mDNS)."""


@dataclass(frozen=True)
class _Disconnect:
    peer_id: str


class _Worker:
    """One connected peer's session worker: its wake-up event."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()


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
    ) -> None:
        """``keepalive``: (seconds between pings, seconds without an answer after which the
        path is dead), or None for no keepalive."""
        self.node = node
        self._keepalive = keepalive
        self._entry_event_capacity = entry_event_capacity
        self.config = config
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
        self.address_book = self._load_address_book()
        self.peer_table = PeerTable()
        self._proof_gate = ProofGate()
        """Toward whom sessions start: peers we dialled, or that proved the tenant first."""
        self.ledger = load_ledger(node.home)
        """What peers are known to hold (`mindoo_p2p.durability`), saved after every change."""
        self._ledger_lock = trio.Lock()
        self._durability_cache: DurabilityCache = {}
        self._local_peer = b""
        self._access: NodeAccess | None = None
        self._scheduler: SyncScheduler | None = None
        self._entry_events: EntryEventQueue | None = None
        self._store_watch: StoreWatch | None = None
        self._conflicts_known: dict[tuple[bytes, str, bytes], tuple[str, ...]] = {}
        """Documents with conflicts when last looked at (`conflict_events`)."""
        self._bridge: GossipBridge | None = None
        self._stop_requested: trio.Event | None = None
        self._stopped: trio.Event | None = None
        self._workers: dict[str, _Worker] = {}
        self._requests: trio.MemorySendChannel[_Dial | _Disconnect] | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._trio_thread: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``task_status.started(self)`` once listening."""
        with daemon_lock(self.node.home):
            host = PeerHost(self.node.peer_seed(), self.config.listen, config=self._host_config)
            # Banned or blocked peers are refused right after Noise, in both directions.
            host.set_peer_gate(self.peer_table.may_dial)
            self.host = host
            self._local_peer = to_libp2p_id(host.peer_id).to_bytes()
            if self.address_book.set_own_peer_id(host.peer_id):
                logger.warning("the address book held this node's own address: forgotten")
            self._save_address_book()
            self._trio_token = trio.lowlevel.current_trio_token()
            self._trio_thread = threading.get_ident()
            access = self._access = NodeAccess(self.node)
            scheduler = self._scheduler = SyncScheduler(
                sync_interval_s=self.config.sync_interval_s, gossip=self._gossip_enabled
            )
            entry_events = self._entry_events = EntryEventQueue(self._entry_event_capacity)
            store = self.node.store
            watch = self._store_watch = StoreWatch(store.last_arrival())
            self._requests, requests = trio.open_memory_channel[_Dial | _Disconnect](
                CONNECTION_REQUESTS
            )
            host.set_stream_handler(SYNC_PROTOCOL, self._serve_sync)
            self.node.add_listener(self._on_entries)
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
                        self._bridge = bridge
                    await nursery.start(run_wakes, scheduler, self._wake_worker)
                    nursery.start_soon(self._consume_entry_events, entry_events)
                    nursery.start_soon(
                        partial(watch_store, busy=lambda: access.in_use),
                        watch, store.last_arrival, store.raws_after, self._stored_elsewhere,
                    )  # fmt: skip
                    nursery.start_soon(self._carry_out_requests, host, requests)
                    nursery.start_soon(self._watch_connections, host)
                    nursery.start_soon(
                        lambda: maintain_connections(
                            host,
                            self.address_book,
                            self.config.bootstrap,
                            on_change=lambda _book: self._save_address_book(),
                        )
                    )
                    if self.config.mdns:
                        await nursery.start(self._run_mdns, host)
                    if self._control_enabled:
                        server = ControlServer(
                            control_socket(self.node.home),
                            self._handlers(),
                            self.events,
                            streams=view_streams(self.access),
                        )
                        await nursery.start(server.serve)
                    if self.config.http_port is not None:
                        from ..http.server import serve_http

                        await nursery.start(serve_http, self)
                    nursery.start_soon(self.metrics.run_lag_probe)
                    logger.info("node %s listening on %s", host.peer_id, host.listen_addrs())
                    task_status.started(self)
            finally:
                self._stopped.set()
                self.http = None
                self.node.remove_listener(self._on_entries)
                entry_events.close()
                self._requests = None
                self._bridge = None
                self._workers.clear()

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
    def gossip(self) -> GossipService | None:
        """The running gossip service, None when gossip is off or not running."""
        return self._bridge.service if self._bridge is not None else None

    @property
    def access(self) -> NodeAccess:
        """The serialised access to the Node (while running)."""
        if self._access is None:
            raise DaemonError("the daemon is not running")
        return self._access

    def _on_trio_thread(self) -> bool:
        return self._trio_thread is None or threading.get_ident() == self._trio_thread

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args)`` on the trio thread (directly when already there)."""
        if self._on_trio_thread() or self._trio_token is None:
            return fn(*args)
        return trio.from_thread.run_sync(fn, *args, trio_token=self._trio_token)

    # -- address book ------------------------------------------------------------------------
    def _load_address_book(self) -> AddressBook:
        return load_address_book(self.node.home)

    def _save_address_book(self) -> None:
        save_address_book(self.node.home, self.address_book)

    # -- connections -------------------------------------------------------------------------
    def _request(self, request: _Dial | _Disconnect) -> None:
        """Queue a dial or disconnect for `_carry_out_requests` (trio thread; never blocks)."""
        if self._requests is None:
            return
        try:
            self._requests.send_nowait(request)
        except trio.WouldBlock:
            logger.warning("too many connection requests: dropped %s", request)

    async def _carry_out_requests(
        self, host: PeerHost, requests: trio.MemoryReceiveChannel[_Dial | _Disconnect]
    ) -> None:
        """Carry out dials and disconnects, at most `MAX_CONCURRENT_REQUESTS` at once (the
        next request is taken only when a slot is free, so waiting ones stay in the bounded
        channel)."""
        slots = trio.Semaphore(MAX_CONCURRENT_REQUESTS)
        async with trio.open_nursery() as nursery:
            async for request in requests:
                await slots.acquire()
                nursery.start_soon(self._carry_out, host, request, slots)

    async def _carry_out(
        self, host: PeerHost, request: _Dial | _Disconnect, slots: trio.Semaphore
    ) -> None:
        try:
            if isinstance(request, _Disconnect):
                await host.disconnect(request.peer_id)
            elif request.remember:
                await self.add_peer(request.addr)
            else:
                await host.connect(request.addr)
        except TransportError as exc:
            logger.info("%s failed: %s", request, exc)
        finally:
            slots.release()

    async def _run_mdns(
        self, host: PeerHost, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        from ..net.mdns import MdnsDiscovery, MdnsError

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
        if not addrs or not self.peer_table.may_dial(peer_id):
            return
        if self.host is not None and self.host.is_connected(peer_id):
            return
        self._request(_Dial(addrs[0], remember=False))

    def _may_dial(self, peer_id: str) -> bool:
        return self.peer_table.may_dial(peer_id)

    async def add_peer(self, addr: str) -> str:
        """Remember ``addr`` (a multiaddr ending in /p2p/PEER_ID) and connect to it now."""
        peer_id = self.address_book.add(addr)
        self._save_address_book()
        if self.host is None:
            raise DaemonError("the daemon is not running")
        self.peer_table.unblock(peer_id)
        await self.host.connect(addr)
        self.peer_table.peer(peer_id).address = addr
        return peer_id

    def request_peer(self, addr: str) -> str:
        """Remember ``addr`` and connect to it in the background; returns its peer id. Safe
        from a forwarded command's worker thread."""
        result: str = self._on_loop(self._request_peer, addr)
        return result

    def _request_peer(self, addr: str) -> str:
        peer_id = self.address_book.add(addr)
        self._save_address_book()
        self.peer_table.unblock(peer_id)
        self._request(_Dial(addr, remember=True))
        return peer_id

    def name_peer(self, peer: str, name: str | None) -> str:
        """Name the address-book peer ``peer`` (a name, id or id prefix); its peer id. Safe
        from a forwarded command's worker thread."""
        result: str = self._on_loop(self._name_peer, peer, name)
        return result

    def _name_peer(self, peer: str, name: str | None) -> str:
        peer_id = self.address_book.find(peer)
        self.address_book.set_name(peer_id, name)
        self._save_address_book()
        return peer_id

    def forget_peer(self, peer: str) -> str:
        """Remove ``peer`` (a name, id or id prefix) from the address book and close its
        connection: it is not dialed again (it may still dial us). Its peer id. Safe from a
        forwarded command's worker thread."""
        result: str = self._on_loop(self._forget_peer, peer)
        return result

    def _forget_peer(self, peer: str) -> str:
        peer_id = self.address_book.find(peer)
        self.address_book.remove(peer_id)
        self._save_address_book()
        if self.host is not None and self.host.is_connected(peer_id):
            self._request(_Disconnect(peer_id))
        return peer_id

    async def block_peer(self, peer_id: str) -> None:
        """Disconnect ``peer_id`` and refuse it until `unblock_peer` (partitions in tests)."""
        self.peer_table.block(peer_id)
        if self.host is not None:
            await self.host.disconnect(peer_id)

    def unblock_peer(self, peer_id: str) -> None:
        self.peer_table.unblock(peer_id)

    async def _watch_connections(self, host: PeerHost) -> None:
        async with trio.open_nursery() as workers:
            for peer_id in host.connected_peers():
                self._on_connected(peer_id, workers)
            async for event in host.connection_events:
                if event.connected:
                    if not self.peer_table.may_dial(event.peer_id):
                        await host.disconnect(event.peer_id)
                        continue
                    self._on_connected(event.peer_id, workers)
                else:
                    self._on_disconnected(event.peer_id)

    def _on_connected(self, peer_id: str, workers: trio.Nursery) -> None:
        if not self.peer_table.connected(peer_id):
            return
        if self.host is not None:
            self.peer_table.peer(peer_id).address = self.host.remote_address(peer_id)
        worker = self._workers[peer_id] = _Worker()
        workers.start_soon(self._peer_worker, peer_id, worker)
        assert self._scheduler is not None
        # The side that dialled starts (it may prove first); the other waits to be proven to.
        self._scheduler.connected(peer_id, lead=self.host is None or self.host.dialled(peer_id))
        self.activity.peer(peer_id, connected=True)

    def _on_disconnected(self, peer_id: str) -> None:
        self.activity.peer(peer_id, connected=False)
        self.peer_table.disconnected(peer_id)
        self._proof_gate.forget(peer_id)
        self._refresh_admission(peer_id)
        if self._scheduler is not None:
            self._scheduler.disconnected(peer_id)
        worker = self._workers.pop(peer_id, None)
        if worker is not None:
            worker.event.set()  # lets it notice and stop

    def _wake_worker(self, peer_id: str) -> None:
        worker = self._workers.get(peer_id)
        if worker is not None:
            worker.event.set()

    def wake_peers(self, except_peer: str | None = None) -> None:
        """Ask every connected peer's worker to run a session (coalesced)."""
        for peer_id in self.peer_table.connected_peers():
            if peer_id != except_peer:
                self._wake_worker(peer_id)

    async def _peer_worker(self, peer_id: str, worker: _Worker) -> None:
        """Sessions with a connected peer whenever woken, and the connection's keepalive
        (`net.keepalive`: a path that stopped answering is closed, so the dialer redials)."""
        host = self.host
        async with trio.open_nursery() as nursery:
            if host is not None and self._keepalive is not None:
                interval, dead_after = self._keepalive
                nursery.start_soon(
                    functools.partial(
                        keep_alive,
                        Liveness(trio.current_time()),
                        functools.partial(host.ping, peer_id),
                        functools.partial(self._path_dead, peer_id),
                        interval=interval,
                        dead_after=dead_after,
                        on_change=functools.partial(self._liveness_changed, peer_id),
                    )
                )
            await self._run_sessions(peer_id, worker)
            nursery.cancel_scope.cancel()

    def _liveness_changed(self, peer_id: str, liveness: Liveness) -> None:
        state = self.peer_table.get(peer_id)
        if state is not None and state.connected:
            previous = state.keepalive or {}
            answered = liveness.unanswered == 0
            state.keepalive = {
                "rtt_ms": None if liveness.rtt is None else round(liveness.rtt * 1000, 1),
                "last_answer_ms": now_ms() if answered else previous.get("last_answer_ms"),
                "unanswered_pings": liveness.unanswered,
            }

    async def _path_dead(self, peer_id: str, reason: str) -> None:
        """The keepalive heard nothing from ``peer_id`` for too long: show it, close the
        connection (the dialer then redials it with a short backoff)."""
        logger.warning("peer %s: %s; closing the connection to redial", peer_id, reason)
        self.peer_table.path_dead(peer_id, reason)
        self.activity.peer(peer_id, connected=False, reason=reason)
        if self.host is not None:
            await self.host.disconnect(peer_id)

    async def _run_sessions(self, peer_id: str, worker: _Worker) -> None:
        while True:
            await worker.event.wait()
            worker.event = trio.Event()
            current = self._workers.get(peer_id) is worker
            state = self.peer_table.get(peer_id)
            connected = self.host is not None and self.host.is_connected(peer_id)
            if not current or state is None or not state.connected or not connected:
                if current:
                    del self._workers[peer_id]
                    if state is not None:
                        state.connected = False
                        self.activity.peer(peer_id, connected=False)
                return
            await self.sync_with_peer(peer_id)

    def _penalize(self, peer: bytes | str, points: int, reason: str) -> None:
        peer_id = peer if isinstance(peer, str) else _peer_id_text(peer)
        logger.warning("peer %s penalised %d points: %s", peer_id, points, reason)
        self.activity.penalty(peer_id, points, reason)
        if self.peer_table.penalize(peer_id, points, reason) and self._requests is not None:
            logger.warning("disconnecting peer %s for %.0f s", peer_id, self.peer_table.ban_seconds)
            self._request(_Disconnect(peer_id))

    def _refresh_admission(self, peer_id: str) -> None:
        if self._bridge is not None:
            self._bridge.refresh_admission(peer_id)

    # -- sessions ----------------------------------------------------------------------------
    async def sync_with_peer(self, peer_id: str) -> list[SyncReport]:
        """Run one session per tenant this node holds with ``peer_id`` (initiator side), for
        the tenants it may prove toward that peer (`sync.auth.ProofGate`: a peer we dialled,
        or one that proved the tenant to us first)."""
        state = self.peer_table.peer(peer_id)
        reports = []
        self.peer_table.session_started(peer_id)
        self._session_started(peer_id)
        dialled = self.host is not None and self.host.dialled(peer_id)
        try:
            for tenant in self.node.tenants():
                if tenant.id in state.unshared_tenants:
                    continue
                if not self._proof_gate.may_prove(peer_id, tenant.id, dialled=dialled):
                    continue
                report = await self._sync_tenant(peer_id, tenant)
                if report is not None:
                    reports.append(report)
        finally:
            self.peer_table.session_ended(peer_id)
            self._session_ended(peer_id)
        return reports

    def _session_started(self, peer_id: str) -> None:
        if self._scheduler is not None:
            self._scheduler.session_started(peer_id)

    def _session_ended(self, peer_id: str) -> None:
        if self._scheduler is not None:
            self._scheduler.session_ended(peer_id)

    def _hold_for_handshake(self) -> AbstractAsyncContextManager[object]:
        """The sessions' `StoreHolder`: checking a peer's proof reads membership and may store
        its membership evidence, so it takes its turn with the Node (on the loop)."""
        return self.access.hold(Origin.SYNC)

    async def _sync_tenant(self, peer_id: str, tenant: Tenant) -> SyncReport | None:
        host = self.host
        if host is None or not host.is_connected(peer_id):
            return None
        try:
            stream = await host.open_stream(peer_id, SYNC_PROTOCOL)
        except TransportError as exc:
            self.peer_table.failed(peer_id, f"cannot open a sync stream: {exc}")
            return None
        self.activity.session_started(peer_id, tenant.id, tenant.name)
        self._leave_bounds_to_the_driver(stream)
        positions = self._feed_positions(tenant.id)
        try:
            report = await run_initiator(
                stream,
                self._local_peer,
                to_libp2p_id(peer_id).to_bytes(),
                TenantSyncAuthority(tenant),
                TenantSyncStore(self.node, tenant),
                on_progress=lambda live: self._progress(peer_id, tenant, live),
                on_penalty=self._penalize,
                limits=self._sync_limits,
                ingest_stages=SessionIngest(
                    self.access, self.activity.refused, peer_id=peer_id
                ).stages(),
                hold_store=self._hold_for_handshake,
                on_authenticated=self._proven(peer_id),
            )
        except AuthDenied as exc:
            self.activity.session_failed(
                peer_id, tenant.id, tenant.name, role="initiator", outcome="denied", error=str(exc)
            )
            if self.peer_table.denied(peer_id, tenant.id):
                self._refresh_admission(peer_id)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return None
        except (ProtocolViolation, SyncTimeout, TransportError) as exc:
            if isinstance(exc, FrameTooLarge):
                self._penalize(peer_id, BAN_THRESHOLD, f"oversized frame: {exc}")
            self.peer_table.failed(peer_id, f"sync of {tenant.name} failed: {exc}")
            self.activity.session_failed(
                peer_id, tenant.id, tenant.name, role="initiator", outcome="failed", error=str(exc)
            )
            logger.info("sync with %s failed: %s", peer_id, exc)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return None
        with trio.CancelScope(shield=True):
            await stream.close()
        await self._settle_restored(peer_id, tenant, report)
        self._record(peer_id, tenant, report)
        await self._confirm_held(peer_id, report, positions)
        return report

    def _leave_bounds_to_the_driver(self, stream: FramedStream) -> None:
        """A sync stream's time bounds are the session's (`SyncLimits`: the wall time, and
        the idle bound, which counts frames either way): the transport's per-frame timeout
        (30 s) would cut a session whose peer rightly says nothing while we push to it."""
        stream.timeout = max(stream.timeout, self._sync_limits.session_seconds)

    def _feed_positions(self, tenant_id: bytes) -> dict[str, int]:
        """Each database's feed position now: what a session starting now will leave the
        peer holding (`durability`)."""
        tenant = self.node.tenant_or_none(tenant_id)
        if tenant is None:
            return {}
        store = self.node.store
        return {db: store.last_seq(tenant_id, db) for db in [TENANT_LOG, *tenant.databases()]}

    async def _confirm_held(
        self, peer_id: str, report: SyncReport, positions: dict[str, int]
    ) -> None:
        """A session ended well: every database it reconciled completely is held by the peer
        up to the position it had when the session started; save the ledger if that moved."""
        if report.role == "initiator" and report.peer_refused:
            return  # the peer did not take everything we pushed
        moved = False
        at = now_ms()
        for database, seq in positions.items():
            db = report.databases.get(database)
            if db is None or db.unavailable or db.rejected:
                continue
            if not (db.settled if report.role == "initiator" else db.recon_rounds > 0):
                continue
            moved |= self.ledger.confirm(report.tenant_id, database, seq, peer_id, at)
        if moved:
            async with self._ledger_lock:
                await trio.to_thread.run_sync(save_ledger, self.node.home, self.ledger)

    def _progress(self, peer_id: str, tenant: Tenant, live: SyncReport) -> None:
        self.peer_table.progress(peer_id, live.received, live.sent)
        self.peer_table.live(peer_id, tenant.id, live)
        self.activity.session_progress(peer_id, tenant.id, tenant.name, live.received, live.sent)

    async def _serve_sync(self, stream: Any) -> None:
        peer_id = stream.remote_peer_id
        self.peer_table.peer(peer_id)
        if not self.peer_table.may_dial(peer_id):
            return
        self._leave_bounds_to_the_driver(stream)
        authorities = {
            tenant.id: (TenantSyncAuthority(tenant), TenantSyncStore(self.node, tenant))
            for tenant in self.node.tenants()
        }
        self._session_started(peer_id)
        positions: dict[str, int] = {}
        proven = self._proven(peer_id)

        def authenticated(tenant_id: bytes) -> None:
            positions.update(self._feed_positions(tenant_id))
            proven(tenant_id)

        try:
            report = await run_responder(
                stream,
                self._local_peer,
                to_libp2p_id(peer_id).to_bytes(),
                authorities,
                on_penalty=self._penalize,
                limits=self._sync_limits,
                ingest_stages=SessionIngest(
                    self.access, self.activity.refused, peer_id=peer_id
                ).stages(),
                hold_store=self._hold_for_handshake,
                on_authenticated=authenticated,
            )
        except (AuthDenied, ProtocolViolation, SyncTimeout) as exc:
            self.peer_table.failed(peer_id, f"inbound sync failed: {exc}")
            outcome = "denied" if isinstance(exc, AuthDenied) else "failed"
            self.activity.session_failed(
                peer_id, None, None, role="responder", outcome=outcome, error=str(exc)
            )
            return
        except FrameTooLarge as exc:
            self._penalize(peer_id, BAN_THRESHOLD, f"oversized frame: {exc}")
            raise
        finally:
            self._session_ended(peer_id)
        if report is not None:
            await self._settle_restored(peer_id, self.node.tenant(report.tenant_id), report)
            self._record(peer_id, self.node.tenant(report.tenant_id), report)
            await self._confirm_held(peer_id, report, positions)

    def _proven(self, peer_id: str) -> Callable[[bytes], None]:
        """The sessions' ``on_authenticated``: the peer proved that it shares a tenant, so its
        inbound connection is no longer unproven (see net/inbound_policy.py). At the handshake,
        not at the end of the session: a clone can outlast the proof deadline."""

        def proven(tenant_id: bytes) -> None:
            self._proof_gate.peer_proved(peer_id, tenant_id)
            if self.host is not None:
                self.host.mark_proven(peer_id)

        return proven

    async def _settle_restored(self, peer_id: str, tenant: Tenant, report: SyncReport) -> None:
        """A session ended well: lift the tenant's restore mark (`restore_guard`) when it
        reconciled everything. Before `_record`, so ``sync wait`` never reports caught up while
        the mark still refuses writes. Costs nothing once no tenant is marked."""
        if tenant.id not in self.node.restore_guard.marked():
            return
        if not session_completes_restore(report):
            return
        settled = await self.access.run(lambda node: node.settle_restored(tenant))
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
        self.activity.session_done(peer_id, tenant.name, report)
        if self.peer_table.record(peer_id, tenant.id, report, now_ms()):
            self._refresh_admission(peer_id)
        if self._scheduler is not None:
            self._scheduler.session_recorded(peer_id)

    # -- stored entries ----------------------------------------------------------------------
    def _on_entries(self, entries: list[Entry], local: bool) -> None:
        """The Node's listener (any thread): hand the stored entries to the event loop as an
        event with their origin, without blocking; then, in a worker thread that holds the
        Node, let waiting uses have it (the batch is complete: a safe point)."""
        queue, access, watch = self._entry_events, self._access, self._store_watch
        if queue is None or access is None:
            return
        if watch is not None:
            watch.claim(entry.id for entry in entries)
        origin = Origin.LOCAL if local else access.origin_of_current_thread() or Origin.OTHER
        queue.offer(EntryEvent(tuple(entries), origin, access.peer_of_current_thread()))
        access.checkpoint()

    async def _stored_elsewhere(self, entries: list[Entry]) -> None:
        """Entries another process that has this home open stored (`store_watch`): bring
        membership up to date when they hold tenant-log records, then handle them like this
        process's own writes (gossip, sessions, event subscribers)."""
        queue = self._entry_events
        if queue is None:
            return
        logs = {e.tenant_id for e in entries if e.database == TENANT_LOG}
        if logs:
            async with self.access.hold() as node:
                for tenant_id in logs:
                    tenant = node.tenant_or_none(tenant_id)
                    if tenant is not None:
                        tenant.refresh_membership()
        queue.offer(EntryEvent(tuple(entries), Origin.ELSEWHERE))

    async def _consume_entry_events(self, queue: EntryEventQueue) -> None:
        async for item in queue.events():
            if isinstance(item, Resync):
                await self._resync(item)
            else:
                await self._entries_stored(item)

    async def _entries_stored(self, event: EntryEvent) -> None:
        """Tell subscribers, and offer the entries to the peers."""
        entries = event.entries
        self.activity.entries_stored(event.origin.value, len(entries))
        if self.events.subscriber_count:
            self._publish_events(entries, event.local)
        if any(entry.database == TENANT_LOG for entry in entries):
            # Membership changed: peers denied before may be members now.
            self.peer_table.membership_changed()
        bridge = self._bridge
        if bridge is not None:
            fresh = {(e.tenant_id, e.database) for e in entries if e.database != TENANT_LOG}
            if not bridge.holds(fresh):
                await bridge.refresh_topics()
            if event.local:
                bridge.publish(entries)
        if self._scheduler is not None:
            self._scheduler.entries_stored(event.origin, source=event.peer)
        if self.events.subscriber_count:
            known = self._conflicts_known
            found = await self.access.run(lambda node: conflict_events(node, entries, known))
            self.activity.conflicts(found)

    async def _resync(self, resync: Resync) -> None:
        """Events were dropped: assume anything changed."""
        logger.info("%d entry events dropped: resyncing with every peer", resync.dropped)
        self.peer_table.membership_changed()
        if self.events.subscriber_count:
            self.events.publish({"type": "resync", "dropped": resync.dropped})
        if self._bridge is not None:
            await self._bridge.refresh_topics()
        if self._scheduler is not None:
            self._scheduler.resync()

    def _publish_events(self, entries: Sequence[Entry], local: bool) -> None:
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

    # -- long work ---------------------------------------------------------------------------
    async def import_entries(self, raws: Sequence[Entry | bytes]) -> AppendResult:
        """Ingest ``raws`` (a bundle's entries, say) in a worker thread, `IMPORT_BATCH` at a
        time, letting go of the Node between batches so sessions and ``status`` go on."""
        access = self.access
        added: list[bytes] = []
        duplicates: list[bytes] = []
        rejected: list[Rejected] = []
        for start in range(0, len(raws), IMPORT_BATCH):
            batch = raws[start : start + IMPORT_BATCH]
            result = await access.run(functools.partial(_ingest, batch=batch), Origin.IMPORT)
            added += result.added
            duplicates += result.duplicates
            rejected += result.rejected
        return AppendResult(added, duplicates, rejected)

    async def run_command(self, argv: list[str], cwd: str, env: dict[str, str]) -> dict[str, Any]:
        """Run a forwarded CLI command with the ``command_runner``, in a worker thread that
        holds the Node (the loop keeps serving peers and ``status``)."""
        runner = self._command_runner
        if runner is None:
            raise ValueError("this daemon does not run CLI commands")
        return await self.access.run(lambda _node: runner(argv, cwd, env), Origin.IMPORT)

    # -- status and control ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The daemon's state: this node, its peers, and its databases' sync state.

        Reads the peer table and the entry store only (LMDB snapshots: it never waits for the
        Node). Safe from a forwarded command's worker thread (it runs on the loop)."""
        result: dict[str, Any] = self._on_loop(self._status)
        return result

    def _status(self) -> dict[str, Any]:
        return self._status_from(read_store(self.node, self.ledger, self._durability_cache))

    async def status_off_loop(self) -> dict[str, Any]:
        """`status`, with its store reads (a count of every database's documents) in a worker
        thread, so a large store does not hold up the event loop."""
        stored = await trio.to_thread.run_sync(
            read_store, self.node, self.ledger, self._durability_cache
        )
        return self._status_from(stored)

    def _status_from(self, stored: StoreStatus) -> dict[str, Any]:
        return daemon_status(
            stored,
            self.peer_table,
            home=str(self.node.home),
            peer_id=self.host.peer_id if self.host else None,
            listen_addrs=self.listen_addrs(),
        )

    @property
    def http_url(self) -> str | None:
        """The HTTP API's base URL while it runs (``http://127.0.0.1:PORT``)."""
        return self.http.base_url if self.http is not None else None

    def http_login(self) -> dict[str, Any]:
        """`HttpEndpoint.login` (a one-time link to the web page); DaemonError when the HTTP
        API is off. Safe from a forwarded command's worker thread (it runs on the loop)."""
        result: dict[str, Any] = self._on_loop(lambda: self._http_endpoint().login())
        return result

    def _http_endpoint(self) -> HttpEndpoint:
        if self.http is None:
            raise DaemonError(
                "the HTTP API is off on this node (http.enabled = false in config.toml, or"
                " --no-http)"
            )
        return self.http

    def sync_progress(self, since_ms: int) -> dict[str, Any]:
        """Whether this node is caught up with its connected peers by sessions that ended at
        or after ``since_ms`` (`PeerTable.sync_progress`): what ``mindoo sync wait`` polls
        after waking every peer (``sync_now``)."""
        return self.peer_table.sync_progress(since_ms, (t.id for t in self.node.tenants()))

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        async def ping(params: dict[str, Any]) -> str:
            return "pong"

        async def status(params: dict[str, Any]) -> dict[str, Any]:
            return await self.status_off_loop()

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
            return {"woken": len(self.peer_table.connected_peers())}

        async def sync_progress(params: dict[str, Any]) -> dict[str, Any]:
            since = params.get("since_ms")
            if not isinstance(since, int) or isinstance(since, bool) or since < 0:
                raise ValueError("sync_progress needs 'since_ms', a time in ms")
            return self.sync_progress(since)

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
            return await self.run_command(argv, cwd, env)

        async def stop(params: dict[str, Any]) -> dict[str, Any]:
            self.stop()
            return {"stopping": True}

        async def http_login(params: dict[str, Any]) -> dict[str, Any]:
            return self.http_login()

        async def http_info(params: dict[str, Any]) -> dict[str, Any]:
            return self._http_endpoint().info()

        return {
            "ping": ping,
            "status": status,
            "peers.add": peers_add,
            "sync": sync_now,
            "sync.progress": sync_progress,
            "cli": run_command,
            "stop": stop,
            "http.login": http_login,
            "http.info": http_info,
        }


def _ingest(node: Node, *, batch: Sequence[Entry | bytes]) -> AppendResult:
    return node.ingest(batch)


def _peer_id_text(peer: bytes) -> str:
    from libp2p.peer.id import ID

    with suppress(Exception):
        return str(ID(peer).to_base58())
    return peer.hex()
