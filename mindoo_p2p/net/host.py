"""`PeerHost`: the node's libp2p host (TCP + Noise + Yamux), with py-libp2p's defects fixed.

What the host does and does not do:
- Identity: Ed25519 from the caller's 32-byte seed (see :mod:`.peer_identity`).
- Stack: TCP transport, Noise security, Yamux multiplexing, and nothing else, built from its
  parts (:mod:`._libp2p_stack`) so that a connection is always authenticated and encrypted with
  Noise.
- Dialing: only `connect(multiaddr)` dials, and only the address it is given, with the peer id
  in the address authenticated by Noise. The swarm's auto-connector and its peerstore-driven
  dials (`dial_peer`, also reached through `new_stream` and `host.connect`) are disabled, so
  nothing learned from a peer (Identify addresses) is ever dialed. No mDNS, UPnP or bootstrap.
- Admission: unproven inbound connections are bounded and expire (:mod:`.inbound_policy`, pure,
  applied by the patched swarm of :mod:`._swarm`); the peer gate (`set_peer_gate`) refuses
  banned peers right after Noise.
- Streams: `set_stream_handler` / `open_stream` speak in `FramedStream` objects
  (:mod:`._streams`).
- Events: per-peer connected/disconnected events (:mod:`.connection_events`).
- Lifecycle: ``async with PeerHost(...).run():`` listens (a fixed port another listener holds
  is refused: :mod:`._listen`), and on exit always closes the host (py-libp2p leaks sockets
  when its ``run()`` is left without ``close()``).

py-libp2p 0.8.1 defects handled (see shared/notes/py-libp2p.md; `_libp2p_pin` refuses another
release):
- Inbound connection slots leak (libp2p/py-libp2p#1426): each inbound connection holds a
  `CapacityLimiter` token until the whole swarm stops, so after ``max_connections`` inbound
  connections in total every new one is refused. `_swarm.MindooSwarm` releases the token when
  the connection closes.
- Restarted peers are refused for 60 s by a negative dial cache: `connect` unblocks the peer
  and dials the given address directly, which that cache never consults.
- The default `ConnectionConfig` waits 250 ms for extra dials after the first one succeeds:
  ``max_connections_per_peer=1`` makes a loopback connect take milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.basic_host import BasicHost
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.peer.id import ID

from ..errors import sole_exception
from ._libp2p_pin import SUPPORTED_LIBP2P_VERSION
from ._libp2p_stack import build_libp2p_host
from ._listen import ensure_port_free
from ._optimistic_select import OptimisticSelect
from ._streams import StreamHandler, framed_handler, ping_exchange
from ._swarm import MindooUpgrader
from .connection_events import ConnectionEvent, ConnectionTracker
from .framing import FramedStream, Libp2pByteStream, StreamClosed, StreamTimeout
from .host_config import HostConfig
from .host_errors import DialError, ListenError, PeerNotConnected, StreamOpenError
from .peer_identity import (
    parse_dial_addr,
    parse_listen_addr,
    peer_id_of_key_pair,
    peer_key_pair,
    to_libp2p_id,
)

logger = logging.getLogger(__name__)


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
        self._host, self._swarm = build_libp2p_host(key_pair, self._config)
        upgrader = self._swarm.upgrader
        assert isinstance(upgrader, MindooUpgrader)
        self._upgrader: MindooUpgrader = upgrader
        self._tracker = ConnectionTracker(self._config.connection_events, self._peer_gone)
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
            ensure_port_free(addr)
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

    def _peer_gone(self, remote: ID) -> None:
        """The last connection of ``remote`` closed: drop its peerstore data (so the peerstore
        stays bounded) and what the inbound policy held about it."""
        if remote != self._libp2p_id:
            with suppress(KeyError):
                self._host.get_peerstore().clear_peerdata(remote)
        self._swarm.inbound_policy.forget_peer(remote.to_base58())

    # -- streams ------------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve inbound streams of ``protocol`` with ``handler`` (one task per stream)."""
        serve = framed_handler(
            protocol,
            handler,
            max_frame_size=self._config.max_frame_size,
            timeout=self._config.stream_timeout,
        )
        self._host.set_stream_handler(TProtocol(protocol), serve)

    def remove_stream_handler(self, protocol: str) -> None:
        self._host.remove_stream_handler(TProtocol(protocol))

    async def open_stream(
        self, peer_id: str, protocol: str, *, optimistic: bool = False
    ) -> FramedStream:
        """Open a stream of ``protocol`` to a connected peer.

        With ``optimistic``, the protocol is proposed with the first frame sent instead of
        negotiated first (:mod:`._optimistic_select`: no round trip before the first frame);
        a peer that does not serve ``protocol`` then shows as :class:`StreamOpenError` at the
        first receive, not here. For protocols the peer is expected to serve.

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
                if optimistic:
                    net_stream = await self._swarm.new_stream(remote)
                    net_stream.set_protocol(TProtocol(protocol))
                    return FramedStream(
                        OptimisticSelect(Libp2pByteStream(net_stream), protocol),
                        net_stream.muxed_conn.peer_id.to_base58(),
                        protocol=protocol,
                        max_frame_size=self._config.max_frame_size,
                        timeout=timeout,
                    )
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
        try:
            net_stream = await self._host.new_stream(remote, [PING_PROTOCOL])
            echoed = await ping_exchange(net_stream)
        except (BaseLibp2pError, OSError) as exc:
            if not self._swarm.get_connections(remote):
                raise PeerNotConnected(f"connection to {peer_id} closed: {exc}") from exc
            raise StreamOpenError(f"ping to {peer_id} failed: {exc}") from exc
        if not echoed:
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
