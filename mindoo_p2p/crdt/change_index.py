"""Which changes a document has applied, which wait for others, and which may be applied next.

Automerge queues a change whose dependencies are missing, but it does not defend itself against
a change whose op ids collide with ops it already has (a change reusing its actor's op counters
makes it try to allocate gigabytes). So changes are held here until everything they build on is
applied, and only then checked and handed over, in causal order. A change builds on:

* every change in its ``deps``;
* its actor's previous change (``seq - 1``), which Automerge also requires.

and its op ids must be exactly the next ones: ``start_op`` must be one more than the largest
``max_op`` of those (zero when there are none). That is how Automerge numbers a local change (its
document's largest op counter + 1, and a change's deps are everything its author had), checked
over random concurrent edits and merges in ``tests/test_docs_hostile.py``. Requiring equality,
not just "greater", keeps a member from making a document's op counters jump: a change starting
at 2**32-1 made every later local change of the document panic in the binding, and freeing such
a document aborted the process from a panicking destructor. No op counter may pass
``MAX_OP_COUNTER`` either. Finally ``(actor, seq)`` must be new. A change that breaks these rules
is rejected; changes waiting for a rejected change wait for good. The rules read only the
change and what it builds on (content-addressed), so every node decides alike. Pure
bookkeeping: no Automerge call happens here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_OP_COUNTER = 2**31 - 1
"""The largest op counter a change may use: far above what a document reaches (a million ops a
day for 5,000 years), far below the binding's 32-bit limits."""

ActorSeq = tuple[bytes, int]
Requirement = bytes | ActorSeq
"""A change hash, or (actor, seq) of an actor's change."""


@dataclass(frozen=True, slots=True)
class ChangeMeta:
    """What the index needs to know about one change."""

    actor: bytes
    seq: int
    start_op: int
    max_op: int
    deps: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Queued:
    """A change waiting in the index."""

    hash: bytes
    raw: bytes
    meta: ChangeMeta


