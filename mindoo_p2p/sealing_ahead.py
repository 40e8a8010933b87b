"""Sealing an open batch's drafts ahead, in a thread, while the application makes its next
changes; the write transaction adopts them only if nothing moved meanwhile.

`LocalWriter` seals own entries inside the write transaction that stores them (one author, one
sequence, whatever the processes: see `mindoo_p2p.writer`). Sealing costs ~28 µs a draft, 19
of them Ed25519, and the signatures of a chain are sequential (each entry names the id of the
one before). A chunk sealer that releases the GIL for a whole chunk (`native_seal.seal_drafts`)
lets that work run on the other core while this thread drafts the batch's next changes.
:class:`SealingThread` is that; the writer hands it drafts through `writer.SealingAhead`.

The rules:

1. Only batches. Inside ``writer.batch()``, each time the batch's drafts not yet handed over
   reach :data:`CHUNK`, the writer hands those :data:`CHUNK` drafts over, in the order drafted
   (all chains of the batch in one sequence, so a ChangeRef resolves across chains and chunks
   exactly as one `writer.seal_drafts` call over the whole batch resolves it). At the batch's
   end it hands over the rest. A single write, and a batch of fewer than :data:`CHUNK`
   drafts, never reaches this module: sealed in the transaction as before, no thread.
2. Assumed positions. When a chain (tenant, author) first appears in a handed-over chunk, its
   position (``last_seq``, ``last_entry_id``) is read from the store (one read transaction,
   `EntryStore.author_position`) by the writer's thread, and the chunk goes to the sealing
   thread with those positions as an immutable snapshot; later chunks continue the chain from
   the batch's `SealingState`, which only the sealing thread touches.
3. One yield per chunk. After handing a chunk over, the writer's thread yields the GIL once
   (``time.sleep(0)``): the sealing thread starts its C call at once instead of waiting for
   the interpreter's switch interval (5 ms), and runs on the other core. Nothing more: no wait
   per change.
4. Adopted only where nothing moved. Inside the write transaction (`SealingThread.sealed`,
   called from `append_local`'s ``seal(positions)``), the entries sealed ahead are used only if
   EVERY chain of the batch has exactly the assumed ``last_seq`` and ``last_entry_id``;
   otherwise (another process wrote for one of these authors meanwhile: the CLI beside the
   daemon) the writer seals the whole batch in the transaction, from its positions, as
   without this module. So every stored entry is sealed from the positions of the transaction
   that stores it (and `append_local` still checks each chain's continuity). Only then does
   the writer's thread wait for the sealing thread, which has at most the last chunks left.
5. Any failure abandons the batch's speculation. An exception in the sealing thread
   (UnresolvedDependencyError, an oversized payload's ValueError, anything) marks the batch
   failed and its later chunks are skipped; the transaction then seals in place and raises
   exactly what it raises without this module. A batch that raises, a commit that fails, or
   a moved chain drops the speculation: its entries are never stored, never sent, never
   handed to anyone, and no number is used. The thread itself survives whatever a job
   raises, and the transaction never waits for a thread that is gone (it checks before
   waiting and every :data:`_ALIVE_CHECK_S`): a batch whose thread died is sealed in the
   transaction; a thread found gone at a hand-over (in a forked child it does not exist) has
   its queue dropped with the batch's speculation, and the next batch starts a new thread.
   The writer adopts a batch only with exactly one entry per draft (else it seals in the
   transaction).
6. The thread. Started at the first chunk handed over (lazily), a daemon thread, stopped by
   `close` (`LocalWriter.close`, from `Node.close`), or when its `SealingThread` is garbage
   collected unclosed (it holds the job queue and the chunk sealer, never the writer or
   the store). It touches neither the store nor any
   mutable state of the writer's thread: it reads Drafts (frozen, with their immutable
   `SigningKeyPair` and `TenantKey`), the chunk's position snapshot and the batch's own
   `SealingState`. It holds at most the drafts and entries of the open batch (a dropped
   batch's queued chunks are skipped unsealed).

Why :data:`CHUNK` is 64: each hand-over costs a queue put, a thread wake-up and a GIL
round trip (tens of µs), under 1 µs a draft at 64; and the batch's end waits for what the
thread has not sealed yet, at most the chunk in flight and the rest (under 2 x 64 drafts, about
2.5 ms at 19 µs a seal): a larger chunk makes that wait longer, a smaller one the hand-overs
more frequent. Batches smaller than a chunk gain little from a thread and skip it.

Without a chunk sealer that releases the GIL there is no speculation at all (`for_store`):
a pure-Python sealing thread competes with the application for the GIL and was measured
slower than sealing in the transaction (docs/architecture.md, "Sealing ahead in a thread").
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

from . import native_seal
from .entry import Entry
from .store import AuthorPositions, EntryStore
from .writer import ChainKey, Draft, SealingState

CHUNK = 64
"""Drafts handed to the sealing thread at a time (see the module docstring)."""

GATHER = 8
"""At most this many queued chunks of a batch are sealed in one call (`_gather`)."""

_ALIVE_CHECK_S = 0.05
"""While the transaction waits for the thread, how often it checks that the thread lives."""

ChunkSealer = Callable[[Sequence[Draft], AuthorPositions, SealingState], list[Entry]]
"""Seals drafts in order, continuing the chains of ``state`` and asking ``positions`` about
the others: `writer.seal_drafts`'s contract (`native_seal.seal_drafts` with the GIL
released)."""

PositionReader = Callable[[bytes, bytes], tuple[int, bytes]]
"""``(last_seq, last_entry_id)`` of (tenant id, author) as the store has it now
(`EntryStore.author_position`)."""


Starts = Mapping[ChainKey, tuple[int, bytes]]
"""The assumed ``(last_seq, last_entry_id)`` of the chains a chunk starts."""


def _nothing() -> None:
    return None


class _AssumedPositions:
    """`AuthorPositions` over a snapshot taken before the transaction (the chains a chunk
    starts)."""

    __slots__ = ("_positions",)

    def __init__(self, positions: Starts) -> None:
        self._positions = positions

    def last_seq(self, tenant_id: bytes, author: bytes) -> int:
        return self._positions[tenant_id, author][0]

    def last_entry_id(self, tenant_id: bytes, author: bytes) -> bytes:
        return self._positions[tenant_id, author][1]


class _Speculation:
    """One batch's drafts sealed ahead. ``state``, ``entries`` and ``failed`` are the sealing
    thread's; the writer's thread reads them only after ``done`` is set. ``dropped`` is the
    writer's thread's; the sealing thread reads it to skip what is left."""

    __slots__ = ("done", "dropped", "entries", "failed", "state")

    def __init__(self) -> None:
        self.state = SealingState()
        self.entries: list[Entry] = []
        self.failed = False
        self.dropped = False
        self.done = threading.Event()


_Job = tuple[_Speculation, Sequence[Draft] | None, Starts]
"""A chunk to seal (with the positions of the chains it starts), or, without drafts, the
batch's end: set ``done``."""


