"""The sealed entry: round trips, the tamper matrix and a decoding fuzz test."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p.codec import Reader, encode_varint
from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import (
    TENANT_LOG,
    Entry,
    EntryKind,
    _decode_usual,
    validate_database_name,
)
from mindoo_p2p.entry_fields import document_key_of_raw, tenant_id_of_raw
from mindoo_p2p.errors import DecodeError, InvalidNameError, VerificationError

AUTHOR = SigningKeyPair.generate()
KEY = random_key()


def make_entry(
    payload: bytes = b"automerge change bytes",
    deps: int = 2,
    database: str = "contacts",
    prev: bytes | None = None,
    author_seq: int = 7,
) -> Entry:
    """A format-1 entry, or format 2 when ``prev`` is given."""
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=os.urandom(16),
        database=database,
        document_id=os.urandom(16),
        author=AUTHOR,
        author_seq=author_seq,
        timestamp_ms=1_700_000_000_123,
        deps=[os.urandom(32) for _ in range(deps)],
        key_id=os.urandom(16),
        key=KEY,
        payload=payload,
        prev=prev,
    )


def test_seal_decode_round_trip() -> None:
    entry = make_entry()
    decoded = Entry.decode(entry.raw)
    assert decoded == entry
    assert decoded.id == entry.id
    decoded.verify_signature()
    assert decoded.decrypt(KEY) == b"automerge change bytes"
    assert decoded.header.author_seq == 7
    assert decoded.timestamp_ms == 1_700_000_000_123
    assert len(decoded.deps) == 2


@pytest.mark.parametrize(
    ("deps", "database", "prev", "author_seq"),
    [
        (0, "contacts", None, 7),
        (2, TENANT_LOG, None, 7),
        (0, "contacts", bytes(32), 1),
        (3, "a" * 64, b"\x01" * 32, 2**64 - 1),
    ],
)
def test_seal_builds_what_the_reference_encoder_and_decoder_build(
    deps: int, database: str, prev: bytes | None, author_seq: int
) -> None:
    """`Entry.seal` sets the slots and encodes in place (perf-write): its header bytes are
    `EntryHeader.encode`'s, and the field-by-field reference decoder rebuilds the same entry."""
    entry = make_entry(deps=deps, database=database, prev=prev, author_seq=author_seq)
    assert entry.header_bytes == entry.header.encode()
    assert entry.raw.startswith(entry.header_bytes)
    assert Entry._decode_fields(entry.raw, "entry") == entry
    assert Entry.decode(entry.raw) == entry
    entry.verify_signature()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"tenant_id": b"short"}, "tenant_id must be 16 bytes"),
        ({"database": "Bad Name"}, "invalid database name"),
        ({"document_id": b"short"}, "document_id must be 16 bytes"),
        ({"author_seq": -1}, "must fit in 64 bits"),
        ({"timestamp_ms": 2**64}, "must fit in 64 bits"),
        ({"deps": [b"short"]}, "deps must be"),
        ({"key_id": b"short"}, "key_id must be 16 bytes"),
        ({"prev": b"short"}, "prev must be a 32-byte"),
        ({"prev": bytes(32), "author_seq": 2}, "prev is all zero exactly for author_seq 1"),
        ({"prev": b"\x01" * 32, "author_seq": 1}, "prev is all zero exactly for author_seq 1"),
    ],
)
def test_seal_refuses_what_the_header_refuses(changes: dict[str, object], error: str) -> None:
    arguments: dict[str, object] = {
        "kind": EntryKind.CHANGE,
        "tenant_id": os.urandom(16),
        "database": "contacts",
        "document_id": os.urandom(16),
        "author": AUTHOR,
        "author_seq": 3,
        "timestamp_ms": 1,
        "deps": [],
        "key_id": os.urandom(16),
        "key": KEY,
        "payload": b"x",
        "prev": None,
    }
    arguments.update(changes)
    with pytest.raises((ValueError, InvalidNameError), match=error):
        Entry.seal(**arguments)  # type: ignore[arg-type]


def test_ciphertext_hides_payload() -> None:
    marker = b"UNIQUE-MARKER-5f3a"
    entry = make_entry(payload=marker * 3)
    assert marker not in entry.raw


def test_wrong_key_is_rejected() -> None:
    entry = make_entry()
    with pytest.raises(VerificationError, match="decryption failed"):
        entry.decrypt(random_key())


def test_tenant_log_database_name_allowed_but_not_for_users() -> None:
    with pytest.raises(InvalidNameError):
        validate_database_name(TENANT_LOG)
    for bad in ["", "Contacts", "-x", "a" * 65, "a b", "é"]:
        with pytest.raises(InvalidNameError):
            validate_database_name(bad)
    for good in ["contacts", "crm2026", "tickets-critical", "a.b_c-d", "0" * 64]:
        assert validate_database_name(good) == good


def _field_offsets(entry: Entry) -> dict[str, tuple[int, int]]:
    """Byte ranges of each header field in the sealed bytes."""
    h = entry.header
    offsets: dict[str, tuple[int, int]] = {}
    pos = 0

    def take(name: str, size: int) -> None:
        nonlocal pos
        offsets[name] = (pos, pos + size)
        pos += size

    take("magic", 3)
    take("version", 1)
    take("kind", 1)
    take("tenant_id", 16)
    take("database", 1 + len(h.database))
    take("document_id", 16)
    take("author", 32)
    take("author_seq", 8)
    take("timestamp_ms", 8)
    take("deps", 1 + 32 * len(h.deps))
    take("key_id", 16)
    take("nonce", 24)
    assert pos == len(entry.header_bytes)
    offsets["ciphertext"] = (entry.signed_end - len(entry.ciphertext), entry.signed_end)
    offsets["signature"] = (entry.signed_end, len(entry.raw))
    return offsets


