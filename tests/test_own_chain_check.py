"""The own-write shortcut of the store's fork check (issue 8, local write rate).

`_local_append` tells `settle_new_entries` which authors' new entries extend the top of their
stored ``by_author`` rows; for those the neighbour comparison (`chains.conflict_seq`) is not
made. These tests show that the comparison it skips could never have found anything (over
random mixes of own writes, forks minted with the same key elsewhere, gaps and other authors),
that a fork point recorded for the author still withdraws own entries written above it, and
that a damaged ``author_seq`` row (rows stored above it) is not trusted by the shortcut.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import lmdb
import pytest

from mindoo_p2p.chains import conflict_seq
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import NO_PREV, Entry, EntryKind
from mindoo_p2p.keyring import TenantKey
from mindoo_p2p.store import EntryStore, _chains, _writer
from mindoo_p2p.store._layout import Tables, pack_seq
from mindoo_p2p.writer import Draft, seal_drafts

TENANT = bytes(range(16))
KEY = TenantKey.generate("default")
ME = SigningKeyPair.generate()
ALSO_ME = SigningKeyPair.generate()  # a second own author (another tenant identity's key)
CAROL = SigningKeyPair.generate()


def own_draft(signer: SigningKeyPair = ME) -> Draft:
    return Draft(
        kind=EntryKind.CHANGE,
        tenant_id=TENANT,
        database="notes",
        document_id=os.urandom(16),
        signer=signer,
        key=KEY,
        payload=b"own " + os.urandom(4),
        timestamp_ms=1_700_000_000_000,
    )


def minted(signer: SigningKeyPair, seq: int, prev: bytes) -> Entry:
    """An entry made elsewhere with ``signer``'s key (a copy of the key, or another member)."""
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=TENANT,
        database="notes",
        document_id=os.urandom(16),
        author=signer,
        author_seq=seq,
        timestamp_ms=1_700_000_000_000 + seq,
        deps=(),
        key_id=KEY.key_id,
        key=KEY.secret,
        payload=b"minted " + os.urandom(4),
        prev=NO_PREV if seq == 1 else prev,
    )


class Spy:
    """Wraps the store's fork check: for every entry the shortcuts skip (own continuing
    authors, received plain runs), asks the full comparison anyway (same transaction, same
    facts) and records what it said."""

    def __init__(self) -> None:
        self.skipped = 0
        self.found: list[int] = []

    def settle(
        self,
        txn: lmdb.Transaction[bytes],
        tables: Tables,
        added: Iterable[Entry],
        arrivals: dict[bytes, bytes] | None = None,
        continuing: Collection[bytes] = (),
        plain: Collection[bytes] = (),
    ) -> None:
        added = list(added)
        facts = _chains.TransactionChainFacts(txn, tables, arrivals)
        for entry in added:
            if entry.tenant_id + entry.author in continuing or entry.id in plain:
                self.skipped += 1
                seq = conflict_seq(entry, facts)
                if seq is not None:
                    self.found.append(seq)
        _chains.settle_new_entries(txn, tables, added, arrivals, continuing, plain)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    watcher = Spy()
    monkeypatch.setattr(_writer, "settle_new_entries", watcher.settle)
    yield watcher


def test_the_skipped_comparison_never_finds_a_fork_whatever_else_arrives(
    tmp_path: Path, spy: Spy
) -> None:
    forked_runs = 0
    for seed in range(12):
        rng = random.Random(seed)
        mine: dict[int, bytes] = {}  # ME's entries by seq, as this test knows them (any origin)
        with EntryStore(tmp_path / f"store-{seed}") as store:
            for _ in range(12):
                top = max(mine, default=0)
                roll = rng.random()
                if roll < 0.5:  # own write: ME (and sometimes ALSO_ME), one to three entries
                    signers = [rng.choice((ME, ME, ALSO_ME)) for _ in range(rng.randint(1, 3))]
                    drafts = [own_draft(signer) for signer in signers]
                    for entry in store.append_local(lambda p, d=drafts: seal_drafts(d, p)):
                        if entry.author == ME.public_key:
                            mine[entry.author_seq] = entry.id
                elif roll < 0.7 and top:  # ME's key used elsewhere at a number already taken
                    seq = rng.randint(1, top)
                    prev = os.urandom(32)
                    if rng.random() < 0.5:  # the right predecessor, or a made-up one
                        prev = mine.get(seq - 1, prev)
                    assert store.append([minted(ME, seq, prev)]).added
                elif roll < 0.85:  # ME's key used elsewhere above the top, after a gap or not
                    seq = top + rng.randint(1, 3)
                    entry = minted(ME, seq, mine.get(seq - 1, os.urandom(32)))
                    assert store.append([entry]).added
                    mine[seq] = entry.id
                else:  # another member writes
                    seq = rng.randint(1, 4)
                    store.append([minted(CAROL, seq, os.urandom(32))])
            forked_runs += store.fork_of(TENANT, ME.public_key) is not None
            assert store.fsck().ok
    assert spy.found == []  # the comparison the shortcut skips would have found nothing
    assert spy.skipped > 50  # ... and the shortcut was taken
    assert forked_runs >= 3  # ... also for authors whose key had forked


def test_own_entries_above_a_recorded_fork_point_are_still_withdrawn(
    tmp_path: Path, spy: Spy
) -> None:
    with EntryStore(tmp_path / "store") as store:
        first = store.append_local(lambda p: seal_drafts([own_draft() for _ in range(3)], p))
        # A copy of the key signs another entry #2: the author forked at 2.
        assert store.append([minted(ME, 2, first[0].id)]).added
        assert store.fork_of(TENANT, ME.public_key) is not None
        later = store.append_local(lambda p: seal_drafts([own_draft(), own_draft()], p))
        assert [e.author_seq for e in later] == [4, 5]
        assert spy.skipped == 3 + 2  # both own writes took the shortcut
        assert all(store.is_retracted(e.id) for e in later)
        assert not store.is_retracted(first[0].id)
        fork = store.fork_of(TENANT, ME.public_key)
        assert fork is not None and fork.seq == 2


def test_a_damaged_author_seq_row_is_not_trusted_by_the_shortcut(tmp_path: Path, spy: Spy) -> None:
    path = tmp_path / "store"
    with EntryStore(path) as store:
        written = store.append_local(lambda p: seal_drafts([own_draft() for _ in range(3)], p))
    # The author_seq row says 1 while by_author holds entries up to 3.
    env = lmdb.open(str(path), max_dbs=64, subdir=True)
    with env.begin(write=True) as txn:
        txn.put(TENANT + ME.public_key, pack_seq(1), db=env.open_db(b"author_seq", txn=txn))
    env.close()
    with EntryStore(path) as store:
        (entry,) = store.append_local(lambda p: seal_drafts([own_draft()], p))
        # Numbered from the damaged row (2) and chained on the top entry (#3): the full check
        # ran and found two entries at 2, so the fork is recorded, not hidden.
        assert entry.author_seq == 2 and entry.prev == written[2].id
        assert spy.skipped == 3  # the first write only
        fork = store.fork_of(TENANT, ME.public_key)
        assert fork is not None and fork.seq == 2
        assert store.is_retracted(written[2].id)
