"""Documents materialized from their entries, cached, with encrypted local snapshots.

A document is the Automerge state obtained by applying the decrypted payloads of its CHANGE
entries; a DELETE entry marks it deleted. `DocumentMaterializer` keeps recently used documents in
memory and brings each up to date from the store on access (reading only entries that arrived
since it last looked, so another process's writes are seen too). Nothing already applied is
re-verified or re-decrypted.

Snapshots keep the first read of a long document fast: after `SNAPSHOT_EVERY` new entries a
document's Automerge save is written to the store's snapshot table, encrypted with the document's
own key (never in the clear), together with what the cache needs to resume: the arrival sequence
it covers, the entry ids of its heads, the change count and the deletion mark. Snapshots are
derived data: a snapshot that cannot be opened (key not held, damaged) is ignored and the document
is rebuilt from its entries.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .codec import Reader, Writer
from .crdt import AutomergeDocument, change_hash
from .crypto import aead
from .entry import Entry, EntryKind
from .errors import DecodeError, MindooError, MissingKeyError, NotFoundError, VerificationError
from .keyring import KeyRing
from .store import EntryStore, scope_key
from .writer import ChangeRef, Dependency

SNAPSHOT_EVERY = 512
SNAPSHOT_VERSION = 1
_SNAPSHOT_AAD = b"mindoo/snapshot/v1\x00"


@dataclass
class MaterializedDocument:
    """One document's in-memory state and how far it has read the store."""

    document_id: bytes
    doc: AutomergeDocument
    applied_seq: int = 0
    """Highest database arrival sequence whose entry has been taken into account."""
    heads_to_entries: dict[bytes, bytes] = field(default_factory=dict)
    """Automerge change hash -> entry id, for the document's current heads."""
    key_id: bytes | None = None
    """The key id of the document's first entry (names the key its writers use)."""
    deleted_by: bytes | None = None
    change_count: int = 0
    since_snapshot: int = 0
    local_applied: set[bytes] = field(default_factory=set)
    """Ids of entries written through this cache: already in `doc`, skip them on refresh."""
    bad_entries: dict[bytes, str] = field(default_factory=dict)
    """Entries whose payload could not be applied (id -> reason); they are skipped."""
    plain: dict[str, Any] | None = None
    """Cached `to_py()` of the current state; None when stale."""
    refreshed_in_batch: int | None = None
    """The write batch during which the document was last refreshed from the store."""
    drafted_changes: set[bytes] = field(default_factory=set)
    """Hashes of local changes in `doc` that are drafted but not stored yet (their entry ids
    come when their write commits: `note_local_sealed`)."""
    delete_drafted: bool = False
    """A local delete is drafted but not stored yet."""
    last_local: tuple[bytes, bytes] | None = None
    """(change hash, entry id) of the newest local change stored through this cache: Automerge
    makes a local change depend on its actor's previous change even when that is no longer a
    head (another actor built on it)."""

    @property
    def exists(self) -> bool:
        return self.change_count > 0 or self.deleted

    @property
    def deleted(self) -> bool:
        """Deleted by a stored entry, or by a delete drafted here."""
        return self.deleted_by is not None or self.delete_drafted

    def head_dependencies(self) -> tuple[Dependency, ...]:
        """The causal parents of an entry on top of every current head (a delete's deps)."""
        stored = sorted(self.heads_to_entries.values())
        heads = set(self.doc.heads()) if self.drafted_changes else set()
        drafted = [ChangeRef(h) for h in sorted(self.drafted_changes) if h in heads]
        return (*stored, *drafted)


