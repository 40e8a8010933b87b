"""Counter creation by patching change bytes, and the RLE columns it rewrites."""

from __future__ import annotations

import hashlib

import pytest
from automerge.core import ROOT, Document, ObjType, ScalarType, SyncState
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p.crdt import change_deps, change_hash, patch_counter_ops
from mindoo_p2p.crdt.binding import changes_message, op_counter
from mindoo_p2p.crdt.change_chunk import (
    CHUNK_TYPE_COMPRESSED_CHANGE,
    VALUE_META_SPEC,
    parse_change,
    read_chunk,
)
from mindoo_p2p.crdt.diff_values import scalar_readouts
from mindoo_p2p.crdt.rle import Run, decode_uint_runs, encode_uint_runs, merge_runs
from mindoo_p2p.errors import DecodeError


def apply(doc: Document, change: bytes) -> None:
    doc.receive_sync_message(SyncState(), changes_message([change]))


def int_change(doc: Document, values: dict[str, int], counters: set[str]) -> tuple[bytes, set[int]]:
    """Commit ``values`` as Ints on a fork of ``doc``; return the change and the op counters
    of the keys in ``counters``."""
    heads = doc.get_heads()
    fork = doc.fork()
    fork.set_actor(doc.get_actor())
    ops: set[int] = set()
    with fork.transaction() as tx:
        for key, value in values.items():
            tx.put(ROOT, key, ScalarType.Int, value)
            if key in counters:
                found = tx.get(ROOT, key)
                assert found is not None
                ops.add(op_counter(found[1]))
    (change,) = fork.get_changes(heads)
    return change.raw_bytes, ops


def readouts(doc: Document) -> dict[object, object]:
    return {key: value for (_, key), value in scalar_readouts(doc, doc.get_heads()).items()}


def test_patched_ops_become_counters_and_others_stay_ints() -> None:
    doc = Document()
    values = {f"k{i}": 5 for i in range(6)}  # one run of equal value metadata
    change, ops = int_change(doc, values, {"k2", "k4"})
    patched = patch_counter_ops(change, ops)
    assert change_hash(patched) != change_hash(change)
    apply(doc, patched)
    assert doc.get_heads() == [change_hash(patched)]
    assert readouts(doc) == {"k2": ("counter", 5), "k4": ("counter", 5)}
    for key in ("k0", "k1", "k3", "k5"):
        found = doc.get(ROOT, key)
        assert found is not None and found[0] == (ScalarType.Int, 5)
    # The run was split: the metadata column is now longer, lengths and checksum follow.
    before = parse_change(change).column(VALUE_META_SPEC)
    after = parse_change(patched).column(VALUE_META_SPEC)
    assert before is not None and after is not None
    assert after.end - after.start > before.end - before.start


def test_increment_works_on_a_patched_counter_and_fails_on_an_int() -> None:
    doc = Document()
    change, ops = int_change(doc, {"views": 10, "plain": 1}, {"views"})
    apply(doc, patch_counter_ops(change, ops))
    with doc.transaction() as tx:
        tx.increment(ROOT, "views", 7)
    assert readouts(doc) == {"views": ("counter", 17)}
    with pytest.raises(Exception, match="counter"), doc.transaction() as tx:
        tx.increment(ROOT, "plain", 1)


def test_concurrent_increments_on_two_replicas_converge_to_the_sum() -> None:
    a = Document()
    change, ops = int_change(a, {"n": 0}, {"n"})
    patched = patch_counter_ops(change, ops)
    apply(a, patched)
    b = Document()
    apply(b, patched)
    heads = a.get_heads()
    with a.transaction() as tx:
        tx.increment(ROOT, "n", 5)
    with b.transaction() as tx:
        tx.increment(ROOT, "n", 11)
    a_changes = [c.bytes for c in a.get_changes(heads)]
    b_changes = [c.bytes for c in b.get_changes(heads)]
    for change_bytes in b_changes:
        apply(a, change_bytes)
    for change_bytes in a_changes:
        apply(b, change_bytes)
    assert readouts(a) == readouts(b) == {"n": ("counter", 16)}


