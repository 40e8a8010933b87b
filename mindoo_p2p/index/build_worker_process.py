"""A build worker process: ``python -m mindoo_p2p.index.build_worker_process STORE``.

Reads `BuildTask` frames on stdin, answers each on stdout with the indexed form of every
one-change document of the task (None for the others), and exits at the end of its input. See
`build_workers` for the whole arrangement (who starts it, what it is given, what it returns).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO

from ..errors import MindooError
from ..keyring import KeyRing
from ..materializer import DocumentMaterializer
from ..store import EntryStore
from .build_workers import BuildTask, BuildWorkerError, Indexed, read_frame, write_frame
from .content import body_json, searchable_text
from .expressions import parse_path


def materialize(store: EntryStore, task: BuildTask) -> list[Indexed | None]:
    """The indexed form of each one-change document of ``task`` this node can read, by the
    materializer's own rule; None for every other document (the follower reads it itself)."""
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


def serve(store: EntryStore, tasks: IO[bytes], answers: IO[bytes]) -> None:
    """Answer every task frame of ``tasks`` on ``answers`` until the input ends."""
    while True:
        task = read_frame(tasks)
        if task is None:
            return
        if not isinstance(task, BuildTask):
            raise BuildWorkerError(f"a build worker was sent a {type(task).__name__}")
        write_frame(answers, materialize(store, task))


def main() -> None:
    # Warnings are the follower's to give: it materializes every document left here, and
    # logs why one is skipped.
    logging.disable(logging.WARNING)
    # Answers go to the original stdout alone: anything else printed here goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    store = EntryStore(sys.argv[1], readonly=True)
    try:
        serve(store, sys.stdin.buffer, answers)
    finally:
        store.close()
        answers.close()


if __name__ == "__main__":
    main()
