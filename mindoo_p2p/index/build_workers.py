"""Worker processes for a large index build: one-change documents materialized on every core.

A full build (a new index, `mindoo index rebuild`, a damaged index rebuilt on open) spends most
of its time materializing documents: decrypt, parse, Automerge, plain Python, JSON. When a
database is at least `MIN_ENTRIES` entries behind, the follower hands each page's documents to
`BuildWorkers`: ``workers`` processes (`build_worker_process`), each with the entry store opened
read-only (LMDB: many readers across processes, each read a consistent snapshot). A worker
reads its share of the page in one read transaction (`EntryStore.documents_entries`) and
materializes the one-change documents by the materializer's own rule
(`DocumentMaterializer.load_single_change`), returning for each its ``docs.body`` and full-text
text (`content`: the functions the follower uses, so the rows are byte-identical). Every other
document (several entries, deleted, no key, damaged, refused) comes back as None and the
follower materializes it itself, the usual way, which records and names why a document cannot
be read. Only the follower writes the index.

Processes: started as ``python -m mindoo_p2p.index.build_worker_process STORE`` (a fresh
interpreter running only that module: not a fork of the node with its memory, threads and open
files, and not multiprocessing's spawn, which runs the application's main script again in the
child). Each is driven by one thread of this process, which writes a task and reads its answer
(frames: 8-byte big-endian length, then a pickle; both ends are this package, started by this
process, and answers are bounded by `MAX_FRAME`), so no pipe can fill while both sides wait.

Key material: the tenant's keys go to a worker with each task, through its stdin pipe (memory
to memory, never a file), and live in the worker only while it works on that task. Workers
hold no other secret, and stop when the catch-up ends (stdin closed) or with the node's
process. A worker that dies or answers out of protocol makes the follower stop the workers for
this catch-up and go on alone, and so does one that does not answer within `ANSWER_TIMEOUT_S`
(it is killed when the workers stop).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeGuard

from ..errors import MindooError
from ..keyring import TenantKey
from .expressions import JsonPath

MIN_ENTRIES = 10_000
"""A database at least this many entries behind is caught up with workers (starting them
costs a fraction of a second; below this the follower alone is as fast)."""

CHUNKS_PER_WORKER = 2
"""Each page is cut into this many tasks per worker (a slow share does not hold the page)."""

MAX_FRAME = 256 * 1024 * 1024
"""Largest task or answer a frame may carry."""

STOP_TIMEOUT_S = 10.0
"""How long `BuildWorkers.close` waits for a worker to exit before killing it."""

ANSWER_TIMEOUT_S = 300.0
"""How long `PendingPage.result` waits for a page's answers (a task is a share of a page of
`follower.BUILD_PAGE_ENTRIES` entries, seconds of work even on a loaded machine): a worker that
hangs is given up on, and the follower goes on alone."""

WORKER_MODULE = "mindoo_p2p.index.build_worker_process"

Indexed = tuple[str, str]
"""What a worker returns for a document it materialized: (``docs.body``, full-text text)."""


class BuildWorkerError(MindooError):
    """A build worker died or answered out of protocol."""


def default_workers() -> int:
    """Worker processes for a large build: one per core this process may run on, at most 4;
    0 on a single core (workers would only add their start-up and their messages) or when
    there is no interpreter to start them with."""
    if not sys.executable:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, 4)


@dataclass(frozen=True, slots=True)
class BuildTask:
    """One share of a page: the documents of one database to materialize, with the keys."""

    tenant_id: bytes
    database: str
    keys: tuple[TenantKey, ...]
    fields: tuple[str, ...] | None
    """The full-text fields (JSON path texts), None for every string."""
    documents: tuple[bytes, ...]


def write_frame(stream: IO[bytes], value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME:
        raise BuildWorkerError(f"a build frame of {len(data)} bytes is over {MAX_FRAME}")
    stream.write(len(data).to_bytes(8, "big") + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value; None at the end of the stream (before a frame starts)."""
    head = stream.read(8)
    if not head:
        return None
    size = int.from_bytes(head, "big")
    if len(head) != 8 or size > MAX_FRAME:
        raise BuildWorkerError("a build worker sent a malformed frame")
    data = stream.read(size)
    if len(data) != size:
        raise BuildWorkerError("a build worker's frame ends early")
    return pickle.loads(data)


