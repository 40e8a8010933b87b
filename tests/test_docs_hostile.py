"""The Automerge document layer against hostile bytes: garbage, truncated, bit-flipped and
forged changes are decode errors, and the document stays usable."""

from __future__ import annotations

import contextlib
import hashlib
import random
import subprocess
import sys

import pytest
from docs_helpers import changes_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindoo_p2p.codec import Reader, encode_varint
from mindoo_p2p.crdt import (
    AutomergeDocument,
    Counter,
    Text,
    change_hash,
)
from mindoo_p2p.crdt.change_chunk import encode_change_chunk, parse_change, read_chunk
from mindoo_p2p.crdt.change_index import MAX_OP_COUNTER, ChangeIndex, ChangeMeta
from mindoo_p2p.errors import DecodeError


def with_header(change: bytes, *, seq: int | None = None, start_op: int | None = None) -> bytes:
    """``change`` (uncompressed) with its seq and/or start op replaced, checksum fixed."""
    _, body = read_chunk(change)
    reader = Reader(body, "test")
    dep_count = reader.varint("deps")
    deps = reader.fixed(32 * dep_count, "deps")
    actor = reader.blob("actor", 128)
    old_seq = reader.varint("seq")
    old_start = reader.varint("start op")
    rest = body[reader.pos :]
    new_body = (
        encode_varint(dep_count)
        + deps
        + encode_varint(len(actor))
        + actor
        + encode_varint(old_seq if seq is None else seq)
        + encode_varint(old_start if start_op is None else start_op)
        + rest
    )
    return encode_change_chunk(new_body)


def refix_checksum(change: bytes) -> bytes:
    """Recompute the checksum of an uncompressed change chunk after tampering."""
    return change[:4] + hashlib.sha256(change[8:]).digest()[:4] + change[8:]


# -- hostile bytes -----------------------------------------------------------------------------
def _two_changes() -> tuple[AutomergeDocument, bytes, bytes]:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["a"] = {"list": [1, 2], "t": Text("xy")}
    first = doc.last_change
    with doc.change() as root:
        root["a"]["list"].append("abc")
        root["b"] = Counter(3)
    second = doc.last_change
    assert first and second
    return doc, first.bytes, second.bytes


def test_garbage_truncated_and_bit_flipped_changes_are_decode_errors() -> None:
    _, first, second = _two_changes()
    doc = AutomergeDocument()
    doc.apply_changes([first])
    bad = [b"", b"garbage", first[:-1], first + b"\x00", first[:10]]
    for position in range(0, len(second), 3):
        for bit in (0, 7):
            flipped = bytearray(second)
            flipped[position] ^= 1 << bit
            bad.append(bytes(flipped))
    for change in bad:
        with pytest.raises(DecodeError):
            doc.apply_changes([change])
        with pytest.raises(DecodeError):
            change_hash(change)
    assert not doc.poisoned
    doc.apply_changes([second])
    assert doc.to_py()["b"] == 3


def test_one_bad_change_does_not_sink_its_batch() -> None:
    source, first, second = _two_changes()
    doc = AutomergeDocument()
    with pytest.raises(DecodeError, match="change 1"):
        doc.apply_changes([first, b"not a change", second])
    assert doc.to_py() == source.to_py()


def test_change_the_binding_cannot_parse_is_reported_not_silently_dropped() -> None:
    # Valid chunk and checksum, but a map key that is not UTF-8: the binding, applying to a
    # non-empty document, would drop it (and what follows it) without a word.
    base = AutomergeDocument()
    with base.change() as root:
        root["x"] = 0
    parent = base.last_change
    with base.change() as root:
        root["abcdef"] = 1
    bad_source = base.last_change
    assert parent and bad_source
    raw = bytearray(read_chunk(bad_source.bytes)[1])
    raw[raw.index(b"abcdef") : raw.index(b"abcdef") + 6] = b"\xff\xfe\xfd\xfc\xfb\xfa"
    broken = encode_change_chunk(bytes(raw))
    other = AutomergeDocument()
    other.apply_changes([parent.bytes])
    with other.change() as root:
        root["y"] = 1
    good = other.last_change
    assert good
    doc = AutomergeDocument()
    doc.apply_changes([parent.bytes])
    with pytest.raises(DecodeError, match=change_hash(broken).hex()):
        doc.apply_changes([broken, good.bytes])
    assert doc.has_change(good.hash) and not doc.has_change(change_hash(broken))
    assert doc.to_py() == {"x": 0, "y": 1}


def test_change_reusing_op_ids_is_rejected() -> None:
    # Left to Automerge, a change whose ops reuse its actor's op counters makes it try to
    # allocate gigabytes.
    _, first, second = _two_changes()
    doc = AutomergeDocument()
    doc.apply_changes([first])
    overlapping = with_header(read_chunk_bytes(second), start_op=parse_change(first).max_op)
    with pytest.raises(DecodeError, match="reuses op ids"):
        doc.apply_changes([overlapping])
    duplicate_seq = with_header(read_chunk_bytes(second), seq=1)
    with pytest.raises(DecodeError):
        doc.apply_changes([duplicate_seq])
    assert not doc.poisoned
    doc.apply_changes([second])
    assert doc.to_py()["b"] == 3


