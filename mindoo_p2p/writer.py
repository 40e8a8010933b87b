"""`LocalWriter`: numbers, seals and commits this node's own entries.

One author, one sequence, whatever the processes. An entry's header carries its author's
sequence number in the tenant (``author_seq``) and is signed; the entry id hashes the sealed
bytes. Two processes writing to one home (a daemon and a script, the CLI) must never give two
entries one (tenant, author, author_seq), so numbers are never taken from a per-process cache:
a write is a list of :class:`Draft` (everything of an entry except its number and its id), and
the drafts are sealed inside the LMDB write transaction that stores them
(`EntryStore.append_local`), numbered from the ``author_seq`` table as that transaction sees
it. LMDB serialises writers across processes, so every number continues the one before it.

A draft names its causal parents as entry ids, or as :class:`ChangeRef` when the parent is an
Automerge change drafted earlier in the same write (a document changed twice in one
`batch()`): the Automerge change hash is known before sealing, the entry id only after, so refs
are resolved to entry ids while sealing, in order.

Holding the write lock while sealing costs little: Ed25519 signing is ~19 µs and encryption is
cheaper (measured with ``scripts/bench_store.py``, see docs/architecture.md).

Sealing ahead: a batch's drafts may be sealed ahead, in chunks, by a thread (a `SealingAhead`,
`sealing_ahead.SealingThread`) while the application makes its next changes, numbered from the
authors' positions read when each chain first appears. The write transaction adopts those
entries only if every chain is still exactly where it was assumed, and otherwise seals in
place as above: nothing is stored that was not sealed from the positions of the transaction
that stores it. The rules are in `mindoo_p2p.sealing_ahead`. Without a chunk sealer that
releases the GIL there is no sealing ahead (measured slower: docs/architecture.md, "Local
write rate").

Authorization: own entries pass the admission pipeline's step 4 (`admission.admit`, membership
against the tenants' snapshots) inside the same transaction, marked with
`admission.trust_own_seal` (their ids and signatures were just made here, so they are not
checked again). A refusal stores nothing of the write; the membership the write's tenant-log
records build is handed to ``on_committed`` to publish once the transaction has committed,
exactly as `Node.ingest` publishes it for entries from elsewhere.

The clock: every own entry's author timestamp is :func:`now_ms` here, read when the draft is
made (`Draft.timestamp_ms`'s default).

Batches: inside ``with writer.batch():`` drafts queue up and are sealed and stored together,
in one durable transaction, when the outermost block exits; when it raises, nothing is sealed,
nothing is stored, and no number is used (no gap). Each draft's ``on_sealed(entry)`` runs once
its entry is stored, in the order drafted (so a cache can learn the entry ids of its changes).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, cast

from .admission import Admission, VerifiedEntry, trust_own_seal
from .crypto.signing import SigningKeyPair
from .entry import ID_SIZE, Entry, EntryKind
from .keyring import TenantKey
from .membership import MembershipLog
from .rejection import Rejected
from .store import AuthorPositions, OwnAuthorizer, SealInTransaction

CHANGE_HASH_SIZE = 32


def now_ms() -> int:
    """The sealing clock: the author timestamp (ms since the epoch) of every own entry."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True, init=False)
class ChangeRef:
    """A causal parent that is an Automerge change drafted earlier in the same write, named
    by its change hash; resolved to that draft's entry id when sealed."""

    change_hash: bytes

    def __init__(self, change_hash: bytes) -> None:
        # Through the slot's own setter (one is made for most batched changes; a frozen
        # dataclass's __init__ sets it by name through object.__setattr__).
        if len(change_hash) != CHANGE_HASH_SIZE:
            raise ValueError(f"a change hash is {CHANGE_HASH_SIZE} bytes")
        _set_ref_hash(self, change_hash)


_set_ref_hash = vars(ChangeRef)["change_hash"].__set__


Dependency = bytes | ChangeRef
"""A draft's causal parent: a stored entry's id (32 bytes), or a change of this write."""


