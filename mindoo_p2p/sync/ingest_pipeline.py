"""Storing received entries beside the session, in batches of several frames.

Before, a session stored each frame's entries before it read the next frame: one write
transaction (one fsync, 17.6 ms) per 256 KiB frame, and the peer's frames waited meanwhile. An
`IngestPipeline` decouples the two. The receive loop `put`s each `IngestJob` on a bounded queue
and reads on; one task (`run`) takes whatever has queued up, as one batch of at most
``commit_bytes`` entry bytes, stores it with one ``run_ingest(store, raws)`` call (so one write
transaction, wherever the runner runs it), and reports each job's share of the outcome, in
the order the jobs were received, through ``on_outcome(job, outcome)``.

Batches size themselves: when storing keeps up, every job is stored on its own as soon as it
arrives (a small sync is not delayed); when the peer sends faster, the jobs that queued during
one batch make up the next (one commit per few MB during a clone).

Bounds: at most ``queue_jobs`` jobs wait (the receive loop then waits, and so does the peer:
backpressure), plus the batch being stored. A job holds one frame's entries, or one entry
reassembled from fragments, so the memory held is bounded by the queue length times the
largest job.

Two stages (`IngestStages`): a caller may split storing a batch into ``check`` (the work that
needs no lock on the store: decoding, duplicates, signatures, in worker threads) and
``commit`` (admission and the write transaction). Batch k+1 is then checked while batch k is
committed (the daemon does this: signature checks on both cores beside the fsync). At most one
checked batch waits for its commit.

Ordering: batches are committed one after another in the order received, so a membership
record is always stored no later than the entries it authorizes, as before (`Node.ingest`
admits the tenant log of a batch first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from .protocol import IngestJob, IngestOutcome, SyncStore

COMMIT_BYTES = 4 * 1024 * 1024
"""Entry bytes stored per batch at most (one write transaction; a single larger job is stored
on its own)."""
QUEUE_JOBS = 16
"""Jobs waiting to be stored at most (16 frames of 256 KiB)."""

IngestRunner = Callable[[SyncStore, Sequence[bytes]], Awaitable[IngestOutcome]]
"""``run_ingest(store, raws)``: store a received batch, as :meth:`SyncStore.ingest` does."""
OutcomeCallback = Callable[[IngestJob, IngestOutcome], None]
IngestChecker = Callable[[SyncStore, Sequence[bytes]], Awaitable[object]]
"""``check(store, raws)``: the checks of a batch that need no lock on the store; the result
goes to the committer."""
IngestCommitter = Callable[[SyncStore, object], Awaitable[IngestOutcome]]
"""``commit(store, checked)``: store a checked batch; what :meth:`SyncStore.ingest` returns."""


@dataclass(frozen=True, slots=True)
class IngestStages:
    """How a batch is stored, in two stages that overlap across batches (module docstring)."""

    check: IngestChecker
    commit: IngestCommitter
    overlap: bool = True
    """Check the next batch while this one commits (False: one stage, nothing to overlap; a
    batch is then formed only when the previous one is stored, so it takes in every job that
    queued meanwhile)."""

    @classmethod
    def single(cls, run_ingest: IngestRunner) -> IngestStages:
        """One stage: the batch is stored by ``run_ingest(store, raws)`` alone."""

        async def unchecked(_store: SyncStore, raws: Sequence[bytes]) -> object:
            return raws

        async def commit(store: SyncStore, raws: object) -> IngestOutcome:
            assert isinstance(raws, list)
            return await run_ingest(store, raws)

        return cls(unchecked, commit, overlap=False)


def job_bytes(job: IngestJob) -> int:
    return sum(len(raw) for raw in job.raws)


def split_outcome(jobs: Sequence[IngestJob], outcome: IngestOutcome) -> list[IngestOutcome]:
    """Each job's share of the ``outcome`` of storing their entries together (entries are
    told apart by id, the SHA-256 of their bytes, taken from ``job.ids`` when the session
    computed them). An id added once counts as added in the first job that holds it (later
    copies were duplicates); a rejection or refusal counts in every job that holds the
    entry."""
    if len(jobs) == 1:
        return [outcome]
    added = set(outcome.added)
    rejected = {each.entry_id: each for each in outcome.rejected}
    refused = {each.entry_id: each for each in outcome.refused}
    parts = []
    for job in jobs:
        ids = job.ids or [hashlib.sha256(raw).digest() for raw in job.raws]
        job_added = []
        for entry_id in ids:
            if entry_id in added:
                added.discard(entry_id)
                job_added.append(entry_id)
        parts.append(
            IngestOutcome(
                added=tuple(job_added),
                rejected=tuple(rejected[i] for i in ids if i in rejected),
                refused=tuple(refused[i] for i in ids if i in refused),
            )
        )
    return parts


class IngestPipeline:
    """The queue of received jobs of one session and the task that stores them (see the
    module docstring). Call :meth:`run` in a task, :meth:`put` each job, :meth:`close` once
    no more will come; :meth:`run` returns when every job put has been reported."""

    def __init__(
        self,
        store: SyncStore,
        stages: IngestStages,
        on_outcome: OutcomeCallback,
        *,
        commit_bytes: int = COMMIT_BYTES,
        queue_jobs: int = QUEUE_JOBS,
    ) -> None:
        if commit_bytes < 1 or queue_jobs < 1:
            raise ValueError("commit_bytes and queue_jobs must be positive")
        self._store = store
        self._stages = stages
        self._on_outcome = on_outcome
        self._commit_bytes = commit_bytes
        self._send, self._receive = trio.open_memory_channel[IngestJob](queue_jobs)
        self._checked_send, self._checked_receive = trio.open_memory_channel[
            tuple[list[IngestJob], object]
        ](0)
        self.batches = 0
        """Batches committed so far."""

    async def put(self, job: IngestJob) -> None:
        """Queue ``job``; waits while the queue is full."""
        await self._send.send(job)

    def close(self) -> None:
        """No more jobs: :meth:`run` stores what is queued, then returns."""
        self._send.close()

    async def run(self) -> None:
        """Store queued jobs batch by batch until :meth:`close` and the queue is drained.
        Whatever a stage or ``on_outcome`` raises propagates (the session fails)."""
        if not self._stages.overlap:
            async with self._receive:
                async for first in self._receive:
                    batch = self._batch_from(first)
                    raws = [raw for job in batch for raw in job.raws]
                    await self._commit(batch, await self._stages.check(self._store, raws))
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._commit_loop)
            await self._check_loop()

    def _batch_from(self, first: IngestJob) -> list[IngestJob]:
        """``first`` and the jobs queued behind it, up to ``commit_bytes`` of entries."""
        batch = [first]
        size = job_bytes(first)
        while size < self._commit_bytes:
            try:
                job = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            batch.append(job)
            size += job_bytes(job)
        return batch

    async def _check_loop(self) -> None:
        async with self._receive, self._checked_send:
            async for first in self._receive:
                batch = self._batch_from(first)
                raws = [raw for job in batch for raw in job.raws]
                checked = await self._stages.check(self._store, raws)
                await self._checked_send.send((batch, checked))

    async def _commit_loop(self) -> None:
        async with self._checked_receive:
            async for batch, checked in self._checked_receive:
                await self._commit(batch, checked)

    async def _commit(self, batch: list[IngestJob], checked: object) -> None:
        outcome = await self._stages.commit(self._store, checked)
        self.batches += 1
        for job, part in zip(batch, split_outcome(batch, outcome), strict=True):
            self._on_outcome(job, part)