class DocumentMaterializer:
    """Materializes the documents of one (tenant, database) with an LRU cache."""

    def __init__(
        self,
        store: EntryStore,
        tenant_id: bytes,
        database: str,
        keyring: KeyRing,
        max_cached: int = 256,
        current_batch: Callable[[], int | None] = lambda: None,
        use_snapshots: bool = True,
        key_label: Callable[[bytes], str] = lambda key_id: key_id.hex(),
    ) -> None:
        """``key_label(key_id)`` names a key in the MissingKeyError of :meth:`decrypt`
        (``'confidential'``, or the id in hex when the name is unknown)."""
        self._store = store
        self._tenant_id = tenant_id
        self._database = database
        self._keyring = keyring
        self._scope = scope_key(tenant_id, database)
        self._max_cached = max_cached
        self._use_snapshots = use_snapshots
        self._current_batch = current_batch
        self._key_label = key_label
        """The id of the open write batch, or None when every cached change is in the store."""
        self._cache: OrderedDict[bytes, MaterializedDocument] = OrderedDict()
        self._pinned: set[bytes] = set()
        """Documents changed in the open write batch `_pinned_batch`: ahead of the store until
        it commits, so they are never evicted before."""
        self._pinned_batch: int | None = None

    # -- public ------------------------------------------------------------------------------
    def load(self, document_id: bytes, *, must_exist: bool = True) -> MaterializedDocument:
        """The document brought up to date with every stored entry."""
        md = self._cache.get(document_id)
        if md is None:
            snapshot = self._from_snapshot(document_id) if self._use_snapshots else None
            md = snapshot or MaterializedDocument(document_id, AutomergeDocument())
            self._remember(md)
        else:
            self._cache.move_to_end(document_id)
            batch = self._current_batch()
            if batch is not None and md.refreshed_in_batch == batch:
                # Repeatable reads inside a batch: the document was brought up to date when the
                # batch first touched it, and only this batch has changed it since.
                return md
        md.refreshed_in_batch = self._current_batch()
        new, last_seq = self._store.document_updates(
            self._tenant_id, self._database, document_id, md.applied_seq, md.local_applied
        )
        if last_seq > md.applied_seq:
            # Entries written through this cache are already applied: they were not loaded.
            md.local_applied.clear()
            if new:
                self._apply(md, new)
            md.applied_seq = last_seq
        self._maybe_snapshot(md)
        if must_exist and not md.exists:
            self._cache.pop(document_id, None)
            raise NotFoundError(f"no document {document_id.hex()} in database {self._database!r}")
        return md

    def create(self, document_id: bytes, key_id: bytes) -> MaterializedDocument:
        md = MaterializedDocument(document_id, AutomergeDocument(), key_id=key_id)
        self._pin(document_id)
        self._remember(md)
        return md

    def note_local_draft(self, md: MaterializedDocument, hash_: bytes) -> None:
        """Record that local change ``hash_`` was made in ``md`` and drafted for writing (the
        document is ahead of the store until the write commits: pinned in the cache)."""
        self._pin(md.document_id)
        md.drafted_changes.add(hash_)
        md.change_count += 1
        md.since_snapshot += 1
        md.plain = None

    def dependencies(
        self, md: MaterializedDocument, change_hashes: Sequence[bytes]
    ) -> tuple[Dependency, ...]:
        """The causal parents of a local change of ``md`` that depends on ``change_hashes``
        (its Automerge deps): entry ids of stored changes, ChangeRefs of changes drafted in
        the open write. A dep that is neither a head, drafted, nor this cache's last local
        change is looked up among the document's stored entries (one scan).

        Raises MindooError naming the change when no stored entry carries it.
        """
        deps: list[Dependency] = []
        for hash_ in change_hashes:
            entry_id = md.heads_to_entries.get(hash_)
            if entry_id is None and md.last_local is not None and md.last_local[0] == hash_:
                entry_id = md.last_local[1]
            if entry_id is not None:
                deps.append(entry_id)
            elif hash_ in md.drafted_changes:
                deps.append(ChangeRef(hash_))
            else:
                deps.append(self._stored_change(md, hash_))
        return tuple(deps)

    def _stored_change(self, md: MaterializedDocument, hash_: bytes) -> bytes:
        """The id of the stored entry of ``md`` that carries Automerge change ``hash_``."""
        entries = self._store.document_entries(self._tenant_id, self._database, md.document_id)
        for _seq, entry in reversed(entries):
            if entry.kind is not EntryKind.CHANGE or entry.id in md.bad_entries:
                continue
            try:
                if change_hash(self.decrypt(entry)) == hash_:
                    return entry.id
            except (DecodeError, MissingKeyError, VerificationError):
                continue
        raise MindooError(
            f"document {md.document_id.hex()}: no stored entry carries change {hash_.hex()},"
            " which the new change builds on"
        )

    def note_local_sealed(self, md: MaterializedDocument, hash_: bytes, entry: Entry) -> None:
        """Record that the drafted change ``hash_`` of ``md`` is stored as ``entry``."""
        md.drafted_changes.discard(hash_)
        md.last_local = (hash_, entry.id)
        md.local_applied.add(entry.id)
        known = dict(md.heads_to_entries)
        known[hash_] = entry.id
        md.heads_to_entries = {h: known[h] for h in md.doc.heads() if h in known}
        if md.key_id is None:
            md.key_id = entry.header.key_id

    def note_local_delete_draft(self, md: MaterializedDocument) -> None:
        """Record that a delete of ``md`` was drafted for writing (pinned until it commits)."""
        self._pin(md.document_id)
        md.delete_drafted = True
        md.plain = None

    def note_local_delete(self, md: MaterializedDocument, entry: Entry) -> None:
        """Record that the drafted delete of ``md`` is stored as ``entry``."""
        md.local_applied.add(entry.id)
        md.deleted_by = md.deleted_by or entry.id
        md.delete_drafted = False
        md.plain = None

    def forget(self, document_id: bytes) -> None:
        """Drop a cached document (after a failed write, its memory may be ahead of the store)."""
        self._cache.pop(document_id, None)
        self._pinned.discard(document_id)

    def decrypt(self, entry: Entry) -> bytes:
        """The entry's payload; MissingKeyError("no key 'NAME' for this document") when this
        node does not hold the key (named by ``key_label``)."""
        try:
            key = self._keyring.by_id(entry.header.key_id)
        except MissingKeyError:
            raise MissingKeyError(
                f"no key {self._key_label(entry.header.key_id)} for this document"
            ) from None
        return entry.decrypt(key.secret)

    # -- internals ---------------------------------------------------------------------------
    def _pin(self, document_id: bytes) -> None:
        """Keep ``document_id`` cached until the open write batch (if any) commits."""
        batch = self._current_batch()
        if batch is None:
            return
        if batch != self._pinned_batch:
            self._pinned, self._pinned_batch = set(), batch
        self._pinned.add(document_id)

    def _remember(self, md: MaterializedDocument) -> None:
        self._cache[md.document_id] = md
        self._cache.move_to_end(md.document_id)
        # Documents changed in the open batch are ahead of the store: keep them until it
        # commits. Every other document is evicted as usual (least recently used first).
        batch = self._current_batch()
        if batch is None or batch != self._pinned_batch:
            self._pinned, self._pinned_batch = set(), None
        pinned = self._pinned
        cache = self._cache
        budget = len(cache)
        while len(cache) - len(pinned) > self._max_cached and budget > 0:
            budget -= 1
            document_id, oldest = cache.popitem(last=False)
            if document_id in pinned:
                cache[document_id] = oldest

    def _apply(self, md: MaterializedDocument, new: list[tuple[int, Entry]]) -> None:
        payloads: list[tuple[Entry, bytes]] = []
        for _seq, entry in new:
            if entry.kind is EntryKind.DELETE:
                md.deleted_by = md.deleted_by or entry.id
                continue
            if entry.kind is not EntryKind.CHANGE:
                continue
            if md.key_id is None:
                md.key_id = entry.header.key_id
            payloads.append((entry, self.decrypt(entry)))
        md.applied_seq = new[-1][0]
        md.plain = None
        if not payloads:
            return
        candidates = dict(md.heads_to_entries)
        good: list[tuple[Entry, bytes]] = []
        for entry, payload in payloads:
            try:
                candidates[change_hash(payload)] = entry.id
                good.append((entry, payload))
            except DecodeError as exc:
                md.bad_entries[entry.id] = str(exc)
        try:
            md.doc.apply_changes([p for _, p in good])
        except DecodeError:
            # One bad change (e.g. crafted by a member) must not make the document unreadable:
            # the document may be unusable after a failed apply, so rebuild it one change at a
            # time and skip the culprits.
            self._rebuild_skipping_bad(md)
            return
        md.change_count += len(good)
        md.since_snapshot += len(good)
        md.heads_to_entries = {h: candidates[h] for h in md.doc.heads() if h in candidates}

    def _rebuild_skipping_bad(self, md: MaterializedDocument) -> None:
        fresh = MaterializedDocument(md.document_id, AutomergeDocument(), key_id=md.key_id)
        fresh.bad_entries = md.bad_entries
        known: dict[bytes, bytes] = {}
        applied: list[bytes] = []
        entries = self._store.document_entries(self._tenant_id, self._database, md.document_id)
        for _seq, entry in entries:
            if entry.kind is EntryKind.DELETE:
                fresh.deleted_by = fresh.deleted_by or entry.id
                continue
            if entry.kind is not EntryKind.CHANGE or entry.id in fresh.bad_entries:
                continue
            payload = self.decrypt(entry)
            try:
                hash_ = change_hash(payload)
                fresh.doc.apply_changes([payload])
            except DecodeError as exc:
                fresh.bad_entries[entry.id] = str(exc)
                # After a failed apply the document may be unusable: start again from the
                # changes that applied cleanly.
                fresh.doc = AutomergeDocument()
                fresh.doc.apply_changes(applied)
                continue
            applied.append(payload)
            known[hash_] = entry.id
            fresh.change_count += 1
        fresh.applied_seq = entries[-1][0] if entries else 0
        fresh.heads_to_entries = {h: known[h] for h in fresh.doc.heads() if h in known}
        md.__dict__.update(fresh.__dict__)

    def _snapshot_aad(self, document_id: bytes, covered_seq: int) -> bytes:
        return _SNAPSHOT_AAD + self._scope + document_id + struct.pack(">Q", covered_seq)

    def _maybe_snapshot(self, md: MaterializedDocument) -> None:
        if not self._use_snapshots or md.since_snapshot < SNAPSHOT_EVERY:
            return
        if md.key_id is None or md.bad_entries:
            return
        if self._current_batch() is not None or md.drafted_changes:
            # The document holds changes not stored yet (a failed write would drop them).
            return
        if not self._keyring.has_id(md.key_id):
            return
        key = self._keyring.by_id(md.key_id)
        w = Writer().u8(SNAPSHOT_VERSION).varint(len(md.heads_to_entries))
        for hash_, entry_id in sorted(md.heads_to_entries.items()):
            w.fixed(hash_, 32).fixed(entry_id, 32)
        w.varint(md.change_count)
        w.blob(md.deleted_by or b"")
        w.blob(md.doc.save())
        nonce = aead.random_nonce()
        sealed = aead.encrypt(
            key.secret, nonce, w.getvalue(), self._snapshot_aad(md.document_id, md.applied_seq)
        )
        self._store.put_snapshot(
            self._tenant_id,
            self._database,
            md.document_id,
            md.applied_seq,
            key.key_id + nonce + sealed,
        )
        md.since_snapshot = 0

    def _from_snapshot(self, document_id: bytes) -> MaterializedDocument | None:
        found = self._store.get_snapshot(self._tenant_id, self._database, document_id)
        if found is None:
            return None
        covered_seq, blob = found
        key_id, nonce, sealed = blob[:16], blob[16:40], blob[40:]
        if not self._keyring.has_id(key_id):
            return None
        try:
            plain = aead.decrypt(
                self._keyring.by_id(key_id).secret,
                nonce,
                sealed,
                self._snapshot_aad(document_id, covered_seq),
            )
            r = Reader(plain, "snapshot")
            if r.u8("version") != SNAPSHOT_VERSION:
                return None
            heads = {}
            for _ in range(r.varint("heads", max_value=4096)):
                hash_ = r.fixed(32, "head hash")
                heads[hash_] = r.fixed(32, "head entry")
            change_count = r.varint("change count")
            deleted_by = r.blob("deleted", 32) or None
            doc = AutomergeDocument.load(r.blob("save", 1 << 31))
            r.end()
        except (DecodeError, VerificationError):
            return None
        return MaterializedDocument(
            document_id,
            doc,
            applied_seq=covered_seq,
            heads_to_entries=heads,
            key_id=key_id,
            deleted_by=deleted_by,
            change_count=change_count,
        )
