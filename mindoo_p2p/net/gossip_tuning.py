"""Bounds, pacing and counters of a `GossipService` (`GossipTuning`, `GossipStats`). Pure data.

Why each default is what it is: the module docstring of :mod:`._gossip_pubsub` (py-libp2p's own
defaults drop messages silently).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GossipTuning:
    """Bounds and pacing of a `GossipService`; the reasons are in :mod:`._gossip_pubsub`."""

    max_topics: int = 1024
    """Topics this node subscribes to at most."""
    max_remote_topics: int = 4096
    """Subscriptions remembered per peer (topics we may subscribe to later included)."""
    max_unadmitted_remote_topics: int = 128
    """Subscriptions remembered per peer while it is admitted to none of our topics (it has
    proven no shared tenant yet): a stranger cannot make us hold thousands of names."""
    peer_queue_size: int = 512
    """Outbound RPCs queued per peer (py-libp2p's default is 32)."""
    delivery_queue: int = 1024
    """Accepted messages waiting for `on_entry` / `on_announce`."""
    delivery_queue_bytes: int = 32 * 1024 * 1024
    """Bytes of accepted messages waiting for delivery."""
    publish_wait: float = 2.0
    """Seconds `publish_entry` waits for room in a full mesh peer's queue."""
    heartbeat_interval: int = 1
    """Seconds between GossipSub heartbeats."""
    mesh_degree: int = 6
    mesh_degree_low: int = 4
    mesh_degree_high: int = 12
    validate_in_thread: bool = False
    """Run ``validate`` in a worker thread (for a validator that may block, e.g. on disk)."""

    def __post_init__(self) -> None:
        positive = (
            "max_topics",
            "max_remote_topics",
            "max_unadmitted_remote_topics",
            "peer_queue_size",
            "delivery_queue",
            "delivery_queue_bytes",
            "heartbeat_interval",
            "mesh_degree_low",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.publish_wait > 0:
            raise ValueError("publish_wait must be positive")
        if not self.mesh_degree_low <= self.mesh_degree <= self.mesh_degree_high:
            raise ValueError("mesh degrees must satisfy low <= degree <= high")
        if self.peer_queue_size < 4:
            raise ValueError("peer_queue_size must be at least 4")


@dataclass
class GossipStats:
    """Counters of one `GossipService`, for status and tests."""

    published_entries: int = 0
    published_announcements: int = 0
    delivered_entries: int = 0
    delivered_announcements: int = 0
    rejected: int = 0
    """Messages refused by validation (malformed, wrong topic, failed ``validate``)."""
    dropped_unadmitted: int = 0
    """Messages dropped because their forwarder is not admitted to the topic."""
    dropped_deliveries: int = 0
    """Accepted messages dropped because the delivery queue was full."""
    publish_stalls: int = 0
    """Publishes that gave up waiting for a congested peer's queue."""


__all__ = ["GossipStats", "GossipTuning"]
