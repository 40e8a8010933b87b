"""`HostConfig`: the tunables of a `PeerHost`. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field

from .framing import DEFAULT_MAX_FRAME_SIZE, DEFAULT_TIMEOUT
from .inbound_policy import InboundLimits


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


__all__ = ["HostConfig"]