def test_counters_in_lists_and_in_a_compressed_change() -> None:
    doc = Document()
    heads = doc.get_heads()
    fork = doc.fork()
    fork.set_actor(doc.get_actor())
    with fork.transaction() as tx:
        items = tx.put_object(ROOT, "items", ObjType.List)
        for index in range(300):  # large enough for the binding to compress the change
            tx.insert(items, index, ScalarType.Str, f"item number {index}")
        tx.insert(items, 0, ScalarType.Int, -3)
        found = tx.get(items, 0)
        assert found is not None
        counter = op_counter(found[1])
    (change,) = fork.get_changes(heads)
    assert change.bytes[8] == CHUNK_TYPE_COMPRESSED_CHANGE
    assert change_hash(change.bytes) == change.hash
    patched = patch_counter_ops(change.bytes, {counter})
    apply(doc, patched)
    found_items = doc.get(ROOT, "items")
    assert found_items is not None and doc.length(found_items[1]) == 301
    assert [value for (_, key), value in scalar_readouts(doc, doc.get_heads()).items()] == [
        ("counter", -3)
    ]


def test_patch_refuses_ops_outside_the_change_or_not_integers() -> None:
    doc = Document()
    change, ops = int_change(doc, {"a": 1}, {"a"})
    (op,) = ops
    with pytest.raises(ValueError, match="outside"):
        patch_counter_ops(change, {op + 1})
    with pytest.raises(ValueError, match="outside"):
        patch_counter_ops(change, {0})
    fork = doc.fork()
    with fork.transaction() as tx:
        tx.put(ROOT, "s", ScalarType.Str, "text")
    (string_change,) = fork.get_changes([])
    with pytest.raises(ValueError, match="not an integer"):
        patch_counter_ops(string_change.raw_bytes, {1})
    assert patch_counter_ops(change, set()) == change
    with pytest.raises(DecodeError):
        patch_counter_ops(b"not a change", {1})


def test_value_metadata_reencodes_exactly_as_automerge_wrote_it() -> None:
    doc = Document()
    with doc.transaction() as tx:
        tx.put(ROOT, "a", ScalarType.Int, 1)
        tx.put(ROOT, "b", ScalarType.Int, 2)
        tx.put(ROOT, "c", ScalarType.Str, "xyz")
        tx.put(ROOT, "d", ScalarType.Null, None)
        tx.put(ROOT, "e", ScalarType.Null, None)
        tx.put(ROOT, "f", ScalarType.Boolean, True)
        tx.put_object(ROOT, "g", ObjType.Map)
        tx.put(ROOT, "h", ScalarType.F64, 2.5)
    (change,) = doc.get_changes([])
    chunk = parse_change(change.raw_bytes)
    for column in chunk.columns:
        data = chunk.body[column.start : column.end]
        if column.spec & 0x0F in (1, 2, 6):  # actor, uLEB and value-metadata columns
            assert encode_uint_runs(decode_uint_runs(data, "column")) == data


def test_change_hash_and_deps_match_the_binding() -> None:
    doc = Document()
    for value in range(3):
        with doc.transaction() as tx:
            tx.put(ROOT, "k", ScalarType.Int, value)
    changes = doc.get_changes([])
    for change in changes:
        assert change_hash(change.bytes) == change.hash
        assert hashlib.sha256(change.bytes[8:]).digest() == change.hash
        assert change_deps(change.bytes) == tuple(change.deps)
    _, body = read_chunk(changes[1].bytes)
    assert parse_change(changes[1].bytes).body == body


_runs = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 2**64 - 1)), st.integers(1, 2**40)),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(runs=_runs)
def test_rle_round_trip_is_canonical(runs: list[Run]) -> None:
    encoded = encode_uint_runs(runs)
    decoded = decode_uint_runs(encoded, "column")
    assert merge_runs(decoded) == merge_runs(runs)
    assert encode_uint_runs(decoded) == encoded


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_rle_decoder_only_raises_decode_error(data: bytes) -> None:
    try:
        runs = decode_uint_runs(data, "column")
    except DecodeError:
        return
    assert all(count >= 1 for _, count in runs)