@dataclass(frozen=True, slots=True, init=False)
class Draft:
    """An own entry before it is sealed: everything but its sequence number (given inside the
    write transaction) and the ids of parents drafted in the same write.

    Made for every local change, so its ``__init__`` sets the slots through their own setters
    (`_DRAFT_SETTERS`; a frozen dataclass's sets each field by name through
    ``object.__setattr__``) and checks in one pass what must be checked: each dependency is a
    `ChangeRef` or a 32-byte entry id, the change hash 32 bytes (ValueError otherwise)."""

    kind: EntryKind
    tenant_id: bytes
    database: str
    document_id: bytes
    signer: SigningKeyPair
    key: TenantKey
    payload: bytes
    deps: tuple[Dependency, ...]
    change_hash: bytes | None
    """The Automerge change this draft carries, so later drafts of the document can name it
    with a :class:`ChangeRef`."""
    on_sealed: Callable[[Entry], None] | None
    """Called with the stored entry once the write has committed."""
    timestamp_ms: int
    """The author's time of the write (taken when drafted, not when sealed): `now_ms`."""

    has_change_refs: bool = field(init=False, repr=False, compare=False)
    """Whether any of ``deps`` is a ChangeRef (set when made: sealing resolves only those)."""

    def __init__(
        self,
        kind: EntryKind,
        tenant_id: bytes,
        database: str,
        document_id: bytes,
        signer: SigningKeyPair,
        key: TenantKey,
        payload: bytes,
        deps: tuple[Dependency, ...] = (),
        change_hash: bytes | None = None,
        on_sealed: Callable[[Entry], None] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        refs = False
        for dep in deps:
            if isinstance(dep, ChangeRef):
                refs = True
            elif len(dep) != ID_SIZE:
                raise ValueError(f"a dependency is a {ID_SIZE}-byte entry id or a ChangeRef")
        if change_hash is not None and len(change_hash) != CHANGE_HASH_SIZE:
            raise ValueError(f"a change hash is {CHANGE_HASH_SIZE} bytes")
        _set_kind(self, kind)
        _set_tenant_id(self, tenant_id)
        _set_database(self, database)
        _set_document_id(self, document_id)
        _set_signer(self, signer)
        _set_key(self, key)
        _set_payload(self, payload)
        _set_deps(self, deps)
        _set_change_hash(self, change_hash)
        _set_on_sealed(self, on_sealed)
        _set_timestamp_ms(self, now_ms() if timestamp_ms is None else timestamp_ms)
        _set_has_change_refs(self, refs)


_DRAFT_SETTERS = tuple(vars(Draft)[name].__set__ for name in Draft.__dataclass_fields__)
(
    _set_kind,
    _set_tenant_id,
    _set_database,
    _set_document_id,
    _set_signer,
    _set_key,
    _set_payload,
    _set_deps,
    _set_change_hash,
    _set_on_sealed,
    _set_timestamp_ms,
    _set_has_change_refs,
) = _DRAFT_SETTERS


class UnresolvedDependencyError(ValueError):
    """A draft names a change (ChangeRef) that no earlier draft of the write carries."""

    @classmethod
    def of(cls, document_id: bytes, change_hash: bytes) -> UnresolvedDependencyError:
        """The error for a draft of ``document_id`` naming ``change_hash`` (both sealers')."""
        return cls(
            f"a draft of document {document_id.hex()} depends on change {change_hash.hex()},"
            " which no earlier draft of this write carries"
        )


ChainKey = tuple[bytes, bytes]
"""A chain: (tenant id, author public key)."""

ChangeKey = tuple[bytes, str, bytes, bytes]
"""A drafted change: (tenant id, database, document id, Automerge change hash)."""


@dataclass(slots=True)
class SealingState:
    """Where a write's sealing stands, carried from one `seal_drafts` call to the next when a
    write is sealed in parts (in order): the next (author_seq, prev) of each chain sealed so far
    and the entry id of each change sealed so far (to resolve later ChangeRefs)."""

    next_position: dict[ChainKey, tuple[int, bytes]] = field(default_factory=dict)
    sealed_changes: dict[ChangeKey, bytes] = field(default_factory=dict)


def seal_drafts(
    drafts: Sequence[Draft], positions: AuthorPositions, state: SealingState | None = None
) -> list[Entry]:
    """Seal ``drafts`` (see `seal_drafts_in_python`, the rules): natively when the C sealer is
    built (`native_seal`: the same numbering, errors and bytes, the cryptography of each
    author's run in one call with the GIL released), else in Python."""
    native = _native_sealer()
    if native is not None:
        return native(drafts, positions, state)
    return seal_drafts_in_python(drafts, positions, state)


_NativeSealer = Callable[[Sequence[Draft], AuthorPositions, "SealingState | None"], list[Entry]]
_native: list[_NativeSealer | None] = []


def _native_sealer() -> _NativeSealer | None:
    """`native_seal.seal_drafts` when available, else None (imported on first use: it imports
    this module)."""
    if not _native:
        from . import native_seal

        _native.append(native_seal.seal_drafts if native_seal.available() else None)
    return _native[0]


def seal_drafts_in_python(
    drafts: Sequence[Draft], positions: AuthorPositions, state: SealingState | None = None
) -> list[Entry]:
    """Seal ``drafts`` in order, in entry format 2: each (tenant, author) numbered on from
    ``positions.last_seq`` and chained on from ``positions.last_entry_id`` (each entry names
    the author's previous one as ``prev``), each ChangeRef resolved to the entry id of the
    earlier draft of the same document that carries that change. Pure apart from the random nonces.

    ``state`` (updated in place) continues an earlier call's sealing: its chains go on from
    where that call left them (``positions`` is asked only about the others) and its changes
    resolve ChangeRefs. Without it the drafts are a whole write. After an exception the
    state says nothing reliable (the native sealer leaves it where its last whole run left
    it, this one where it stopped): discard it with the write.

    Raises UnresolvedDependencyError for a ChangeRef no earlier draft carries.
    """
    if state is None:
        state = SealingState()
    next_position = state.next_position
    sealed_changes = state.sealed_changes
    entries: list[Entry] = []
    seal = Entry.seal
    for draft in drafts:
        tenant_id = draft.tenant_id
        author = (tenant_id, draft.signer.public_key)
        position = next_position.get(author)
        if position is None:
            position = (positions.last_seq(*author) + 1, positions.last_entry_id(*author))
        seq, prev = position
        # Without a ChangeRef every dep is an entry id already (`Draft.has_change_refs`).
        deps = cast("tuple[bytes, ...] | list[bytes]", draft.deps)
        if draft.has_change_refs:
            deps = []
            for dep in draft.deps:
                if isinstance(dep, ChangeRef):
                    key = (tenant_id, draft.database, draft.document_id, dep.change_hash)
                    entry_id = sealed_changes.get(key)
                    if entry_id is None:
                        raise UnresolvedDependencyError.of(draft.document_id, dep.change_hash)
                    deps.append(entry_id)
                else:
                    deps.append(dep)
        entry = seal(
            kind=draft.kind,
            tenant_id=tenant_id,
            database=draft.database,
            document_id=draft.document_id,
            author=draft.signer,
            author_seq=seq,
            timestamp_ms=draft.timestamp_ms,
            deps=deps,
            key_id=draft.key.key_id,
            key=draft.key.secret,
            payload=draft.payload,
            prev=prev,
        )
        entry_id = entry.id
        next_position[author] = (seq + 1, entry_id)
        if draft.change_hash is not None:
            key = (tenant_id, draft.database, draft.document_id, draft.change_hash)
            sealed_changes[key] = entry_id
        entries.append(entry)
    return entries


class LocalAppendStore(Protocol):
    """What the writer needs of the store: `EntryStore.append_local`."""

    def append_local(
        self, seal: SealInTransaction, authorize: OwnAuthorizer | None = None
    ) -> list[Entry]: ...


class SealingAhead(Protocol):
    """Seals an open batch's drafts ahead of its write transaction, in order
    (`sealing_ahead.SealingThread`; the rules are in `mindoo_p2p.sealing_ahead`)."""

    @property
    def chunk(self) -> int:
        """How many drafts the writer hands over at a time (the rest at the batch's end)."""
        ...

    def seal_ahead(self, drafts: Sequence[Draft]) -> None:
        """Start sealing ``drafts``, the open batch's next drafts in order."""
        ...

    def sealed(self, positions: AuthorPositions) -> list[Entry] | None:
        """Inside the batch's write transaction: every draft handed over, sealed, if each
        chain is exactly where it was assumed in ``positions``; else None (seal them now)."""
        ...

    def drop(self) -> None:
        """Forget the open batch's speculation: it will never be stored."""
        ...

    def close(self) -> None:
        """Stop sealing ahead (idempotent)."""
        ...


class EntryWriter(Protocol):
    """The one writing seam a tenant (its access and key work) and its databases are given:
    numbers, seals and commits this node's own entries. Implemented by `LocalWriter`."""

    def write(self, drafts: Sequence[Draft]) -> None:
        """Seal and store ``drafts`` now, or when the open batch commits; raises
        OwnEntryRefusedError (a VerificationError) when membership refuses one."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group every write in the block into one durable transaction, all or nothing."""
        ...

    @property
    def current_batch(self) -> int | None:
        """The id of the open write batch, or None."""
        ...


AdmitOwn = Callable[[Sequence[VerifiedEntry]], Admission]
"""Step 4 of the admission pipeline over a write's own entries (`Node` passes
`admission.admit` over its tenants' membership snapshots). Pure: it must not publish."""

Committed = Callable[[list[Entry], Mapping[bytes, MembershipLog]], None]
"""Told the stored entries (commit order) and, by tenant id, the membership logs their
tenant-log records built: to publish now that the transaction has committed."""


def _nothing(_: object) -> None:
    return None


def _nothing_committed(_entries: list[Entry], _memberships: Mapping[bytes, MembershipLog]) -> None:
    return None


class LocalWriter:
    """Seals and commits this node's own drafts, now or at the end of a batch.

    Meant for one thread (like `Node`). Hooks, all optional:

    - ``before_commit(drafts)`` runs just before the write transaction (e.g. bring caches that
      another process may have made stale, such as membership, up to date); if it raises,
      nothing is written;
    - ``on_committed(entries, memberships)`` runs after the commit and after every draft's
      ``on_sealed``, with the entries in commit order and the membership logs (by tenant id)
      that ``admit`` built from the write's tenant-log records, to publish;
    - ``on_discarded(drafts)`` runs when drafts will never be stored: their batch raised, or
      sealing, the membership check or the write failed (the exception then propagates); and
      for stored drafts whose ``on_sealed`` did not run because it or an earlier one raised
      (what was cached of them is dropped; ``on_committed`` still runs, then the exception
      propagates).

    With ``seal_ahead`` (a `SealingAhead`), a batch's drafts are handed to it in chunks of
    its ``chunk`` as they are drafted, the rest at the batch's end, and the write
    transaction adopts what it sealed when every chain is where it was assumed. `close` stops
    it.
    """

    def __init__(
        self,
        store: LocalAppendStore,
        admit: AdmitOwn | None = None,
        *,
        before_commit: Callable[[Sequence[Draft]], None] = _nothing,
        on_committed: Committed = _nothing_committed,
        on_discarded: Callable[[Sequence[Draft]], None] = _nothing,
        seal_ahead: SealingAhead | None = None,
    ) -> None:
        self._store = store
        self._admit = admit
        self._before_commit = before_commit
        self._on_committed = on_committed
        self._on_discarded = on_discarded
        self._depth = 0
        self._serial = 0
        self._pending: list[Draft] = []
        self._ahead = seal_ahead
        self._chunk = seal_ahead.chunk if seal_ahead is not None else sys.maxsize
        self._handed = 0
        """How many of the open batch's drafts were handed to ``seal_ahead``."""

    @property
    def current_batch(self) -> int | None:
        """The id of the open write batch, or None."""
        return self._serial if self._depth else None

    def write(self, drafts: Sequence[Draft]) -> None:
        """Seal and store ``drafts`` now, in one durable transaction, or queue them until the
        open batch ends. Raises OwnEntryRefusedError when the membership check refuses one
        (nothing stored), StoreError when the store cannot be written."""
        if self._depth:
            pending = self._pending
            pending.extend(drafts)
            if len(pending) - self._handed >= self._chunk:
                self._hand_over_chunks()
            return
        self._commit(list(drafts))

    def _hand_over_chunks(self) -> None:
        """Hand the open batch's next full chunks to ``seal_ahead``."""
        assert self._ahead is not None
        pending, chunk = self._pending, self._chunk
        while len(pending) - self._handed >= chunk:
            start = self._handed
            # Counted before the hand-over: an exception from inside it (a signal's
            # KeyboardInterrupt at its yield, caught by the application inside the batch)
            # must not make the next hand-over queue the same drafts again.
            self._handed = start + chunk
            self._ahead.seal_ahead(pending[start : start + chunk])

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group every write in the block into one durable transaction (group commit).

        All or nothing: when the block raises, none of its drafts is sealed or stored.
        Batches nest; the outermost one commits.
        """
        if not self._depth:
            self._serial += 1
        self._depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            self._depth -= 1
            if self._depth == 0:
                pending, self._pending = self._pending, []
                handed, self._handed = self._handed, 0
                if ok:
                    self._commit(pending, handed)
                else:
                    if handed:
                        assert self._ahead is not None
                        self._ahead.drop()
                    if pending:
                        self._on_discarded(pending)

    @property
    def seal_ahead(self) -> SealingAhead | None:
        """What seals this writer's batches ahead (`sealing_ahead.SealingThread`), if anything."""
        return self._ahead

    def close(self) -> None:
        """Stop sealing ahead (its thread); idempotent. Writing afterwards seals in the
        transaction."""
        if self._ahead is not None:
            self._ahead.close()

    def _commit(self, drafts: list[Draft], handed: int = 0) -> None:
        """Seal, check and store ``drafts`` in one write transaction. When the first
        ``handed`` of them went to ``seal_ahead``, hand it the rest and adopt what it sealed
        if the transaction's positions are the ones it assumed."""
        if not drafts:
            return
        ahead = self._ahead if handed else None
        sealed: list[Entry] = []
        memberships: dict[bytes, MembershipLog] = {}

        def seal(positions: AuthorPositions) -> list[Entry]:
            entries = None if ahead is None else ahead.sealed(positions)
            if entries is None or len(entries) != len(drafts):  # not one entry per draft:
                entries = seal_drafts(drafts, positions)  # a hand-over went amiss; seal here
            sealed[:] = entries
            return sealed

        def authorize(entries: Sequence[Entry]) -> list[Rejected]:
            assert self._admit is not None
            admitted = self._admit([trust_own_seal(entry) for entry in entries])
            memberships.clear()
            memberships.update(admitted.memberships)
            return admitted.rejected

        try:
            if ahead is not None and len(drafts) > handed:
                ahead.seal_ahead(drafts[handed:])  # the rest
            self._before_commit(drafts)
            stored = self._store.append_local(seal, authorize if self._admit else None)
        except BaseException:
            if ahead is not None:
                ahead.drop()
            self._on_discarded(drafts)
            raise
        done = 0
        try:
            for draft, entry in zip(drafts, sealed, strict=True):
                if draft.on_sealed is not None:
                    draft.on_sealed(entry)
                done += 1
        except BaseException:
            # Stored, but the caches of this draft and the later ones were not told (a
            # KeyboardInterrupt in a callback): they are dropped and read again from the store.
            self._on_discarded(drafts[done:])
            raise
        finally:  # what is stored is published whatever a callback raised
            self._on_committed(stored, memberships)
