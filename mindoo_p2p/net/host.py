"""`PeerHost`: the node's libp2p host (TCP + Noise + Yamux), with py-libp2p's defects fixed.

What the host does and does not do:
- Identity: Ed25519 from the caller's 32-byte seed (see :mod:`.peer_identity`).
- Stack: TCP transport, Noise security, Yamux multiplexing, and nothing else. py-libp2p's
  `new_host` also offers TLS, SECIO and *plaintext* to any peer that asks; this host is built
  from its parts so that a connection is always authenticated and encrypted with Noise.
- Dialing: only `connect(multiaddr)` dials, and only the address it is given, with the peer id
  in the address authenticated by Noise. The swarm's auto-connector and its peerstore-driven
  dials (`dial_peer`, also reached through `new_stream` and `host.connect`) are disabled, so
  nothing learned from a peer (Identify addresses) is ever dialed. No mDNS, UPnP or bootstrap.
- Streams: `set_stream_handler` / `open_stream` speak in `FramedStream` objects.
- Lifecycle: ``async with PeerHost(...).run():`` listens, and on exit always closes the host
  (py-libp2p leaks sockets when its ``run()`` is left without ``close()``).

py-libp2p 0.8.1 defects handled here (see shared/notes/py-libp2p.md):
- Inbound connection slots leak (libp2p/py-libp2p#1426): each inbound connection holds a
  `CapacityLimiter` token until the whole swarm stops, so after ``max_connections`` inbound
  connections in total every new one is refused. `_MindooSwarm` releases the token when the
  connection closes.
- Restarted peers are refused for 60 s by a negative dial cache: `connect` unblocks the peer
  and dials the given address directly, which that cache never consults.
- The default `ConnectionConfig` waits 250 ms for extra dials after the first one succeeds:
  ``max_connections_per_peer=1`` makes a loopback connect take milliseconds.
"""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import NamedTuple

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.abc import (
    IMuxedConn,
    INetConn,
    INetStream,
    INetwork,
    INotifee,
    IRawConnection,
    ISecureConn,
    ITransport,
)
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.basic_host import BasicHost
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import PING_LENGTH as PING_SIZE
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL_ID
from libp2p.identity.identify_push.identify_push import ID_PUSH as IDENTIFY_PUSH_PROTOCOL_ID
from libp2p.io.abc import ReadWriteCloser
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore
from libp2p.rcmgr import Direction, new_resource_manager
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.exceptions import SecurityUpgradeFailure
from libp2p.transport.tcp.tcp import TCP
from libp2p.transport.upgrader import TransportUpgrader

from ..errors import sole_exception
from .framing import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_TIMEOUT,
    FramedStream,
    StreamClosed,
    StreamTimeout,
    TransportError,
)
from .inbound_policy import Existing, InboundLimits, InboundPolicy, InboundTicket, Refused
from .peer_identity import (
    parse_dial_addr,
    parse_listen_addr,
    peer_id_of_key_pair,
    peer_key_pair,
    to_libp2p_id,
)

logger = logging.getLogger(__name__)

SUPPORTED_LIBP2P_VERSION = "0.8.1"
_installed_libp2p = version("libp2p")
if _installed_libp2p != SUPPORTED_LIBP2P_VERSION:  # pragma: no cover - guards upgrades
    raise ImportError(
        f"mindoo_p2p.net.host patches py-libp2p {SUPPORTED_LIBP2P_VERSION} internals (inbound"
        f" slot release, dial policy); found libp2p {_installed_libp2p}: re-check the patches"
        " in mindoo_p2p/net/host.py against the new release before changing the pin"
    )


class DialError(TransportError):
    """A dial failed: unreachable, refused, timed out, or the peer is not who the address says."""


class PeerNotConnected(TransportError):
    """An operation needs a live connection to a peer that is not connected."""


class StreamOpenError(TransportError):
    """A stream could not be opened (the peer does not speak the protocol, or refused it)."""


class ListenError(TransportError):
    """The host could not listen on one of its addresses (address in use, not local, ...)."""


class ConnectionEvent(NamedTuple):
    """A peer became connected (its first connection opened) or disconnected (its last closed)."""

    peer_id: str
    connected: bool


