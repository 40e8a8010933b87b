"""The native chain sealer (`native_seal`, `mindoo_p2p/_seal_chain.c`) against the reference,
`writer.seal_drafts_in_python`: the same drafts and nonces give byte-identical entries, the
same numbering, links and resolved parents, and the same errors; the C entry point refuses
inconsistent arguments instead of reading or writing outside its buffers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from array import array
from collections.abc import Iterator

import pytest
from helpers import MemoryPositions
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p import native_seal
from mindoo_p2p.crypto import SigningKeyPair, aead
from mindoo_p2p.entry import MAX_CIPHERTEXT, NO_PREV, SIGNING_DOMAIN, Entry, EntryKind
from mindoo_p2p.errors import InvalidNameError
from mindoo_p2p.keyring import TenantKey
from mindoo_p2p.writer import (
    ChangeRef,
    Draft,
    SealingState,
    UnresolvedDependencyError,
    seal_drafts,
    seal_drafts_in_python,
)

pytestmark = pytest.mark.skipif(
    not native_seal.available() and os.environ.get("MINDOO_REQUIRE_NATIVE_SEAL") != "1",
    reason="the native sealer is off (MINDOO_NATIVE_SEAL=0) or was not built (no C compiler)",
)

TENANTS = [bytes(range(16)), bytes(range(1, 17))]
SIGNERS = [SigningKeyPair(bytes([1]) * 32), SigningKeyPair(bytes([2]) * 32)]
KEYS = [TenantKey.generate("default"), TenantKey.generate("confidential")]
DOCS = [b"a" * 16, b"b" * 16, b"c" * 16]


@pytest.fixture
def counted_nonces(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Nonces 0, 1, 2, ... (reset by clearing the list's count) instead of random ones."""
    counter = [0]

    def nonce() -> bytes:
        counter[0] += 1
        return counter[0].to_bytes(aead.NONCE_SIZE, "big")

    monkeypatch.setattr(aead, "random_nonce", nonce)
    monkeypatch.setattr(native_seal, "nonce_source", nonce)
    yield counter


def _same_entries(native: list[Entry], python: list[Entry]) -> None:
    assert [e.raw for e in native] == [e.raw for e in python]
    for n, p in zip(native, python, strict=True):
        assert n == p  # every field: header (prev, deps), ciphertext, signature, id, offsets
        assert Entry.decode(n.raw) == n


@st.composite
def writes(draw: st.DrawFn) -> tuple[list[Draft], dict[tuple[bytes, bytes], int], list[int]]:
    """A write: drafts of two tenants and two authors interleaved, each document's later
    drafts naming earlier ones by ChangeRef, stored parents, both kinds of key and payloads
    from empty to a few KB; the positions the store has; where the write is cut in parts."""
    count = draw(st.integers(1, 40))
    drafts: list[Draft] = []
    changes: dict[tuple[bytes, str, bytes], list[bytes]] = {}
    for _ in range(count):
        tenant = draw(st.sampled_from(TENANTS))
        document = draw(st.sampled_from(DOCS))
        database = draw(st.sampled_from(["notes", "crm2026", "_tenant", "a" * 64]))
        earlier = changes.setdefault((tenant, database, document), [])
        deps: list[bytes | ChangeRef] = []
        # up to 130 parents: the count's varint takes two bytes from 128 on
        for _ in range(draw(st.sampled_from([0, 1, 2, 3, 130]))):
            if earlier and draw(st.booleans()):
                deps.append(ChangeRef(draw(st.sampled_from(earlier))))
            else:
                deps.append(hashlib.sha256(b"stored %d" % draw(st.integers(0, 9))).digest())
        # a few change hashes only, so one recurs (a later draft's ChangeRef then names the
        # latest draft carrying it)
        change = (
            hashlib.sha256(b"change %d" % draw(st.integers(0, 5))).digest()
            if draw(st.booleans())
            else None
        )
        if change is not None:
            earlier.append(change)
        drafts.append(
            Draft(
                kind=draw(st.sampled_from(list(EntryKind))),
                tenant_id=tenant,
                database=database,
                document_id=document,
                signer=draw(st.sampled_from(SIGNERS)),
                key=draw(st.sampled_from(KEYS)),
                payload=os.urandom(draw(st.sampled_from([0, 1, 127, 128, 300, 5000]))),
                timestamp_ms=draw(st.integers(0, 2**64 - 1)),
                deps=tuple(deps),
                change_hash=change,
            )
        )
    positions = {
        (tenant, signer.public_key): draw(
            st.one_of(st.integers(0, 200), st.integers(2**64 - 60, 2**64 - 2))
        )
        for tenant in TENANTS
        for signer in SIGNERS
    }
    cuts = sorted(draw(st.lists(st.integers(0, count), max_size=3)))
    return drafts, positions, cuts


