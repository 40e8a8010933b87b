"""Two writer processes and a reader process share one store directory (LMDB serialises them)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mindoo_p2p
from mindoo_p2p.store import EntryStore

WORKER = Path(__file__).with_name("store_crash_worker.py")
TENANT = bytes.fromhex("6d696e646f6f2d63726173682d746e74")  # as in store_crash_worker.py
DATABASE = "crashdb"
BATCHES = 12
BATCH_SIZE = 20


def start_writer(store: Path) -> subprocess.Popen[bytes]:
    root = str(Path(mindoo_p2p.__file__).parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            str(store),
            "--batches",
            str(BATCHES),
            "--batch-size",
            str(BATCH_SIZE),
            "--pause",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        bufsize=0,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_reader_sees_commits_of_two_concurrent_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with EntryStore(path) as reader:
        writers = [start_writer(path), start_writer(path)]
        pending = {w.stdout.fileno(): w for w in writers if w.stdout is not None}
        buffers = {fd: b"" for fd in pending}
        acked: dict[int, list[bytes]] = {fd: [] for fd in pending}
        seen_growth: list[int] = []
        finished: set[int] = set()
        deadline = time.monotonic() + 45
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(list(pending), [], [], 1.0)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    del pending[fd]
                    continue
                buffers[fd] += chunk
                *lines, buffers[fd] = buffers[fd].split(b"\n")
                fresh = [bytes.fromhex(line.decode()) for line in lines if len(line) == 64]
                # An id is printed only after its commit: a new read transaction must see it.
                assert reader.missing(fresh) == []
                acked[fd].extend(fresh)
                if b"done" in lines:
                    finished.add(fd)
                seen_growth.append(reader.last_seq(TENANT, DATABASE))
        for writer in writers:
            assert writer.wait(timeout=10) == 0
        assert not pending, "writers did not finish in time"
        assert finished == set(acked)

        total = 2 * BATCHES * BATCH_SIZE
        assert [len(ids) for ids in acked.values()] == [BATCHES * BATCH_SIZE] * 2
        assert seen_growth == sorted(seen_growth) and seen_growth[-1] == total
        assert reader.count() == total
        items, cursor = reader.changes_since(TENANT, DATABASE, 0, limit=total)
        assert [item.seq for item in items] == list(range(1, total + 1))
        assert cursor == total
        assert {item.entry_id for item in items} == {i for ids in acked.values() for i in ids}
        # Both authors share one dense feed, and each writer's own commit order is kept.
        position = {item.entry_id: index for index, item in enumerate(items)}
        for ids in acked.values():
            assert [position[i] for i in ids] == sorted(position[i] for i in ids)
        report = reader.fsck()
        assert report.ok, report.problems[:5]
        assert report.entries_checked == total
