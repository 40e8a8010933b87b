"""What the daemon tells about its work: events for subscribers and metrics for scrapers.

The composition root calls one `Activity` method where something happens (a peer connects, a
session starts, makes progress, ends or fails, entries are stored or refused); this module
turns it into the `EventHub` event (the control socket's ``subscribe``, the HTTP API's
``/api/events``; docs/control-protocol.md lists them) and the `DaemonMetrics` counts. Call it
on the trio thread. Nothing here decides anything about sync.

==================  ===========================================================================
event ``type``      fields
==================  ===========================================================================
``peer``            ``peer_id``, ``connected`` (true on connect, false on disconnect), and
                    ``reason`` when the keepalive found the path dead (`net.keepalive`)
``sync``            ``peer_id``, ``tenant``, ``tenant_name``, ``state``: ``started``,
                    ``progress`` (``received``, ``sent`` so far; at most one per
                    `PROGRESS_INTERVAL` per peer), ``done`` (``role``, ``received``, ``sent``,
                    ``round_trips``, ``seconds``) or ``failed`` (``error``)
``rejected``        ``origin`` (``sync``), ``kind`` (a `RejectionKind` value), ``count``,
                    ``tenant``
``penalty``         ``peer_id``, ``points``, ``reason``
``entry``           one stored entry (see `NodeDaemon._publish_events`)
``conflict``        ``tenant``, ``tenant_name``, ``database``, ``document_id``, ``fields``: a
                    document now holds competing values (`conflict_events`); the same fields
                    as ``conflict_resolved`` when it held some and holds none now
``resync``          ``dropped``: entry events were dropped, assume anything changed
==================  ===========================================================================
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..control import EventHub
from ..http.metrics import DaemonMetrics
from ..rejection import Rejected
from ..sync.protocol import SyncReport

PROGRESS_INTERVAL = 0.25
"""Seconds between two ``sync``/``progress`` events of one peer, at least."""


class Activity:
    """The daemon's events and metrics; see the module docstring."""

    def __init__(
        self,
        events: EventHub,
        metrics: DaemonMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.metrics = metrics
        self._clock = clock
        self._last_progress: dict[str, float] = {}
        self._connected: set[str] = set()

    def peer(self, peer_id: str, *, connected: bool, reason: str | None = None) -> None:
        """A peer connected or went away; each change is told once (several parts of the
        daemon may notice the same disconnect). ``reason``: why the path was closed (the
        keepalive's verdict), told with the disconnect."""
        if connected == (peer_id in self._connected):
            return
        if connected:
            self._connected.add(peer_id)
        else:
            self._connected.discard(peer_id)
            self._last_progress.pop(peer_id, None)
        event: dict[str, Any] = {"type": "peer", "peer_id": peer_id, "connected": connected}
        if reason is not None:
            event["reason"] = reason
        self.events.publish(event)

    def _sync(
        self, peer_id: str, tenant_id: bytes, tenant_name: str | None, state: str
    ) -> dict[str, Any]:
        return {
            "type": "sync",
            "state": state,
            "peer_id": peer_id,
            "tenant": tenant_id.hex(),
            "tenant_name": tenant_name,
        }

    def session_started(self, peer_id: str, tenant_id: bytes, tenant_name: str | None) -> None:
        self.events.publish(self._sync(peer_id, tenant_id, tenant_name, "started"))

    def session_progress(
        self, peer_id: str, tenant_id: bytes, tenant_name: str | None, received: int, sent: int
    ) -> None:
        """Progress of a running session (only when somebody listens; throttled)."""
        if not self.events.subscriber_count:
            return
        now = self._clock()
        if now - self._last_progress.get(peer_id, -PROGRESS_INTERVAL) < PROGRESS_INTERVAL:
            return
        self._last_progress[peer_id] = now
        event = self._sync(peer_id, tenant_id, tenant_name, "progress")
        event.update(received=received, sent=sent)
        self.events.publish(event)

    def session_done(self, peer_id: str, tenant_name: str | None, report: SyncReport) -> None:
        self.metrics.note_session(report)
        event = self._sync(peer_id, report.tenant_id, tenant_name, "done")
        event.update(
            role=report.role,
            received=report.received,
            sent=report.sent,
            round_trips=report.round_trips,
            seconds=round(report.elapsed_seconds, 3),
        )
        self.events.publish(event)

    def session_failed(
        self,
        peer_id: str,
        tenant_id: bytes | None,
        tenant_name: str | None,
        *,
        role: str,
        outcome: str,
        error: str,
    ) -> None:
        """A session that ended without a report: ``outcome`` is ``failed`` or ``denied``."""
        self.metrics.note_session_failed(role, outcome)
        event = self._sync(peer_id, tenant_id or b"", tenant_name, outcome)
        if tenant_id is None:
            event["tenant"] = None
        event["error"] = error
        self.events.publish(event)

    def refused(self, tenant_id: bytes, refused: tuple[Rejected, ...]) -> None:
        """Entries of a session that were not stored (invalid or not accepted here)."""
        for kind, count in Counter(r.kind.value for r in refused).items():
            self.metrics.note_rejected(kind, count)
            self.events.publish(
                {
                    "type": "rejected",
                    "origin": "sync",
                    "kind": kind,
                    "count": count,
                    "tenant": tenant_id.hex(),
                }
            )

    def penalty(self, peer_id: str, points: int, reason: str) -> None:
        self.events.publish(
            {"type": "penalty", "peer_id": peer_id, "points": points, "reason": reason}
        )

    def conflicts(self, found: list[dict[str, Any]]) -> None:
        """``conflict`` / ``conflict_resolved`` events (`conflict_events` builds them)."""
        for event in found:
            self.events.publish(event)

    def entries_stored(self, origin: str, count: int) -> None:
        self.metrics.note_entries_written(origin, count)