class _Empty:
    """No job was waiting."""


_EMPTY = _Empty()


class SealingThread:
    """Seals an open batch's drafts ahead, in a thread (`writer.SealingAhead`; the rules are
    in the module docstring). Used by one writer, from one thread."""

    def __init__(
        self, seal_chunk: ChunkSealer, read_position: PositionReader, *, chunk: int = CHUNK
    ) -> None:
        if chunk < 1:
            raise ValueError("a chunk is at least one draft")
        self.chunk = chunk
        """Drafts the writer hands over at a time."""
        self._seal_chunk = seal_chunk
        self._read_position = read_position
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], object] = _nothing
        self._closed = False
        self._speculation: _Speculation | None = None
        self._assumed: dict[ChainKey, tuple[int, bytes]] = {}
        self._handed = 0
        self.adopted = 0
        """Batches whose entries sealed ahead the write transaction adopted (tests, metrics)."""

    def seal_ahead(self, drafts: Sequence[Draft]) -> None:
        """Start sealing ``drafts``, the open batch's next drafts in order (the first call
        after `sealed` or `drop` begins a new batch), then yield the GIL once."""
        if self._closed:
            return
        speculation = self._speculation
        if speculation is None:
            speculation = self._speculation = _Speculation()
            self._assumed = {}
            self._handed = 0
        elif speculation.dropped:
            return
        assumed = self._assumed
        starts: dict[ChainKey, tuple[int, bytes]] = {}
        try:
            for draft in drafts:
                chain = (draft.tenant_id, draft.signer.public_key)
                if chain not in assumed:
                    assumed[chain] = starts[chain] = self._read_position(*chain)
        except Exception:  # rule 5: the transaction reads the store and fails as it fails
            speculation.dropped = True
            return
        self._handed += len(drafts)
        if self._thread is not None and not self._thread.is_alive():
            # Gone (in a child forked from this process the thread does not exist): what
            # was queued for it is dropped with its queue, so is this batch's speculation,
            # and the next batch starts a new thread.
            self._stop()
            self._thread, self._stop, self._jobs = None, _nothing, queue.SimpleQueue()
            speculation.dropped = True
            return
        if self._thread is None:
            # The thread holds the queue and the sealer, never this object (nor the store):
            # should the writer be dropped unclosed, the finalizer stops the thread.
            thread = threading.Thread(
                target=_seal_jobs,
                args=(self._jobs, self._seal_chunk),
                name="mindoo-sealing-ahead",
                daemon=True,
            )
            try:
                thread.start()
            except RuntimeError:  # no thread to be had (rule 5): seal in the transaction
                speculation.dropped = True
                return
            self._thread = thread
            self._stop = weakref.finalize(self, self._jobs.put, None)
        self._jobs.put((speculation, drafts, starts))
        time.sleep(0)  # let the sealing thread take the GIL now, not after a switch interval

    @property
    def backlog(self) -> int:
        """Jobs queued that the thread has not taken yet (tests, metrics)."""
        return self._jobs.qsize()

    def sealed(self, positions: AuthorPositions) -> list[Entry] | None:
        """Inside the batch's write transaction: every draft handed over, sealed, when each
        chain is exactly where it was assumed in ``positions``; None when one moved, sealing
        ahead failed, or nothing was handed over (then the caller seals in the transaction).
        Ends the batch's speculation."""
        speculation, self._speculation = self._speculation, None
        if speculation is None or speculation.dropped or self._closed:
            return None
        for (tenant_id, author), (last_seq, last_entry_id) in self._assumed.items():
            if (
                positions.last_seq(tenant_id, author) != last_seq
                or positions.last_entry_id(tenant_id, author) != last_entry_id
            ):
                speculation.dropped = True
                return None
        thread = self._thread
        if thread is None or not thread.is_alive():  # rule 5: never wait for a dead thread
            speculation.dropped = True
            return None
        self._jobs.put((speculation, None, {}))
        while not speculation.done.wait(_ALIVE_CHECK_S):
            if not thread.is_alive():  # rule 5: never wait for a dead thread
                speculation.dropped = True
                return None
        if speculation.failed or len(speculation.entries) != self._handed:
            return None
        self.adopted += 1
        return speculation.entries

    def drop(self) -> None:
        """Forget the open batch's speculation (its batch raised, or its commit failed): what
        was sealed ahead is dropped, what is queued is skipped."""
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            speculation.dropped = True

    def close(self) -> None:
        """Stop the sealing thread (after the chunk it is sealing, if any); idempotent. No
        speculation afterwards."""
        if self._closed:
            return
        self._closed = True
        self.drop()
        if self._thread is not None:
            self._stop()
            self._thread.join()
            self._thread = None


