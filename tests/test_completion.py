"""Status people can trust (issue 10): completion while syncing, and ``mindoo sync wait``.

An empty node mid-sync showed "17920 entries, 0 known missing", which read like done.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from cli_helpers import PASSWORD as CLI_PASSWORD
from cli_helpers import mindoo
from helpers import running_daemon, seal_entry

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.crypto.signing import SigningKeyPair
from mindoo_p2p.daemon.peer_table import PeerTable
from mindoo_p2p.node import Node
from mindoo_p2p.sync.driver import run_initiator, run_responder
from mindoo_p2p.sync.protocol import SyncLimits, SyncReport
from mindoo_p2p.testing.memory_sync import MemorySyncStore, memory_frame_pair

MakeNode = Callable[[str], Node]
TENANT = os.urandom(16)
KEY = SigningKeyPair.generate()


class Everyone:
    tenant_id = TENANT
    member_key = KEY

    def may_replicate(self, member_key: bytes) -> bool:
        return True

    def membership_evidence(self) -> bytes:
        return b""

    def admit(self, member_key: bytes, evidence: bytes) -> bool:
        return False


def entries(count: int, database: str = "notes") -> MemorySyncStore:
    store = MemorySyncStore(TENANT)
    store.add_own(
        [
            seal_entry(
                tenant_id=TENANT,
                database=database,
                author=KEY,
                author_seq=i + 1,
                timestamp_ms=1_760_000_000_000 + i,
                key_id=bytes(16),
                key=bytes(32),
                payload=b"x" * 40,
            )
            for i in range(count)
        ]
    )
    return store


@pytest.mark.parametrize("count", [3000, pytest.param(20_000, marks=pytest.mark.slow)])
async def test_completion_goes_from_0_to_100_percent_while_an_empty_node_syncs(
    autojump_clock: trio.testing.MockClock, count: int
) -> None:
    full, empty = entries(count), MemorySyncStore(TENANT)
    table = PeerTable(clock=trio.current_time)
    seen: list[dict[str, Any]] = []

    def on_progress(report: SyncReport) -> None:
        table.live("peer", TENANT, report)
        (row,) = table.completion("peer", {TENANT: "acme"})
        seen.append(row)

    near, far = memory_frame_pair()
    limits = SyncLimits(fetch_batch=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_responder(far, b"B", b"A", {TENANT: (Everyone(), full)}, limits=limits)
        )
        table.session_started("peer")
        report = await run_initiator(
            near, b"A", b"B", Everyone(), empty, on_progress=on_progress, limits=limits
        )
    assert len(empty) == count
    assert seen[0]["state"] == "syncing" and seen[0]["percent"] == 0.0
    assert seen[0]["lacking"] == count  # known from the peer's count before any reconciliation
    percents = [row["percent"] for row in seen]
    assert percents == sorted(percents) and len(set(percents)) > 10  # it moves, never back
    assert all(row["state"] == "syncing" for row in seen)
    assert seen[-1]["percent"] == 100.0 and seen[-1]["lacking"] == 0
    table.session_ended("peer")
    table.record("peer", TENANT, report, at_ms=1)
    (done,) = table.completion("peer", {TENANT: "acme"})
    assert (done["state"], done["percent"], done["held"], done["lacking"]) == (
        "up to date",
        100.0,
        count,
        0,
    )


def test_a_database_is_never_up_to_date_before_a_session_says_so() -> None:
    table = PeerTable()
    table.connected("p")
    assert table.database_completion(TENANT, "notes")["state"] == "not synced"
    report = SyncReport(TENANT, "initiator")
    report.database("notes").unavailable = 2
    table.record("p", TENANT, report, at_ms=5)
    assert table.database_completion(TENANT, "notes")["state"] == "behind"
    progress = table.sync_progress(0, [TENANT])
    assert not progress["done"] and progress["waiting"] == ["p"]
    good = SyncReport(TENANT, "initiator")
    good.database("notes")
    table.record("p", TENANT, good, at_ms=9)
    assert table.database_completion(TENANT, "notes")["state"] == "up to date"
    assert table.sync_progress(9, [TENANT])["done"]
    assert not table.sync_progress(10, [TENANT])["done"]  # no session since the wait began


async def test_sync_wait_returns_once_caught_up_with_the_connected_peers(tmp_path: Any) -> None:
    alice = Node.init(tmp_path / "a", CLI_PASSWORD, name="alice", kdf=KdfProfile.TESTING)
    bob = Node.init(tmp_path / "b", CLI_PASSWORD, name="bob", kdf=KdfProfile.TESTING)
    with alice, bob:
        tenant = alice.create_tenant("acme")
        bob.join(alice.invite(tenant, bob.public_identity()))
        notes = tenant.create_db("notes")
        with notes.batch():
            for n in range(300):
                notes.create_document({"n": n})
        async with running_daemon(alice) as a, running_daemon(bob, control=True) as b:
            await b.add_peer(a.listen_addrs()[0])
            waited = await trio.to_thread.run_sync(
                lambda: mindoo(bob.home, "sync", "wait", "--timeout", "30", json_output=True)
            )
            state = waited.ok().json()
            assert state["done"] and state["peers"] == 1 and state["percent"] == 100.0
            assert bob.store.count() == alice.store.count()
            (row,) = [d for d in b.status()["databases"] if d["database"] == "notes"]
            assert row["sync"]["state"] == "up to date" and row["entries"] == 300
            text = await trio.to_thread.run_sync(
                lambda: mindoo(bob.home, "sync", "wait", "--timeout", "30")
            )
            assert text.ok().stdout == "caught up with 1 peer\n"
    gone = mindoo(tmp_path / "b", "sync", "wait")
    assert gone.code == 1 and "no daemon is running" in gone.stderr
