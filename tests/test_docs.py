"""The Automerge document layer: values, proxies, counters, sync by change bytes, time travel."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from docs_helpers import changes_of, exchange, replica_of

from mindoo_p2p.crdt import (
    AutomergeDocument,
    ChangeInfo,
    Counter,
    ListProxy,
    MapProxy,
    Text,
    TextProxy,
    change_deps,
    change_hash,
)
from mindoo_p2p.crdt.debug_repr import parse_debug
from mindoo_p2p.crdt.session import AutomergePanic
from mindoo_p2p.errors import DecodeError, NotFoundError

UTC = dt.UTC


# -- values ------------------------------------------------------------------------------------
ALL_TYPES: dict[str, Any] = {
    "str": "héllo 😀",
    "empty_str": "",
    "int": -(2**63),
    "int_max": 2**63 - 1,
    "float": 1.25,
    "true": True,
    "false": False,
    "none": None,
    "bytes": b"\x00\xff\x10",
    "when": dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
    "map": {"a": 1, "b": {"c": [1, "x"]}},
    "list": [1, "two", 3.0, None, False, [4, [5]], {"k": "v"}],
    "tuple": (1, 2),
    "text": Text("some text"),
    "counter": Counter(42),
}
EXPECTED_PY: dict[str, Any] = {
    **ALL_TYPES,
    "tuple": [1, 2],
    "text": "some text",
    "counter": 42,
}


def test_every_value_type_round_trips_into_a_second_document() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        for key, value in ALL_TYPES.items():
            root[key] = value
    assert doc.to_py() == EXPECTED_PY
    replica = replica_of(doc)
    assert replica.to_py() == EXPECTED_PY
    assert replica.heads() == doc.heads()
    # Types survive exactly: bool is not int, bytes are bytes, datetime is aware UTC.
    plain = replica.to_py()
    assert plain["true"] is True and type(plain["int"]) is int
    assert isinstance(plain["bytes"], bytes)
    assert plain["when"].tzinfo is not None


def test_proxy_reads_return_typed_values_and_proxies() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        for key, value in ALL_TYPES.items():
            root[key] = value
    with doc.change() as root:
        assert isinstance(root["map"], MapProxy)
        assert isinstance(root["list"], ListProxy)
        assert isinstance(root["text"], TextProxy)
        assert root["text"] == "some text"
        assert root["counter"] == Counter(42)
        assert root["true"] is True
        assert root["bytes"] == b"\x00\xff\x10"
        assert root["map"]["b"]["c"][1] == "x"
        assert set(root) == set(ALL_TYPES)
        assert len(root) == len(ALL_TYPES)
        assert "str" in root and "nope" not in root
        with pytest.raises(KeyError):
            root["nope"]
    assert doc.last_change is None  # only reads: no change


def test_naive_datetime_is_utc_and_precision_is_milliseconds() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["naive"] = dt.datetime(2020, 1, 2, 3, 4, 5, 678999)
        root["paris"] = dt.datetime(2020, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    plain = doc.to_py()
    assert plain["naive"] == dt.datetime(2020, 1, 2, 3, 4, 5, 679000, tzinfo=UTC)
    assert plain["paris"] == dt.datetime(2020, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def new_york_time() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("new_york_time")
def test_timestamps_do_not_depend_on_the_local_time_zone() -> None:
    # The binding converts timestamps through local time; 2024-11-03 05:30 and 06:30 UTC are
    # both 01:30 in New York (DST ends), and year 1 / 9999 edges overflow local time.
    values = {
        "fold0": dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
        "fold1": dt.datetime(2024, 11, 3, 6, 30, tzinfo=UTC),
        "last": dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    }
    doc = AutomergeDocument()
    with doc.change() as root:
        for key, value in values.items():
            root[key] = value
        root["first"] = dt.datetime(1, 1, 1, tzinfo=UTC)
    plain = doc.to_py()
    for key, value in values.items():
        assert plain[key] == value
    # 0001-01-01 UTC is out of range in New York time: the binding panics reading it; the
    # value is still recovered from the document's diff.
    assert plain["first"] == dt.datetime(1, 1, 1, tzinfo=UTC)


def test_a_top_level_scalar_is_stored_as_the_same_value_inside_a_map_or_list() -> None:
    # A plain scalar assigned to a key or list index takes a shortcut past the general value
    # checks; what it stores must be what the general path stores (values nested in a map).
    class Number(int):  # an int subclass: not a plain scalar, takes the general path
        pass

    scalars = [0, -(2**63), 2**63 - 1, 1.5, True, False, "s", b"\x00b", None, Number(7)]
    doc = AutomergeDocument()
    with doc.change() as root:
        for index, value in enumerate(scalars):
            root[f"k{index}"] = value
        root["nested"] = {f"k{index}": value for index, value in enumerate(scalars)}
        root["list"] = [None]
        root["list"][0] = "replaced"
        root["list"].insert(0, 42)
    plain = doc.to_py()
    nested = plain.pop("nested")
    assert plain.pop("list") == [42, "replaced"]
    assert plain == nested
    assert [type(plain[f"k{i}"]) for i in range(len(scalars))] == [
        type(nested[f"k{i}"]) for i in range(len(scalars))
    ]
    assert plain["k4"] is True and plain["k9"] == 7 and type(plain["k9"]) is int


def test_bad_values_raise_type_or_value_error_naming_the_key_and_change_nothing() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["keep"] = 1
    heads = doc.heads()
    with doc.change() as root:
        with pytest.raises(TypeError, match=r"set.*'bad'"):
            root["bad"] = {1, 2}
        with pytest.raises(TypeError, match=r"object.*'inner'"):
            root["nested"] = {"ok": 1, "inner": object()}
        with pytest.raises(ValueError, match="64-bit"):
            root["big"] = 2**63
        with pytest.raises(TypeError):
            root["keys"] = {1: "int key"}
        with pytest.raises(ValueError):
            root[""] = 1
    assert doc.last_change is None
    assert doc.heads() == heads
    assert doc.to_py() == {"keep": 1}


def test_an_exception_in_the_block_rolls_everything_back() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["a"] = 1
    heads = doc.heads()
    with pytest.raises(RuntimeError, match="boom"), doc.change() as root:
        root["a"] = 2
        root["c"] = Counter(1)  # moves the session to a fork: the rollback must cover it
        raise RuntimeError("boom")
    assert doc.heads() == heads
    assert doc.to_py() == {"a": 1}
    assert doc.last_change is None


def test_proxy_used_after_its_block_fails() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["l"] = [1]
        kept = root["l"]
    with pytest.raises(RuntimeError):
        kept.append(2)
    with pytest.raises(RuntimeError), doc.change(), doc.change():
        pass
    # One change block, entered twice, is refused (as its generator-based form refused it):
    # it would start a second change under the first one's manager.
    block = doc.change()
    with block as root:
        root["x"] = 1
    with pytest.raises(RuntimeError, match="entered once"), block:
        pass
    assert doc.to_py() == {"l": [1], "x": 1}


# -- structure ---------------------------------------------------------------------------------
def test_nested_maps_and_lists_and_list_operations() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["m"] = {"inner": {"deep": [1, 2, 3]}}
        items = root["m"]["inner"]["deep"]
        items.append(4)
        items.insert(0, 0)
        items.insert(-1, 3.5)
        items.insert(100, 5)
        items.extend([6, 7])
        items[-1] = 70
        del items[1]
        assert items[-2] == 6
        assert items[1:3] == [2, 3]
        items.append({"k": [True]})
        root["m"]["inner"]["deep"][-1]["k"].append(None)
        with pytest.raises(IndexError):
            items[100] = 1
        with pytest.raises(IndexError):
            del items[-100]
        assert items[-1] == {"k": [True, None]}
        del items[-1]
    expected = {"m": {"inner": {"deep": [0, 2, 3, 3.5, 4, 5, 6, 70]}}}
    assert doc.to_py() == expected
    assert replica_of(doc).to_py() == expected


def test_deletion_of_keys_and_elements() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["a"] = 1
        root["b"] = {"x": 1, "y": 2}
        root["l"] = ["p", "q", "r"]
    with doc.change() as root:
        del root["a"]
        del root["b"]["x"]
        del root["l"][1]
        with pytest.raises(KeyError):
            del root["missing"]
    assert doc.to_py() == {"b": {"y": 2}, "l": ["p", "r"]}
    assert replica_of(doc).to_py() == {"b": {"y": 2}, "l": ["p", "r"]}


def test_assigning_a_proxy_copies_its_content() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["src"] = {"t": Text("ab"), "c": Counter(2), "l": [1]}
    with doc.change() as root:
        root["copy"] = root["src"]
        root["src"]["l"].append(2)
    plain = doc.to_py()
    assert plain["copy"] == {"t": "ab", "c": 2, "l": [1]}
    assert plain["src"]["l"] == [1, 2]


def test_text_insert_delete_splice() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["body"] = Text("hello world")
    with doc.change() as root:
        body = root["body"]
        body.splice(0, 5, "HÉLLO")
        body.insert(len(body), "!")
        body.delete(5, 1)
        body.insert(5, "😀")
        assert str(body) == "HÉLLO😀world!"
        assert len(body) == 12
        with pytest.raises(IndexError):
            body.delete(11, 5)
        with pytest.raises(IndexError):
            body.insert(-1, "x")
    assert doc.to_py() == {"body": "HÉLLO😀world!"}


def test_concurrent_text_edits_merge() -> None:
    a = AutomergeDocument()
    with a.change() as root:
        root["t"] = Text("middle")
    b = replica_of(a)
    with a.change() as root:
        root["t"].insert(0, "start ")
    with b.change() as root:
        root["t"].insert(6, " end")
    exchange(a, b)
    assert a.to_py() == b.to_py() == {"t": "start middle end"}


# -- counters ----------------------------------------------------------------------------------
def test_counters_create_increment_and_converge() -> None:
    a = AutomergeDocument()
    with a.change() as root:
        root["views"] = Counter(10)
        root["nested"] = {"list": [Counter(1), "x"]}
        root.increment("views", 5)  # a counter created in this very block
        assert root["views"] == Counter(15)
    assert a.to_py() == {"views": 15, "nested": {"list": [1, "x"]}}
    b = replica_of(a)
    with a.change() as root:
        root.increment("views", 100)
        root["nested"]["list"].increment(0, 2)
    with b.change() as root:
        root.increment("views", -3)
        root["nested"]["list"].increment(-2, 40)
        assert root["views"] == Counter(12)
    exchange(a, b)
    assert a.to_py() == b.to_py() == {"views": 112, "nested": {"list": [43, "x"]}}
    with a.change() as root, pytest.raises(TypeError):
        root["nested"]["list"].increment(1)
    assert AutomergeDocument.load(a.save()).to_py() == a.to_py()


def test_increment_of_a_non_counter_is_a_type_error() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["n"] = 1
    with doc.change() as root:
        with pytest.raises(TypeError):
            root.increment("n")
        with pytest.raises(KeyError):
            root.increment("missing")
    assert doc.to_py() == {"n": 1}


def test_only_counter_creating_changes_go_through_the_patch() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["plain"] = 1
    info = doc.last_change
    assert info is not None and info.hash == change_hash(info.bytes)
    with doc.change() as root:
        root["c"] = Counter(0)
    counter_change = doc.last_change
    assert counter_change is not None
    assert counter_change.deps == (info.hash,)
    assert counter_change.seq == 2 and counter_change.actor == doc.actor_id
    assert change_hash(counter_change.bytes) == counter_change.hash


# -- history, sync, time travel ----------------------------------------------------------------
def test_change_info_and_get_changes_since() -> None:
    doc = AutomergeDocument(actor_id=b"\x01" * 16)
    with doc.change() as root:
        root["a"] = 1
    first = doc.last_change
    with doc.change() as root:
        root["a"] = 2
    second = doc.last_change
    assert isinstance(first, ChangeInfo) and isinstance(second, ChangeInfo)
    assert first.actor == b"\x01" * 16 and (first.seq, second.seq) == (1, 2)
    assert second.deps == (first.hash,)
    assert change_deps(second.bytes) == (first.hash,)
    assert [c.hash for c in doc.get_changes()] == [first.hash, second.hash]
    assert [c.hash for c in doc.get_changes([first.hash])] == [second.hash]
    assert doc.get_changes(doc.heads()) == []
    assert doc.has_change(first.hash) and not doc.has_change(b"\x00" * 32)
    with pytest.raises(NotFoundError):
        doc.get_changes([b"\x00" * 32])


def test_a_local_change_is_marked_in_an_index_already_built() -> None:
    """`_end_change` marks the new change in the change index (when one was built) from its
    `ChangeInfo`: known at once, and a change from elsewhere building on it applies at once."""
    doc = AutomergeDocument(actor_id=b"\x01" * 16)
    with doc.change() as root:
        root["a"] = 1
    assert doc.has_change(doc.heads()[0])  # builds the index
    with doc.change() as root:
        root["a"] = 2
    local = doc.last_change
    assert local is not None and doc.has_change(local.hash) and not doc.is_waiting(local.hash)
    twin = AutomergeDocument(actor_id=b"\x01" * 16)  # the same actor elsewhere: its seq 3
    twin.apply_changes([c.bytes for c in doc.get_changes()])
    with twin.change() as root:
        root["a"] = 3
    assert twin.last_change is not None and twin.last_change.seq == 3
    doc.apply_changes([twin.last_change.bytes])  # needs (actor, seq 2) marked: applied at once
    assert doc.has_change(twin.last_change.hash)
    other = AutomergeDocument(actor_id=b"\x02" * 16)
    other.apply_changes([c.bytes for c in doc.get_changes()])
    with other.change() as root:
        root["b"] = 3
    remote = other.last_change
    assert remote is not None
    with doc.change() as root:  # the local actor's seq 4, concurrent with ``remote``
        root["a"] = 4
    doc.apply_changes([remote.bytes])
    assert doc.has_change(remote.hash) and not doc.missing_deps()
    assert doc.to_py() == {"a": 4, "b": 3}
    with doc.change() as root:  # several ops in one change: marked with its max op
        root["a"], root["c"], root["d"] = 5, 5, 5
    other.apply_changes([c.bytes for c in doc.get_changes(other.heads())])
    with other.change() as root:  # starts right after that max op
        root["e"] = 6
    assert other.last_change is not None
    doc.apply_changes([other.last_change.bytes])
    assert doc.has_change(other.last_change.hash) and not doc.missing_deps()
    assert doc.to_py() == {"a": 5, "b": 3, "c": 5, "d": 5, "e": 6}


def test_a_panic_in_a_put_poisons_the_document() -> None:
    """Review finding (trim-draft, LOW): `ChangeSession.put` calls the transaction itself (not
    through `_write`): a binding panic there still poisons the session and the document."""
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    class PanickingTransaction:
        def __init__(self, tx: Any) -> None:
            self._tx = tx

        def put(self, *args: Any) -> None:
            raise panic("boom")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._tx, name)

    doc = AutomergeDocument(actor_id=b"\x01" * 16)
    with doc.change() as root:
        root["a"] = 1
    with pytest.raises(AutomergePanic, match="automerge panicked in put"), doc.change() as root:
        session = doc._session
        assert session is not None
        session._tx = PanickingTransaction(session._tx)
        root["b"] = 2
    with pytest.raises(DecodeError):
        doc.heads()
    with pytest.raises(DecodeError), doc.change() as root:
        root["c"] = 3


def test_time_travel_with_to_py_heads() -> None:
    doc = AutomergeDocument()
    snapshots: list[tuple[list[bytes], dict[str, Any]]] = []
    with doc.change() as root:
        root["title"] = "v1"
        root["n"] = Counter(1)
        root["l"] = [1]
    snapshots.append((doc.heads(), {"title": "v1", "n": 1, "l": [1]}))
    with doc.change() as root:
        root["title"] = "v2"
        root.increment("n", 9)
        root["l"].append(2)
    snapshots.append((doc.heads(), {"title": "v2", "n": 10, "l": [1, 2]}))
    with doc.change() as root:
        del root["title"]
        del root["l"][0]
    snapshots.append((doc.heads(), {"n": 10, "l": [2]}))
    for heads, expected in snapshots:
        assert doc.to_py(heads) == expected
    assert doc.to_py([]) == {}
    with pytest.raises(NotFoundError):
        doc.to_py([b"\x07" * 32])


def test_out_of_order_apply_waits_for_the_parent() -> None:
    source = AutomergeDocument()
    with source.change() as root:
        root["a"] = 1
    parent = source.last_change
    with source.change() as root:
        root["b"] = Counter(2)
    child = source.last_change
    with source.change() as root:
        root["c"] = 3
    grandchild = source.last_change
    assert parent and child and grandchild
    doc = AutomergeDocument()
    doc.apply_changes([grandchild.bytes, child.bytes])
    assert doc.to_py() == {}
    assert not doc.has_change(child.hash)
    assert doc.missing_deps() == [parent.hash]
    doc.apply_changes([parent.bytes])
    assert doc.missing_deps() == []
    assert doc.has_change(grandchild.hash)
    assert doc.to_py() == {"a": 1, "b": 2, "c": 3}
    assert doc.heads() == source.heads()


def test_shuffled_history_applies_in_one_batch() -> None:
    source = AutomergeDocument()
    for i in range(60):
        with source.change() as root:
            root[f"k{i % 7}"] = i
    shuffled = random.Random(7).sample(changes_of(source), 60)
    doc = AutomergeDocument()
    doc.apply_changes(shuffled)
    assert doc.to_py() == source.to_py()
    doc.apply_changes(shuffled)  # duplicates are ignored
    assert doc.heads() == source.heads()


def test_concurrent_edits_exchanged_both_ways_converge() -> None:
    a = AutomergeDocument()
    with a.change() as root:
        root["shared"] = {"list": [1, 2, 3], "x": 0}
    b = replica_of(a)
    c = replica_of(a)
    with a.change() as root:
        root["shared"]["x"] = "from a"
        root["shared"]["list"].insert(0, "a0")
        root["only_a"] = True
    with b.change() as root:
        root["shared"]["x"] = "from b"
        root["shared"]["list"].append("b9")
        del root["shared"]["list"][1]
    with c.change() as root:
        del root["shared"]
    exchange(a, b)
    exchange(b, c)
    exchange(a, c)
    assert a.to_py() == b.to_py() == c.to_py()
    assert a.heads() == b.heads() == c.heads()
    assert len(a.heads()) == 3


def test_save_load_round_trip() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        for key, value in ALL_TYPES.items():
            root[key] = value
    with doc.change() as root:
        root.increment("counter", 8)
    loaded = AutomergeDocument.load(doc.save(), actor_id=b"\x09" * 16)
    assert loaded.to_py() == {**EXPECTED_PY, "counter": 50}
    assert loaded.heads() == doc.heads()
    assert loaded.actor_id == b"\x09" * 16
    with loaded.change() as root:
        root["after"] = 1
    assert loaded.last_change is not None and loaded.last_change.actor == b"\x09" * 16
    doc.apply_changes([loaded.last_change.bytes])
    assert doc.to_py() == loaded.to_py()


@pytest.mark.parametrize("saved", [b"", b"garbage", b"\x85\x6f\x4a\x83" + b"\x00" * 20])
def test_load_of_bad_bytes_is_a_decode_error(saved: bytes) -> None:
    with pytest.raises(DecodeError):
        AutomergeDocument.load(saved)


def test_load_of_truncated_save_is_a_decode_error() -> None:
    doc = AutomergeDocument()
    with doc.change() as root:
        root["a"] = "x" * 100
    saved = doc.save()
    for cut in (len(saved) // 2, len(saved) - 1):
        with pytest.raises(DecodeError):
            AutomergeDocument.load(saved[:cut])


def test_counters_in_a_long_list_and_under_tricky_keys() -> None:
    tricky = 'q"uote\\back\nline 😀\u200b\x01'
    doc = AutomergeDocument()
    with doc.change() as root:
        root["items"] = [Counter(i) if i % 97 == 0 else f"s{i}" for i in range(300)]
        root[tricky] = {"c": Counter(7), "t": Text('a"b')}
    first = doc.heads()
    with doc.change() as root:
        root["items"].increment(97, 1000)
        root[tricky].increment("c", 1)
        root["items"].insert(0, "new head")
    expected_now = ["new head"] + [
        (i + 1000 if i == 97 else i) if i % 97 == 0 else f"s{i}" for i in range(300)
    ]
    plain = doc.to_py()
    assert plain["items"] == expected_now
    assert plain[tricky] == {"c": 8, "t": 'a"b'}
    # At past heads the binding's own reads drop incremented counters: the diff is used.
    past = doc.to_py(first)
    assert past["items"] == [i if i % 97 == 0 else f"s{i}" for i in range(300)]
    assert past[tricky] == {"c": 7, "t": 'a"b'}
    assert replica_of(doc).to_py() == plain


def test_debug_repr_parser() -> None:
    text = (
        'Patch { obj: Id(3, ActorID("ab01"), 0), path: [(Root, Map("k\\"\\\\\\u{1f600}"))], '
        'action: PutSeq { index: 2, value: (Scalar(F64(-inf)), Id(4, ActorID("ab01"), 0)), '
        "conflict: false, .. } }"
    )
    node = parse_debug(text)
    assert node.name == "Patch"
    assert node.fields["obj"].args[0] == 3
    assert node.fields["path"][0].args[1].args == ('k"\\😀',)
    action = node.fields["action"]
    assert action.name == "PutSeq" and action.fields["conflict"] is False
    assert action.fields["value"].args[0].args[0].args == (float("-inf"),)
    for bad in ("Patch {", "Id(1,", '"unterminated', "A { b }", "x y", "(" * 300 + ")" * 300):
        with pytest.raises(DecodeError):
            parse_debug(bad)


def test_reading_counters_prints_nothing_on_stderr() -> None:
    """The binding panics (and Rust prints) when reading counters; users must not see it."""

    script = (
        "from mindoo_p2p.crdt import AutomergeDocument, Counter\n"
        "d = AutomergeDocument()\n"
        "with d.change() as r:\n"
        "    r['n'] = Counter(1)\n"
        "with d.change() as r:\n"
        "    r.increment('n', 2)\n"
        "    assert r['n'] == Counter(3)\n"
        "assert AutomergeDocument.load(d.save()).to_py() == {'n': 3}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
