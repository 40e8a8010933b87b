"""The full index build's fast path (one-change documents read a page at a time and loaded by
Automerge in one call) builds exactly the index the general materializer path builds: the same
rows, full-text rows and skip records, for every kind of document a page may hold."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import copy_tenant

from mindoo_p2p import Counter, Text
from mindoo_p2p.crdt import AutomergeDocument
from mindoo_p2p.crdt.change_chunk import parse_change
from mindoo_p2p.errors import DecodeError
from mindoo_p2p.index import QueryIndex, build_workers, follower
from mindoo_p2p.index.build_worker_process import serve
from mindoo_p2p.index.build_workers import (
    MAX_FRAME,
    BuildTask,
    BuildWorkerError,
    BuildWorkers,
    read_frame,
    write_frame,
)
from mindoo_p2p.index.follower import IndexFollower
from mindoo_p2p.materializer import DocumentMaterializer
from mindoo_p2p.node import Node
from mindoo_p2p.store import EntryStore

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]

CONTENTS: list[dict[str, Any]] = [
    {"title": "plain", "amount": 7, "ratio": 0.25, "open": True, "none": None},
    {"nested": {"deeper": {"list": [1, "two", {"three": 3.0}]}}, "empty": {}, "blank": []},
    {"text": Text("collaborative text"), "views": Counter(41), "unicode": "œuvre ✓ 日本"},
    {"when": dt.datetime(2025, 3, 1, 12, 30, tzinfo=dt.UTC), "raw": b"\x00\xffbytes"},
    {"big": -(1 << 62), "float": -1e300, "key with spaces": "v", "0": "digit key"},
]


class Spy:
    """Counts what the follower's materializers are asked: fast loads that answered, and
    general loads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fast: bool = True) -> None:
        self.fast = 0
        self.general = 0
        load, single = DocumentMaterializer.load, DocumentMaterializer.load_single_change

        def counted_load(m: DocumentMaterializer, *args: Any, **kwargs: Any) -> Any:
            self.general += 1
            return load(m, *args, **kwargs)

        def counted_single(m: DocumentMaterializer, *args: Any, **kwargs: Any) -> Any:
            found = single(m, *args, **kwargs) if fast else None
            self.fast += found is not None
            return found

        monkeypatch.setattr(DocumentMaterializer, "load", counted_load)
        monkeypatch.setattr(DocumentMaterializer, "load_single_change", counted_single)


def dump(index: QueryIndex) -> tuple[set[tuple[str, ...]], ...]:
    """Everything the index holds, by stable names (row ids aside)."""
    index.refresh()
    docs = {
        (str(u), str(b), str(k))
        for u, b, k in index.store.read("SELECT uid, body, key_ids FROM docs")
    }
    texts = {
        (str(u), str(t))
        for u, t in index.store.read(
            "SELECT d.uid, f.text FROM fts f JOIN docs d ON d.id = f.rowid"
        )
    }
    skipped = {
        (bytes(d).hex(), str(r), str(x), str(k))
        for d, r, x, k in index.store.read("SELECT doc, reason, detail, key_ids FROM skipped")
    }
    return docs, texts, skipped


def rows(index: QueryIndex) -> list[tuple[str, str, str]]:
    """(uid, body, full-text text) of every indexed document."""
    index.refresh()
    return [
        (str(u), str(b), str(t))
        for u, b, t in index.store.read(
            "SELECT d.uid, d.body, f.text FROM docs d JOIN fts f ON f.rowid = d.id"
        )
    ]


def corrupt_entry(node: Node, entry_id: bytes) -> None:
    """Flip one byte of a stored entry's ciphertext, in place in the node's LMDB store."""
    store = node.store
    env, tables = store._live_env(), store._tables
    with env.begin(write=True) as txn:
        arrival = txn.get(entry_id, db=tables.ids)
        raw = bytearray(txn.get(arrival, db=tables.sealed))
        raw[-80] ^= 0x01
        txn.put(arrival, bytes(raw), db=tables.sealed)