StreamHandler = Callable[[FramedStream], Awaitable[None]]
"""Serves one inbound stream. The host closes the stream when the handler returns (and resets
it when the handler raises), so a handler needs no cleanup of its own."""


@dataclass(frozen=True)
class HostConfig:
    """Tunables of a `PeerHost`. The defaults suit a daemon; tests shrink the timeouts."""

    dial_timeout: float = 10.0
    """Seconds for a whole `connect` (TCP, Noise, Yamux)."""
    stream_timeout: float = DEFAULT_TIMEOUT
    """Deadline of every `FramedStream` operation, and of opening a stream."""
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_connections: int = 300
    """Connections at once, inbound and outbound; inbound ones beyond it are refused."""
    connection_events: int = 256
    """Buffered connection events; when the consumer lags, the oldest are dropped."""
    close_timeout: float = 5.0
    """Seconds that closing the host, or disconnecting a peer, may take."""
    inbound: InboundLimits = field(default_factory=InboundLimits)
    """The budget, per-address shares and proof deadline of unproven inbound connections
    (see :mod:`.inbound_policy`)."""

    def __post_init__(self) -> None:
        for name in ("dial_timeout", "stream_timeout", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections < 1 or self.connection_events < 1:
            raise ValueError("max_connections and connection_events must be at least 1")


# ---------------------------------------------------------------------------------------------
# The swarm with the inbound slot fix and no implicit dials.

_current_inbound_slot: contextvars.ContextVar[_InboundSlot | None] = contextvars.ContextVar(
    "mindoo_inbound_slot", default=None
)


class _InboundSlot:
    """Links an inbound connection handler to the connection it upgraded."""

    __slots__ = ("muxed_conn", "ticket", "upgraded")

    def __init__(self) -> None:
        self.muxed_conn: IMuxedConn | None = None
        self.ticket: InboundTicket | None = None
        self.upgraded = trio.Event()


async def _wait_closed(muxed_conn: IMuxedConn) -> None:
    closed = getattr(muxed_conn, "event_closed", None)
    if isinstance(closed, trio.Event):  # Yamux and Mplex
        await closed.wait()
        return
    while not muxed_conn.is_closed:  # pragma: no cover - no other muxer is configured
        await trio.sleep(1.0)


class _NeverAutoConnect(AutoConnector):
    """The auto-connector, switched off: this node dials only what its caller asks for."""

    async def run_background_task(self, nursery: trio.Nursery) -> None:
        return

    async def maybe_connect(self) -> None:
        return


class _MindooSwarm(Swarm):
    """py-libp2p's `Swarm` with two narrow changes (re-check both on every libp2p upgrade).

    1. Inbound slot release (libp2p/py-libp2p#1426). `Swarm._handle_inbound_connection`
       takes a token from ``_inbound_limiter`` and returns it in a ``finally`` that only runs
       when the handler ends; but after a successful upgrade the handler awaits
       ``self.manager.wait_finished()``, i.e. the end of the whole swarm. Here the handler runs
       beside a watcher that cancels it once the upgraded connection closes, so the ``finally``
       returns the token. The connection's own tasks live in the swarm manager, not in this
       handler, so cancelling the handler does not touch a live connection.
    2. No implicit dials: `dial_peer` (peerstore addresses, used by the auto-connector,
       `BasicHost.connect` and `Swarm.new_stream` when not connected) is refused.
    3. Inbound admission (:mod:`.inbound_policy`): an accepted TCP connection gets a ticket
       from ``inbound_policy`` before any handshake (or is closed at once), and gives it back
       when it closes. The ticket travels with the handler's context to `_MindooUpgrader`,
       which authenticates the peer id on it right after Noise.
    """

    inbound_policy: InboundPolicy

    def __init__(
        self,
        peer_id: ID,
        peerstore: PeerStore,
        upgrader: TransportUpgrader,
        *,
        transports: list[ITransport],
        retry_config: RetryConfig,
        connection_config: ConnectionConfig,
    ) -> None:
        super().__init__(
            peer_id,
            peerstore,
            upgrader,
            transports=transports,
            retry_config=retry_config,
            connection_config=connection_config,
        )
        self.auto_connector = _NeverAutoConnect(
            swarm=self, auto_connect_interval=self.connection_config.auto_connect_interval
        )

    async def _handle_inbound_connection(
        self, read_write_closer: ReadWriteCloser, maddr: multiaddr.Multiaddr
    ) -> None:
        slot = _InboundSlot()
        token = _current_inbound_slot.set(slot)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_closed, slot, nursery.cancel_scope)
                await super()._handle_inbound_connection(read_write_closer, maddr)
                # Upgrade failed or was refused: the handler returned on its own.
                nursery.cancel_scope.cancel()
        finally:
            _current_inbound_slot.reset(token)
            if slot.ticket is not None:
                self.inbound_policy.close(slot.ticket)

    async def upgrade_inbound_raw_conn(
        self, raw_conn: IRawConnection, maddr: multiaddr.Multiaddr
    ) -> IMuxedConn:
        slot = _current_inbound_slot.get()
        if slot is not None and slot.ticket is None:
            remote = (
                raw_conn.get_remote_address() if hasattr(raw_conn, "get_remote_address") else None
            )
            address = str(remote[0]) if remote else "unknown"
            try:
                slot.ticket = self.inbound_policy.accept(address, trio.current_time())
            except Refused as exc:
                logger.info("inbound connection from %s refused: %s", address, exc)
                with suppress(Exception):
                    await raw_conn.close()
                raise SwarmException(f"inbound connection refused: {exc}") from None
        muxed_conn = await super().upgrade_inbound_raw_conn(raw_conn, maddr)
        slot = _current_inbound_slot.get()
        if slot is not None and slot.muxed_conn is None:
            slot.muxed_conn = muxed_conn
            slot.upgraded.set()
        return muxed_conn

    async def dial_peer(self, peer_id: ID) -> list[INetConn]:
        raise SwarmException(
            f"implicit dial to {peer_id} refused: mindoo dials only the address it is given"
        )


