"""A node restored from a recovery kit must not fork its user (restore_guard).

The trap: the kit is exported, the laptop writes on and syncs with the admin, the laptop is
lost; a node restored from the kit that writes before its first sync reuses the laptop's
sequence numbers, and every node withdraws the user's entries from there. The guard refuses
that write (nothing stored) until a sync brought the user's entries, or the user confirms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from conftest import PASSWORD
from helpers import run_cli_main

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.daemon.restore_settle import session_completes_restore
from mindoo_p2p.entry import TENANT_LOG, Entry
from mindoo_p2p.node import Node
from mindoo_p2p.recovery import export_recovery_kit
from mindoo_p2p.restore_guard import ChainHeadUnknownError, own_chain_gaps
from mindoo_p2p.sync.protocol import DatabaseReport, SyncReport

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]
KIT_PASSWORD = "a long recovery kit password"
TESTING = KdfProfile.TESTING
run_cli = partial(run_cli_main, password=PASSWORD)


@dataclass
class LostLaptop:
    admin: Node
    tenant_id: bytes
    author: bytes
    kit: bytes
    later: list[Entry]
    """The laptop's entries written after the kit was exported (the admin holds them)."""


def lose_a_laptop(make_node: MakeNode) -> LostLaptop:
    """The laptop joins acme, writes, exports its kit, writes three more changes that reach
    the admin, and is lost."""
    admin = make_node("admin")
    acme = admin.create_tenant("acme")
    acme.create_db("notes")
    laptop = make_node("laptop")
    laptop.join(admin.invite(acme, laptop.public_identity()))
    notes = laptop.tenant("acme").create_db("notes")
    doc = notes.create_document({"n": 0})
    kit = export_recovery_kit(laptop, KIT_PASSWORD, TESTING)
    author = laptop.identity.signing.public_key
    before = laptop.store.next_author_seq(acme.id, author)
    for n in range(1, 4):
        with notes.change(doc) as d:
            d["n"] = n
    mine = [e for e in laptop.store.iter_entries(acme.id) if e.author == author]
    assert not admin.ingest([e.raw for e in mine]).rejected
    later = [e for e in mine if e.author_seq >= before]
    assert len(later) == 3
    return LostLaptop(admin, acme.id, author, kit, later)


def restore(lost: LostLaptop, home: Path) -> Node:
    return Node.restore(home, lost.kit, KIT_PASSWORD, PASSWORD, kdf=TESTING)


def newest_own(lost: LostLaptop, node: Node) -> Entry:
    """The highest-numbered entry of the lost laptop's author that ``node`` holds."""
    return max(
        (e for e in node.store.iter_entries(lost.tenant_id) if e.author == lost.author),
        key=lambda e: e.author_seq,
    )


def test_a_write_before_the_first_sync_is_refused_and_stores_nothing(
    make_node: MakeNode, tmp_path: Path
) -> None:
    lost = lose_a_laptop(make_node)
    with restore(lost, tmp_path / "new-laptop") as node:
        tenant = node.tenant("acme")
        assert node.is_restored(tenant)
        count = node.store.count()
        notes = tenant.open_db("notes")
        with pytest.raises(ChainHeadUnknownError) as refused:
            notes.create_document({"written": "before the first sync"})
        message = str(refused.value)
        for fragment in ("recovery kit", "'acme'", "fork", "mindoo sync wait", "confirm-head acme"):
            assert fragment in message
        assert refused.value.tenant_id == tenant.id
        assert node.store.count() == count  # nothing stored
        assert notes.list_documents() == []  # no cached ghost of the refused change


