"""The errors a `PeerHost` raises (all `TransportError`s, like those of its streams)."""

from __future__ import annotations

from .framing import TransportError


class DialError(TransportError):
    """A dial failed: unreachable, refused, timed out, or the peer is not who the address says."""


class PeerNotConnected(TransportError):
    """An operation needs a live connection to a peer that is not connected."""


class StreamOpenError(TransportError):
    """A stream could not be opened (the peer does not speak the protocol, or refused it)."""


class ListenError(TransportError):
    """The host could not listen on one of its addresses (address in use, not local, ...)."""


__all__ = ["DialError", "ListenError", "PeerNotConnected", "StreamOpenError"]