async def _cancel_when_closed(slot: _InboundSlot, scope: trio.CancelScope) -> None:
    await slot.upgraded.wait()
    assert slot.muxed_conn is not None
    await _wait_closed(slot.muxed_conn)
    scope.cancel()


class _MindooUpgrader(TransportUpgrader):
    """The transport upgrader with the peer gate right after Noise, before Yamux and before
    the connection is registered: a refused peer never counts as connected, not even briefly.

    Inbound: the ticket of the connection (from the handler's context) is authenticated with
    the policy (banned peers and second connections refused). Outbound: a peer the gate refuses
    is not connected to either.
    """

    swarm: _MindooSwarm
    peer_allowed: Callable[[str], bool]

    async def upgrade_security(
        self, raw_conn: IRawConnection, is_initiator: bool, peer_id: ID | None = None
    ) -> ISecureConn:
        secured = await super().upgrade_security(raw_conn, is_initiator, peer_id)
        remote = secured.get_remote_peer()
        remote_text = remote.to_base58()
        banned = not self.peer_allowed(remote_text)
        try:
            if is_initiator:
                if banned:
                    raise Refused(f"peer {remote_text} is banned")
            else:
                slot = _current_inbound_slot.get()
                if slot is not None and slot.ticket is not None:
                    older = list(self.swarm.get_connections(remote))
                    replace = self.swarm.inbound_policy.authenticate(
                        slot.ticket,
                        remote_text,
                        banned=banned,
                        existing=_existing(older),
                        local_peer_id=self.swarm.get_peer_id().to_base58(),
                    )
                    if replace:
                        for conn in older:
                            with suppress(Exception):
                                await conn.close()
                elif banned:
                    raise Refused(f"peer {remote_text} is banned")
        except Refused as exc:
            logger.info("connection %s refused: %s", "to" if is_initiator else "from", exc)
            with suppress(Exception):
                await secured.close()
            raise SecurityUpgradeFailure(str(exc)) from None
        return secured


def _existing(conns: Sequence[INetConn]) -> Existing:
    """What a peer's current connections are, for the one-connection rule."""
    if not conns:
        return Existing.NONE
    outbound = any(getattr(conn, "direction", None) == Direction.OUTBOUND for conn in conns)
    return Existing.OUTBOUND if outbound else Existing.INBOUND


class _QuietHost(BasicHost):
    """py-libp2p's `BasicHost` that never runs identify toward a peer: we neither serve
    identify (see `_build_libp2p_host`) nor use what it learns (no address discovery; every
    stream negotiates its protocol itself), and asking peers that do not serve it only logs
    an error per connection."""

    def _should_identify_peer(self, peer_id: ID) -> bool:
        return False