class ChangeIndex:
    """Applied changes (hash -> meta, (actor, seq) -> max_op) and the waiting queue."""

    def __init__(self, applied: Iterable[tuple[bytes, ChangeMeta]] = ()) -> None:
        self._applied: dict[bytes, ChangeMeta] = {}
        self._seq_max_op: dict[ActorSeq, int] = {}
        self._queued: dict[bytes, Queued] = {}
        self._unmet: dict[bytes, set[Requirement]] = {}
        self._waiters: dict[Requirement, set[bytes]] = {}
        self._ready: set[bytes] = set()
        for change_hash, meta in applied:
            self._applied[change_hash] = meta
            self._seq_max_op[(meta.actor, meta.seq)] = meta.max_op

    def has(self, change_hash: bytes) -> bool:
        """True if the change is applied."""
        return change_hash in self._applied

    def is_queued(self, change_hash: bytes) -> bool:
        return change_hash in self._queued

    def is_ready(self, change_hash: bytes) -> bool:
        """True if the change is queued and everything it builds on is applied."""
        return change_hash in self._ready

    def _requirements(self, meta: ChangeMeta) -> list[Requirement]:
        needs: list[Requirement] = list(meta.deps)
        if meta.seq > 1:
            needs.append((meta.actor, meta.seq - 1))
        return needs

    def _satisfied(self, requirement: Requirement) -> bool:
        if isinstance(requirement, bytes):
            return requirement in self._applied
        return requirement in self._seq_max_op

    def enqueue(self, change_hash: bytes, raw: bytes, meta: ChangeMeta) -> None:
        """Queue a change (no-op if it is applied or queued already)."""
        if change_hash in self._applied or change_hash in self._queued:
            return
        self._queued[change_hash] = Queued(change_hash, raw, meta)
        unmet = {need for need in self._requirements(meta) if not self._satisfied(need)}
        self._unmet[change_hash] = unmet
        for need in unmet:
            self._waiters.setdefault(need, set()).add(change_hash)
        if not unmet:
            self._ready.add(change_hash)

    def _drop(self, change_hash: bytes) -> None:
        self._queued.pop(change_hash, None)
        self._ready.discard(change_hash)
        for need in self._unmet.pop(change_hash, set()):
            waiters = self._waiters.get(need)
            if waiters is not None:
                waiters.discard(change_hash)
                if not waiters:
                    del self._waiters[need]

    def mark_applied(self, change_hash: bytes, meta: ChangeMeta) -> None:
        """Record an applied change; queued changes waiting for it may become ready."""
        self._drop(change_hash)
        self._applied[change_hash] = meta
        self._seq_max_op[(meta.actor, meta.seq)] = meta.max_op
        for requirement in (change_hash, (meta.actor, meta.seq)):
            for waiter in self._waiters.pop(requirement, set()):
                unmet = self._unmet[waiter]
                unmet.discard(requirement)
                if not unmet:
                    self._ready.add(waiter)

    def reject(self, change_hash: bytes) -> None:
        """Forget a queued change for good (changes that wait for it keep waiting)."""
        self._drop(change_hash)

    def _id_error(
        self, meta: ChangeMeta, staged: dict[bytes, ChangeMeta], staged_seq: dict[ActorSeq, int]
    ) -> str | None:
        if (meta.actor, meta.seq) in self._seq_max_op or (meta.actor, meta.seq) in staged_seq:
            return f"actor {meta.actor.hex()} already has a change with seq {meta.seq}"
        if meta.start_op < 1 or meta.max_op < meta.start_op - 1:
            return "bad op range"
        floors: list[int] = []
        if meta.seq > 1:
            previous = (meta.actor, meta.seq - 1)
            floors.append(staged_seq.get(previous, self._seq_max_op.get(previous, 0)))
        for dep in meta.deps:
            dep_meta = staged.get(dep) or self._applied.get(dep)
            floors.append(dep_meta.max_op if dep_meta is not None else 0)
        expected = max(floors, default=0) + 1
        if meta.start_op < expected:
            return f"start op {meta.start_op} reuses op ids of the changes it builds on"
        if meta.start_op > expected:
            return (
                f"start op {meta.start_op} skips op ids: the changes it builds on end at"
                f" {expected - 1}"
            )
        if meta.max_op > MAX_OP_COUNTER:
            return f"op counter {meta.max_op} is over the limit {MAX_OP_COUNTER}"
        return None

    def take_ready(self) -> tuple[list[Queued], list[tuple[bytes, str]]]:
        """The queued changes that can be applied now, in causal order, and the ready ones
        whose op ids are inconsistent (with the reason).

        Changes that only wait for changes in the first list are included. Nothing is removed
        from the queue: the caller reports each change with :meth:`mark_applied` or
        :meth:`reject`.
        """
        staged: dict[bytes, ChangeMeta] = {}
        staged_seq: dict[ActorSeq, int] = {}
        pending_count: dict[bytes, int] = {}
        stack = sorted(self._ready, reverse=True)
        ordered: list[Queued] = []
        invalid: list[tuple[bytes, str]] = []
        while stack:
            change_hash = stack.pop()
            queued = self._queued[change_hash]
            meta = queued.meta
            error = self._id_error(meta, staged, staged_seq)
            if error is not None:
                invalid.append((change_hash, error))
                continue
            staged[change_hash] = meta
            staged_seq[(meta.actor, meta.seq)] = meta.max_op
            ordered.append(queued)
            for requirement in (change_hash, (meta.actor, meta.seq)):
                for waiter in self._waiters.get(requirement, ()):
                    left = pending_count.get(waiter, len(self._unmet[waiter])) - 1
                    pending_count[waiter] = left
                    if left == 0:
                        stack.append(waiter)
        return ordered, invalid

    def missing_deps(self) -> list[bytes]:
        """Sorted hashes that queued changes wait for and that are neither applied nor queued."""
        return sorted(
            need
            for need in self._waiters
            if isinstance(need, bytes) and need not in self._queued and need not in self._applied
        )
