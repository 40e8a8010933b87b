"""Worker processes for a large index build: one-change documents materialized on every core.

A full build (a new index, `mindoo index rebuild`, a damaged index rebuilt on open) spends most
of its time materializing documents: decrypt, parse, Automerge, plain Python, JSON. When a
database is at least `MIN_ENTRIES` entries behind, the follower hands each page's documents to
`BuildWorkers`: `workers` processes, each with the entry store opened read-only (LMDB: many
readers across processes, each read a consistent snapshot). A worker reads its share of the
page in one read transaction (`EntryStore.documents_entries`) and materializes the one-change
documents by the materializer's own rule (`DocumentMaterializer.load_single_change`), returning
for each its ``docs.body`` and full-text text (`content`, the functions the follower uses, so
the rows are byte-identical). Every other document (several entries, deleted, no key, damaged,
refused) comes back as None and the follower materializes it itself, the usual way, which
records and names why a document cannot be read. Only the follower writes the index.

Key material: the tenant's keys go to the workers with each task, pickled through the pool's
pipe (memory to memory, never a file), and live in a worker only while it works on that task.
Workers are *spawned* (a fresh interpreter, not a fork of the node with its whole memory, its
threads and its open files); they hold no other secret and are stopped when the catch-up ends.
A worker that dies makes the follower stop using workers for this catch-up and go on alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import MindooError
from ..keyring import KeyRing, TenantKey
from ..materializer import DocumentMaterializer
from ..store import EntryStore
from .content import body_json, searchable_text
from .expressions import JsonPath, parse_path

MIN_ENTRIES = 10_000
"""A database at least this many entries behind is caught up with workers (starting them
costs a fraction of a second; below this the follower alone is as fast)."""

CHUNKS_PER_WORKER = 2
"""Each page is cut into this many tasks per worker (a slow share does not hold the page)."""

Indexed = tuple[str, str]
"""What a worker returns for a document it materialized: (``docs.body``, full-text text)."""


def default_workers() -> int:
    """Worker processes for a large build: one per core this process may run on, at most 4;
    0 on a single core (workers would only add their start-up and their messages)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, 4)


@dataclass(frozen=True, slots=True)
class _Task:
    tenant_id: bytes
    database: str
    keys: tuple[TenantKey, ...]
    fields: tuple[str, ...] | None
    documents: tuple[bytes, ...]


_worker_store: EntryStore | None = None


def _start_worker(store_path: str) -> None:
    """In a new worker: open the entry store read-only. Warnings are the follower's to give
    (it materializes every document a worker leaves, and logs why that one is skipped)."""
    global _worker_store
    logging.disable(logging.WARNING)
    _worker_store = EntryStore(store_path, readonly=True)


def _materialize(task: _Task) -> list[Indexed | None]:
    """In a worker: the indexed form of each one-change document of ``task`` (None for the
    others: the follower reads those itself)."""
    store = _worker_store
    assert store is not None, "a build worker runs _start_worker first"
    materializer = DocumentMaterializer(
        store, task.tenant_id, task.database, KeyRing(list(task.keys)), use_snapshots=False
    )
    fields = None if task.fields is None else [parse_path(p) for p in task.fields]
    found: list[Indexed | None] = []
    reads = store.documents_entries(task.tenant_id, task.database, task.documents, 1)
    for document_id, entries in zip(task.documents, reads, strict=True):
        indexed: Indexed | None = None
        if entries:
            try:
                md = materializer.load_single_change(document_id, entries)
                if md is not None:
                    content = md.doc.to_py()
                    indexed = (body_json(content), searchable_text(content, fields))
            except MindooError:
                indexed = None  # the follower reads it again and records why
        found.append(indexed)
    return found


class PendingPage:
    """A page handed to the workers: `result` waits for it."""

    def __init__(self, chunks: list[tuple[tuple[bytes, ...], Future[list[Indexed | None]]]]):
        self._chunks = chunks

    def result(self) -> dict[bytes, Indexed]:
        """Document id -> its indexed form, for the documents the workers materialized.
        Raises what a worker raised (BrokenProcessPool when one died)."""
        done: dict[bytes, Indexed] = {}
        for documents, future in self._chunks:
            for document_id, indexed in zip(documents, future.result(), strict=True):
                if indexed is not None:
                    done[document_id] = indexed
        return done

    def cancel(self) -> None:
        for _documents, future in self._chunks:
            future.cancel()


class BuildWorkers:
    """A pool of `workers` spawned processes materializing pages of documents."""

    def __init__(self, store_path: Path, workers: int) -> None:
        if workers < 1:
            raise ValueError("BuildWorkers needs at least one worker")
        self._workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(str(store_path),),
        )

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
        size = max(1, -(-len(listed) // (self._workers * CHUNKS_PER_WORKER)))
        chunks = []
        for start in range(0, len(listed), size):
            part = listed[start : start + size]
            task = _Task(tenant_id, database, held, chosen, part)
            chunks.append((part, self._pool.submit(_materialize, task)))
        return PendingPage(chunks)

    def close(self) -> None:
        """Stop the workers (waits for them to exit)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