@pytest.mark.parametrize(
    "field",
    [
        "magic",
        "version",
        "kind",
        "tenant_id",
        "database",
        "document_id",
        "author",
        "author_seq",
        "timestamp_ms",
        "deps",
        "key_id",
        "nonce",
        "ciphertext",
        "signature",
    ],
)
def test_tamper_matrix(field: str) -> None:
    """Changing any byte of any field is caught: decoding, signature or decryption fails."""
    entry = make_entry()
    start, end = _field_offsets(entry)[field]
    for position in {start, (start + end) // 2, end - 1}:
        tampered = bytearray(entry.raw)
        tampered[position] ^= 0x01
        try:
            decoded = Entry.decode(bytes(tampered))
        except DecodeError:
            continue
        assert decoded.id != entry.id
        with pytest.raises(VerificationError):
            decoded.verify_signature()
            decoded.decrypt(KEY)


def test_truncations_raise_decode_error() -> None:
    raw = make_entry().raw
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            Entry.decode(raw[:cut])
    with pytest.raises(DecodeError, match="trailing"):
        Entry.decode(raw + b"\x00")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Entry.decode(data)


VALID = make_entry().raw


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6))
def test_mutated_entries_only_raise_decode_error(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, value in mutations:
        data[pos] = value
    try:
        decoded = Entry.decode(bytes(data))
    except DecodeError:
        return
    if bytes(data) != VALID:
        with pytest.raises(VerificationError):
            decoded.verify_signature()
            decoded.decrypt(KEY)


def test_tenant_id_of_raw_reads_the_fixed_header_field() -> None:
    entry = make_entry()
    assert tenant_id_of_raw(entry.raw) == entry.tenant_id
    assert tenant_id_of_raw(b"MDE") is None
    assert tenant_id_of_raw(b"XXX" + entry.raw[3:]) is None


USUAL_SHAPES = [
    make_entry(),
    make_entry(deps=0, database=TENANT_LOG),
    make_entry(payload=os.urandom(300), deps=127, database="a" * 64),
    make_entry(payload=os.urandom(20_000), deps=1),  # a 3-byte ciphertext length
    make_entry(prev=os.urandom(32)),  # format 2: chained
    make_entry(prev=bytes(32), author_seq=1, deps=0, database=TENANT_LOG),  # an author's first
    make_entry(prev=os.urandom(32), payload=os.urandom(300), deps=127, database="a" * 64),
]
OTHER_SHAPES = [make_entry(deps=128)]  # a 2-byte dependency count: the reference decoder's


def _fields(entry: Entry) -> tuple[object, ...]:
    h = entry.header
    return (
        type(h.kind),
        *(getattr(h, name) for name in h.__slots__),
        entry.ciphertext,
        entry.signature,
        entry.raw,
        entry.id,
        entry.header_bytes,
        entry.signed_end,
    )


def test_the_fast_decoder_reads_the_usual_shapes_and_leaves_the_others() -> None:
    for entry in USUAL_SHAPES:
        fast = _decode_usual(entry.raw)
        assert fast is not None
        assert fast == entry
        assert _fields(fast) == _fields(Entry._decode_fields(entry.raw, "entry"))
    for entry in OTHER_SHAPES:
        assert _decode_usual(entry.raw) is None
        assert Entry.decode(entry.raw) == entry


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(USUAL_SHAPES + OTHER_SHAPES),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
    st.integers(-3, 3),
)
def test_the_fast_decoder_accepts_only_what_the_reference_decoder_accepts(
    base: Entry, mutations: list[tuple[int, int]], resize: int
) -> None:
    """Bytes changed anywhere (the length fields included), entries cut short or lengthened:
    whenever the fast path returns an entry, the field-by-field reader returns the same."""
    data = bytearray(base.raw)
    for pos, value in mutations:
        data[pos % len(data)] = value
    if resize < 0:
        del data[resize:]
    else:
        data += bytes(resize)
    fast = _decode_usual(bytes(data))
    try:
        reference: Entry | None = Entry._decode_fields(bytes(data), "entry")
    except DecodeError:
        reference = None
    if fast is not None:
        assert reference is not None
        assert _fields(fast) == _fields(reference)


def test_document_key_of_raw_reads_kind_document_and_key_of_every_shape() -> None:
    """What the query index follows a database by, read without decoding: the same as the
    decoder's for both formats, any dependency count (a 2-byte count included); bytes that
    are not an entry, or cut short before the key id, raise DecodeError."""
    for entry in USUAL_SHAPES + OTHER_SHAPES:
        header = entry.header
        assert document_key_of_raw(entry.raw) == (
            header.kind,
            header.document_id,
            header.key_id,
        )
        cut = len(entry.header_bytes) - len(header.nonce) - 1  # one byte short of the key id
        with pytest.raises(DecodeError):
            document_key_of_raw(entry.raw[:cut])
    with pytest.raises(DecodeError):
        document_key_of_raw(b"XXX" + USUAL_SHAPES[0].raw[3:])


@pytest.mark.parametrize("value", [0, 1, 0x7F, 0x80, 300, 0x3FFF, 0x4000, (1 << 64) - 1])
def test_varints_of_every_width_round_trip_and_one_byte_ones_are_one_byte(value: int) -> None:
    encoded = encode_varint(value)
    assert Reader(encoded, "varint").varint("v") == value
    assert (len(encoded) == 1) == (value < 0x80)
    assert encoded[-1] < 0x80 and all(byte >= 0x80 for byte in encoded[:-1])


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_a_varint_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="varint out of range"):
        encode_varint(value)