def _build_libp2p_host(key_pair: KeyPair, config: HostConfig) -> tuple[BasicHost, _MindooSwarm]:
    peer_id = ID.from_pubkey(key_pair.public_key)
    peerstore = PeerStore()
    peerstore.add_key_pair(peer_id, key_pair)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    upgrader = _MindooUpgrader(
        secure_transports_by_protocol={NOISE_PROTOCOL_ID: noise},
        muxer_transports_by_protocol={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )
    connection_config = ConnectionConfig(
        max_connections_per_peer=1,
        max_connections=config.max_connections,
        min_connections=0,
        low_watermark=config.max_connections,
        high_watermark=config.max_connections,
        dial_timeout=config.dial_timeout,
    )
    swarm = _MindooSwarm(
        peer_id,
        peerstore,
        upgrader,
        transports=[TCP()],
        retry_config=RetryConfig(max_retries=0),
        connection_config=connection_config,
    )
    swarm.inbound_policy = InboundPolicy(config.inbound)
    upgrader.swarm = swarm
    upgrader.peer_allowed = lambda _peer: True
    swarm.set_resource_manager(new_resource_manager())
    host = _QuietHost(
        network=swarm,
        enable_mDNS=False,
        enable_upnp=False,
        bootstrap=None,
        disable_identify_address_discovery=True,
    )
    # Serve only what peers need: identify (and its push) would tell anyone who connects
    # every protocol this node speaks and its listen addresses. Ping stays (liveness).
    for unneeded in (IDENTIFY_PROTOCOL_ID, IDENTIFY_PUSH_PROTOCOL_ID):
        host.remove_stream_handler(unneeded)
    return host, swarm


# ---------------------------------------------------------------------------------------------
# Addresses


def _ensure_port_free(addr: multiaddr.Multiaddr) -> None:
    """Refuse a fixed port that another listener holds.

    py-libp2p listens with SO_REUSEPORT, so a second process of the same user can bind the same
    port without an error and the kernel then splits incoming connections between the two. A
    probe bind without SO_REUSEPORT fails while any listener holds the port.
    """
    port = int(str(addr.value_for_protocol("tcp")))
    if port == 0:
        return
    host = str(addr.value_for_protocol(addr.protocols()[0].name))
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise ListenError(f"cannot listen on {addr}: {reason}") from exc


# ---------------------------------------------------------------------------------------------
# Connection events


class _ConnectionTracker(INotifee):
    """Turns per-connection notifications into per-peer connected/disconnected events."""

    def __init__(self, host: PeerHost, capacity: int) -> None:
        self._host = host
        self._connected: set[str] = set()
        self._send, self.receive = trio.open_memory_channel[ConnectionEvent](capacity)
        self.dropped = 0

    def _emit(self, event: ConnectionEvent) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            # The consumer lags: drop the oldest event so the newest state is never lost.
            with suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                self.receive.receive_nowait()
            self.dropped += 1
            with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._send.send_nowait(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id.to_base58()
        if peer_id not in self._connected:
            self._connected.add(peer_id)
            self._emit(ConnectionEvent(peer_id, True))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        remote = conn.muxed_conn.peer_id
        peer_id = remote.to_base58()
        if network.get_connections(remote):
            return
        if peer_id in self._connected:
            self._connected.discard(peer_id)
            self._emit(ConnectionEvent(peer_id, False))
        self._host._forget_peer(remote)
        self._host._swarm.inbound_policy.forget_peer(peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return

    def close(self) -> None:
        self._send.close()


# ---------------------------------------------------------------------------------------------
# The host


class PeerHost:
    """A libp2p host for one node identity; see the module docstring for what it guarantees.

    Use::

        host = PeerHost(seed, ["/ip4/127.0.0.1/tcp/0"])
        host.set_stream_handler("/mindoo/sync/1", serve)
        async with host.run():
            peer = await host.connect(other_addr)
            stream = await host.open_stream(peer, "/mindoo/sync/1")

    A `PeerHost` runs once; to restart a node, build a new one from the same seed.
    """

    def __init__(
        self,
        seed: bytes,
        listen_addrs: Sequence[str],
        *,
        config: HostConfig | None = None,
    ) -> None:
        self._config = config or HostConfig()
        self._listen_addrs = [parse_listen_addr(text) for text in listen_addrs]
        key_pair = peer_key_pair(seed)
        self._peer_id = peer_id_of_key_pair(key_pair)
        self._libp2p_id = ID.from_pubkey(key_pair.public_key)
        self._host, self._swarm = _build_libp2p_host(key_pair, self._config)
        upgrader = self._swarm.upgrader
        assert isinstance(upgrader, _MindooUpgrader)
        self._upgrader: _MindooUpgrader = upgrader
        self._tracker = _ConnectionTracker(self, self._config.connection_events)
        self._swarm.register_notifee(self._tracker)
        self._dials_in_flight: dict[str, trio.Event] = {}
        self._started = False
        self._running = False

    # -- identity and state -------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This host's peer id (base58)."""
        return self._peer_id

    @property
    def config(self) -> HostConfig:
        return self._config

    @property
    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        """Per-peer (peer_id, connected) events, in order, bounded (oldest dropped first).

        Events are hints for waking up; `connected_peers()` is the truth.
        """
        return self._tracker.receive

    @property
    def dropped_connection_events(self) -> int:
        """How many connection events were dropped because the consumer lagged."""
        return self._tracker.dropped

    @property
    def libp2p_host(self) -> BasicHost:
        """The underlying py-libp2p host, only for attaching a libp2p service (GossipSub).

        Dial and open streams through `PeerHost`, never through this object.
        """
        return self._host

    def listen_addrs(self) -> list[str]:
        """The addresses this host listens on, ports resolved, each ending in /p2p/PEER_ID."""
        return [f"{addr}/p2p/{self._peer_id}" for addr in self._host.get_transport_addrs()]

    def connected_peers(self) -> frozenset[str]:
        """Peer ids with at least one live connection."""
        return frozenset(
            peer.to_base58() for peer, conns in self._swarm.connections.items() if conns
        )

    def is_connected(self, peer_id: str) -> bool:
        return bool(self._swarm.get_connections(to_libp2p_id(peer_id)))

    def dialled(self, peer_id: str) -> bool:
        """True when a live connection to ``peer_id`` is one this host dialled (False for a
        connection the peer dialled, or none)."""
        connections = self._swarm.get_connections(to_libp2p_id(peer_id))
        return any(conn.muxed_conn.is_initiator for conn in connections)

    # -- admission ----------------------------------------------------------------------------

    def remote_address(self, peer_id: str) -> str | None:
        """The transport address of the connection to ``peer_id`` in use (None when not
        connected or unknown), as a multiaddr ending in /p2p/PEER_ID."""
        for conn in self._swarm.get_connections(to_libp2p_id(peer_id)):
            try:
                addrs = conn.get_transport_addresses()
            except Exception:  # a connection closing under us: no address to show
                continue
            if addrs:
                return f"{addrs[0]}/p2p/{peer_id}"
        return None

    def set_peer_gate(self, allowed: Callable[[str], bool]) -> None:
        """``allowed(peer_id)`` decides, right after Noise authenticates a peer and before the
        connection counts as open, whether a connection (inbound or outbound) may stay: a
        banned peer is refused whatever connections it already has. Must be fast and must not
        raise."""
        self._upgrader.peer_allowed = allowed

    def mark_proven(self, peer_id: str) -> None:
        """``peer_id`` proved (in a sync handshake) that it shares a tenant: its inbound
        connection no longer counts as unproven and has no deadline."""
        self._swarm.inbound_policy.prove(peer_id)

    @property
    def unproven_inbound(self) -> int:
        """Inbound connections not proven yet (see :mod:`.inbound_policy`)."""
        return self._swarm.inbound_policy.unproven

    async def _expire_unproven(self) -> None:
        """Close inbound connections still unproven past the deadline (checked every second,
        or more often for short deadlines)."""
        policy = self._swarm.inbound_policy
        interval = min(1.0, policy.limits.proof_deadline / 4)
        while True:
            await trio.sleep(interval)
            for peer_id in policy.expired(trio.current_time()):
                logger.info(
                    "closing the connection of %s: it proved no shared tenant within %s s",
                    peer_id,
                    policy.limits.proof_deadline,
                )
                await self.disconnect(peer_id)

    # -- lifecycle ----------------------------------------------------------------------------

    @asynccontextmanager
    async def run(self) -> AsyncIterator[PeerHost]:
        """Listen on the configured addresses until the block exits, then close everything.

        Raises :class:`ListenError` if any address cannot be listened on. py-libp2p runs the
        block inside its own nurseries; an exception leaving the block comes out as itself, not
        wrapped in an exception group, whenever it is the only one.
        """
        if self._started:
            raise RuntimeError("a PeerHost runs once; build a new one to restart")
        self._started = True
        for addr in self._listen_addrs:
            _ensure_port_free(addr)
        listen_error: ListenError | None = None
        try:
            async with self._host.run(self._listen_addrs):
                try:
                    listening = self._host.get_transport_addrs()
                    if len(listening) < len(self._listen_addrs):
                        listen_error = ListenError(
                            f"listening on {[str(a) for a in listening]} of"
                            f" {[str(a) for a in self._listen_addrs]}"
                        )
                    else:
                        self._running = True
                        logger.info("peer %s listening on %s", self._peer_id, self.listen_addrs())
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._expire_unproven)
                            yield self
                            nursery.cancel_scope.cancel()
                finally:
                    self._running = False
                    await self._close_libp2p_host()
        except BaseExceptionGroup as group:
            raise sole_exception(group) from None
        finally:
            self._running = False
            self._tracker.close()
        if listen_error is not None:
            raise listen_error

    async def _close_libp2p_host(self) -> None:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(self._config.close_timeout) as closing,
        ):
            await self._host.close()
        if closing.cancelled_caught:
            logger.warning("closing peer host %s timed out", self._peer_id)

    # -- connections --------------------------------------------------------------------------

    async def connect(self, addr: str) -> str:
        """Connect to the peer at ``addr`` (which must end in /p2p/PEER_ID); return its peer id.

        Returns at once if already connected. Dials exactly ``addr``, never another address of
        that peer, and fails with :class:`DialError` if the listener is not that peer.
        """
        self._require_running()
        transport_addr, peer_id = parse_dial_addr(addr)
        if peer_id == self._peer_id:
            raise DialError("refusing to dial our own peer id")
        remote = to_libp2p_id(peer_id)
        while not self._swarm.get_connections(remote):
            in_flight = self._dials_in_flight.get(peer_id)
            if in_flight is not None:  # another task is dialing this peer: share its result
                await in_flight.wait()
                continue
            done = trio.Event()
            self._dials_in_flight[peer_id] = done
            try:
                await self._dial(transport_addr, remote)
            except DialError:
                # A simultaneous dial: the peer kept its own connection to us and refused this
                # one (one connection per peer, see .inbound_policy). Connected all the same.
                if not await self._connected_soon(remote):
                    raise
            finally:
                del self._dials_in_flight[peer_id]
                done.set()
            break  # dialed once; a connection that dropped at once is not redialed here
        return peer_id

    async def _connected_soon(self, remote: ID) -> bool:
        """Whether a connection to ``remote`` exists now or within the next second."""
        with trio.move_on_after(1.0):
            while not self._swarm.get_connections(remote):
                await trio.sleep(0.02)
            return True
        return False

    async def _dial(self, transport_addr: multiaddr.Multiaddr, remote: ID) -> None:
        # A restarted peer may sit in the swarm's 60 s negative dial cache (defect 6). dial_addr
        # does not consult it, but clear it anyway so no other path refuses the peer.
        self._swarm.unblock_peer(remote)
        try:
            with trio.fail_after(self._config.dial_timeout):
                await self._swarm.dial_addr(transport_addr, remote)
        except trio.TooSlowError as exc:
            raise DialError(
                f"dialing {transport_addr}/p2p/{remote} took over {self._config.dial_timeout} s"
            ) from exc
        except (BaseLibp2pError, OSError) as exc:
            raise DialError(f"dialing {transport_addr}/p2p/{remote} failed: {exc}") from exc

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to ``peer_id`` (no-op when not connected)."""
        remote = to_libp2p_id(peer_id)
        with trio.move_on_after(self._config.close_timeout):
            await self._host.disconnect(remote)

    def _forget_peer(self, remote: ID) -> None:
        """Drop a disconnected peer's peerstore data, so the peerstore stays bounded."""
        if remote == self._libp2p_id:
            return
        with suppress(KeyError):
            self._host.get_peerstore().clear_peerdata(remote)

    # -- streams ------------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve inbound streams of ``protocol`` with ``handler`` (one task per stream)."""
        config = self._config

        async def serve(net_stream: INetStream) -> None:
            stream = FramedStream.over_libp2p(
                net_stream, max_frame_size=config.max_frame_size, timeout=config.stream_timeout
            )
            try:
                await handler(stream)
            except TransportError as exc:
                logger.debug("stream %s from %s ended: %s", protocol, stream.remote_peer_id, exc)
                await stream.reset()
            except Exception:
                logger.exception("handler for %s from %s failed", protocol, stream.remote_peer_id)
                await stream.reset()
            else:
                with trio.CancelScope(shield=True):
                    await stream.close()
            finally:
                if not stream.is_closed:  # cancelled
                    await stream.reset()

        self._host.set_stream_handler(TProtocol(protocol), serve)

    def remove_stream_handler(self, protocol: str) -> None:
        self._host.remove_stream_handler(TProtocol(protocol))

    async def open_stream(self, peer_id: str, protocol: str) -> FramedStream:
        """Open a stream of ``protocol`` to a connected peer.

        Raises :class:`PeerNotConnected` (this never dials), :class:`StreamOpenError` or
        :class:`StreamTimeout`.
        """
        self._require_running()
        remote = to_libp2p_id(peer_id)
        if not self._swarm.get_connections(remote):
            raise PeerNotConnected(f"not connected to {peer_id}")
        timeout = self._config.stream_timeout
        try:
            with trio.fail_after(timeout):
                net_stream = await self._host.new_stream(remote, [TProtocol(protocol)])
        except trio.TooSlowError as exc:
            raise StreamTimeout(f"opening {protocol} to {peer_id} took over {timeout} s") from exc
        except (BaseLibp2pError, OSError) as exc:
            if not self._swarm.get_connections(remote):
                raise PeerNotConnected(f"connection to {peer_id} closed: {exc}") from exc
            raise StreamOpenError(f"opening {protocol} to {peer_id} failed: {exc}") from exc
        return FramedStream.over_libp2p(
            net_stream, max_frame_size=self._config.max_frame_size, timeout=timeout
        )

    async def ping(self, peer_id: str) -> float:
        """One libp2p ping (``/ipfs/ping/1.0.0``, 32 random bytes echoed) to a connected
        peer: the round-trip time in seconds. Unbounded in time: the caller bounds it (a
        silent path never answers). Raises :class:`PeerNotConnected` or
        :class:`StreamOpenError` (the answer differs, the stream failed)."""
        self._require_running()
        remote = to_libp2p_id(peer_id)
        if not self._swarm.get_connections(remote):
            raise PeerNotConnected(f"not connected to {peer_id}")
        started = trio.current_time()
        payload = secrets.token_bytes(PING_SIZE)
        try:
            net_stream = await self._host.new_stream(remote, [PING_PROTOCOL])
            try:
                await net_stream.write(payload)
                answer = b""
                while len(answer) < PING_SIZE:
                    answer += await net_stream.read(PING_SIZE - len(answer))
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await net_stream.reset()
        except (BaseLibp2pError, OSError) as exc:
            if not self._swarm.get_connections(remote):
                raise PeerNotConnected(f"connection to {peer_id} closed: {exc}") from exc
            raise StreamOpenError(f"ping to {peer_id} failed: {exc}") from exc
        if answer != payload:
            raise StreamOpenError(f"ping to {peer_id}: the answer differs from the ping")
        return trio.current_time() - started

    def _require_running(self) -> None:
        if not self._running:
            raise RuntimeError("the PeerHost is not running (use `async with host.run():`)")

    def __repr__(self) -> str:
        return f"PeerHost({self._peer_id}, running={self._running})"


__all__ = [
    "SUPPORTED_LIBP2P_VERSION",
    "ConnectionEvent",
    "DialError",
    "HostConfig",
    "ListenError",
    "PeerHost",
    "PeerNotConnected",
    "StreamClosed",
    "StreamHandler",
    "StreamOpenError",
]
