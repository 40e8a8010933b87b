"""Reconciliation sessions (mindoo_p2p.recon) in memory: random and hand-shaped pairs of sets
must report exactly the brute-force set differences in few round trips; the state machine and
protocol corner cases."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from recon_helpers import Session, assert_exact, pair, random_items, reconcile

from mindoo_p2p.errors import DecodeError
from mindoo_p2p.recon import (
    INFINITE_BOUND,
    FingerprintRange,
    IdListRange,
    Message,
    ReconInitiator,
    ReconItem,
    ReconResponder,
    ReconStateError,
    ReconStorage,
    SessionState,
    SplitPolicy,
    VectorStorage,
    decode_message,
    encode_message,
    fingerprint_of_ids,
)

# --- sessions ------------------------------------------------------------------------------


def test_random_pairs_match_brute_force_in_few_round_trips() -> None:
    rnd = random.Random(20240607)
    for _ in range(40):
        common = rnd.choice([0, rnd.randrange(50), rnd.randrange(5000)])
        only_initiator = rnd.choice([0, rnd.randrange(30), rnd.randrange(500)])
        only_responder = rnd.choice([0, rnd.randrange(30), rnd.randrange(500)])
        if common + only_initiator > 5000 or common + only_responder > 5000:
            continue
        ours, theirs = pair(rnd, common, only_initiator, only_responder, recent=rnd.random() < 0.5)
        session = reconcile(ours, theirs)
        assert_exact(session, ours, theirs)
        assert session.rounds <= 3


@pytest.mark.parametrize(
    ("common", "only_initiator", "only_responder", "recent"),
    [
        (0, 0, 0, True),
        (5000, 0, 0, True),
        (0, 5000, 0, True),
        (0, 0, 5000, True),
        (0, 5000, 5000, False),
        (5000, 5, 5, True),
        (5000, 300, 300, False),
        (4000, 1000, 0, True),
        (1, 1, 1, False),
    ],
)
def test_shapes_match_brute_force(
    common: int, only_initiator: int, only_responder: int, recent: bool
) -> None:
    ours, theirs = pair(
        random.Random(common), common, only_initiator, only_responder, recent=recent
    )
    session = reconcile(ours, theirs)
    assert_exact(session, ours, theirs)
    assert session.rounds <= 3


def test_sets_in_sync_take_one_round_trip_and_few_bytes() -> None:
    ours, theirs = pair(random.Random(1), 5000, 0, 0, recent=True)
    session = reconcile(ours, theirs)
    assert (session.rounds, session.have, session.need) == (1, [], [])
    assert session.total_bytes < 400  # 16 fingerprints and a one-byte reply


def test_traffic_follows_the_difference_not_the_set_size() -> None:
    ours, theirs = pair(random.Random(2), 5000, 10, 10, recent=True)
    session = reconcile(ours, theirs)
    assert_exact(session, ours, theirs)
    assert session.total_bytes < 4000  # the 20 ids are 640 bytes; the full sets are 160 KB


def test_equal_timestamps_are_told_apart_by_id_prefixes() -> None:
    rnd = random.Random(3)
    shared = [ReconItem(42, rnd.randbytes(32)) for _ in range(3000)]
    # ids sharing long prefixes force long bound prefixes
    twins = [ReconItem(42, b"\x77" * 20 + rnd.randbytes(12)) for _ in range(200)]
    ours = shared + twins[:150]
    theirs = shared + twins[50:] + [ReconItem(41, rnd.randbytes(32))]
    for limit in (4096, 256 * 1024):
        assert_exact(reconcile(ours, theirs, limit), ours, theirs)


def test_scattered_and_recent_gaps_with_dense_and_empty_regions() -> None:
    rnd = random.Random(4)
    old = random_items(rnd, 2000, 0, 10**6)
    burst = [ReconItem(5 * 10**6, rnd.randbytes(32)) for _ in range(500)]
    late = random_items(rnd, 300, 10**9, 1000)
    ours = old + burst[:400] + late[::2]
    theirs = old[::3] + burst[100:] + late[1::2] + late[:50:2]
    assert_exact(reconcile(ours, theirs), ours, theirs)


@pytest.mark.parametrize(
    ("common", "only_initiator", "only_responder", "recent"),
    [
        (0, 0, 5000, True),
        (0, 5000, 0, True),
        (3000, 1000, 1000, False),
        (5000, 40, 60, True),
        (0, 2000, 2000, False),
    ],
)
def test_small_frames_are_respected_and_results_stay_exact(
    common: int, only_initiator: int, only_responder: int, recent: bool
) -> None:
    ours, theirs = pair(random.Random(7), common, only_initiator, only_responder, recent=recent)
    session = reconcile(ours, theirs, frame_size_limit=4096)
    assert session.largest_message <= 4096
    assert_exact(session, ours, theirs)
    unlimited = reconcile(ours, theirs)
    assert session.rounds >= unlimited.rounds


def test_responder_pages_a_large_id_list_through_small_frames() -> None:
    rnd = random.Random(11)
    theirs = random_items(rnd, 3000)
    session = reconcile([], theirs, frame_size_limit=4096)
    assert_exact(session, [], theirs)
    assert session.largest_message <= 4096
    # about 120 ids of 32 bytes fit a 4096-byte frame
    assert 3000 / 128 <= session.rounds <= 3000 / 100 + 2


@pytest.mark.parametrize(
    "policy",
    [
        SplitPolicy(jitter=0.3, rng=random.Random(1)),
        SplitPolicy(buckets=2, id_list_threshold=2),
        SplitPolicy(buckets=64, id_list_threshold=120, jitter=0.45, rng=random.Random(2)),
        SplitPolicy(buckets=8, id_list_threshold=16),
    ],
    ids=["jitter", "binary", "widest", "narrow"],
)
def test_split_policies_give_exact_results(policy: SplitPolicy) -> None:
    ours, theirs = pair(random.Random(12), 3000, 200, 150, recent=False)
    for limit in (4096, 256 * 1024):
        session = reconcile(ours, theirs, limit, policy)
        assert_exact(session, ours, theirs)
        assert session.largest_message <= limit


@given(
    st.integers(2, 64).flatmap(
        lambda buckets: st.tuples(
            st.just(buckets),
            st.integers(buckets, 100_000),
            st.floats(0.0, 0.45),
            st.integers(0, 2**32),
        )
    )
)
def test_cut_points_leave_no_bucket_empty(case: tuple[int, int, float, int]) -> None:
    buckets, count, jitter, seed = case
    policy = SplitPolicy(buckets, max(buckets, 32), jitter, random.Random(seed))
    cuts = [0, *policy.cut_points(count), count]
    assert len(cuts) == buckets + 1
    assert all(left < right for left, right in itertools.pairwise(cuts))


@pytest.mark.parametrize(
    "arguments",
    [{"buckets": 1}, {"buckets": 65}, {"id_list_threshold": 8}, {"id_list_threshold": 121},
     {"jitter": 0.5}],
)  # fmt: skip
def test_split_policy_rejects_unsafe_parameters(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SplitPolicy(**arguments)  # type: ignore[arg-type]


# --- state machine and protocol corner cases ------------------------------------------------


def state_of(initiator: ReconInitiator) -> SessionState:
    return initiator.state


def test_initiator_state_machine() -> None:
    storage = VectorStorage(random_items(random.Random(13), 100))
    responder = ReconResponder(VectorStorage([]))
    initiator = ReconInitiator(storage)
    assert state_of(initiator) is SessionState.IDLE
    with pytest.raises(ReconStateError):
        initiator.reconcile(b"\x61")
    first = initiator.initiate()
    assert state_of(initiator) is SessionState.AWAITING_REPLY
    with pytest.raises(ReconStateError):
        initiator.initiate()
    message: bytes | None = first
    while message is not None:
        message, _, _ = initiator.reconcile(responder.reconcile(message))
    assert state_of(initiator) is SessionState.DONE
    with pytest.raises(ReconStateError):
        initiator.reconcile(b"\x61")

    failing = ReconInitiator(storage)
    failing.initiate()
    with pytest.raises(DecodeError):
        failing.reconcile(b"\x61\x05")
    assert state_of(failing) is SessionState.FAILED
    with pytest.raises(ReconStateError):
        failing.reconcile(b"\x61")


def test_initiator_reports_have_and_need_from_id_lists() -> None:
    mine = ReconItem(10, b"\x01" * 32)
    shared = ReconItem(11, b"\x02" * 32)
    theirs = b"\x03" * 32
    initiator = ReconInitiator(VectorStorage([mine, shared]))
    initiator.initiate()
    reply = encode_message(Message((IdListRange(INFINITE_BOUND, (theirs, shared.id)),)))
    assert initiator.reconcile(reply) == (None, [mine.id], [theirs])


def test_responder_answers_an_id_list_with_its_own() -> None:
    items = [ReconItem(10, b"\x01" * 32), ReconItem(20, b"\x02" * 32)]
    responder = ReconResponder(VectorStorage(items))
    query = encode_message(Message((IdListRange(INFINITE_BOUND, ()),)))
    reply = decode_message(responder.reconcile(query))
    assert reply == Message((IdListRange(INFINITE_BOUND, (items[0].id, items[1].id)),))
    # a matching fingerprint is settled: nothing to say
    query = encode_message(Message((FingerprintRange(INFINITE_BOUND, fingerprint_of_ids([])),)))
    assert ReconResponder(VectorStorage([])).reconcile(query) == b"\x61"


def test_responder_asks_for_version_1_when_offered_another_version() -> None:
    responder = ReconResponder(VectorStorage([]))
    assert responder.reconcile(b"\x62\x01\x02\x03") == b"\x61"
    assert responder.reconcile(b"\x6f") == b"\x61"
    for data in (b"", b"\x5f", b"\x70", b"\xff\x00"):
        with pytest.raises(DecodeError):
            responder.reconcile(data)


def test_frame_size_limit_has_a_floor() -> None:
    with pytest.raises(ValueError):
        ReconInitiator(VectorStorage([]), 4095)
    with pytest.raises(ValueError):
        ReconResponder(VectorStorage([]), 1000)


class ListStorage:
    """A deliberately naive ReconStorage (linear scans, fingerprints from the ids), to check the
    engine needs nothing beyond the protocol."""

    def __init__(self, items: list[ReconItem]) -> None:
        self._items = sorted(items)

    def size(self) -> int:
        return len(self._items)

    def item(self, i: int) -> ReconItem:
        return self._items[i]

    def items(self, begin: int, end: int) -> Iterator[ReconItem]:
        return iter(self._items[begin:end])

    def lower_bound(self, begin: int, end: int, bound: ReconItem) -> int:
        return next((i for i in range(begin, end) if self._items[i] >= bound), end)

    def fingerprint(self, begin: int, end: int) -> bytes:
        return fingerprint_of_ids(item.id for item in self._items[begin:end])


def test_engine_works_with_any_storage_of_the_protocol() -> None:
    ours, theirs = pair(random.Random(14), 600, 40, 30, recent=False)
    storage: ReconStorage = ListStorage(ours)
    initiator = ReconInitiator(storage, 4096)
    responder = ReconResponder(ListStorage(theirs), 4096)
    have: list[bytes] = []
    need: list[bytes] = []
    message: bytes | None = initiator.initiate()
    while message is not None:
        message, new_have, new_need = initiator.reconcile(responder.reconcile(message))
        have += new_have
        need += new_need
    assert_exact(Session(have, need, initiator.rounds, 0, 0), ours, theirs)