@settings(max_examples=150, deadline=None)
@given(write=writes())
def test_native_sealing_is_byte_for_byte_the_python_sealing(
    write: tuple[list[Draft], dict[tuple[bytes, bytes], int], list[int]],
) -> None:
    drafts, last, cuts = write
    counter = [0]

    def nonce() -> bytes:
        counter[0] += 1
        return counter[0].to_bytes(aead.NONCE_SIZE, "big")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aead, "random_nonce", nonce)
        mp.setattr(native_seal, "nonce_source", nonce)
        try:
            python = seal_drafts_in_python(drafts, MemoryPositions(last))
        except ValueError as exc:  # a number past 2**64 - 1
            python_error: ValueError | None = exc
        else:
            python_error = None
        counter[0] = 0
        # The native sealer in parts (one state), as the sealing thread calls it.
        state = SealingState()
        native: list[Entry] = []
        try:
            for start, end in zip([0, *cuts], [*cuts, len(drafts)], strict=True):
                native += native_seal.seal_drafts(drafts[start:end], MemoryPositions(last), state)
        except ValueError as exc:
            assert python_error is not None, exc
            assert (type(exc), str(exc)) == (type(python_error), str(python_error))
            return
    assert python_error is None, python_error
    _same_entries(native, python)
    for entry, draft in zip(native, drafts, strict=True):
        entry.verify_signature()
        assert entry.decrypt(draft.key.secret) == draft.payload


def test_writer_seal_drafts_seals_natively_where_built(counted_nonces: list[int]) -> None:
    drafts = [
        Draft(
            kind=EntryKind.CHANGE,
            tenant_id=TENANTS[0],
            database="notes",
            document_id=DOCS[0],
            signer=SIGNERS[0],
            key=KEYS[0],
            payload=b"x" * i,
            timestamp_ms=1,
        )
        for i in range(5)
    ]
    native = seal_drafts(drafts, MemoryPositions({}))
    counted_nonces[0] = 0
    _same_entries(native, seal_drafts_in_python(drafts, MemoryPositions({})))
    assert [e.header.author_seq for e in native] == [1, 2, 3, 4, 5]
    assert native[0].header.prev == NO_PREV
    assert [e.header.prev for e in native[1:]] == [e.id for e in native[:-1]]


