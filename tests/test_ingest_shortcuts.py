"""The receiver's per-batch shortcuts (issue 8, perf-ingest2) keep every rule exactly:

- `admission.admit` asks `MembershipLog.check_author` once per author free to write (no cut);
  a bad entry in the middle of such an author's run is still refused alone, and over random
  batches the outcome equals admitting one entry at a time;
- `TransactionChainFacts.links_plainly` lets `settle_new_entries` skip `chains.conflict_seq`
  for the plain links of a run: whenever it answers True, `conflict_seq` finds nothing, and
  the store ends the same with the shortcut as without it (forks mid-run included);
- `_chains.plain_run_entries` lets `settle_new_entries` skip the fork check for the entries
  of a batch that extend the top of their author's stored rows one after another (a
  catch-up's runs): for each of them `conflict_seq` finds nothing, and the store ends the
  same as when every entry is compared with its neighbours.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Collection, Iterator
from pathlib import Path

import lmdb
import pytest
from test_admission import ADMIN, MEMBERSHIP, OTHER, TENANT_ID, USER, fresh_view, record_entry
from test_chains import TENANT, _random_chain_offers, chained

from mindoo_p2p import admission
from mindoo_p2p.admission import (
    TenantView,
    VerifiedEntry,
    apply_tenant_log,
    check_chain,
    check_document_entry,
)
from mindoo_p2p.chains import ForkPoint, conflict_seq
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import NO_DOCUMENT, NO_PREV, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.membership import MembershipAction, MembershipRecord, Revocation
from mindoo_p2p.rejection import Rejected, RejectionKind
from mindoo_p2p.store import EntryStore, _writer
from mindoo_p2p.store._batch import prepare_batch
from mindoo_p2p.store._chains import TransactionChainFacts, settle_new_entries
from mindoo_p2p.store._layout import Tables

STRANGER = SigningKeyPair.generate()
OTHER_CUT = 3


def member_view(*, forks: tuple[ForkPoint, ...] = (), revoke_other: bool = True) -> TenantView:
    """USER a member free to write; OTHER a member, revoked after its entry #3 unless
    ``revoke_other`` is false."""
    records = [
        record_entry(MembershipRecord(MembershipAction.ADD, USER.public(), "member"), ADMIN, 1),
        record_entry(MembershipRecord(MembershipAction.ADD, OTHER.public(), "member"), ADMIN, 2),
    ]
    if revoke_other:
        records.append(
            record_entry(
                Revocation.of(OTHER.signing.public_key, {OTHER.signing.public_key: OTHER_CUT}),
                ADMIN,
                3,
            )
        )
    start = fresh_view()
    built = admission.admit({TENANT_ID: start}, [admission.trust_own_seal(r) for r in records])
    assert not built.rejected
    return TenantView.of(
        TENANT_ID,
        built.memberships[TENANT_ID],
        start.membership_keys.items(),
        forks,
    )


def document_entry(
    author: SigningKeyPair,
    seq: int,
    *,
    kind: EntryKind = EntryKind.CHANGE,
    document_id: bytes | None = None,
) -> VerifiedEntry:
    entry = Entry.seal(
        kind=kind,
        tenant_id=TENANT_ID,
        database="notes",
        document_id=os.urandom(16) if document_id is None else document_id,
        author=author,
        author_seq=seq,
        timestamp_ms=10_000 + seq,
        deps=(),
        key_id=MEMBERSHIP.key_id,
        key=MEMBERSHIP.secret,
        payload=b"entry %d" % seq,
    )
    return admission.trust_own_seal(entry)


def outcome(admitted: admission.Admission) -> tuple[list[bytes], list[tuple[bytes, object]]]:
    return [v.id for v in admitted.accepted], [(r.entry_id, r.kind) for r in admitted.rejected]


def test_a_bad_entry_in_a_free_authors_run_is_refused_alone() -> None:
    view = member_view()
    run = [document_entry(USER.signing, seq) for seq in range(1, 9)]
    bad = [
        document_entry(USER.signing, 9, kind=EntryKind.MEMBERSHIP),
        document_entry(USER.signing, 10, document_id=NO_DOCUMENT),
        document_entry(OTHER.signing, OTHER_CUT + 1),
        document_entry(STRANGER, 1),
    ]
    batch = run[:2] + bad[:1] + run[2:4] + bad[1:2] + run[4:6] + bad[2:] + run[6:]
    admitted = admission.admit({TENANT_ID: view}, batch)
    assert [v.id for v in admitted.accepted] == [v.id for v in run]
    assert [(r.entry_id, r.kind) for r in admitted.rejected] == [
        (bad[0].id, RejectionKind.UNEXPECTED_KIND),
        (bad[1].id, RejectionKind.UNEXPECTED_KIND),
        (bad[2].id, RejectionKind.REVOKED_ABOVE_CUT),
        (bad[3].id, RejectionKind.NOT_A_MEMBER),
    ]


@pytest.mark.parametrize("seed", range(4))
def test_admitting_a_batch_equals_admitting_one_entry_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    fork = ForkPoint(USER.signing.public_key, 12, ())
    view = member_view(forks=(fork,) if seed % 2 else ())
    batch: list[VerifiedEntry] = []
    for _ in range(60):
        author = rng.choice([USER.signing, USER.signing, OTHER.signing, ADMIN, STRANGER])
        kinds = list(EntryKind) if rng.random() < 0.3 else [EntryKind.CHANGE, EntryKind.DELETE]
        kind = rng.choice(kinds)
        document_id = NO_DOCUMENT if rng.random() < 0.05 else None
        batch.append(document_entry(author, rng.randint(1, 16), kind=kind, document_id=document_id))
    whole = outcome(admission.admit({TENANT_ID: view}, batch))
    accepted: list[bytes] = []
    rejected: list[tuple[bytes, object]] = []
    for item in batch:
        one = outcome(admission.admit({TENANT_ID: view}, [item]))
        accepted += one[0]
        rejected += one[1]
    assert whole == (accepted, rejected)
    assert accepted and rejected


def admit_one_at_a_time_reference(
    view: TenantView, batch: list[VerifiedEntry]
) -> tuple[list[bytes], list[tuple[bytes, object]]]:
    """The rule without the shortcut: the tenant log first (`apply_tenant_log`), then each
    document entry checked alone against the membership it produced (`check_document_entry`,
    then `check_chain`), as `admit` did before asking once per free author."""
    logs = [item for item in batch if item.database == TENANT_LOG]
    others = [item for item in batch if item.database != TENANT_LOG]
    accepted: list[bytes] = []
    rejected: list[tuple[bytes, object]] = []
    membership = view.membership
    if logs:
        applied = apply_tenant_log(view, logs)
        accepted += [v.id for v in applied.accepted]
        rejected += [(r.entry_id, r.kind) for r in applied.rejected]
        if applied.accepted:
            membership = applied.membership
    for item in others:
        refusal = check_document_entry(membership, item.entry) or check_chain(view, item.entry)
        if refusal is None:
            accepted.append(item.id)
        else:
            rejected.append((refusal.entry_id, refusal.kind))
    return accepted, rejected


@pytest.mark.parametrize("seed", range(40))
def test_a_revocation_in_the_same_batch_binds_the_authors_it_cuts(seed: int) -> None:
    """Batches that revoke USER or OTHER (a random cut), placed before or after their entries
    in the batch, admit exactly what the one-at-a-time rule admits: an author "free to write"
    is decided against the membership the batch's own tenant log produced."""
    rng = random.Random(seed)
    forks = (ForkPoint(USER.signing.public_key, rng.randint(1, 12), ()),) if seed % 3 == 0 else ()
    view = member_view(forks=forks, revoke_other=False)
    authors = [USER.signing, OTHER.signing, ADMIN, STRANGER]
    batch = [document_entry(rng.choice(authors), rng.randint(1, 12)) for _ in range(30)]
    who = rng.choice([USER, OTHER])
    cut = rng.randint(0, 10)
    revocation = record_entry(
        Revocation.of(who.signing.public_key, {who.signing.public_key: cut}), ADMIN, 3
    )
    batch.insert(rng.randint(0, len(batch)), admission.trust_own_seal(revocation))
    whole = outcome(admission.admit({TENANT_ID: view}, batch))
    assert whole == admit_one_at_a_time_reference(view, batch)
    above_cut = [
        item.id
        for item in batch
        if item.entry.header.author == who.signing.public_key and item.entry.header.author_seq > cut
    ]
    assert all(entry_id not in whole[0] for entry_id in above_cut)


