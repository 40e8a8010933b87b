"""Per-peer connection events of a `PeerHost`: a peer became connected (its first connection
opened) or disconnected (its last closed). Events are hints for waking up, bounded and lossy
(oldest dropped first); `PeerHost.connected_peers()` is the truth."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import NamedTuple

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID


class ConnectionEvent(NamedTuple):
    """A peer became connected (its first connection opened) or disconnected (its last closed)."""

    peer_id: str
    connected: bool


class ConnectionTracker(INotifee):
    """Turns per-connection notifications into per-peer connected/disconnected events.

    Registered with the swarm (``swarm.register_notifee``). Events go to a bounded channel
    (`receive`); when the consumer lags the oldest event is dropped (counted in `dropped`), so
    the newest state is never lost. ``on_gone(peer)`` runs when a peer's last connection closed
    (the host forgets what it held about the peer).
    """

    def __init__(self, capacity: int, on_gone: Callable[[ID], None]) -> None:
        self._on_gone = on_gone
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
        self._on_gone(remote)

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


__all__ = ["ConnectionEvent", "ConnectionTracker"]
