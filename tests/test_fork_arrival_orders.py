"""Forks and chained revocation cuts end in the same state on every node, whatever the arrival
order: a thief holding a revoked member's key mints below the cut (a fork), at the cut (an
entry the cut does not name), above it, and numbers one entry 2**64-1; every order and batching
of the same entries gives the same readable set, the same fork point and evidence, and the same
reconciliation fingerprint."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD
from helpers import forge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_revocation import _init, deliver, split

from mindoo_p2p.chains import ForkPoint
from mindoo_p2p.entry import Entry
from mindoo_p2p.node import Node


@dataclass(frozen=True)
class Universe:
    tenant_id: bytes
    mallory: bytes
    entries: list[bytes]
    readable: frozenset[bytes]
    """The ids every node must end up serving to reads."""
    evidence: frozenset[bytes]
    """The two entries kept at Mallory's fork point."""
    pristine_observer: Path


@pytest.fixture(scope="module")
def universe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Universe]:
    base = tmp_path_factory.mktemp("forks")
    admin, mallory, bob, observer = (
        _init(base / n, n) for n in ("admin", "mallory", "bob", "observer")
    )
    try:
        tenant = admin.create_tenant("acme")
        for node in (mallory, bob, observer):
            node.join(admin.invite(tenant, node.public_identity()))
        observer.close()
        mdb = mallory.tenant("acme").create_db("notes")
        doc = mdb.create_document({"n": 1})
        for n in range(2, 6):  # Mallory's #1 .. #5
            mdb.update(doc, {"n": n})
        chain = sorted(mallory.store.iter_entries(tenant.id, "notes"), key=lambda e: e.author_seq)
        admin.ingest([e.raw for e in chain])
        bob.ingest([e.raw for e in chain])
        bob.tenant("acme").create_db("notes").create_document({"bob": "was here"})
        tenant.revoke_member(mallory.public_identity())  # cut: #5, by id
        mdb.update(doc, {"n": 6})  # Mallory, unaware: #6, above the cut
        thief = [
            forge(mallory, tenant, 3, chain[1].id, b"minted below the cut"),  # fork at #3
            forge(mallory, tenant, 5, chain[3].id, b"minted at the cut"),  # not the cut's #5
            forge(mallory, tenant, 2**64 - 1, os.urandom(32), b"pre-empting the cut"),
            forge(mallory, tenant, 7, None, b"a legacy entry above the cut"),
        ]
        every: dict[bytes, bytes] = {}
        for node in (admin, mallory, bob):
            for entry in node.store.iter_entries(tenant.id):
                every.setdefault(entry.id, entry.raw)
        for entry in thief:
            every[entry.id] = entry.raw
        key = mallory.identity.signing.public_key
        withdrawn = {
            entry_id
            for entry_id, raw in every.items()
            if (e := Entry.decode(raw)).author == key and e.author_seq >= 3
        }
        evidence = frozenset(sorted([chain[2].id, thief[0].id])[:2])
        yield Universe(
            tenant_id=tenant.id,
            mallory=key,
            entries=list(every.values()),
            readable=frozenset(every) - withdrawn,
            evidence=evidence,
            pristine_observer=base / "observer",
        )
    finally:
        for node in (admin, mallory, bob):
            node.close()


@dataclass(frozen=True)
class Outcome:
    readable: frozenset[bytes]
    forks: list[ForkPoint]
    recon: tuple[int, bytes]


def observe(universe: Universe, batches: list[list[bytes]], workdir: Path) -> Outcome:
    home = workdir / "observer"
    shutil.copytree(universe.pristine_observer, home)
    node = Node.open(home, PASSWORD)
    try:
        deliver(node, batches)
        readable = frozenset(e.id for e in node.store.iter_entries(universe.tenant_id))
        with node.store.recon_snapshot(universe.tenant_id, "notes") as storage:
            size = storage.size()
            recon = (size, storage.fingerprint(0, size))
        report = node.fsck()
        assert report.ok, report.problems
        return Outcome(readable, node.store.forks(universe.tenant_id), recon)
    finally:
        node.close()


@pytest.fixture(scope="module")
def reference(universe: Universe, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = observe(
        universe, [[raw] for raw in universe.entries], tmp_path_factory.mktemp("reference")
    )
    assert outcome.readable == universe.readable
    assert outcome.forks == [ForkPoint(universe.mallory, 3, tuple(sorted(universe.evidence)))]
    return outcome


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_arrival_order_ends_with_the_same_fork_and_readable_set(
    universe: Universe, reference: Outcome, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        outcome = observe(universe, split(universe.entries, random.Random(seed)), Path(workdir))
    assert outcome.readable == universe.readable
    assert outcome.forks == reference.forks
    assert outcome.recon == reference.recon  # the evidence is reconciled, the rest withdrawn


def test_the_thiefs_entries_first_then_the_chain_then_the_revocation(
    universe: Universe, reference: Outcome, tmp_path: Path
) -> None:
    key = universe.mallory
    mallory = [raw for raw in universe.entries if Entry.decode(raw).author == key]
    log = [raw for raw in universe.entries if Entry.decode(raw).database == "_tenant"]
    rest = [raw for raw in universe.entries if raw not in mallory and raw not in log]
    outcome = observe(universe, [list(reversed(mallory)), rest, log], tmp_path)
    assert outcome == reference
