"""The set reconciliation engine (mindoo_p2p.recon), driven directly: no sockets, no I/O.

Its parts: the varint, fingerprints, items and storage; the codec must round-trip and reject every
malformed message with DecodeError alone; no message may exceed the frame limit.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recon_helpers import random_items

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
    SessionState,
    SkipRange,
    VectorStorage,
    checked_items,
    decode_message,
    encode_message,
    fingerprint_of_ids,
)
from mindoo_p2p.recon._varint import decode_varint, encode_varint

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


def test_checked_items_are_recon_items_and_refuse_pairs_that_break_their_contract() -> None:
    pairs = [(0, bytes(32)), (MAX_TIMESTAMP, b"\x07" * 32)]
    built = checked_items(pairs)
    assert built == tuple(ReconItem(t, i) for t, i in pairs)
    assert [hash(item) for item in built] == [hash(ReconItem(t, i)) for t, i in pairs]
    for bad in [(1, b"short"), (-1, bytes(32)), (MAX_TIMESTAMP + 1, bytes(32)), (1.0, bytes(32))]:
        with pytest.raises(ValueError, match="not a checked"):
            checked_items([bad])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not a checked"):
        checked_items([(1, bytearray(32))])  # type: ignore[list-item]


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
