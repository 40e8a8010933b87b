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
is rebuilt from its entries. The snapshot's format and sealing are `document_snapshot`'s.

Which changes may be applied (`DocumentMaterializer._open_change`, the same rule on every node
that holds the keys, whatever the arrival order; see `document_identity`):

==========================================  =================================================
the change entry                             outcome
==========================================  =================================================
key of another family than the document id   skipped for good (``bad_entries``)
key held, ciphertext does not open           skipped for good (``bad_entries``)
actor not bound to the entry's author        skipped for good (``bad_entries``)
Automerge refuses the change                 skipped for good (``bad_entries``)
change carried by an earlier entry already   skipped for good (``bad_entries``)
(actor, seq) claimed by 2 different changes  all of them skipped for good (``bad_entries``)
key of the document's family, not held       MissingKeyError for the whole document (the
                                             document needs a version this node lacks)
key unknown, or (legacy id) not held         skipped until the key is held (``unreadable``)
==========================================  =================================================

One skipped change never makes the rest of the document unreadable; a document none of whose
changes can be read raises MissingKeyError naming the key. Skipped entries are logged once and
listed by `skipped_entries`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .crdt import AutomergeDocument, ChangeIdentity, change_hash, change_identity
from .crdt.change_chunk import ChangeChunk, parse_change
from .document_identity import KeyFamilies, actor_error, bound_actor
from .document_snapshot import SnapshotContents, open_snapshot, seal_snapshot, snapshot_key_id
from .entry import Entry, EntryKind
from .errors import DecodeError, MindooError, MissingKeyError, NotFoundError, VerificationError
from .keyring import KeyRing
from .store import EntryStore, scope_key
from .writer import ChangeRef, Dependency

SNAPSHOT_EVERY = 512
MAX_LOGGED_SKIPS = 4096
"""Skipped entries remembered as logged (beyond, a skip may be logged again)."""

log = logging.getLogger(__name__)

_DUPLICATE = "carries an Automerge change that an earlier entry carries already"

_PROBE_DOCUMENT = AutomergeDocument()
"""Stands for the document while `load_single_change` checks its change (never read nor
returned: replaced by the loaded document, or the probe is dropped)."""