def mixed_page(admin: Node, member: Node) -> dict[str, Any]:
    """A tenant of ``admin`` copied to ``member``, one database holding one page of every kind
    of document: one-change ones of every value type, an edited one, a deleted one, one under
    a key the member lacks, one whose entry is damaged on the member, one after it."""
    tenant = admin.create_tenant("acme")
    member.join(admin.invite(tenant, member.public_identity()))
    tenant.create_key("hr")
    notes = tenant.create_db("notes")
    singles = [notes.create_document(content) for content in CONTENTS]
    edited = notes.create_document({"title": "draft"})
    notes.update(edited, {"title": "final", "amount": 3})
    deleted = notes.create_document({"title": "gone"})
    notes.delete(deleted)
    secret = notes.create_document({"salary": 1}, key="hr")
    victim = notes.create_document({"title": "its entry is damaged on the member"})
    after = notes.create_document({"title": "after the damaged one"})
    copy_tenant(admin, member, tenant)
    (entry,) = [e for e in member.store.iter_entries(tenant.id) if e.document_id.hex() == victim]
    corrupt_entry(member, entry.id)
    return {
        "singles": singles,
        "edited": edited,
        "deleted": deleted,
        "secret": secret,
        "victim": victim,
        "after": after,
    }


def built_alone(
    make_node: MakeNode, home: Path
) -> tuple[Node, bytes, tuple[set[tuple[str, ...]], ...]]:
    """A member holding `mixed_page`, its index key, and the dump of the index built at
    ``home`` by the follower alone (no workers)."""
    member = make_node("member")
    mixed_page(make_node("admin"), member)
    key = member.index.store._key
    return member, key, dump(QueryIndex(home, key, member, workers=0))