def test_without_the_guard_the_write_forks_the_user_everywhere(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """The trap itself: a user who wrongly confirms reuses the lost laptop's numbers."""
    lost = lose_a_laptop(make_node)
    with restore(lost, tmp_path / "new-laptop") as node:
        tenant = node.tenant("acme")
        assert node.confirm_chain_head(tenant)
        tenant.open_db("notes").create_document({"written": "too early"})
        reused = newest_own(lost, node)
        # The kit holds none of the laptop's entries: the restored node starts again at #1.
        assert reused.author_seq == 1 < lost.later[0].author_seq
        lost.admin.ingest([reused.raw])
        fork = lost.admin.store.fork_of(lost.tenant_id, lost.author)
        assert fork is not None and fork.seq == 1  # every entry of the user withdrawn


def test_a_completed_sync_lifts_the_mark_and_the_write_continues_the_chain(
    make_node: MakeNode, tmp_path: Path
) -> None:
    lost = lose_a_laptop(make_node)
    with restore(lost, tmp_path / "new-laptop") as node:
        tenant = node.tenant("acme")
        # The sync with the admin, as the daemon's session does it: everything the peer holds
        # comes in, then the completed session settles the mark.
        assert not node.ingest([e.raw for e in lost.admin.store.iter_entries()]).rejected
        settled = node.settle_restored(tenant)
        assert settled.was_marked and settled.cleared and not settled.gaps
        assert not node.is_restored(tenant)
        tenant.open_db("notes").create_document({"written": "after the sync"})
        last = lost.later[-1]
        new = newest_own(lost, node)
        assert (new.author_seq, new.prev) == (last.author_seq + 1, last.id)
        assert not lost.admin.ingest([new.raw]).rejected
        assert lost.admin.store.forks(lost.tenant_id) == []
        assert node.store.forks(lost.tenant_id) == []
        assert node.settle_restored(tenant) == type(settled)(was_marked=False, cleared=False)


def test_a_sync_that_leaves_a_gap_in_the_users_chain_keeps_the_mark(
    make_node: MakeNode, tmp_path: Path
) -> None:
    lost = lose_a_laptop(make_node)
    missing = lost.later[1].id
    with restore(lost, tmp_path / "new-laptop") as node:
        tenant = node.tenant("acme")
        node.ingest([e.raw for e in lost.admin.store.iter_entries() if e.id != missing])
        settled = node.settle_restored(tenant)
        assert settled.was_marked and not settled.cleared
        (gap,) = settled.gaps
        assert (gap.author, gap.after, gap.highest) == (
            lost.author,
            lost.later[0].author_seq,
            lost.later[2].author_seq,
        )
        assert node.is_restored(tenant)
        with pytest.raises(ChainHeadUnknownError):
            tenant.open_db("notes").create_document({"x": 1})
        node.ingest([lost.admin.store.get_raws([missing])[0] or b""])
        assert node.settle_restored(tenant).cleared


def test_own_chain_gaps_is_pure() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert own_chain_gaps([(a, 0, 0), (b, 5, 5)]) == []
    (gap,) = own_chain_gaps([(a, 3, 7), (b, 2, 2)])
    assert (gap.author, gap.after, gap.highest) == (a, 3, 7)
    assert "#7" in gap.describe() and "#3" in gap.describe()


def test_tenant_log_records_of_a_restored_admin_are_refused(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """The admin key has a chain too: an admin record written before the sync may reuse a
    number the lost admin node used for a record the kit does not hold."""
    admin = make_node("admin")
    acme = admin.create_tenant("acme")
    kit = export_recovery_kit(admin, KIT_PASSWORD, TESTING)
    carol = make_node("carol")
    with Node.restore(tmp_path / "new-admin", kit, KIT_PASSWORD, PASSWORD, kdf=TESTING) as node:
        tenant = node.tenant(acme.id)
        count = node.store.count()
        with pytest.raises(ChainHeadUnknownError):
            tenant.add_member(carol.public_identity())
        with pytest.raises(ChainHeadUnknownError):
            tenant.create_key("hr")
        assert node.store.count() == count
        assert not tenant.membership.is_member(carol.public_identity().signing_key)
        assert node.confirm_chain_head(tenant)
        tenant.add_member(carol.public_identity())
        assert not node.confirm_chain_head(tenant)  # not marked any more


def test_the_mark_survives_reopening_and_a_clear_is_seen_by_another_process(
    make_node: MakeNode, tmp_path: Path
) -> None:
    lost = lose_a_laptop(make_node)
    home = tmp_path / "new-laptop"
    restore(lost, home).close()
    with Node.open(home, PASSWORD) as first, Node.open(home, PASSWORD) as second:
        assert first.is_restored(first.tenant("acme"))
        with pytest.raises(ChainHeadUnknownError):
            second.tenant("acme").open_db("notes").create_document({"x": 1})
        assert first.confirm_chain_head(first.tenant("acme"))
        # The other process still held the mark in memory: it re-reads it before refusing.
        second.tenant("acme").open_db("notes").create_document({"x": 2})
    with Node.open(home, PASSWORD) as again:
        assert not again.is_restored(again.tenant("acme"))
        assert again.restore_guard.marked() == set()


def _report(role: str, **databases: DatabaseReport) -> SyncReport:
    return SyncReport(tenant_id=b"t" * 16, role=role, databases=dict(databases))


def test_which_sessions_count_as_a_completed_sync() -> None:
    done = DatabaseReport("notes", settled=True, recon_rounds=1)
    log = DatabaseReport(TENANT_LOG, settled=True, recon_rounds=1)
    assert session_completes_restore(_report("initiator", log=log, notes=done))
    assert session_completes_restore(_report("responder", log=log, notes=done))
    assert not session_completes_restore(_report("initiator"))
    unsettled = DatabaseReport("notes", settled=False, recon_rounds=3)
    assert not session_completes_restore(_report("initiator", log=log, notes=unsettled))
    missing = DatabaseReport("notes", settled=True, recon_rounds=1, unavailable=2)
    assert not session_completes_restore(_report("initiator", log=log, notes=missing))
    bad = DatabaseReport("notes", settled=True, recon_rounds=1, rejected=1)
    assert not session_completes_restore(_report("responder", log=log, notes=bad))
    unreconciled = DatabaseReport("notes", recon_rounds=0)
    assert not session_completes_restore(_report("responder", log=log, notes=unreconciled))


def test_cli_refuses_in_one_line_and_confirm_head_lifts_the_mark(
    make_node: MakeNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    lost = lose_a_laptop(make_node)
    kit_file = tmp_path / "laptop.kit"
    kit_file.write_bytes(lost.kit)
    monkeypatch.setenv("MINDOO_RECOVERY_PASSWORD", KIT_PASSWORD)
    home = ["--home", str(tmp_path / "new-laptop")]
    code, out, err = run_cli(monkeypatch, capsys, *home, "recovery", "restore", str(kit_file))
    assert code == 0, err
    assert "refused" in out and "confirm-head" in out
    code, out, err = run_cli(monkeypatch, capsys, *home, "status")
    assert code == 0 and "RESTORED from a recovery kit" in out, err
    code, out, err = run_cli(monkeypatch, capsys, *home, "doc", "create", "acme", "notes", "{}")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "has not synced tenant 'acme'" in err and "mindoo recovery confirm-head acme" in err
    code, out, err = run_cli(monkeypatch, capsys, *home, "recovery", "confirm-head", "acme")
    assert code == 0, err
    assert "writing allowed" in out
    code, out, err = run_cli(monkeypatch, capsys, *home, "doc", "create", "acme", "notes", "{}")
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, *home, "--json", "status")
    assert code == 0 and [t["restored"] for t in json.loads(out)["tenants"]] == [False]
    code, out, err = run_cli(monkeypatch, capsys, *home, "recovery", "confirm-head", "acme")
    assert code == 0 and "nothing to do" in out
