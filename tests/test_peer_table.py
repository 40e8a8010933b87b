"""The daemon's peer table: penalties, bans (with an injected clock), blocks, the bound, and
what status shows. Pure: no daemon, no sockets."""

from __future__ import annotations

import pytest

from mindoo_p2p.daemon import BAN_SECONDS, BAN_THRESHOLD, PeerTable
from mindoo_p2p.daemon.peer_table import SUMMARY_FULL_CHECK_EVERY
from mindoo_p2p.sync.protocol import SyncReport

TENANT = b"t" * 16


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(database: str, *, received: int = 0, unavailable: int = 0) -> SyncReport:
    result = SyncReport(tenant_id=TENANT, role="initiator")
    db = result.database(database)
    db.received = received
    db.unavailable = unavailable
    return result


def test_penalties_add_up_to_a_ban_that_expires() -> None:
    clock = FakeClock()
    table = PeerTable(clock=clock)
    assert table.penalize("p", BAN_THRESHOLD - 1, "garbage") is False
    assert table.may_dial("p")
    assert table.peer("p").last_error == f"penalised {BAN_THRESHOLD - 1}: garbage"
    assert table.penalize("p", 1, "more garbage") is True  # disconnect it now
    assert table.is_banned("p") and not table.may_dial("p")
    clock.now += BAN_SECONDS - 1
    assert not table.may_dial("p")
    clock.now += 1
    assert table.may_dial("p")


def test_a_penalty_past_the_threshold_extends_the_ban() -> None:
    clock = FakeClock()
    table = PeerTable(clock=clock, ban_threshold=10, ban_seconds=60)
    table.penalize("p", 10, "x")
    clock.now += 50
    assert table.penalize("p", 1, "again") is True
    clock.now += 50
    assert table.is_banned("p")


def test_a_blocked_peer_is_refused_until_unblocked() -> None:
    table = PeerTable()
    table.block("p")
    assert not table.may_dial("p")
    table.unblock("p")
    assert table.may_dial("p")


def test_the_table_is_bounded_and_never_forgets_live_peers() -> None:
    clock = FakeClock()
    table = PeerTable(max_peers=10, clock=clock)
    table.connected("live")
    table.penalize("banned", BAN_THRESHOLD, "bad")
    table.session_started("syncing")
    for i in range(100):
        table.peer(f"idle{i}")
        assert len(table) <= 10
    assert {"live", "banned", "syncing"} <= set(table.states)


def test_sessions_record_shared_tenants_and_denials_until_membership_changes() -> None:
    table = PeerTable()
    table.connected("p")
    assert table.record("p", TENANT, report("notes", received=3), at_ms=5) is True
    assert table.record("p", TENANT, report("notes", received=2), at_ms=6) is False
    assert table.shares("p", TENANT)
    state = table.peer("p")
    assert state.sessions == 2 and state.last_sync_ms == 6
    assert state.databases[(TENANT, "notes")].received == 5
    assert table.denied("p", TENANT) is True  # it was shared: gossip admission changes
    assert not table.shares("p", TENANT) and TENANT in state.unshared_tenants
    table.membership_changed()
    assert TENANT not in state.unshared_tenants
    table.record("p", TENANT, report("notes"), at_ms=7)
    assert table.disconnected("p") is True
    assert not state.connected and not state.shared_tenants


def test_database_status_reports_the_worst_missing_count_and_who_is_caught_up() -> None:
    table = PeerTable()
    table.record("a", TENANT, report("notes"), at_ms=10)
    table.record("b", TENANT, report("notes", unavailable=4), at_ms=11)
    missing, caught_up = table.database_status(TENANT, "notes")
    assert missing == 4
    assert caught_up == [{"peer_id": "a", "at_ms": 10}]
    assert table.database_status(TENANT, "other") == (0, [])


def test_status_lists_connected_peers_first_then_by_id() -> None:
    table = PeerTable()
    for peer in ("c", "a", "b"):
        table.peer(peer)
    table.connected("c")
    table.record("c", TENANT, report("notes"), at_ms=1)
    rows = table.peers_status({TENANT: "acme"})
    assert [row["peer_id"] for row in rows] == ["c", "a", "b"]
    assert rows[0]["tenants"] == ["acme"] and rows[0]["connected"]
    assert set(rows[0]) == {
        "peer_id",
        "connected",
        "address",
        "last_sync_ms",
        "last_error",
        "penalty",
        "syncing",
        "progress",
        "sessions",
        "last_session",
        "keepalive",
        "dead_path",
        "tenants",
    }
    assert rows[1]["last_session"] is None  # no session with "a" yet


def test_status_shows_the_last_sessions_own_report() -> None:
    table = PeerTable()
    done = report("notes", received=3)
    done.elapsed_seconds = 0.0123
    done.databases["notes"].round_trips = 2
    done.databases["notes"].recon_rounds = 1
    done.recon_round_trips = 1
    done.bytes_sent, done.bytes_received = 100, 2000
    table.record("p", TENANT, done, at_ms=1)
    (row,) = table.peers_status({TENANT: "acme"})
    assert row["last_session"] == {
        "role": "initiator",
        "elapsed_ms": 12.3,
        "round_trips": 2,
        "recon_rounds": 1,
        "recon_round_trips": 1,
        "received": 3,
        "sent": 0,
        "bytes_sent": 100,
        "bytes_received": 2000,
        "protocol_version": 0,
    }


def test_progress_is_shown_while_syncing_and_cleared_after() -> None:
    table = PeerTable()
    table.session_started("p")
    table.progress("p", received=3, sent=1)
    assert table.peer("p").progress == {"received": 3, "sent": 1}
    table.session_ended("p")
    assert table.peer("p").progress == {} and not table.peer("p").syncing


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_peers"):
        PeerTable(max_peers=0)


def test_one_session_in_n_is_a_full_check_that_stays_due_until_it_ends_well() -> None:
    """Per peer and tenant: `SUMMARY_FULL_CHECK_EVERY` - 1 sessions trust the summaries, then
    one reconciles everything; a full check that fails (no `summary_session_done`) stays due,
    so the peer cannot dodge it; a session of a version without summaries counts as full."""
    table = PeerTable()
    other = bytes(range(16))
    trusted = []
    for _ in range(2 * SUMMARY_FULL_CHECK_EVERY):
        trust = table.trusts_summary("p", TENANT)
        trusted.append(trust)
        table.summary_session_done("p", TENANT, full=not trust)
    pattern = [True] * (SUMMARY_FULL_CHECK_EVERY - 1) + [False]
    assert trusted == pattern * 2
    assert table.trusts_summary("p", other) and table.trusts_summary("q", TENANT)
    for _ in range(SUMMARY_FULL_CHECK_EVERY - 1):
        table.summary_session_done("p", TENANT, full=False)
    assert not table.trusts_summary("p", TENANT)
    assert not table.trusts_summary("p", TENANT)  # the full check failed: still due
    table.summary_session_done("p", TENANT, full=True)  # e.g. a version-2 session
    assert table.trusts_summary("p", TENANT)
