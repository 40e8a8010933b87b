"""The set reconciliation engine (mindoo_p2p.recon), driven directly: no sockets, no I/O.

Sessions between random and hand-shaped pairs of sets must report exactly the brute-force set
differences in few round trips; the codec must round-trip and reject every malformed message with
DecodeError alone; no message may exceed the frame limit.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindoo_p2p.errors import DecodeError
from mindoo_p2p.recon import (
    INFINITE_BOUND,
    MAX_TIMESTAMP,
    PROTOCOL_VERSION,
    Bound,
    FingerprintRange,
    IdListRange,
    Message,
    ReconInitiator,
    ReconItem,
    ReconResponder,
    ReconStateError,
    ReconStorage,
    SessionState,
    SkipRange,
    SplitPolicy,
    VectorStorage,
    decode_message,
    encode_message,
    fingerprint_of_ids,
)
from mindoo_p2p.recon._varint import decode_varint, encode_varint

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- helpers -------------------------------------------------------------------------------


@dataclass
class Session:
    have: list[bytes]
    need: list[bytes]
    rounds: int
    total_bytes: int
    largest_message: int


def reconcile(
    initiator_items: list[ReconItem],
    responder_items: list[ReconItem],
    frame_size_limit: int = 256 * 1024,
    split: SplitPolicy | None = None,
) -> Session:
    """Run one whole session between our initiator and our responder, in memory."""
    policy = split or SplitPolicy()
    initiator = ReconInitiator(VectorStorage(initiator_items), frame_size_limit, split=policy)
    responder = ReconResponder(VectorStorage(responder_items), frame_size_limit, split=policy)
    message: bytes | None = initiator.initiate()
    have: list[bytes] = []
    need: list[bytes] = []
    total = largest = 0
    while message is not None:
        reply = responder.reconcile(message)
        total += len(message) + len(reply)
        largest = max(largest, len(message), len(reply))
        message, new_have, new_need = initiator.reconcile(reply)
        have += new_have
        need += new_need
        assert initiator.rounds <= 5000, "session does not end"
    assert initiator.state is SessionState.DONE
    return Session(have, need, initiator.rounds, total, largest)


def assert_exact(session: Session, ours: list[ReconItem], theirs: list[ReconItem]) -> None:
    """have/need are exactly the brute-force set differences, each id reported once."""
    our_ids = {item.id for item in ours}
    their_ids = {item.id for item in theirs}
    assert len(session.have) == len(set(session.have))
    assert len(session.need) == len(set(session.need))
    assert set(session.have) == our_ids - their_ids
    assert set(session.need) == their_ids - our_ids


def random_items(
    rnd: random.Random, count: int, start: int = 0, span: int = 10**9
) -> list[ReconItem]:
    return [ReconItem(start + rnd.randrange(span), rnd.randbytes(32)) for _ in range(count)]


def pair(
    rnd: random.Random, common: int, only_initiator: int, only_responder: int, *, recent: bool
) -> tuple[list[ReconItem], list[ReconItem]]:
    """Two sets sharing ``common`` items; the differences are the newest items when ``recent``,
    else scattered over the whole time span."""
    base = 1_700_000_000_000
    shared = random_items(rnd, common, base, 10**9)
    start = base + 10**9 if recent else base
    span = 10**6 if recent else 10**9
    return (
        shared + random_items(rnd, only_initiator, start, span),
        shared + random_items(rnd, only_responder, start, span),
    )


# --- varint, fingerprint, items, storage ----------------------------------------------------


def test_varint_is_big_endian_base_128() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x81\x00"
    assert encode_varint(300) == b"\x82\x2c"
    assert encode_varint(2**64 - 1) == b"\x81" + b"\xff" * 8 + b"\x7f"
    with pytest.raises(ValueError):
        encode_varint(2**64)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"tail", 0, "v") == (value, len(encoded))


@pytest.mark.parametrize("data", [b"", b"\x81", b"\xff" * 11], ids=["empty", "truncated", "no end"])
def test_varint_rejects_truncated(data: bytes) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode_varint(data, 0, "v")


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x80\x01", 1),
        (b"\x80\x80\x80\x05", 5),
        (b"\x80" * 40 + b"\x7f", 127),
        (b"\x82" + b"\xff" * 8 + b"\x7f", 2**63 - 1),  # 2**64 + 2**63 - 1: its low 64 bits
        (b"\x84" + b"\x80" * 8 + b"\x00", 0),  # 2**66: nothing of it fits in 64 bits
    ],
    ids=["non-minimal", "several leading zeros", "long non-minimal", "over 64 bits", "wraps"],
)
def test_varint_reads_what_the_reference_reads(data: bytes, value: int) -> None:
    """hoytech/negentropy's decodeVarInt shifts a u64 with no minimality or length check:
    every encoding it reads is read here, to the same value."""
    assert decode_varint(data + b"tail", 0, "v") == (value, len(data))


def test_fingerprint_matches_the_specification() -> None:
    ids = [bytes([index]) * 32 for index in (1, 2, 0xFF)]
    total = sum(int.from_bytes(each, "little") for each in ids) % 2**256
    expected = hashlib.sha256(total.to_bytes(32, "little") + b"\x03").digest()[:16]
    assert fingerprint_of_ids(ids) == expected
    assert fingerprint_of_ids([]) == hashlib.sha256(bytes(32) + b"\x00").digest()[:16]


def test_vector_storage_fingerprints_equal_direct_computation() -> None:
    rnd = random.Random(5)
    items = [*random_items(rnd, 300, span=50), ReconItem(7, b"\xff" * 32)]  # sums wrap
    storage = VectorStorage(items)
    ordered = sorted(items)
    for _ in range(200):
        begin = rnd.randrange(len(ordered) + 1)
        end = rnd.randrange(begin, len(ordered) + 1)
        assert storage.fingerprint(begin, end) == fingerprint_of_ids(
            item.id for item in ordered[begin:end]
        )
    assert list(storage.items(0, storage.size())) == ordered
    assert storage.item(3) == ordered[3]


def test_vector_storage_lower_bound_equals_brute_force() -> None:
    rnd = random.Random(6)
    items = sorted(random_items(rnd, 500, span=40))
    storage = VectorStorage(items)
    for _ in range(300):
        probe = ReconItem(rnd.randrange(45), rnd.randbytes(rnd.randrange(33)).ljust(32, b"\x00"))
        begin = rnd.randrange(len(items) + 1)
        end = rnd.randrange(begin, len(items) + 1)
        expected = next((i for i in range(begin, end) if items[i] >= probe), end)
        assert storage.lower_bound(begin, end, probe) == expected


def test_vector_storage_rejects_bad_items_and_ranges() -> None:
    item = ReconItem(1, bytes(32))
    with pytest.raises(ValueError, match="duplicate"):
        VectorStorage([item, item])
    with pytest.raises(ValueError, match="reserved"):
        VectorStorage([ReconItem(MAX_TIMESTAMP, bytes(32))])
    storage = VectorStorage([item])
    with pytest.raises(IndexError):
        storage.fingerprint(0, 2)
    with pytest.raises(IndexError):
        storage.item(1)


def test_recon_item_validates_and_orders_by_timestamp_then_id() -> None:
    with pytest.raises(ValueError):
        ReconItem(1, b"short")
    with pytest.raises(ValueError):
        ReconItem(-1, bytes(32))
    with pytest.raises(TypeError):
        ReconItem(1, bytearray(32))  # type: ignore[arg-type]
    assert ReconItem(1, b"\xff" * 32) < ReconItem(2, bytes(32)) < ReconItem(2, b"\x01" * 32)


def test_bound_pads_its_prefix_with_zeros() -> None:
    assert Bound(5, b"\xab").as_item() == ReconItem(5, b"\xab" + bytes(31))
    with pytest.raises(ValueError):
        Bound(MAX_TIMESTAMP, b"\x01")
    with pytest.raises(ValueError):
        Bound(1, bytes(33))


# --- codec ---------------------------------------------------------------------------------


def test_encoding_matches_the_wire_format() -> None:
    fingerprint = bytes(range(16))
    item_id = b"\x11" * 32
    message = Message(
        (
            FingerprintRange(Bound(5), fingerprint),
            SkipRange(Bound(7, b"\xab")),
            IdListRange(INFINITE_BOUND, (item_id,)),
        )
    )
    wire = (
        b"\x61"
        + b"\x06\x00\x01" + fingerprint  # 1 + (5 - 0), no prefix, Fingerprint
        + b"\x03\x01\xab\x00"  # 1 + (7 - 5), 1-byte prefix, Skip
        + b"\x00\x00\x02\x01" + item_id  # infinity, no prefix, IdList of 1
    )  # fmt: skip
    assert encode_message(message) == wire
    assert decode_message(wire) == message
    assert encode_message(Message()) == bytes((PROTOCOL_VERSION,))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """Valid messages: strictly increasing bounds, maybe ending at infinity."""
    count = draw(st.integers(0, 12))
    keys = draw(
        st.lists(
            st.tuples(st.integers(0, 2**64 - 2), st.binary(max_size=32)),
            min_size=count,
            max_size=count,
        )
    )
    bounds = sorted({Bound(ts, prefix) for ts, prefix in keys}, key=Bound.sort_key)
    bounds = [bound for bound in bounds if bound.sort_key() > bytes(40)]
    end_at_infinity: bool = draw(st.booleans())
    if bounds and end_at_infinity:
        bounds[-1] = INFINITE_BOUND
    bounds = list({bound.sort_key(): bound for bound in bounds}.values())
    ranges: list[SkipRange | FingerprintRange | IdListRange] = []
    for bound in bounds:
        kind = draw(st.integers(0, 2))
        if kind == 0:
            ranges.append(SkipRange(bound))
        elif kind == 1:
            ranges.append(FingerprintRange(bound, draw(st.binary(min_size=16, max_size=16))))
        else:
            ids = draw(st.lists(st.binary(min_size=32, max_size=32), max_size=4, unique=True))
            ranges.append(IdListRange(bound, tuple(ids)))
    return Message(tuple(ranges))


@FUZZ
@given(messages())
def test_codec_round_trip(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


def _valid_wire() -> bytes:
    return encode_message(
        Message(
            (
                FingerprintRange(Bound(1000, b"\x05"), bytes(16)),
                IdListRange(Bound(2000), (b"\x01" * 32, b"\x02" * 32)),
            )
        )
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\x62", "unsupported protocol version"),
        (b"\x00", "unsupported protocol version"),
        (b"\x61\x05", "truncated"),
        (b"\x61\x05\x00\x01" + bytes(15), "truncated at fingerprint"),
        (b"\x61\x05\x21" + bytes(33) + b"\x00", "prefix of 33"),
        (b"\x61\x05\x00\x03", "unknown range mode"),
        (b"\x61\x05\x00\x02\x02" + bytes(33), "2 ids announced"),
    ],
)
def test_decoder_rejects_malformed_messages(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode_message(data)


ID_A = b"\x07" * 32
ID_B = b"\x09" * 32


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # An id prefix on the infinite bound means nothing (nostr-tools and others send one).
        (b"\x61\x00\x01\x07\x00", (SkipRange(Bound(MAX_TIMESTAMP)),)),
        # Equal bounds: the second range is empty.
        (
            b"\x61\x06\x00\x00\x01\x00\x00",
            (SkipRange(Bound(5)), SkipRange(Bound(5))),
        ),
        # A bound below the previous one closes an empty range too (the reference searches
        # its upper index from the previous one).
        (
            b"\x61\x0a\x01\x09\x00\x01\x00\x00",
            (SkipRange(Bound(9, b"\x09")), SkipRange(Bound(9, b"\x09"))),
        ),
        # Every bound after an infinite one is infinite.
        (
            b"\x61\x00\x00\x00\x05\x00\x00",
            (SkipRange(Bound(MAX_TIMESTAMP)), SkipRange(Bound(MAX_TIMESTAMP))),
        ),
        # A timestamp delta past the u64 range saturates to infinity.
        (
            b"\x61\x06\x00\x00\x81" + b"\xff" * 8 + b"\x7f\x00\x00",
            (SkipRange(Bound(5)), SkipRange(Bound(MAX_TIMESTAMP))),
        ),
        # Non-minimal varints anywhere.
        (b"\x61\x80\x06\x80\x00\x80\x00", (SkipRange(Bound(5)),)),
        # An id listed twice in one range counts once.
        (
            b"\x61\x06\x00\x02\x03" + ID_A + ID_B + ID_A,
            (IdListRange(Bound(5), (ID_A, ID_B)),),
        ),
    ],
    ids=[
        "prefix on infinity",
        "equal bounds",
        "decreasing bound",
        "after infinity",
        "timestamp overflow",
        "non-minimal varints",
        "id listed twice",
    ],
)
def test_decoder_reads_what_the_reference_reads(data: bytes, expected: tuple[object, ...]) -> None:
    """Interoperability: every encoding hoytech/negentropy's decoder accepts decodes here, to
    what it means there."""
    assert decode_message(data).ranges == expected


def test_responder_answers_lenient_encodings_like_canonical_ones() -> None:
    """The engine gives the same answer to a message and to its canonical re-encoding."""
    items = [ReconItem(10 + i, bytes([i]) * 32) for i in range(40)]
    responder = ReconResponder(VectorStorage(items))
    ours = VectorStorage(items[:30])
    fingerprint = ours.fingerprint(0, ours.size())
    canonical = encode_message(Message((FingerprintRange(Bound(MAX_TIMESTAMP), fingerprint),)))
    lenient = (
        b"\x61\x80\x0b\x00\x00"  # a non-minimal bound at 10, then an empty range up to it
        + b"\x80\x00\x02\xab\xcd\x01"  # infinity (non-minimal 0) with a 2-byte prefix
        + fingerprint
    )
    assert decode_message(lenient).ranges[-1] == FingerprintRange(Bound(MAX_TIMESTAMP), fingerprint)

    def described(reply: bytes) -> list[object]:
        return [r for r in decode_message(reply).ranges if not isinstance(r, SkipRange)]

    # The lenient message's first range (up to 10) is empty for us: only skips differ.
    expected = described(responder.reconcile(canonical))
    assert expected
    assert described(responder.reconcile(lenient)) == expected


def test_an_oversized_reply_names_the_missing_frame_limit() -> None:
    """A peer with no frame size limit that answers with more than we accept gets an error
    that says so (not a stall)."""
    initiator = ReconInitiator(VectorStorage([]), max_message_size=4096)
    initiator.initiate()
    with pytest.raises(DecodeError, match="must be given one"):
        initiator.reconcile(b"\x61" + b"\x02\x00\x00" * 2000)
    assert initiator.state is SessionState.FAILED


def test_decoder_rejects_oversized_messages() -> None:
    wire = _valid_wire()
    assert decode_message(wire, max_size=len(wire)).ranges
    with pytest.raises(DecodeError, match="over the limit"):
        decode_message(wire, max_size=len(wire) - 1)
    responder = ReconResponder(VectorStorage([]), max_message_size=4096)
    with pytest.raises(DecodeError, match="over the limit"):
        responder.reconcile(b"\x61" + b"\x02\x00\x00" * 2000)


def _fresh_initiator() -> ReconInitiator:
    rnd = random.Random(9)
    initiator = ReconInitiator(VectorStorage(random_items(rnd, 60, span=3000)))
    initiator.initiate()
    return initiator


FUZZ_RESPONDER = ReconResponder(VectorStorage(random_items(random.Random(8), 80, span=3000)), 4096)


def _feed_both(data: bytes) -> None:
    """Both sides take ``data``: each answers or raises DecodeError, never anything else; an
    answer is a valid message within the frame limit."""
    try:
        reply = FUZZ_RESPONDER.reconcile(data)
    except DecodeError:
        pass
    else:
        assert len(reply) <= 4096
        decode_message(reply)
    initiator = _fresh_initiator()
    try:
        message, _, _ = initiator.reconcile(data)
    except DecodeError:
        assert initiator.state is SessionState.FAILED
    else:
        assert message is None or decode_message(message).ranges


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_raise_decode_error_only(data: bytes) -> None:
    _feed_both(data)
    _feed_both(b"\x61" + data)


@FUZZ
@given(messages(), st.data())
def test_fuzz_mutated_messages_raise_decode_error_only(
    message: Message, data: st.DataObject
) -> None:
    wire = bytearray(encode_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = data.draw(st.integers(0, max(0, len(wire) - 1)))
        if action == "flip" and wire:
            wire[position] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            wire.insert(position, data.draw(st.integers(0, 255)))
        elif action == "delete" and wire:
            del wire[position]
        else:
            del wire[position:]
    _feed_both(bytes(wire))


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