@dataclass
class MaterializedDocument:
    """One document's in-memory state and how far it has read the store."""

    document_id: bytes
    doc: AutomergeDocument
    applied_seq: int = 0
    """Highest database arrival sequence whose entry has been taken into account."""
    heads_to_entries: dict[bytes, bytes] = field(default_factory=dict)
    """Automerge change hash -> entry id, for the document's current heads."""
    family: str | None = None
    """The key family the document id is bound to (None: a legacy id, see
    `document_identity`)."""
    legacy_family: str | None = None
    """For a legacy id: the family of its root changes, once `family_for_writing` found it
    (forgotten when another root change arrives)."""
    applied_families: set[str] = field(default_factory=set)
    """The key families of the changes applied (what a snapshot may be sealed under)."""
    deleted_by: bytes | None = None
    change_count: int = 0
    since_snapshot: int = 0
    local_applied: set[bytes] = field(default_factory=set)
    """Ids of entries written through this cache since the store was last read (all stored
    after `applied_seq`): already in `doc`, skip them on refresh (`EntryStore.document_updates`
    relies on it)."""
    bad_entries: dict[bytes, str] = field(default_factory=dict)
    """Entries that may never be applied (id -> reason); they are skipped."""
    unreadable: dict[bytes, bytes] = field(default_factory=dict)
    """Entries skipped because this node does not hold their key (id -> key id): the document
    is rebuilt once it does."""
    plain: dict[str, Any] | None = None
    """Cached `to_py()` of the current state; None when stale."""
    refreshed_in_batch: int | None = None
    """The write batch during which the document was last refreshed from the store."""
    drafted_changes: set[bytes] = field(default_factory=set)
    """Hashes of local changes in `doc` that are drafted but not stored yet (their entry ids
    come when their write commits: `note_local_sealed`)."""
    stored_not_in_heads: dict[bytes, bytes] = field(default_factory=dict)
    """Change hash -> entry id of the local changes `note_local_sealed` was told of while
    later drafts of the same write were still to come: `heads_to_entries` takes them in
    after the last one (the heads are looked up once a write, not once a change)."""
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
        families: KeyFamilies | None = None,
        author: bytes | None = None,
    ) -> None:
        """``key_label(key_id)`` names a key in the MissingKeyError of :meth:`decrypt`
        (``'confidential'``, or the id in hex when the name is unknown). ``families`` tells
        the key family of key ids and document ids (by default: the keys of ``keyring``).
        ``author``: this node's signing public key, which local changes' actors are bound to
        (None: a read-only materializer, which cannot `create` documents)."""
        self._store = store
        self._tenant_id = tenant_id
        self._database = database
        self._keyring = keyring
        self._scope = scope_key(tenant_id, database)
        self._max_cached = max_cached
        self._use_snapshots = use_snapshots
        self._current_batch = current_batch
        """The id of the open write batch, or None when every cached change is in the store."""
        self._key_label = key_label
        self._families = families or KeyFamilies.of_keyring(tenant_id, keyring)
        self._author = author
        self._logged: set[tuple[bytes, str]] = set()
        """Skipped entries logged already (each is logged once per materializer)."""
        self._cache: OrderedDict[bytes, MaterializedDocument] = OrderedDict()
        self._pinned: set[bytes] = set()
        """Documents changed in the open write batch `_pinned_batch`: ahead of the store until
        it commits, so they are never evicted before."""
        self._pinned_batch: int | None = None

    # -- public ------------------------------------------------------------------------------
    def load(self, document_id: bytes, *, must_exist: bool = True) -> MaterializedDocument:
        """The document brought up to date with every stored entry.

        MissingKeyError when none of its changes can be read here and at least one is sealed
        under a key this node does not hold, or when a change is sealed under a version of the
        document's own key family that this node lacks."""
        md = self._cache.get(document_id)
        if md is not None and md.unreadable and self._holds_any(md.unreadable.values()):
            # A key that opens skipped changes arrived (a key file): start again.
            self.forget(document_id)
            md = None
        if md is None:
            snapshot = self._from_snapshot(document_id) if self._use_snapshots else None
            md = snapshot or self._new_document(document_id)
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
        if new and md.family is None and self._rebind(md):
            return self.load(document_id, must_exist=must_exist)
        if last_seq > md.applied_seq:
            # Entries written through this cache are already applied: they were not loaded.
            md.local_applied.clear()
            if new:
                try:
                    self._apply(md, new)
                except MissingKeyError:
                    self.forget(document_id)
                    raise
            md.applied_seq = last_seq
        if md.change_count == 0 and md.unreadable and not md.deleted:
            self.forget(document_id)
            label = self._key_label(next(iter(md.unreadable.values())))
            raise MissingKeyError(f"no key {label} for this document")
        self._maybe_snapshot(md)
        if must_exist and not md.exists:
            self._cache.pop(document_id, None)
            raise NotFoundError(f"no document {document_id.hex()} in database {self._database!r}")
        return md

    def load_single_change(
        self, document_id: bytes, entries: Sequence[tuple[int, Entry]]
    ) -> MaterializedDocument | None:
        """What `load` returns for a document whose stored entries (ALL of them, ``entries``,
        as `EntryStore.documents_entries` reads a page of documents in one transaction) are a
        single root change that applies on its own (most records): one decrypt, one parse,
        one Automerge load (`AutomergeDocument.from_root_change`), with the checks of
        `_open_change`; no cache, no snapshot (a one-change document has none).

        None for any other document, or when the change is not taken at once (skipped,
        unreadable, refused): the caller uses `load`, which records and names why.
        MissingKeyError as `load`: sealed under a version of the document's key family this
        node lacks."""
        if len(entries) != 1:
            return None
        seq, entry = entries[0]
        if entry.kind is not EntryKind.CHANGE or entry.deps:
            return None
        md = MaterializedDocument(
            document_id, _PROBE_DOCUMENT, family=self._families.of_document(document_id)
        )
        opened = self._open_change(md, entry)
        if opened is None:
            return None
        payload, identity, chunk = opened
        if chunk is None:
            return None
        actor = bound_actor(self._author) if self._author is not None else None
        doc = AutomergeDocument.from_root_change(payload, chunk, actor)
        if doc is None:
            return None
        md.doc = doc
        md.applied_seq = seq
        md.heads_to_entries = {identity.hash: entry.id}
        md.change_count = md.since_snapshot = 1
        return md

    def create(self, document_id: bytes, family: str) -> MaterializedDocument:
        """A new, empty document bound to key family ``family`` (its id carries the tag)."""
        if self._author is None:
            raise MindooError("this materializer is read-only: it has no author to write as")
        md = MaterializedDocument(
            document_id, AutomergeDocument(bound_actor(self._author)), family=family
        )
        md.applied_families.add(family)
        self._pin(document_id)
        self._remember(md)
        return md

    def family_for_writing(self, md: MaterializedDocument) -> str:
        """The key family new changes of ``md`` are sealed under: the one its id is bound to,
        or for a legacy id the family of its root changes (those with no causal parents).

        Raises MindooError when a legacy document's roots are under different families (a
        member may have added a root under another key: which one is genuine cannot be told,
        so nothing is written rather than maybe sealing under the wrong key) or none is
        known."""
        if md.family is not None:
            return md.family
        if md.legacy_family is not None:
            return md.legacy_family
        entries = self._store.document_entries(self._tenant_id, self._database, md.document_id)
        roots = {
            self._families.of_key(entry.header.key_id)
            for _seq, entry in entries
            if entry.kind is EntryKind.CHANGE and not entry.deps
        }
        only = next(iter(roots)) if len(roots) == 1 else None
        if only is not None:
            md.legacy_family = only
            return only
        shown = ", ".join(sorted(repr(r) if r else "an unknown key" for r in roots)) or "none"
        raise MindooError(
            f"document {md.document_id.hex()} predates key-bound document ids and its first"
            f" changes are under different keys ({shown}): not writing to it, so as never to"
            " seal under the wrong key; copy its content into a new document"
        )

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
        stored = md.heads_to_entries
        last_local = md.last_local
        deps: list[Dependency] = []
        for hash_ in change_hashes:
            entry_id = stored.get(hash_)
            if entry_id is not None:
                deps.append(entry_id)
            elif last_local is not None and last_local[0] == hash_:
                deps.append(last_local[1])
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

    def note_local_sealed(
        self, md: MaterializedDocument, hash_: bytes, family: str, entry: Entry
    ) -> None:
        """Record that the drafted change ``hash_`` of ``md`` is stored as ``entry``, sealed
        under a key of family ``family`` (`family_for_writing`). A write's drafts are noted
        in the order drafted; `heads_to_entries` is brought up to date after the last of the
        document's drafted changes (those before it cannot be read in between)."""
        entry_id = entry.id
        drafted = md.drafted_changes
        drafted.discard(hash_)
        md.last_local = (hash_, entry_id)
        md.local_applied.add(entry_id)
        md.applied_families.add(family)
        noted = md.stored_not_in_heads
        noted[hash_] = entry_id
        if drafted:
            return
        stored = md.heads_to_entries
        md.heads_to_entries = {
            h: noted[h] if h in noted else stored[h]
            for h in md.doc.heads()
            if h in noted or h in stored
        }
        noted.clear()

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

    def readable_changes(
        self, md: MaterializedDocument, entries: Sequence[Entry]
    ) -> list[tuple[Entry, bytes]]:
        """The change entries among ``entries`` that `load` would apply to ``md``, with their
        payloads (for time travel: the same rule as the current state)."""
        probe = MaterializedDocument(md.document_id, AutomergeDocument(), family=md.family)
        found: list[tuple[Entry, bytes]] = []
        for entry in entries:
            if entry.kind is not EntryKind.CHANGE or entry.id in md.bad_entries:
                continue
            opened = self._open_change(probe, entry)
            if opened is not None:
                found.append((entry, opened[0]))
        return found

    def skipped_entries(self, md: MaterializedDocument) -> dict[bytes, str]:
        """Entry id -> why it is not applied to ``md`` (bad for good, or key not held)."""
        skipped = dict(md.bad_entries)
        for entry_id, key_id in md.unreadable.items():
            skipped[entry_id] = f"no key {self._key_label(key_id)} on this node"
        return skipped

    # -- internals ---------------------------------------------------------------------------
    def _new_document(self, document_id: bytes) -> MaterializedDocument:
        actor = bound_actor(self._author) if self._author is not None else None
        return MaterializedDocument(
            document_id,
            AutomergeDocument(actor),
            family=self._families.of_document(document_id),
        )

    def _rebind(self, md: MaterializedDocument) -> bool:
        """Forget ``md``, read under the legacy rule so far, when its id turns out to be bound
        to a family this node has just heard of (a key announcement arrived since): True when
        it was forgotten, to be read again under that family's rule."""
        if md.drafted_changes or md.delete_drafted:
            return False
        if self._families.of_document(md.document_id) is None:
            return False
        self.forget(md.document_id)
        return True

    def _holds_any(self, key_ids: Iterable[bytes]) -> bool:
        return any(self._keyring.has_id(key_id) for key_id in key_ids)

    def _skip(self, md: MaterializedDocument, entry: Entry, reason: str) -> None:
        if (entry.id, reason) not in self._logged:
            if len(self._logged) < MAX_LOGGED_SKIPS:
                self._logged.add((entry.id, reason))
            log.warning(
                "document %s: skipping entry %s: %s", md.document_id.hex(), entry.id.hex(), reason
            )
        md.bad_entries[entry.id] = reason

    def _open_change(
        self, md: MaterializedDocument, entry: Entry
    ) -> tuple[bytes, ChangeIdentity, ChangeChunk | None] | None:
        """(payload, Automerge hash/actor/seq, the parsed change) of a CHANGE entry that may
        be applied to ``md``, or None after recording why not (see the module's table).
        MissingKeyError when the entry is under a version of the document's own family that
        this node lacks. The change is parsed once here (`parse_change`) and handed to
        `AutomergeDocument.apply_changes` as it is; a change that does not parse fully is
        returned unparsed (None), and applying it reports why, as before."""
        key_id = entry.header.key_id
        family = self._families.of_key(key_id)
        if md.family is not None and family is not None and family != md.family:
            self._skip(
                md, entry, f"sealed under key {family!r}, but the document is under {md.family!r}"
            )
            return None
        if not self._keyring.has_id(key_id):
            if md.family is not None and family == md.family:
                raise MissingKeyError(f"no key {family!r} for this document")
            md.unreadable[entry.id] = key_id
            return None
        key = self._keyring.by_id(key_id)
        try:
            payload = entry.decrypt(key.secret)
            chunk: ChangeChunk | None
            try:
                chunk = parse_change(payload)
                identity = ChangeIdentity(chunk.hash, chunk.actor, chunk.seq)
            except DecodeError:
                chunk, identity = None, change_identity(payload)
        except VerificationError:
            self._skip(md, entry, f"does not decrypt under key {key.name!r}")
            return None
        except DecodeError as exc:
            self._skip(md, entry, str(exc))
            return None
        error = actor_error(identity.actor, entry.author, bound_document=md.family is not None)
        if error is not None:
            self._skip(md, entry, error)
            return None
        md.applied_families.add(key.name)
        return payload, identity, chunk

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
        candidates = dict(md.heads_to_entries)
        good: list[bytes] = []
        parsed: list[ChangeChunk | None] = []
        batch: set[bytes] = set()
        for _seq, entry in new:
            if entry.kind is EntryKind.DELETE:
                md.deleted_by = md.deleted_by or entry.id
                continue
            if entry.kind is not EntryKind.CHANGE:
                continue
            if not entry.deps:
                md.legacy_family = None  # a new root: look at the roots again before writing
            opened = self._open_change(md, entry)
            if opened is None:
                continue
            payload, identity, chunk = opened
            hash_ = identity.hash
            if hash_ in batch or md.doc.has_change(hash_) or md.doc.is_waiting(hash_):
                self._skip(md, entry, _DUPLICATE)
                continue
            batch.add(identity.hash)
            candidates[identity.hash] = entry.id
            good.append(payload)
            parsed.append(chunk)
        md.applied_seq = new[-1][0]
        md.plain = None
        if not good:
            return
        try:
            md.doc.apply_changes(good, parsed=parsed)
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
        """Rebuild ``md`` from every stored entry, one change at a time, skipping what may not
        be applied. First, changes that claim one (actor, seq) with different content (an
        author equivocating: Automerge keeps whichever comes first, so replicas would differ
        by arrival order) are all skipped, whatever order they came in."""
        fresh = self._new_document(md.document_id)
        actor = fresh.doc.actor_id
        fresh.bad_entries = md.bad_entries
        entries = self._store.document_entries(self._tenant_id, self._database, md.document_id)
        opened: list[tuple[Entry, bytes, ChangeIdentity]] = []
        claims: dict[tuple[bytes, int], set[bytes]] = {}
        for _seq, entry in entries:
            if entry.kind is EntryKind.DELETE:
                fresh.deleted_by = fresh.deleted_by or entry.id
                continue
            if entry.kind is not EntryKind.CHANGE or entry.id in fresh.bad_entries:
                continue
            change = self._open_change(fresh, entry)
            if change is not None:
                opened.append((entry, change[0], change[1]))
                claims.setdefault((change[1].actor, change[1].seq), set()).add(change[1].hash)
        known: dict[bytes, bytes] = {}
        applied: list[bytes] = []
        for entry, payload, identity in opened:
            if identity.hash in known:
                self._skip(fresh, entry, _DUPLICATE)
                continue
            claimed = claims[(identity.actor, identity.seq)]
            if len(claimed) > 1:
                self._skip(
                    fresh,
                    entry,
                    f"automerge actor {identity.actor.hex()} seq {identity.seq} is claimed by"
                    f" {len(claimed)} different changes",
                )
                continue
            try:
                fresh.doc.apply_changes([payload])
            except DecodeError as exc:
                self._skip(fresh, entry, str(exc))
                # After a failed apply the document may be unusable: start again from the
                # changes that applied cleanly.
                fresh.doc = AutomergeDocument(actor)
                fresh.doc.apply_changes(applied)
                continue
            applied.append(payload)
            known[identity.hash] = entry.id
            fresh.change_count += 1
        fresh.applied_seq = entries[-1][0] if entries else 0
        fresh.heads_to_entries = {h: known[h] for h in fresh.doc.heads() if h in known}
        md.__dict__.update(fresh.__dict__)

    def _maybe_snapshot(self, md: MaterializedDocument) -> None:
        if not self._use_snapshots or md.since_snapshot < SNAPSHOT_EVERY:
            return
        if md.bad_entries or md.unreadable or len(md.applied_families) != 1:
            # Only a document whose every change is under one family is saved, sealed under
            # that family's key (so shredding the family drops the snapshot too).
            return
        if self._current_batch() is not None or md.drafted_changes:
            # The document holds changes not stored yet (a failed write would drop them).
            return
        family = next(iter(md.applied_families))
        if family not in self._keyring.names():
            return
        contents = SnapshotContents(
            md.heads_to_entries, md.change_count, md.deleted_by, md.doc.save()
        )
        blob = seal_snapshot(
            self._keyring.current(family), self._scope, md.document_id, md.applied_seq, contents
        )
        self._store.put_snapshot(
            self._tenant_id, self._database, md.document_id, md.applied_seq, blob
        )
        md.since_snapshot = 0

    def _from_snapshot(self, document_id: bytes) -> MaterializedDocument | None:
        found = self._store.get_snapshot(self._tenant_id, self._database, document_id)
        if found is None:
            return None
        covered_seq, blob = found
        key_id = snapshot_key_id(blob)
        if not self._keyring.has_id(key_id):
            return None
        key = self._keyring.by_id(key_id)
        family = self._families.of_document(document_id)
        if family is not None and key.name != family:
            return None
        contents = open_snapshot(key, self._scope, document_id, covered_seq, blob)
        if contents is None:
            return None
        actor = bound_actor(self._author) if self._author is not None else None
        try:
            doc = AutomergeDocument.load(contents.save, actor)
        except (DecodeError, VerificationError):
            return None
        return MaterializedDocument(
            document_id,
            doc,
            applied_seq=covered_seq,
            heads_to_entries=contents.heads_to_entries,
            family=family,
            applied_families={key.name},
            deleted_by=contents.deleted_by,
            change_count=contents.change_count,
        )
