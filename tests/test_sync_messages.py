"""The sync protocol's wire messages: every type round-trips, decoding is strict and canonical.

Any byte string either decodes to a message that re-encodes to exactly the same bytes, or raises
DecodeError and nothing else (fuzzed with random bytes, mutated valid frames and truncations).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindoo_p2p.codec import Reader
from mindoo_p2p.entry import MAX_ENTRY_SIZE, TENANT_LOG
from mindoo_p2p.errors import DecodeError
from mindoo_p2p.recon import MAX_TIMESTAMP, ReconItem
from mindoo_p2p.sync.messages import (
    MAX_DATABASES,
    MAX_FETCH_IDS,
    MAX_FRAME_SIZE,
    MAX_INDEX_PAGE,
    MAX_RECON_PAYLOAD,
    Challenge,
    Credential,
    CredentialKind,
    DatabaseInfo,
    DatabaseList,
    DatabaseSummary,
    Denied,
    Entries,
    EntryFragment,
    FetchEnd,
    FetchRequest,
    Finish,
    Finished,
    Hello,
    IndexPage,
    IndexRequest,
    InitiatorProof,
    Message,
    MessageType,
    ReconReply,
    ReconRequest,
    ResponderProof,
    decode_message,
    encode_message,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ID_A = bytes(range(32))
ID_B = bytes(range(1, 33))


def _sample_messages() -> list[Message]:
    item = ReconItem(1_700_000_000_000, ID_A)
    return [
        Hello(1, b"\x01" * 32),
        Challenge(b"\x02" * 32),
        InitiatorProof(b"\x03" * 32, b"sealed credential bytes"),
        ResponderProof(b"\x04" * 120),
        Denied(),
        DatabaseList((DatabaseInfo(TENANT_LOG, 3), DatabaseInfo("notes", 2**40))),
        DatabaseList(()),
        DatabaseSummary((DatabaseInfo(TENANT_LOG, 3), DatabaseInfo("notes", 0)), (ID_A[:16],) * 2),
        DatabaseSummary((), ()),
        ReconRequest(7, b"\x61\x00\x00"),
        ReconReply(b"\x61"),
        IndexRequest(0, None, MAX_INDEX_PAGE),
        IndexRequest(3, item, 10),
        IndexPage((item, ReconItem(item.timestamp, ID_B)), True),
        IndexPage((), False),
        FetchRequest(1, (ID_A, ID_B)),
        Entries((b"entry one", b"e" * 1000)),
        EntryFragment(10, 4, b"abcdef"),
        FetchEnd(()),
        FetchEnd((ID_B,)),
        Finish(),
        Finished(5, 2**63),
    ]


@pytest.mark.parametrize("message", _sample_messages(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    frame = encode_message(message)
    assert frame[0] == message.TYPE
    assert decode_message(frame) == message
    assert encode_message(decode_message(frame)) == frame


def test_every_message_type_is_sampled() -> None:
    assert {m.TYPE for m in _sample_messages()} == set(MessageType)


def test_denied_is_one_constant_byte() -> None:
    assert encode_message(Denied()) == bytes((MessageType.DENIED,))


def test_credential_round_trips_with_evidence() -> None:
    member = Credential(CredentialKind.MEMBER_KEY, b"k" * 32, b"s" * 64)
    vouched = Credential(CredentialKind.MEMBER_KEY, b"k" * 32, b"s" * 64, b"membership entry")
    mirror = Credential(CredentialKind.MIRROR_GRANT, b"k" * 32, b"s" * 64, b"grant signed by admin")
    for credential in (member, vouched, mirror):
        assert Credential.decode(credential.encode()) == credential
    with pytest.raises(ValueError):
        Credential(CredentialKind.MIRROR_GRANT, b"k" * 32, b"s" * 64)  # a grant is required
    with pytest.raises(ValueError):
        Credential(CredentialKind.MEMBER_KEY, b"k" * 32, b"s" * 64, b"x" * 5000)  # too long
    with pytest.raises(DecodeError):
        Credential.decode(member.encode() + b"\x00")
    with pytest.raises(DecodeError):
        Credential.decode(b"\x09" + member.encode()[1:])


@pytest.mark.parametrize(
    "frame, why",
    [
        (b"", "empty"),
        (b"\x7f", "unknown type"),
        (encode_message(Finish()) + b"\x00", "trailing byte"),
        (bytes((MessageType.HELLO, 1)) + b"\x00" * 31, "truncated nonce"),
        (bytes((MessageType.FETCH_REQUEST, 0, 2)) + ID_A + ID_A, "an id twice"),
        (bytes((MessageType.FETCH_REQUEST, 0, 0)), "no ids"),
        (bytes((MessageType.FETCH_REQUEST, 0, 5)) + ID_A, "count past the bytes"),
        (bytes((MessageType.FETCH_REQUEST, 0, 0x80, 0x00)), "non-minimal varint"),
        (bytes((MessageType.INDEX_PAGE, 0, 2)), "more flag not 0 or 1"),
        (bytes((MessageType.INDEX_REQUEST, 0, 0, 0)), "limit 0"),
        (bytes((MessageType.ENTRY_FRAGMENT, 4, 2, 3)) + b"abc", "fragment past its total"),
        (bytes((MessageType.ENTRIES, 0)), "no entries"),
        (bytes((MessageType.DATABASE_LIST, 1, 3)) + b"A-B" + b"\x00", "bad database name"),
        (
            bytes((MessageType.DATABASE_LIST, 2, 1)) + b"b\x00\x01a\x00",
            "names not increasing",
        ),
        (bytes((MessageType.RECON_REPLY, 0)), "empty negentropy payload"),
        (bytes((MessageType.DENIED,)) + b"x", "a denial with a body"),
    ],
)
def test_malformed_frames_are_refused(frame: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        decode_message(frame)


def test_size_bounds() -> None:
    with pytest.raises(DecodeError):
        decode_message(bytes((MessageType.ENTRIES, 1)) + b"\x00" * MAX_FRAME_SIZE)
    too_many = bytes((MessageType.FETCH_END,)) + bytes([0x81, 0x08])  # 1025 ids
    assert MAX_FETCH_IDS == 1024
    with pytest.raises(DecodeError):
        decode_message(too_many + b"\x00" * 32 * 1025)
    with pytest.raises(ValueError):
        ReconReply(b"\x61" * (MAX_RECON_PAYLOAD + 1))
    with pytest.raises(ValueError):
        EntryFragment(MAX_ENTRY_SIZE + 1, 0, b"x")
    with pytest.raises(ValueError):
        DatabaseList(tuple(DatabaseInfo(f"db{i:05d}", 0) for i in range(MAX_DATABASES + 1)))
    with pytest.raises(ValueError):
        IndexPage((ReconItem(MAX_TIMESTAMP, ID_A),), False)
    with pytest.raises(ValueError):
        encode_message(Entries((b"x" * (MAX_FRAME_SIZE - 4),)))
    largest_recon = encode_message(ReconRequest(MAX_DATABASES - 1, b"\x61" * MAX_RECON_PAYLOAD))
    assert len(largest_recon) <= MAX_FRAME_SIZE


# --- hypothesis --------------------------------------------------------------------------------

ids = st.binary(min_size=32, max_size=32)
items = st.builds(ReconItem, st.integers(0, MAX_TIMESTAMP - 1), ids)
names = st.one_of(st.just(TENANT_LOG), st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True))
database_index = st.integers(0, MAX_DATABASES - 1)


@st.composite
def database_lists(draw: st.DrawFn) -> DatabaseList:
    chosen = sorted(set(draw(st.lists(names, max_size=6))))
    counts = draw(st.lists(st.integers(0, 2**64 - 1), min_size=len(chosen), max_size=len(chosen)))
    return DatabaseList(tuple(DatabaseInfo(n, c) for n, c in zip(chosen, counts, strict=True)))


@st.composite
def index_pages(draw: st.DrawFn) -> IndexPage:
    page = sorted(set(draw(st.lists(items, max_size=8))))
    return IndexPage(tuple(page), draw(st.booleans()))


@st.composite
def fragments(draw: st.DrawFn) -> EntryFragment:
    total = draw(st.integers(1, MAX_ENTRY_SIZE))
    offset = draw(st.integers(0, total - 1))
    data = draw(st.binary(min_size=1, max_size=min(64, total - offset)))
    return EntryFragment(total, offset, data)


messages = st.one_of(
    st.builds(Hello, st.integers(0, 255), ids),
    st.builds(Challenge, ids),
    st.builds(InitiatorProof, ids, st.binary(min_size=1, max_size=200)),
    st.builds(ResponderProof, st.binary(min_size=1, max_size=200)),
    st.just(Denied()),
    database_lists(),
    st.builds(ReconRequest, database_index, st.binary(min_size=1, max_size=100)),
    st.builds(ReconReply, st.binary(min_size=1, max_size=100)),
    st.builds(IndexRequest, database_index, st.none() | items, st.integers(1, MAX_INDEX_PAGE)),
    index_pages(),
    st.builds(
        FetchRequest,
        database_index,
        st.lists(ids, min_size=1, max_size=8, unique=True).map(tuple),
    ),
    st.builds(
        Entries, st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=5).map(tuple)
    ),
    fragments(),
    st.builds(FetchEnd, st.lists(ids, max_size=8, unique=True).map(tuple)),
    st.just(Finish()),
    st.builds(Finished, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
)


def _decode_or_refuse(frame: bytes) -> None:
    """Decoding either fails with DecodeError or yields the message of exactly these bytes."""
    try:
        message = decode_message(frame)
    except DecodeError:
        return
    assert encode_message(message) == frame


@FUZZ
@given(messages)
def test_random_messages_round_trip(message: Message) -> None:
    frame = encode_message(message)
    assert decode_message(frame) == message


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(frame: bytes) -> None:
    _decode_or_refuse(frame)


@FUZZ
@given(st.sampled_from(MessageType), st.binary(max_size=300))
def test_random_bodies_raise_only_decode_error(kind: MessageType, body: bytes) -> None:
    _decode_or_refuse(bytes((kind,)) + body)


def _mutated(
    message: Message,
    data: st.DataObject,
    times: st.SearchStrategy[int],
    inserts: st.SearchStrategy[bytes],
) -> bytes:
    """``message``'s frame with ``times`` random edits: a bit flipped, cut short at a point, or
    bytes drawn from ``inserts`` put in."""
    frame = bytearray(encode_message(message))
    for _ in range(data.draw(times)):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, len(frame)))
        if action == "flip" and position < len(frame):
            frame[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del frame[position:]
        else:
            frame[position:position] = data.draw(inserts)
    return bytes(frame)


@FUZZ
@given(messages, st.data())
def test_mutated_frames_raise_only_decode_error(message: Message, data: st.DataObject) -> None:
    frame = _mutated(message, data, st.integers(1, 4), st.binary(min_size=1, max_size=4))
    _decode_or_refuse(frame)


@FUZZ
@given(st.binary(max_size=200))
def test_random_credentials_raise_only_decode_error(data: bytes) -> None:
    try:
        credential = Credential.decode(data)
    except DecodeError:
        return
    assert credential.encode() == data


def _decoded(frame: bytes) -> Message | str:
    try:
        return decode_message(frame)
    except DecodeError as exc:
        return str(exc)


@FUZZ
@given(
    st.one_of(
        index_pages(),
        st.builds(
            Entries,
            st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5).map(tuple),
        ),
    ),
    st.data(),
)
def test_the_one_loop_readers_decode_as_the_field_readers(
    message: Message, data: st.DataObject
) -> None:
    """Index pages and entry frames are read in one loop (`Reader.varints_with_fixed`,
    `Reader.blobs`); valid or mutated (a bit flipped, cut short, bytes inserted: overlong,
    non-minimal and oversized varints among them), a frame decodes to the same message, or
    fails with the same error, as when every field is read on its own."""
    varint_edges = st.sampled_from([b"\x80", b"\xff" * 10, b"\x80\x00", b"\x00", b"\x7f"])
    frame = _mutated(message, data, st.integers(0, 3), varint_edges)
    one_loop = _decoded(frame)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Reader, "varints_with_fixed", lambda *args: None)
        patch.setattr(Reader, "blobs", lambda *args: None)
        field_by_field = _decoded(frame)
    assert one_loop == field_by_field


def test_the_one_loop_readers_are_used_and_refuse_what_the_field_readers_refuse() -> None:
    page = IndexPage(
        tuple(ReconItem(1_700_000_000_000 + i, bytes([i]) * 32) for i in range(3)), False
    )
    reader = Reader(encode_message(page)[2:])
    assert reader.varints_with_fixed(3, 32, MAX_TIMESTAMP - 1) == [
        (item.timestamp, item.id) for item in page.items
    ]
    assert Reader(b"\x80\x00" + bytes(32)).varints_with_fixed(1, 32, 10) is None  # non-minimal
    assert Reader(b"\x0b" + bytes(32)).varints_with_fixed(1, 32, 10) is None  # over the limit
    assert Reader(b"\xff" * 10 + b"\x01").blobs(1, 10) is None  # over ten bytes
    assert Reader(b"\x03ab").blobs(1, 10) is None  # cut short
    assert Reader(b"\x0b" + bytes(11)).blobs(1, 10) is None  # over the size limit
    assert Reader(b"\x02ab\x01c").blobs(2, 10) == [b"ab", b"c"]