def test_change_jumping_op_counters_is_rejected_and_the_process_survives() -> None:
    """The attack (issue 9): a member's change starting at op 2**32-1 made every later local
    change of the document panic, and freeing the document aborted the process from a panic in
    the binding's destructor. Such a change is now refused before Automerge sees it."""
    _, first, second = _two_changes()
    jump = with_header(read_chunk_bytes(second), start_op=2**32 - 1)
    script = f"""
import gc
from mindoo_p2p.crdt import AutomergeDocument
from mindoo_p2p.errors import DecodeError
doc = AutomergeDocument()
doc.apply_changes([bytes.fromhex("{first.hex()}")])
try:
    doc.apply_changes([bytes.fromhex("{jump.hex()}")])
except DecodeError as exc:
    assert "skips op ids" in str(exc), exc
else:
    raise SystemExit("the jumping change was applied")
with doc.change() as root:
    root["after"] = 1
assert doc.to_py()["after"] == 1
del doc
gc.collect()
print("survived")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "survived"


def test_op_counters_past_the_limit_are_rejected() -> None:
    index = ChangeIndex()
    near = ChangeMeta(b"a", 1, 1, MAX_OP_COUNTER, ())
    index.enqueue(b"h1", b"raw1", near)
    ready, invalid = index.take_ready()
    assert [q.hash for q in ready] == [b"h1"] and not invalid
    index.mark_applied(b"h1", near)
    over = ChangeMeta(b"a", 2, MAX_OP_COUNTER + 1, MAX_OP_COUNTER + 1, (b"h1",))
    index.enqueue(b"h2", b"raw2", over)
    ready, invalid = index.take_ready()
    assert not ready
    assert invalid == [
        (b"h2", f"op counter {MAX_OP_COUNTER + 1} is over the limit {MAX_OP_COUNTER}")
    ]


def test_honest_changes_start_right_after_what_they_build_on() -> None:
    """The premise of the exact start-op rule: over random concurrent edits and merges of four
    replicas, every change starts at 1 + the largest op counter of its deps and of its actor's
    previous change, and a fresh replica accepts every change."""
    rnd = random.Random(3)
    replicas = [AutomergeDocument() for _ in range(4)]
    with replicas[0].change() as root:
        root["list"] = [1, 2, 3]
        root["text"] = Text("hello")
    for other in replicas[1:]:
        other.apply_changes(changes_of(replicas[0]))
    for _ in range(300):
        doc = rnd.choice(replicas)
        with doc.change() as root:
            roll = rnd.random()
            if roll < 0.4:
                root[f"k{rnd.randrange(10)}"] = rnd.randrange(100)
            elif roll < 0.7 and len(root["list"]) and rnd.random() < 0.5:
                del root["list"][rnd.randrange(len(root["list"]))]
            elif roll < 0.7:
                root["list"].append(rnd.randrange(9))
            else:
                root[f"big{rnd.randrange(3)}"] = list(range(rnd.randrange(40)))
        if rnd.random() < 0.3:
            a, b = rnd.sample(replicas, 2)
            a.apply_changes(changes_of(b))
    raws = {change_hash(raw): raw for doc in replicas for raw in changes_of(doc)}
    chunks = {hash_: parse_change(raw) for hash_, raw in raws.items()}
    by_seq = {(c.actor, c.seq): c for c in chunks.values()}
    for chunk in chunks.values():
        floors = [chunks[dep].max_op for dep in chunk.deps]
        previous = by_seq.get((chunk.actor, chunk.seq - 1))
        floors += [previous.max_op] if previous is not None else []
        assert chunk.start_op == max(floors, default=0) + 1
    fresh = AutomergeDocument()
    fresh.apply_changes(list(raws.values()))  # raises DecodeError naming any refused change
    merged = replicas[0]
    for other in replicas[1:]:
        merged.apply_changes(changes_of(other))
    assert fresh.to_py() == merged.to_py()


def read_chunk_bytes(change: bytes) -> bytes:
    """The uncompressed chunk of ``change``."""
    return encode_change_chunk(read_chunk(change)[1])


_, _FIRST, _SECOND = _two_changes()


def _mutations() -> st.SearchStrategy[bytes]:

    def flip(data: bytes, positions: list[int], fix: bool) -> bytes:
        out = bytearray(data)
        for position in positions:
            out[8 + position % (len(out) - 8)] ^= 1 << (position % 8)
        result = bytes(out)
        return refix_checksum(result) if fix and result[8] == 1 else result

    chunk = read_chunk_bytes(_SECOND)
    return st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(chunk)).map(lambda cut: chunk[:cut]),
        st.builds(
            flip, st.just(chunk), st.lists(st.integers(0, 10_000), max_size=3), st.booleans()
        ),
        st.binary(max_size=40).map(lambda tail: chunk[:8] + tail),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(change=_mutations())
def test_hostile_change_bytes_only_ever_raise_decode_error(change: bytes) -> None:
    doc = AutomergeDocument()
    doc.apply_changes([_FIRST])
    with contextlib.suppress(DecodeError):
        doc.apply_changes([change])
        doc.to_py()
    if not doc.poisoned:
        doc.to_py()
        with doc.change() as root:
            root["still"] = "usable"
        assert doc.to_py()["still"] == "usable"