@pytest.fixture
def checked_shortcut(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """`links_plainly` wrapped: each True answer is checked against `conflict_seq`."""
    answers: list[bool] = []
    original = TransactionChainFacts.links_plainly

    def checked(self: TransactionChainFacts, entry: Entry) -> bool:
        plain = original(self, entry)
        if plain:
            assert conflict_seq(entry, self) is None
        answers.append(plain)
        return plain

    monkeypatch.setattr(TransactionChainFacts, "links_plainly", checked)
    yield answers


def store_outcome(path: Path, stored_first: list[Entry], batches: list[list[Entry]]) -> object:
    with EntryStore(path) as store:
        for entry in stored_first:
            store.append([entry], sealed_here=True)
        for batch in batches:
            store.append(batch)
        assert store.fsck().ok
        forks = sorted((f.author, f.seq, f.evidence) for f in store.forks(TENANT))
        return forks, sorted(store.retracted_ids(TENANT)), store.count()


@pytest.mark.parametrize("seed", range(5))
def test_the_plain_link_shortcut_changes_no_outcome(
    tmp_path: Path, seed: int, checked_shortcut: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    authors = [SigningKeyPair.generate() for _ in range(3)]
    offers = _random_chain_offers(rng, authors)
    stored_first = rng.sample(offers, len(offers) // 4)
    rest = [e for e in offers if e not in stored_first]
    rng.shuffle(rest)
    cut = rng.randint(1, len(rest))
    batches = [rest[:cut], rest[cut:]]
    with_shortcut = store_outcome(tmp_path / "shortcut", stored_first, batches)
    assert True in checked_shortcut and False in checked_shortcut
    monkeypatch.setattr(TransactionChainFacts, "links_plainly", lambda self, entry: False)
    monkeypatch.setattr(_writer, "plain_run_entries", lambda *args: set())
    per_entry = store_outcome(tmp_path / "per-entry", stored_first, batches)
    assert with_shortcut == per_entry


@pytest.fixture
def checked_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """`settle_new_entries` wrapped in the writer: before it runs, every entry it is told is a
    plain link of a run is checked against `conflict_seq` over the rows just written. Yields
    how many entries each write let through that way."""
    runs: list[int] = []

    def checked(
        txn: lmdb.Transaction[bytes],
        tables: Tables,
        added: list[Entry],
        arrivals: dict[bytes, bytes],
        continuing: Collection[bytes] = (),
        plain: Collection[bytes] = (),
    ) -> None:
        facts = TransactionChainFacts(txn, tables, arrivals)
        assert all(conflict_seq(entry, facts) is None for entry in added if entry.id in plain)
        runs.append(len(plain))
        settle_new_entries(txn, tables, added, arrivals, continuing, plain)

    monkeypatch.setattr(_writer, "settle_new_entries", checked)
    yield runs


@pytest.mark.parametrize("seed", range(6))
def test_a_run_that_continues_its_authors_top_changes_no_outcome(
    tmp_path: Path, seed: int, checked_runs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chains with twins, gaps, wrong links and legacy entries arrive in author_seq order
    (as a catch-up brings them: a few entries of each batch in the next one, below its top;
    shuffled within each batch for half the seeds), part stored first, the rest in batches:
    the same forks, withdrawn entries and count as with every entry compared with its
    neighbours."""
    rng = random.Random(seed)
    authors = [SigningKeyPair.generate() for _ in range(3)]
    offers = sorted(_random_chain_offers(rng, authors), key=lambda e: e.author_seq)
    head = rng.randint(0, len(offers) // 3)
    stored_first, rest = offers[:head], offers[head:]
    cuts = sorted(rng.sample(range(1, len(rest)), 3))
    batches = [rest[a:b] for a, b in zip([0, *cuts], [*cuts, len(rest)], strict=True)]
    for earlier, later in itertools.pairwise(batches):
        # as fetched in timestamp order: a few of a batch's entries come in the next one
        for _ in range(min(2, len(earlier) - 1)):
            later.append(earlier.pop(rng.randrange(len(earlier))))
    if seed % 2:
        for batch in batches:
            rng.shuffle(batch)
    with_shortcut = store_outcome(tmp_path / "runs", stored_first, batches)
    assert checked_runs and max(checked_runs) > 1
    monkeypatch.setattr(_writer, "plain_run_entries", lambda *args: set())
    monkeypatch.setattr(TransactionChainFacts, "links_plainly", lambda self, entry: False)
    per_entry = store_outcome(tmp_path / "per-entry", stored_first, batches)
    assert with_shortcut == per_entry


def test_a_run_stops_being_plain_where_it_forks_its_author(
    tmp_path: Path, checked_runs: list[int]
) -> None:
    """A run is taken as plain up to its first entry that names another predecessor than the
    one below it, shares its number with another, or follows a gap: from there on each entry
    is compared with its neighbours, and the fork is found."""
    author = SigningKeyPair.generate()
    run: list[Entry] = []
    prev = NO_PREV
    for seq in range(1, 13):
        run.append(chained(seq, prev, author=author))
        prev = run[-1].id
    other = chained(4, run[2].id, author=author)  # a second #4 with the same predecessor
    rival = chained(5, other.id, author=author)
    twin = chained(8, run[6].id, author=author)
    with EntryStore(tmp_path / "store") as store:
        assert len(store.append(run[:4]).added) == 4  # #1 .. #4 continue an empty author
        assert checked_runs == [4]
        assert len(store.append([rival]).added) == 1  # names #4's twin, not the top
        assert checked_runs[-1] == 0
        [fork] = store.forks(TENANT)
        assert fork.seq == 5
    with EntryStore(tmp_path / "twin") as store:
        # #1 .. #7 are plain; #8 is held twice: neither copy, nor anything above, is.
        assert len(store.append([*run[:10], twin]).added) == 11
        assert checked_runs[-1] == 7
        [fork] = store.forks(TENANT)
        assert fork.seq == 8
        # #12 after a gap (no #11): nothing is plain, the fork point applies to it
        assert len(store.append([run[11]]).added) == 1
        assert checked_runs[-1] == 0
        assert run[11].id in set(store.retracted_ids(TENANT))
        assert store.fsck().ok


def test_a_twin_in_the_middle_of_a_run_still_forks_its_author(
    tmp_path: Path, checked_shortcut: list[bool]
) -> None:
    author = SigningKeyPair.generate()
    run: list[Entry] = []
    prev = NO_PREV
    for seq in range(1, 11):
        run.append(chained(seq, prev, author=author))
        prev = run[-1].id
    twin = chained(5, run[3].id, author=author)  # a second #5, same predecessor
    with EntryStore(tmp_path / "store") as store:
        result = store.append([*run[:5], twin, *run[5:]])
        assert len(result.added) == 11 and not result.rejected
        [fork] = store.forks(TENANT)
        assert (fork.author, fork.seq) == (author.public_key, 5)
        assert set(fork.evidence) == {run[4].id, twin.id}
        withdrawn = {e.id for e in run[5:]}  # reads skip them and the evidence alike
        assert set(store.retracted_ids(TENANT)) == withdrawn | set(fork.evidence)
        assert store.fsck().ok
    assert True in checked_shortcut  # #1 .. #3 are plain links


def test_a_batch_of_verified_entries_is_prepared_as_the_general_path_prepares_it() -> None:
    """`prepare_batch` takes a batch of `VerifiedEntry` items in one pass: repeats, stored ids,
    the tenant log first and an entry ``authorize`` refuses in the middle come out as they do
    from the general path (`check_entries`) over the same entries."""
    rng = random.Random(7)
    log = [
        record_entry(
            Revocation.of(OTHER.signing.public_key, {OTHER.signing.public_key: s}), ADMIN, s
        )
        for s in (9, 8, 10)
    ]
    docs = [document_entry(USER.signing, seq).entry for seq in range(1, 13)]
    entries = docs[:6] + log + docs[6:]
    offered = entries + rng.sample(entries, 4)  # repeats
    rng.shuffle(offered)
    held = {docs[2].id, log[0].id}
    refused = docs[7].id

    def authorize(entry: Entry) -> Rejected | None:
        return (
            Rejected(entry.id, RejectionKind.NOT_PERMITTED, "no") if entry.id == refused else None
        )

    def stored(ids: list[bytes]) -> list[bytes]:
        return [i for i in ids if i in held]

    fast = prepare_batch([admission.trust_own_seal(e) for e in offered], stored, authorize)
    general = prepare_batch(offered, stored, authorize)
    assert [e.id for e in fast.accepted] == [e.id for e in general.accepted]
    assert fast.accepted[:2] == [log[1], log[2]]  # the tenant log first, by seq (8, then 10)
    assert (fast.duplicates, fast.repeats) == (general.duplicates, general.repeats)
    assert (
        fast.rejected == general.rejected == [Rejected(refused, RejectionKind.NOT_PERMITTED, "no")]
    )
    assert len(fast.duplicates) == 2 and len(fast.repeats) == 4