def _draft(**fields: object) -> Draft:
    values: dict[str, object] = dict(
        kind=EntryKind.CHANGE,
        tenant_id=TENANTS[0],
        database="notes",
        document_id=DOCS[0],
        signer=SIGNERS[0],
        key=KEYS[0],
        payload=b"p",
        timestamp_ms=1,
    )
    values.update(fields)
    return Draft(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("drafts", "error", "match"),
    [
        (
            [_draft(deps=(ChangeRef(b"\x07" * 32),))],
            UnresolvedDependencyError,
            "no earlier draft of this write",
        ),
        ([_draft(), _draft(database="Not A Name")], InvalidNameError, "invalid database name"),
        ([_draft(timestamp_ms=2**64)], ValueError, "fit in 64 bits"),
        ([_draft(tenant_id=b"short")], ValueError, "tenant_id must be 16 bytes"),
    ],
)
def test_native_sealing_refuses_what_python_sealing_refuses(
    drafts: list[Draft], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        seal_drafts_in_python(drafts, MemoryPositions({}))
    with pytest.raises(error, match=match):
        native_seal.seal_drafts(drafts, MemoryPositions({}))


def test_an_oversized_payload_is_refused_before_anything_is_sealed() -> None:
    too_large = [_draft(payload=bytes(MAX_CIPHERTEXT - aead.TAG_SIZE + 1))]
    with pytest.raises(ValueError, match="payload too large"):
        seal_drafts_in_python(too_large, MemoryPositions({}))
    with pytest.raises(ValueError, match="payload too large"):
        native_seal.seal_drafts(too_large, MemoryPositions({}))
    largest = [_draft(payload=bytes(MAX_CIPHERTEXT - aead.TAG_SIZE))]
    (entry,) = native_seal.seal_drafts(largest, MemoryPositions({}))
    assert len(entry.ciphertext) == MAX_CIPHERTEXT
    assert Entry.decode(entry.raw).id == entry.id


def _call(
    headers: bytes,
    meta: list[int],
    payloads: tuple[object, ...] | None = None,
    keys: bytes = bytes(32),
    patches: list[int] | None = None,
) -> object:
    from mindoo_p2p import _seal_chain  # type: ignore[attr-defined]

    result: object = _seal_chain.seal_chain(
        bytearray(headers),
        array("Q", meta),
        payloads if payloads is not None else (b"",) * (len(meta) // 4),
        keys,
        array("Q", patches or []),
        SIGNERS[0].secret_key,
        bytes(32),
        SIGNING_DOMAIN,
        False,
    )
    return result


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        # a header longer than the headers given
        ((bytes(80), [81, 0, 0, 0]), "out of its buffers"),
        # a header too short to hold a link and a nonce
        ((bytes(40), [40, 0, 0, 0]), "out of its buffers"),
        # the link's place overlapping the nonce
        ((bytes(80), [80, 30, 0, 0]), "out of its buffers"),
        # a key index past the keys given
        ((bytes(80), [80, 0, 1, 0]), "out of its buffers"),
        # more patches than given, a patch naming itself or a later entry, a patch offset
        # in the nonce
        ((bytes(80), [80, 0, 0, 1]), "out of its buffers"),
        ((bytes(80), [80, 0, 0, 1], None, bytes(32), [0, 0]), "patch of entry 0"),
        ((bytes(160), [80, 0, 0, 0, 80, 0, 0, 1], None, bytes(32), [0, 1]), "patch of entry 1"),
        ((bytes(160), [80, 0, 0, 0, 80, 0, 0, 1], None, bytes(32), [30, 0]), "patch of entry 1"),
        # buffers longer than their entries, a meta array cut mid-entry, a short key
        ((bytes(81), [80, 0, 0, 0]), "longer than their entries"),
        ((bytes(80), [80, 0, 0]), "malformed arguments"),
        ((bytes(80), [80, 0, 0, 0], None, bytes(31)), "malformed arguments"),
        # payloads: not one per entry, or not bytes
        ((bytes(80), [80, 0, 0, 0], (b"", b"")), "malformed arguments"),
        ((bytes(80), [80, 0, 0, 0], (bytearray(3),)), "payload 0 is not bytes"),
    ],
)
def test_the_c_entry_point_refuses_inconsistent_arguments(
    arguments: tuple[object, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _call(*arguments)  # type: ignore[arg-type]


def test_nonces_drawn_by_the_c_call_are_fresh_and_in_the_header() -> None:
    # Without fixed nonces (the default) the C call draws each entry's nonce itself: the
    # entries decode to the header the sealer returned, verify, decrypt, and no two share one.
    drafts = [_draft(payload=b"same payload") for _ in range(200)]
    entries = native_seal.seal_drafts(drafts, MemoryPositions({}))
    assert len({e.header.nonce for e in entries}) == 200
    assert all(e.header.nonce != bytes(aead.NONCE_SIZE) for e in entries)
    for entry in entries:
        assert Entry.decode(entry.raw) == entry
        entry.verify_signature()
        assert entry.decrypt(KEYS[0].secret) == b"same payload"


def test_an_empty_call_seals_nothing() -> None:
    assert _call(b"", []) == []


def test_patches_rewritten_by_another_thread_during_the_call_are_not_used() -> None:
    # Review finding (native-seal, MEDIUM): the patch offsets were checked with the GIL held,
    # then read again from the caller's buffer after it was released, so another thread could
    # rewrite one in between and make the call write 32 bytes anywhere (a segfault with an
    # offset of 2**40). They are now copied while checked. Entry 0's 16 MB payload keeps the
    # call busy for milliseconds while the other thread rewrites the patch.
    import struct
    import threading
    import time

    from mindoo_p2p import _seal_chain  # type: ignore[attr-defined]

    patches = bytearray(struct.pack("=QQ", 8, 0))  # entry 1: entry 0's id at offset 8
    started = threading.Event()

    def rewrite() -> None:
        started.wait()
        time.sleep(0.003)
        patches[0:8] = struct.pack("=Q", 1 << 40)

    thread = threading.Thread(target=rewrite)
    thread.start()
    started.set()
    sealed = _seal_chain.seal_chain(
        bytearray(160),
        array("Q", [80, 0, 0, 0, 80, 0, 0, 1]),
        (bytes(16 * 1024 * 1024), b""),
        bytes(32),
        patches,
        SIGNERS[0].secret_key,
        bytes(32),
        SIGNING_DOMAIN,
        False,
    )
    thread.join(timeout=10)
    (_, first_id, *_), (_, _, second_header, *_) = sealed
    assert second_header[8:40] == first_id  # the checked offset, not the rewritten one
    assert struct.unpack("=Q", patches[0:8])[0] == 1 << 40  # it was rewritten meanwhile


def test_the_native_sealer_is_built_where_the_test_script_requires_it() -> None:
    # scripts/test sets MINDOO_REQUIRE_NATIVE_SEAL=1 where a C compiler is found, so a build
    # that silently failed there (the extension is optional) fails the suite instead of
    # skipping this module.
    if os.environ.get("MINDOO_REQUIRE_NATIVE_SEAL") == "1":
        assert native_seal.available()


def test_without_the_native_module_the_writer_seals_in_python() -> None:
    code = (
        "from mindoo_p2p import native_seal, writer;"
        "print(native_seal.available(), writer._native_sealer())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MINDOO_NATIVE_SEAL": "0"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.split() == ["False", "None"]


def test_a_parent_taken_from_the_state_is_checked_like_any_other() -> None:
    # Review finding (final, LOW): a draft whose header check the lean run skips (not the
    # first of its document) took a parent's id from the state unchecked: a 5-byte id was
    # sealed where the Python sealer refuses it.
    state = SealingState()
    state.sealed_changes[(TENANTS[0], "notes", DOCS[0], b"\x05" * 32)] = b"short"
    drafts = [_draft(), _draft(deps=(ChangeRef(b"\x05" * 32),))]
    for seal in (seal_drafts_in_python, native_seal.seal_drafts):
        with pytest.raises(ValueError, match="ids of 32 bytes"):
            seal(drafts, MemoryPositions({}), SealingState({}, dict(state.sealed_changes)))


def test_a_key_id_given_as_a_bytearray_seals_as_in_python(counted_nonces: list[int]) -> None:
    # Review finding (final, LOW): the lean run hashed the key id to remember it was checked,
    # and a bytearray (which TenantKey accepts) is unhashable.
    key = TenantKey(
        key_id=bytearray(KEYS[0].key_id),  # type: ignore[arg-type]
        name="default",
        version=1,
        secret=KEYS[0].secret,
        created_ms=0,
    )
    drafts = [_draft(key=key), _draft(key=key)]
    python = seal_drafts_in_python(drafts, MemoryPositions({}))
    counted_nonces[0] = 0
    _same_entries(native_seal.seal_drafts(drafts, MemoryPositions({})), python)
