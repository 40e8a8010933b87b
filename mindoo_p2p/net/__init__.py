"""Networking: the libp2p transport, and nothing else (the protocol that runs over it is
:mod:`mindoo_p2p.sync`).

Re-exported here:
- :mod:`.peer_identity`: the libp2p Ed25519 identity from a seed, peer ids, peer addresses.
- :mod:`.framing`: `FramedStream` (length-prefixed frames, a deadline on every operation) and
  the transport errors (`TransportError` and its subclasses).
- :mod:`.host`: `PeerHost`, the libp2p host (TCP + Noise + Yamux) with py-libp2p's defects
  handled.
- :mod:`.address_book`: `AddressBook` and the `Backoff` redial policy (pure data).
- :mod:`.dialer`: `maintain_connections`, the task that keeps known peers connected.

py-libp2p takes about a second to import, so these names load on first use: importing a
sans-I/O module of this package (messages, sync protocol) does not pull libp2p in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .address_book import AddressBook, Backoff, PeerRecord
    from .dialer import maintain_connections
    from .framing import (
        FramedStream,
        FrameTooLarge,
        StreamClosed,
        StreamTimeout,
        TransportError,
        memory_framed_stream_pair,
    )
    from .host import (
        ConnectionEvent,
        DialError,
        HostConfig,
        ListenError,
        PeerHost,
        PeerNotConnected,
        StreamOpenError,
    )
    from .peer_identity import parse_dial_addr, peer_id_of, peer_key_pair, peer_public_key

_EXPORTS = {
    "AddressBook": "address_book",
    "Backoff": "address_book",
    "PeerRecord": "address_book",
    "maintain_connections": "dialer",
    "FramedStream": "framing",
    "FrameTooLarge": "framing",
    "StreamClosed": "framing",
    "StreamTimeout": "framing",
    "TransportError": "framing",
    "memory_framed_stream_pair": "framing",
    "ConnectionEvent": "host",
    "DialError": "host",
    "HostConfig": "host",
    "ListenError": "host",
    "PeerHost": "host",
    "PeerNotConnected": "host",
    "StreamOpenError": "host",
    "parse_dial_addr": "peer_identity",
    "peer_id_of": "peer_identity",
    "peer_key_pair": "peer_identity",
    "peer_public_key": "peer_identity",
}

__all__ = [
    "AddressBook",
    "Backoff",
    "ConnectionEvent",
    "DialError",
    "FrameTooLarge",
    "FramedStream",
    "HostConfig",
    "ListenError",
    "PeerHost",
    "PeerNotConnected",
    "PeerRecord",
    "StreamClosed",
    "StreamOpenError",
    "StreamTimeout",
    "TransportError",
    "maintain_connections",
    "memory_framed_stream_pair",
    "parse_dial_addr",
    "peer_id_of",
    "peer_key_pair",
    "peer_public_key",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
