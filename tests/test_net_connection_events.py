"""`ConnectionTracker` driven directly with stand-in connections: no host, no sockets.

It turns py-libp2p's per-connection notifications into per-peer events: one "connected" for a
peer's first connection, one "disconnected" when its last closes (then ``on_gone``), and a
bounded channel that drops the oldest event when the consumer lags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from mindoo_p2p.net.connection_events import ConnectionEvent, ConnectionTracker
from mindoo_p2p.net.peer_identity import peer_id_of, to_libp2p_id


def peer(n: int) -> ID:
    return to_libp2p_id(peer_id_of(bytes([n]) * 32))


@dataclass
class _Muxed:
    peer_id: ID


@dataclass
class _Conn:
    muxed_conn: _Muxed


@dataclass
class _Network:
    """The part of INetwork the tracker reads: a peer's live connections."""

    live: dict[ID, list[_Conn]] = field(default_factory=dict)

    def get_connections(self, remote: ID) -> list[_Conn]:
        return self.live.get(remote, [])

    def open(self, remote: ID) -> _Conn:
        conn = _Conn(_Muxed(remote))
        self.live.setdefault(remote, []).append(conn)
        return conn

    def close(self, conn: _Conn) -> None:
        self.live[conn.muxed_conn.peer_id].remove(conn)


def drain(tracker: ConnectionTracker) -> list[ConnectionEvent]:
    events = []
    while True:
        try:
            events.append(tracker.receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return events


async def test_one_event_per_peer_not_per_connection_and_on_gone_after_the_last() -> None:
    gone: list[ID] = []
    tracker = ConnectionTracker(8, gone.append)
    network: Any = _Network()
    a, b = peer(1), peer(2)
    first, second = network.open(a), network.open(a)
    await tracker.connected(network, first)
    await tracker.connected(network, second)
    other = network.open(b)
    await tracker.connected(network, other)
    network.close(first)
    await tracker.disconnected(network, first)  # a still has a connection: nothing
    assert gone == []
    network.close(second)
    await tracker.disconnected(network, second)
    assert gone == [a]
    assert drain(tracker) == [
        ConnectionEvent(a.to_base58(), True),
        ConnectionEvent(b.to_base58(), True),
        ConnectionEvent(a.to_base58(), False),
    ]
    assert tracker.dropped == 0


async def test_a_lagging_consumer_loses_the_oldest_events_never_the_newest() -> None:
    tracker = ConnectionTracker(2, lambda _peer: None)
    network: Any = _Network()
    peers = [peer(n) for n in range(1, 5)]
    for remote in peers:
        await tracker.connected(network, network.open(remote))
    assert tracker.dropped == 2
    assert drain(tracker) == [ConnectionEvent(p.to_base58(), True) for p in peers[2:]]


async def test_after_close_events_are_not_sent_and_nothing_raises() -> None:
    tracker = ConnectionTracker(2, lambda _peer: None)
    network: Any = _Network()
    tracker.close()
    await tracker.connected(network, network.open(peer(1)))
    assert tracker.dropped == 0
    with pytest.raises(trio.EndOfChannel):  # no event was sent after close
        tracker.receive.receive_nowait()
