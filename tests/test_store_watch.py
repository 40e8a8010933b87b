"""Writes from another process that has the home open reach peers at once (issue 10).

Before, the daemon learnt of a commit by another process (a script using the Python API, the
CLI without forwarding) only at its next periodic session: 3 to 30 s later.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import trio
from conftest import PASSWORD
from helpers import eventually, running_daemon

import mindoo_p2p
from mindoo_p2p.daemon.store_watch import StoreWatch
from mindoo_p2p.entry import Entry
from mindoo_p2p.node import Node

MakeNode = Callable[[str], Node]
WORKER = Path(__file__).with_name("home_writer_worker.py")


class FakeStore:
    """Arrivals 1..n as stand-in entries (only their ids matter to the watch)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, count: int) -> list[Entry]:
        new = [_entry(len(self.entries) + i + 1) for i in range(count)]
        self.entries += new
        return new

    def read(self, after: int, limit: int) -> tuple[list[Entry], int]:
        chunk = self.entries[after : after + limit]
        return chunk, after + len(chunk)


def _entry(n: int) -> Entry:
    class Stub:
        id = n.to_bytes(32, "big")

    return Stub()  # type: ignore[return-value]


def test_only_unclaimed_arrivals_are_reported_one_scan_after_they_are_read() -> None:
    store = FakeStore()
    store.add(3)  # stored before the daemon started: never reported
    watch = StoreWatch(seen=3)
    own = store.add(2)
    watch.claim(e.id for e in own)  # the listener ran before the scan
    foreign = store.add(2)
    late_own = store.add(1)  # committed, its listener not yet run
    assert watch.scan(store.read) == ([], False)
    watch.claim(e.id for e in late_own)  # the listener runs now
    reported, more = watch.scan(store.read)
    assert reported == foreign and not more
    assert watch.scan(store.read) == ([], False)  # nothing twice
    assert watch.seen == 8


def test_arrivals_that_are_all_this_processs_own_are_never_read() -> None:
    store = FakeStore()
    watch = StoreWatch(seen=0)
    own = store.add(500)  # a clone by this process
    watch.claim(e.id for e in own)
    claims = watch.claims()
    assert watch.skip_own(len(store.entries), claims) and watch.seen == 500
    assert watch.claims() == 0
    # A foreign commit, then an own one claimed after the count was taken: the counter moved
    # by 2 with 0 claims counted, so the store is read and only the foreign one reported.
    foreign = store.add(1)
    claims = watch.claims()
    late = store.add(1)
    watch.claim(e.id for e in late)
    assert not watch.skip_own(len(store.entries), claims)
    reported, _ = watch.scan(store.read)
    assert reported == [] and watch.pending()
    assert watch.scan(store.read) == (foreign, False)


def test_a_burst_is_read_in_bounded_chunks() -> None:
    store = FakeStore()
    watch = StoreWatch(seen=0)
    burst = store.add(25)
    seen: list[Entry] = []
    more = True
    while more or watch.pending():
        reported, more = watch.scan(store.read, limit=10)
        seen += reported
    assert seen == burst


async def test_a_write_from_a_second_process_reaches_a_peer_within_a_second(
    make_node: MakeNode,
) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    tenant.create_db("notes").create_document({"first": True})
    async with running_daemon(alice) as a, running_daemon(bob) as b:
        await b.add_peer(a.listen_addrs()[0])
        await eventually(lambda: bob.store.count() == alice.store.count())
        root = str(Path(mindoo_p2p.__file__).parent.parent)
        env = dict(os.environ, PYTHONPATH=root)
        argv = [sys.executable, str(WORKER), str(alice.home), PASSWORD, "acme", "notes"]
        with trio.fail_after(60):
            done = await trio.run_process(
                [*argv, "--tag", "script", "--documents", "1"],
                stdin=b"go\n",
                capture_stdout=True,
                env=env,
            )
        doc_id = done.stdout.decode().split()[1]  # "ready", the id, "done"
        replica = bob.tenant("acme").open_db("notes")
        await eventually(lambda: replica.exists(doc_id), timeout=1.0)
        assert replica.get(doc_id)["tag"] == "script"