def test_fast_path_builds_the_index_the_general_path_builds(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = make_node("member")
    page = mixed_page(make_node("admin"), member)
    singles, edited, deleted = page["singles"], page["edited"], page["deleted"]
    secret, victim, after = page["secret"], page["victim"], page["after"]
    spy = Spy(monkeypatch)
    member.index.refresh()
    fast = dump(member.index)
    # every one-change document readable here took the fast path (the damaged one and the
    # one under a key the member lacks went the general way, which names why)
    assert spy.fast == len(singles) + 1
    docs, _texts, skipped = fast
    assert len(docs) == len(singles) + 2  # + edited + after
    assert {(doc, reason) for doc, reason, _detail, _keys in skipped} == {
        (secret, "no_key"),
        (victim, "unreadable"),
    }
    uids = {u.rsplit("/", 1)[1] for u, _b, _k in docs}
    assert {*singles, edited, after} == uids and deleted not in uids

    monkeypatch.undo()
    general_spy = Spy(monkeypatch, fast=False)
    member.index.rebuild()
    assert general_spy.fast == 0 and general_spy.general >= len(CONTENTS)
    assert dump(member.index) == fast


def test_a_root_change_loads_as_apply_changes_builds_it() -> None:
    """`AutomergeDocument.from_root_change` gives the state `apply_changes` gives, and refuses
    what is not a root change applying on its own (the caller then applies it as usual)."""
    for content in CONTENTS:
        source = AutomergeDocument()
        with source.change() as root_map:
            for key, value in content.items():
                root_map[key] = value
        (root,) = [c.bytes for c in source.get_changes()]
        loaded = AutomergeDocument.from_root_change(root, parse_change(root))
        assert loaded is not None
        applied = AutomergeDocument()
        applied.apply_changes([root])
        assert loaded.to_py() == applied.to_py() == source.to_py()
        assert loaded.heads() == applied.heads() == source.heads()
    with source.change() as root_map:
        root_map["more"] = 1
    second = source.get_changes(applied.heads())[0].bytes
    assert AutomergeDocument.from_root_change(second, parse_change(second)) is None
    garbage = bytearray(root)
    garbage[-1] ^= 0xFF
    with pytest.raises(DecodeError):
        parse_change(bytes(garbage))


def test_build_workers_build_the_index_the_follower_builds_alone(
    make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member, key, alone = built_alone(make_node, tmp_path / "alone")
    monkeypatch.setattr(follower, "MIN_ENTRIES", 1)
    monkeypatch.setattr(follower, "BUILD_PAGE_ENTRIES", 3)  # several pages: one in flight
    from_workers: list[int] = []
    original = IndexFollower._from_pool

    def counted(self: IndexFollower, submitted: Any) -> Any:
        done = original(self, submitted)
        from_workers.append(len(done))
        return done

    monkeypatch.setattr(IndexFollower, "_from_pool", counted)
    pooled = QueryIndex(tmp_path / "pooled", key, member, workers=2)
    assert dump(pooled) == alone
    assert sum(from_workers) == len(CONTENTS) + 1  # the one-change documents it could read
    assert pooled.follower._pool is None  # stopped when the catch-up ended


def test_a_failing_worker_pool_leaves_the_follower_to_build_alone(
    make_node: MakeNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    member, key, alone = built_alone(make_node, tmp_path / "alone")
    monkeypatch.setattr(follower, "MIN_ENTRIES", 1)
    monkeypatch.setattr(follower, "BUILD_PAGE_ENTRIES", 3)
    # workers that cannot open the store: every task fails (BrokenProcessPool)
    monkeypatch.setattr(
        follower, "BuildWorkers", lambda _path, n: BuildWorkers(tmp_path / "no-store", n)
    )
    caplog.set_level("WARNING")
    assert dump(QueryIndex(tmp_path / "pooled", key, member, workers=1)) == alone
    assert "going on without them" in caplog.text


def test_a_hung_worker_is_given_up_on_and_the_follower_builds_alone(
    make_node: MakeNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review finding: a worker that never answers held the build for ever. Its page is given
    up on after `ANSWER_TIMEOUT_S`, the worker is killed, and the follower builds alone."""
    member, key, alone = built_alone(make_node, tmp_path / "alone")
    monkeypatch.setattr(follower, "MIN_ENTRIES", 1)
    monkeypatch.setattr(follower, "BUILD_PAGE_ENTRIES", 3)
    monkeypatch.setattr(build_workers, "ANSWER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(build_workers, "STOP_TIMEOUT_S", 0.5)
    started: list[subprocess.Popen[bytes]] = []

    def hanging(self: Any, _store_path: Path) -> None:
        # reads its task, then sleeps without answering (bounded, in case the kill failed)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        started.append(self.process)

    monkeypatch.setattr(build_workers._Worker, "__init__", hanging)
    caplog.set_level("WARNING")
    assert dump(QueryIndex(tmp_path / "pooled", key, member, workers=1)) == alone
    assert "did not answer within 0.5 s" in caplog.text
    assert started and all(process.poll() is not None for process in started)


def test_a_worker_answers_its_tasks_as_the_follower_indexes_them(make_node: MakeNode) -> None:
    """The worker's loop (`build_worker_process.serve`) driven in this process: each task's
    one-change documents come back in the follower's indexed form, the others as None."""
    member = make_node("member")
    page = mixed_page(make_node("admin"), member)
    tenant = member.tenant("acme")
    documents = tuple(
        bytes.fromhex(d) for d in [*page["singles"], page["edited"], page["secret"], page["victim"]]
    )
    task = BuildTask(tenant.id, "notes", tuple(tenant.keyring), None, documents)
    tasks = io.BytesIO()
    write_frame(tasks, task)
    write_frame(tasks, task)
    tasks.seek(0)
    answers = io.BytesIO()
    serve(member.store, tasks, answers)
    answers.seek(0)
    first, second = read_frame(answers), read_frame(answers)
    assert read_frame(answers) is None and first == second
    indexed = {uid.rsplit("/", 1)[1]: (body, text) for uid, body, text in rows(member.index)}
    expected = [indexed[d] for d in page["singles"]] + [None, None, None]
    assert first == expected


def test_frames_are_bounded_and_checked() -> None:
    stream = io.BytesIO((MAX_FRAME + 1).to_bytes(8, "big") + b"x")
    with pytest.raises(BuildWorkerError, match="malformed"):
        read_frame(stream)
    short = io.BytesIO()
    write_frame(short, ["a", None])
    with pytest.raises(BuildWorkerError, match="ends early"):
        read_frame(io.BytesIO(short.getvalue()[:-1]))
    with pytest.raises(BuildWorkerError, match="malformed"):
        read_frame(io.BytesIO(b"\x00\x00\x01"))
    tasks = io.BytesIO()
    write_frame(tasks, {"not": "a task"})
    tasks.seek(0)
    with pytest.raises(BuildWorkerError, match="was sent a dict"):
        serve(cast(EntryStore, None), tasks, io.BytesIO())


def test_a_page_over_its_byte_bound_is_committed_in_parts(
    make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member, key, whole = built_alone(make_node, tmp_path / "whole")
    commits: list[int] = []
    write = follower._PageWrites.write

    def counted(self: Any, tx: Any) -> None:
        commits.append(len(self.new_docs))
        write(self, tx)

    monkeypatch.setattr(follower._PageWrites, "write", counted)
    monkeypatch.setattr(follower, "MAX_PAGE_BYTES", 1)  # every indexed document: a commit
    assert dump(QueryIndex(tmp_path / "parts", key, member, workers=0)) == whole
    assert len(whole[0]) == len(CONTENTS) + 2
    assert commits.count(1) == len(whole[0])