def _is_answer(answer: object, size: int) -> TypeGuard[list[Indexed | None]]:
    """True when ``answer`` is what a worker answers a task of ``size`` documents with."""
    return (
        isinstance(answer, list)
        and len(answer) == size
        and all(
            item is None
            or (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], str)
            )
            for item in answer
        )
    )


class _Worker:
    """One worker process and its pipes (used by one thread at a time)."""

    def __init__(self, store_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(store_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def run(self, task: BuildTask) -> list[Indexed | None]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            write_frame(stdin, task)
            answer = read_frame(stdout)
        except (OSError, ValueError) as exc:  # ValueError: its pipe was closed (stop)
            raise BuildWorkerError(f"a build worker is gone ({exc})") from None
        if not _is_answer(answer, len(task.documents)):
            code = self.process.poll()
            raise BuildWorkerError(
                "a build worker stopped" if code is not None else "a build worker answered amiss"
            )
        return answer

    def stop(self) -> None:
        """End the worker's input (it finishes its task, its answer is still read, then it
        exits) and wait for it; kill it if it does not exit in `STOP_TIMEOUT_S`."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.close()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PendingPage:
    """A page handed to the workers: `result` waits for it."""

    def __init__(self, chunks: list[tuple[tuple[bytes, ...], Future[list[Indexed | None]]]]):
        self._chunks = chunks

    def result(self) -> dict[bytes, Indexed]:
        """Document id -> its indexed form, for the documents the workers materialized.
        Raises BuildWorkerError when a worker died, answered out of protocol or did not
        answer within `ANSWER_TIMEOUT_S`."""
        done: dict[bytes, Indexed] = {}
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        for documents, future in self._chunks:
            try:
                answer = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                raise BuildWorkerError(
                    f"a build worker did not answer within {ANSWER_TIMEOUT_S:g} s"
                ) from None
            for document_id, indexed in zip(documents, answer, strict=True):
                if indexed is not None:
                    done[document_id] = indexed
        return done


class BuildWorkers:
    """``workers`` worker processes, each driven by one thread of this process."""

    def __init__(self, store_path: Path, workers: int) -> None:
        if workers < 1:
            raise ValueError("BuildWorkers needs at least one worker")
        self._count = workers
        self._workers = [_Worker(store_path) for _ in range(workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="index-build")

    def _run(self, task: BuildTask) -> list[Indexed | None]:
        worker = self._idle.get()
        try:
            return worker.run(task)
        finally:
            self._idle.put(worker)

    def submit(
        self,
        tenant_id: bytes,
        database: str,
        keys: Iterable[TenantKey],
        fields: Sequence[JsonPath] | None,
        documents: Sequence[bytes],
    ) -> PendingPage:
        """Hand ``documents`` (one page of a database) to the workers."""
        held = tuple(keys)
        chosen = None if fields is None else tuple(p.text for p in fields)
        listed = tuple(documents)
        size = max(1, -(-len(listed) // (self._count * CHUNKS_PER_WORKER)))
        chunks = []
        for start in range(0, len(listed), size):
            part = listed[start : start + size]
            task = BuildTask(tenant_id, database, held, chosen, part)
            chunks.append((part, self._threads.submit(self._run, task)))
        return PendingPage(chunks)

    def close(self) -> None:
        """Stop the workers: tasks not started are dropped, each process ends its input and is
        waited for (killed if it hangs, so no thread waits on it for ever), then the threads."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self._workers:
            worker.stop()
        self._threads.shutdown(wait=True)
        for worker in self._workers:
            if worker.process.stdout is not None:
                worker.process.stdout.close()
