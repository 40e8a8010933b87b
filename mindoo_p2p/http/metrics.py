"""The daemon's metrics in Prometheus form (``GET /metrics``), one registry per daemon.

Several daemons run in one test process, so nothing goes to prometheus_client's global
registry: each `DaemonMetrics` owns a `CollectorRegistry`. The daemon calls the ``note_*``
methods at the points where things happen (cheap: a counter increment); gauges that mirror
state (entries held, connected peers) are read when scraped.

================================================  ============================================
metric                                            what
================================================  ============================================
``mindoo_entries_held``                           entries in the store (read at scrape time)
``mindoo_entries_written_total{origin}``          entries stored, by origin (local, gossip,
                                                  sync, import, other; batches dropped from a
                                                  full event queue are not counted)
``mindoo_bytes_total{protocol,direction}``        payload bytes in/out: ``sync`` (session frames)
                                                  and ``gossip`` (entries)
``mindoo_messages_total{protocol,direction}``     frames (sync) or entries (gossip) in/out
``mindoo_sync_sessions_total{role,outcome}``      finished sessions: ``ok``, ``failed``,
                                                  ``denied``
``mindoo_sync_session_seconds{role}``             duration of successful sessions (histogram)
``mindoo_recon_round_trips_total``                requests answered within sessions
``mindoo_gossip_delivered_total``                 gossiped entries stored here
``mindoo_gossip_dropped_total{reason}``           entries not gossiped (``queue_full``,
                                                  ``publish_failed``)
``mindoo_gossip_rejected_total{kind}``            gossiped entries refused (the rejection kind)
``mindoo_entries_rejected_total{kind}``           entries from peers refused in sessions
``mindoo_event_loop_lag_seconds``                 how late the loop woke the last probe
                                                  (histogram; `run_lag_probe`)
``mindoo_connected_peers``                        peers connected now (read at scrape time)
================================================  ============================================
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..sync.protocol import SyncReport

CONTENT_TYPE = CONTENT_TYPE_LATEST
LAG_PROBE_SECONDS = 1.0
SESSION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class DaemonMetrics:
    """One daemon's metrics; see the module docstring."""

    def __init__(
        self,
        *,
        entries_held: Callable[[], float] = lambda: 0,
        connected_peers: Callable[[], float] = lambda: 0,
    ) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        Gauge("mindoo_entries_held", "Entries in the store.", registry=registry).set_function(
            entries_held
        )
        Gauge("mindoo_connected_peers", "Peers connected now.", registry=registry).set_function(
            connected_peers
        )
        self.entries_written = Counter(
            "mindoo_entries_written", "Entries stored, by origin.", ["origin"], registry=registry
        )
        self.bytes = Counter(
            "mindoo_bytes",
            "Bytes in and out, by protocol.",
            ["protocol", "direction"],
            registry=registry,
        )
        self.messages = Counter(
            "mindoo_messages",
            "Messages (sync frames, gossiped entries) in and out, by protocol.",
            ["protocol", "direction"],
            registry=registry,
        )
        self.sessions = Counter(
            "mindoo_sync_sessions",
            "Finished sync sessions, by role and outcome.",
            ["role", "outcome"],
            registry=registry,
        )
        self.session_seconds = Histogram(
            "mindoo_sync_session_seconds",
            "Duration of successful sync sessions.",
            ["role"],
            buckets=SESSION_BUCKETS,
            registry=registry,
        )
        self.round_trips = Counter(
            "mindoo_recon_round_trips", "Requests answered within sessions.", registry=registry
        )
        self.gossip_delivered = Counter(
            "mindoo_gossip_delivered", "Gossiped entries stored here.", registry=registry
        )
        self.gossip_dropped = Counter(
            "mindoo_gossip_dropped",
            "Entries not gossiped, by reason.",
            ["reason"],
            registry=registry,
        )
        self.gossip_rejected = Counter(
            "mindoo_gossip_rejected",
            "Gossiped entries refused, by kind.",
            ["kind"],
            registry=registry,
        )
        self.entries_rejected = Counter(
            "mindoo_entries_rejected",
            "Entries from peers refused in sessions, by kind.",
            ["kind"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            "mindoo_event_loop_lag_seconds",
            "How late the event loop woke a periodic probe.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    # -- what happened -------------------------------------------------------------------------
    def note_entries_written(self, origin: str, count: int) -> None:
        self.entries_written.labels(origin).inc(count)

    def note_session(self, report: SyncReport) -> None:
        """A session that finished: its traffic, duration and round trips."""
        self.sessions.labels(report.role, "ok").inc()
        self.session_seconds.labels(report.role).observe(report.elapsed_seconds)
        self.bytes.labels("sync", "in").inc(report.bytes_received)
        self.bytes.labels("sync", "out").inc(report.bytes_sent)
        self.messages.labels("sync", "in").inc(report.frames_received)
        self.messages.labels("sync", "out").inc(report.frames_sent)
        self.round_trips.inc(report.round_trips)

    def note_session_failed(self, role: str, outcome: str) -> None:
        self.sessions.labels(role, outcome).inc()

    def note_gossip_in(self, size: int) -> None:
        self.gossip_delivered.inc()
        self.bytes.labels("gossip", "in").inc(size)
        self.messages.labels("gossip", "in").inc()

    def note_gossip_out(self, size: int) -> None:
        self.bytes.labels("gossip", "out").inc(size)
        self.messages.labels("gossip", "out").inc()

    def note_gossip_dropped(self, reason: str) -> None:
        self.gossip_dropped.labels(reason).inc()

    def note_gossip_rejected(self, kind: str) -> None:
        self.gossip_rejected.labels(kind).inc()

    def note_rejected(self, kind: str, count: int = 1) -> None:
        self.entries_rejected.labels(kind).inc(count)

    async def run_lag_probe(self, period: float = LAG_PROBE_SECONDS) -> None:
        """Sleep ``period`` again and again, recording how late each wake-up was (the time
        other tasks kept the loop busy). Runs until cancelled."""
        while True:
            start = trio.current_time()
            await trio.sleep(period)
            self.loop_lag.observe(max(0.0, trio.current_time() - start - period))