def _seal_jobs(jobs: queue.SimpleQueue[_Job | None], seal_chunk: ChunkSealer) -> None:
    """The sealing thread: seal each chunk in order, until told to stop (None). Nothing ends
    it but that: whatever goes wrong with a job fails that job's batch (rule 5)."""
    job = jobs.get()
    while job is not None:
        speculation, drafts, starts = job
        following: _Job | _Empty | None = _EMPTY
        try:
            if drafts is None:
                speculation.done.set()
            else:
                drafts, starts, following = _gather(jobs, speculation, drafts, starts)
                if not (speculation.dropped or speculation.failed):
                    sealed = seal_chunk(drafts, _AssumedPositions(starts), speculation.state)
                    speculation.entries += sealed
        except BaseException:  # rule 5: the transaction seals and raises it again
            speculation.failed = True
            if drafts is None:
                speculation.done.set()
        job = jobs.get() if isinstance(following, _Empty) else following


def _gather(
    jobs: queue.SimpleQueue[_Job | None],
    speculation: _Speculation,
    drafts: Sequence[Draft],
    starts: Starts,
) -> tuple[Sequence[Draft], Starts, _Job | _Empty | None]:
    """This chunk and the chunks of the same batch already queued behind it, to seal in one
    call, and the job after them. A chunk's C call returns only when the writer's thread
    yields the GIL (its next hand-over), so a thread that fell one chunk behind would stay
    behind for the whole batch, one chunk per hand-over: this catches it up at once. At most
    :data:`GATHER` chunks in one call, so a dropped batch's queued chunks are skipped soon
    after it is dropped, not sealed to the end first."""
    for _ in range(GATHER - 1):
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return drafts, starts, _EMPTY
        if job is None or job[0] is not speculation or job[1] is None:
            return drafts, starts, job
        drafts = [*drafts, *job[1]]
        starts = {**starts, **job[2]}
    return drafts, starts, _EMPTY


def for_store(store: EntryStore) -> SealingThread | None:
    """The sealing thread of a writer on ``store``: with the native chunk sealer
    (`native_seal.seal_drafts`, the GIL released) where it is built, else None (no sealing
    ahead)."""
    if not native_seal.available():
        return None
    return SealingThread(native_seal.seal_drafts, store.author_position)
