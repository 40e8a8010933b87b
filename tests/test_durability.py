"""The durability ledger (issue 10): "is it safe to wipe this laptop?"."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import copy_tenant, eventually, running_daemon

from mindoo_p2p.durability import (
    LEDGER_FILE,
    DatabaseDurability,
    DurabilityLedger,
    durability,
    load_ledger,
    only_here_text,
)
from mindoo_p2p.entry import TENANT_LOG
from mindoo_p2p.errors import DecodeError
from mindoo_p2p.node import Node

MakeNode = Callable[[str], Node]


def only_here(node: Node, ledger: DurabilityLedger) -> dict[str, int]:
    return {row.database: row.only_here for row in durability(node, ledger)}


async def test_only_here_drops_to_zero_once_a_mirror_holds_everything(
    make_node: MakeNode,
) -> None:
    laptop, mirror = make_node("laptop"), make_node("mirror")
    tenant = laptop.create_tenant("acme")
    mirror.join(laptop.invite(tenant, mirror.public_identity(), role="mirror"))
    notes = tenant.create_db("notes")
    for n in range(3):
        notes.create_document({"n": n})
    before = only_here(laptop, DurabilityLedger())
    assert before["notes"] == 3 and before[TENANT_LOG] >= 2  # tenant created, mirror added
    async with running_daemon(laptop) as a, running_daemon(mirror) as m:
        await m.add_peer(a.listen_addrs()[0])
        await eventually(lambda: only_here(laptop, a.ledger) == {TENANT_LOG: 0, "notes": 0})
        status = a.status()
        assert {row["database"]: row["only_here"] for row in status["durability"]} == {
            TENANT_LOG: 0,
            "notes": 0,
        }
        assert all(row["confirmed_by"] == m.peer_id for row in status["durability"])
        # Disconnected, a new write exists only here, with its time.
        await m.block_peer(a.peer_id)
        await a.block_peer(m.peer_id)
        async with a.access.hold():
            notes.create_document({"n": 3})
        (row,) = [r for r in durability(laptop, a.ledger) if r.database == "notes"]
        assert row.only_here == 1 and row.oldest_ms is not None
    # The ledger was saved: a restart does not forget what the mirror holds.
    assert only_here(laptop, load_ledger(laptop.home)) == {TENANT_LOG: 0, "notes": 1}


def test_received_entries_are_held_by_their_sender(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    tenant = a.create_tenant("acme")
    b.join(a.invite(tenant, b.public_identity()))
    tenant.create_db("notes").create_document({"x": 1})
    copy_tenant(a, b, tenant)
    assert only_here(b, DurabilityLedger()) == {TENANT_LOG: 0, "notes": 0}


def test_the_text_people_read() -> None:
    row = DatabaseDurability("acme", "00" * 16, "notes", 3, 1_000, None, None)
    assert only_here_text(row, 1_000 + 2 * 3600 * 1000 + 5) == (
        "3 entries exist only on this device, oldest 2 h ago"
    )
    none = DatabaseDurability("acme", "00" * 16, "notes", 0, None, None, None)
    assert only_here_text(none, 0) == "every entry written here is held by a peer too"


def test_the_ledger_round_trips_and_a_damaged_file_is_set_aside(tmp_path: Path) -> None:
    ledger = DurabilityLedger()
    tenant = os.urandom(16)
    assert ledger.confirm(tenant, "notes", 5, "peer", 1)
    assert not ledger.confirm(tenant, "notes", 4, "other", 2)  # never moves back
    again = DurabilityLedger.from_json(ledger.to_json())
    assert again.confirmed(tenant, "notes") == ledger.confirmed(tenant, "notes")
    for bad in ("{", '{"version": 1, "confirmed": [{"tenant": "zz"}]}', '{"version": 2}'):
        with pytest.raises(DecodeError):
            DurabilityLedger.from_json(bad)
    (tmp_path / LEDGER_FILE).write_text("{not json")
    assert len(load_ledger(tmp_path)) == 0  # conservative: nothing counts as held elsewhere
    assert not (tmp_path / LEDGER_FILE).exists()
    (aside,) = tmp_path.glob(f"{LEDGER_FILE}.damaged-*")
    assert aside.read_text() == "{not json"


def test_the_count_is_incremental_with_a_cache(make_node: MakeNode) -> None:
    node = make_node("solo")
    notes = node.create_tenant("acme").create_db("notes")
    ledger = DurabilityLedger()
    cache: dict[tuple[bytes, str], tuple[int, int, int, int | None]] = {}
    notes.create_document({"n": 1})
    first = durability(node, ledger, cache)
    notes.create_document({"n": 2})
    again = durability(node, ledger, cache)
    assert again == durability(node, ledger)  # the same as counting from scratch
    assert [r.only_here for r in again if r.database == "notes"] == [2]
    assert [r.oldest_ms for r in again] == [r.oldest_ms for r in first]
    tenant_id = node.tenant("acme").id
    ledger.confirm(tenant_id, "notes", node.store.last_seq(tenant_id, "notes"), "peer", 1)
    (row,) = [r for r in durability(node, ledger, cache) if r.database == "notes"]
    assert (row.only_here, row.oldest_ms, row.confirmed_by) == (0, None, "peer")
