"""`Activity`: the daemon's events and metrics, driven directly (no daemon, no sockets)."""

from __future__ import annotations

from typing import Any

import trio

from mindoo_p2p.control import EventHub, event_matches
from mindoo_p2p.daemon.activity import PROGRESS_INTERVAL, Activity
from mindoo_p2p.http.metrics import DaemonMetrics
from mindoo_p2p.rejection import Rejected, RejectionKind
from mindoo_p2p.sync.protocol import SyncReport

TENANT = bytes(16)


def _drain(events: trio.MemoryReceiveChannel[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_peer_changes_are_told_once_and_progress_is_throttled() -> None:
    now = [0.0]
    hub, metrics = EventHub(), DaemonMetrics()
    activity = Activity(hub, metrics, clock=lambda: now[0])
    async with hub.subscribe() as events:
        activity.peer("p", connected=False)  # never connected: nothing to tell
        activity.peer("p", connected=True)
        activity.peer("p", connected=True)
        for step in range(10):  # 10 progress calls within one interval: one event
            now[0] = step * PROGRESS_INTERVAL / 20
            activity.session_progress("p", TENANT, "acme", step, 0)
        now[0] += PROGRESS_INTERVAL
        activity.session_progress("p", TENANT, "acme", 99, 1)
        activity.peer("p", connected=False)
        activity.peer("p", connected=False)
        seen = _drain(events)
    assert [(e["type"], e.get("connected"), e.get("received")) for e in seen] == [
        ("peer", True, None),
        ("sync", None, 0),
        ("sync", None, 99),
        ("peer", False, None),
    ]


async def test_sessions_and_refusals_are_counted() -> None:
    hub, metrics = EventHub(), DaemonMetrics()
    activity = Activity(hub, metrics)
    report = SyncReport(TENANT, "initiator", bytes_sent=10, bytes_received=20, elapsed_seconds=0.5)
    activity.session_done("p", "acme", report)
    activity.session_failed("p", None, None, role="responder", outcome="denied", error="no")
    bad = Rejected(b"x" * 32, RejectionKind.BAD_SIGNATURE, "bad signature")
    activity.refused(TENANT, (bad, bad))
    value = metrics.registry.get_sample_value
    assert value("mindoo_sync_sessions_total", {"role": "initiator", "outcome": "ok"}) == 1
    assert value("mindoo_sync_sessions_total", {"role": "responder", "outcome": "denied"}) == 1
    assert value("mindoo_bytes_total", {"protocol": "sync", "direction": "in"}) == 20
    assert value("mindoo_entries_rejected_total", {"kind": "bad signature"}) == 2
    recent = hub.recent()
    assert [e["type"] for e in recent] == ["sync", "sync", "rejected"]
    assert recent[1]["state"] == "denied" and recent[1]["tenant"] is None
    assert recent[2]["count"] == 2


def test_filters_pass_events_about_no_tenant() -> None:
    peer = {"type": "peer", "peer_id": "p", "connected": True}
    entry = {"type": "entry", "tenant": "ab", "tenant_name": "acme", "database": "notes"}
    assert event_matches(peer, "acme", "notes")
    assert event_matches(entry, "acme", "notes") and event_matches(entry, "ab", None)
    assert not event_matches(entry, "globex", None)
    assert not event_matches(entry, "acme", "todo")
