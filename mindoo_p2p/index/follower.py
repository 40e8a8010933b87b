"""The follower: keeps the query index equal to what the log says, incrementally.

`IndexFollower.catch_up` brings every (tenant, database) of the node up to date; it is cheap
when nothing changed (one feed read per database, one tenant-log read per tenant, a hash of the
key ids held). Per tenant, in this order:

1. **Keys.** When the key ids this node holds changed since the last pass: a document with an
   entry sealed under a key no longer held (a shred) leaves the index and the full-text index
   in one transaction, without being decrypted (it becomes skipped: ``no_key``); a skipped
   document whose keys are now all held (a key import) is materialized and indexed.
2. **Retractions.** When the tenant log grew (a revocation may have retracted entries), the
   documents of the tenant's retracted entries are materialized again without them.
3. **Arrivals.** Per database, the entries after the source's cursor (local writes, sync,
   bundles alike: the log does not say, the index need not know) name the documents to
   materialize again: a live one is (re)written, a deleted one removed, one this node cannot
   read recorded as skipped with the reason. Idempotent, so a crash between pages only
   repeats work.

Documents are materialized by the follower's own `DocumentMaterializer` per source (the one
the databases use, so the index holds exactly what `Database.get` reads), with a small cache.

Cost, per page of arrivals: the entries are read for their (kind, document, key) from the
stored bytes (`EntryStore.iter_document_keys`, no decoding: the materializer decodes each
entry once); the page's one-entry documents are read in one LMDB transaction
(`EntryStore.documents_entries`) and materialized by `load_single_change` (one decrypt, one
parse, one Automerge load), the others by `load`; then the page is written in one
transaction, each statement once for the whole page (`executemany`; new rows get their ids in
the transaction, the only writer) after one lookup per 500 documents of what the index holds.
A database `build_workers.MIN_ENTRIES` or more behind (a build) goes in pages of
`BUILD_PAGE_ENTRIES`, its one-change documents materialized by build workers (other
processes, one page ahead of the writes here) when the follower has any.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..entry import TENANT_LOG, Entry, EntryKind
from ..errors import DecodeError, MindooError, MissingKeyError, NotFoundError
from ..keyring import KeyRing
from ..materializer import DocumentMaterializer
from ..store import EntryStore
from .build_workers import MIN_ENTRIES, BuildWorkers, Indexed, PendingPage
from .content import body_json, searchable_text
from .content import pick as pick  # re-exported: its home was this module
from .expressions import JsonPath
from .index_store import IndexStore, fingerprint

log = logging.getLogger(__name__)

PAGE_ENTRIES = 2000
"""Entries read per page of a catch-up (each page is one index transaction)."""

BUILD_PAGE_ENTRIES = 10_000
"""Entries per page when a database is `MIN_ENTRIES` or more behind (a build): SQLite and its
full-text index cost a third less per document in transactions this large (fewer WAL copies
of the same b-tree pages, fewer full-text segments to merge)."""

MAX_PAGE_BYTES = 32 * 1024 * 1024
"""A page's writes are committed once they hold this many bytes of content, whatever the
page's size (a page of large documents stays bounded in memory)."""

REASON_NO_KEY = "no_key"
REASON_MISSING_DEPENDENCY = "missing_dependency"
REASON_UNREADABLE = "unreadable"


class IndexedTenant(Protocol):
    """What the follower needs of a tenant (`Tenant` provides it)."""

    @property
    def id(self) -> bytes: ...

    @property
    def id_hex(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def keyring(self) -> KeyRing: ...

    def databases(self) -> list[str]: ...

    def key_label(self, key_id: bytes) -> str: ...


class IndexedNode(Protocol):
    """What the follower needs of a node (`Node` provides it)."""

    @property
    def store(self) -> EntryStore: ...

    def tenants(self) -> list[Any]: ...


SearchFields = Callable[[bytes, str], "Sequence[JsonPath] | None"]
"""(tenant id, database) -> the paths whose strings the full-text index holds (None: all)."""

Progress = Callable[[int], None]
"""Called with the number of documents materialized so far in a long catch-up."""


@dataclass
class FollowReport:
    indexed: int = 0
    removed: int = 0
    skipped: int = 0
    changed_sources: set[int] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.changed_sources)


def _key_text(key_ids: Iterable[bytes]) -> str:
    return " ".join(sorted({k.hex() for k in key_ids}))


def _key_set(text: str) -> set[bytes]:
    return {bytes.fromhex(k) for k in text.split()}


@dataclass
class _Known:
    """What the index holds of a page's documents."""

    rows: dict[bytes, int] = field(default_factory=dict)
    """Document id -> its ``docs`` row id."""
    skipped: set[bytes] = field(default_factory=set)
    keys: dict[bytes, set[bytes]] = field(default_factory=dict)
    """Document id -> the key ids recorded (``docs`` or ``skipped``)."""


@dataclass
class _PageWrites:
    """A page's writes, grouped by statement so that each runs once (``executemany``)."""

    new_docs: list[tuple[int, bytes, str, str, str]] = field(default_factory=list)
    new_texts: list[str] = field(default_factory=list)
    updates: list[tuple[str, str, int]] = field(default_factory=list)
    texts: list[tuple[int, str]] = field(default_factory=list)
    fts_drop: list[tuple[int]] = field(default_factory=list)
    drops: list[tuple[int]] = field(default_factory=list)
    unskip: list[tuple[int, bytes]] = field(default_factory=list)
    skips: list[tuple[int, bytes, str, str, str]] = field(default_factory=list)
    size: int = 0
    """Bytes of content (bodies and full-text texts) held."""

    def write(self, tx: Any) -> None:
        """In one transaction: full-text rows of changed or removed documents out, removed
        documents out, changed ones updated, new ones in (row ids assigned here, after the
        largest: the transaction is the only writer), their full-text rows in, skip records
        set or cleared. Repeatable (`IndexStore.write` may run it twice)."""
        tx.executemany("DELETE FROM fts WHERE rowid = ?", self.fts_drop)
        tx.executemany("DELETE FROM docs WHERE id = ?", self.drops)
        tx.executemany("UPDATE docs SET body = ?, key_ids = ? WHERE id = ?", self.updates)
        texts = list(self.texts)
        if self.new_docs:
            first = int(tx.execute("SELECT coalesce(max(id), 0) + 1 FROM docs").fetchone()[0])
            ids = range(first, first + len(self.new_docs))
            tx.executemany(
                "INSERT INTO docs (id, source, doc, uid, body, key_ids) VALUES (?, ?, ?, ?, ?, ?)",
                [(rid, *row) for rid, row in zip(ids, self.new_docs, strict=True)],
            )
            texts.extend(zip(ids, self.new_texts, strict=True))
        tx.executemany("INSERT INTO fts (rowid, text) VALUES (?, ?)", texts)
        tx.executemany("DELETE FROM skipped WHERE source = ? AND doc = ?", self.unskip)
        tx.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?, ?)", self.skips)


class IndexFollower:
    def __init__(
        self,
        index: IndexStore,
        node: IndexedNode,
        search_fields: SearchFields = lambda t, d: None,
        *,
        workers: int = 0,
    ) -> None:
        """``workers``: processes a database far behind is caught up with (`build_workers`;
        0: never)."""
        self._index = index
        self._node = node
        self._search_fields = search_fields
        self._materializers: dict[tuple[bytes, str], DocumentMaterializer] = {}
        self._workers = workers
        self._pool: BuildWorkers | None = None

    def _materializer(self, tenant: IndexedTenant, database: str) -> DocumentMaterializer:
        key = (tenant.id, database)
        found = self._materializers.get(key)
        if found is None:
            found = DocumentMaterializer(
                self._node.store,
                tenant.id,
                database,
                tenant.keyring,
                max_cached=32,
                key_label=tenant.key_label,
            )
            self._materializers[key] = found
        return found

    def forget_cached(self) -> None:
        self._materializers.clear()

    # -- the passes --------------------------------------------------------------------------
    def catch_up(self, progress: Progress | None = None) -> FollowReport:
        report = FollowReport()
        try:
            for tenant in self._node.tenants():
                self._follow_keys(tenant, report)
                self._follow_retractions(tenant, report)
                for database in tenant.databases():
                    self._follow_source(tenant, database, report, progress)
        finally:
            self._stop_pool()
        return report

    def _pool_for(self, behind: int) -> BuildWorkers | None:
        """The build workers, started for a database ``behind`` entries behind when that is
        worth it (`build_workers.MIN_ENTRIES`); they run until the catch-up ends."""
        if self._pool is None and self._workers > 0 and behind >= MIN_ENTRIES:
            try:
                self._pool = BuildWorkers(self._node.store.path, self._workers)
            except OSError as exc:
                log.warning("cannot start index build workers (%s): building alone", exc)
        return self._pool

    def _stop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _from_pool(self, submitted: PendingPage) -> dict[bytes, Indexed]:
        """The documents the workers materialized; on a worker failure the workers are
        stopped for this catch-up and nothing (the follower materializes the page itself)."""
        try:
            return submitted.result()
        except Exception as exc:  # a worker died or failed: go on without them
            log.warning("index build workers failed (%s): going on without them", exc)
            self._stop_pool()
            return {}

    def purge_unreadable(self, tenant: IndexedTenant) -> FollowReport:
        """Step 1 alone (called right after a shred saved the keystore)."""
        report = FollowReport()
        self._follow_keys(tenant, report)
        return report

    def _follow_keys(self, tenant: IndexedTenant, report: FollowReport) -> None:
        held = {k.key_id for k in tenant.keyring}
        fp = fingerprint(list(held))
        stored_fp, _log_seq = self._index.tenant_state(tenant.id)
        if stored_fp == fp:
            return
        sources = {sid: db for sid, t, db, _c in self._index.sources() if t == tenant.id}
        if stored_fp is not None and sources:
            marks = ",".join("?" * len(sources))
            lost = [
                (int(rid), int(sid), bytes(doc), str(keys))
                for rid, sid, doc, keys in self._index.read(
                    f"SELECT id, source, doc, key_ids FROM docs WHERE source IN ({marks})",
                    list(sources),
                )
                if not _key_set(str(keys)) <= held
            ]
            if lost:
                with self._index.transaction() as tx:
                    for rid, sid, doc, keys in lost:
                        missing = _key_set(keys) - held
                        label = ", ".join(sorted(tenant.key_label(k) for k in missing))
                        tx.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
                        tx.execute("DELETE FROM docs WHERE id = ?", (rid,))
                        tx.execute(
                            "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?, ?)",
                            (sid, doc, REASON_NO_KEY, f"no key {label}", keys),
                        )
                        cached = self._materializers.get((tenant.id, sources[sid]))
                        if cached is not None:
                            cached.forget(doc)
                        report.removed += 1
                        report.changed_sources.add(sid)
                self._index.checkpoint()
            retry = [
                (int(sid), bytes(doc))
                for sid, doc, keys in self._index.read(
                    f"SELECT source, doc, key_ids FROM skipped WHERE reason = ?"
                    f" AND source IN ({marks})",
                    [REASON_NO_KEY, *sources],
                )
                if _key_set(str(keys)) <= held
            ]
            by_source: dict[int, list[bytes]] = {}
            for sid, doc in retry:
                by_source.setdefault(sid, []).append(doc)
            for sid, docs in by_source.items():
                self._reindex(tenant, sources[sid], sid, {d: set() for d in docs}, report)
        with self._index.transaction() as tx:
            tx.execute(
                "INSERT INTO tenants (tenant, key_fp) VALUES (?, ?)"
                " ON CONFLICT (tenant) DO UPDATE SET key_fp = excluded.key_fp",
                (tenant.id, fp),
            )

    def _follow_retractions(self, tenant: IndexedTenant, report: FollowReport) -> None:
        store = self._node.store
        log_seq = store.last_seq(tenant.id, TENANT_LOG)
        _fp, seen = self._index.tenant_state(tenant.id)
        if log_seq == seen:
            return
        touched: dict[str, set[bytes]] = {}
        for entry_id in store.retracted_ids(tenant.id):
            entry = store.get(entry_id)
            if entry is not None and entry.database != TENANT_LOG:
                touched.setdefault(entry.database, set()).add(entry.document_id)
        for database, docs in touched.items():
            sid = self._index.source_id(tenant.id, database)
            cached = self._materializers.get((tenant.id, database))
            for doc in docs:
                if cached is not None:
                    cached.forget(doc)
            self._reindex(tenant, database, sid, {d: set() for d in docs}, report, exact=True)
        with self._index.transaction() as tx:
            tx.execute("UPDATE tenants SET log_seq = ? WHERE tenant = ?", (log_seq, tenant.id))

    def _follow_source(
        self,
        tenant: IndexedTenant,
        database: str,
        report: FollowReport,
        progress: Progress | None,
    ) -> None:
        store = self._node.store
        last = store.last_seq(tenant.id, database)
        sid = self._index.source_id(tenant.id, database)
        cursor = self._index.source_cursor(sid)
        if last <= cursor:
            return
        self._pool_for(last - cursor)
        # With workers, page N+1 is with them while this process writes page N.
        in_flight: tuple[dict[bytes, set[bytes]], PendingPage] | None = None
        size = BUILD_PAGE_ENTRIES if last - cursor >= MIN_ENTRIES else PAGE_ENTRIES
        arrivals = store.iter_document_keys(tenant.id, database, since_seq=cursor)
        for docs in self._pages(arrivals, size):
            pool = self._pool
            if pool is None:
                self._reindex(tenant, database, sid, docs, report, progress=progress)
                continue
            fields = self._search_fields(tenant.id, database)
            submitted = pool.submit(tenant.id, database, tenant.keyring, fields, list(docs))
            if in_flight is not None:
                done = self._from_pool(in_flight[1])
                self._reindex(tenant, database, sid, in_flight[0], report, progress, done)
            in_flight = (docs, submitted)
        if in_flight is not None:
            done = self._from_pool(in_flight[1]) if self._pool is not None else {}
            self._reindex(tenant, database, sid, in_flight[0], report, progress, done)
        with self._index.transaction() as tx:
            tx.execute("UPDATE sources SET cursor = ? WHERE id = ?", (max(last, cursor), sid))
        report.changed_sources.add(sid)

    @staticmethod
    def _pages(
        entries: Iterable[tuple[EntryKind, bytes, bytes]], size: int
    ) -> Iterator[dict[bytes, set[bytes]]]:
        """The documents named by each ``size`` arrivals, with the key ids of their changes
        (read from the stored bytes, not decoded: materializing decodes each entry once)."""
        pending: dict[bytes, set[bytes]] = {}
        for count, (kind, document_id, key_id) in enumerate(entries, 1):
            if kind is EntryKind.CHANGE:
                pending.setdefault(document_id, set()).add(key_id)
            else:
                pending.setdefault(document_id, set())
            if count % size == 0:
                yield pending
                pending = {}
        if pending:
            yield pending

    # -- one page of documents ---------------------------------------------------------------
    def _reindex(
        self,
        tenant: IndexedTenant,
        database: str,
        sid: int,
        docs: dict[bytes, set[bytes]],
        report: FollowReport,
        progress: Progress | None = None,
        done: dict[bytes, Indexed] | None = None,
        *,
        exact: bool = False,
    ) -> None:
        """Materialize ``docs`` (document id -> key ids of the entries just seen) and write
        the outcome. ``done``: the documents build workers materialized already (the others
        are read here). ``exact``: recompute each document's key ids from its stored entries
        (after a retraction) instead of adding to those recorded."""
        materializer = self._materializer(tenant, database)
        store = self._node.store
        known = self._known(sid, list(docs))
        uid_prefix = f"{tenant.id_hex}/{database}/"
        fields = self._search_fields(tenant.id, database)
        page = _PageWrites()
        if done is None:
            # One read transaction for the page: the entries of one-entry documents (the
            # usual new record) are read here and materialized without the general path.
            singles = store.documents_entries(tenant.id, database, list(docs), max_entries=1)
        else:
            singles = [None] * len(docs)
        for (doc, new_keys), single in zip(docs.items(), singles, strict=True):
            if exact:
                keys = {
                    e.header.key_id
                    for _s, e in store.document_entries(tenant.id, database, doc)
                    if e.kind is EntryKind.CHANGE
                }
            else:
                keys = known.keys.get(doc, set()) | new_keys
            key_text = _key_text(keys)
            indexed = done.get(doc) if done else None
            outcome = None if indexed is not None else self._materialize(materializer, doc, single)
            if isinstance(outcome, dict):
                indexed = (body_json(outcome), searchable_text(outcome, fields))
            rid = known.rows.get(doc)
            if doc in known.skipped and not isinstance(outcome, tuple):
                page.unskip.append((sid, doc))
            if indexed is not None:
                body, text = indexed
                page.size += len(body) + len(text)
                if rid is None:
                    page.new_docs.append((sid, doc, uid_prefix + doc.hex(), body, key_text))
                    page.new_texts.append(text)
                else:
                    page.updates.append((body, key_text, rid))
                    page.fts_drop.append((rid,))
                    page.texts.append((rid, text))
                report.indexed += 1
            else:
                if rid is not None:
                    page.fts_drop.append((rid,))
                    page.drops.append((rid,))
                    report.removed += 1
                if outcome is not None:
                    reason, detail = outcome
                    page.skips.append((sid, doc, reason, detail, key_text))
                    report.skipped += 1
            if page.size >= MAX_PAGE_BYTES:
                self._index.write(page.write)
                page = _PageWrites()
        self._index.write(page.write)
        report.changed_sources.add(sid)
        if progress is not None:
            progress(report.indexed + report.removed + report.skipped)

    def _known(self, sid: int, docs: list[bytes]) -> _Known:
        """What the index holds of ``docs`` (read in chunks: one query per 500 documents)."""
        known = _Known()
        for start in range(0, len(docs), 500):
            chunk = docs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, doc, keys in self._index.read(
                f"SELECT id, doc, key_ids FROM docs WHERE source = ? AND doc IN ({marks})",
                [sid, *chunk],
            ):
                known.rows[bytes(doc)] = int(rid)
                known.keys.setdefault(bytes(doc), set()).update(_key_set(str(keys)))
            for doc, keys in self._index.read(
                f"SELECT doc, key_ids FROM skipped WHERE source = ? AND doc IN ({marks})",
                [sid, *chunk],
            ):
                known.skipped.add(bytes(doc))
                known.keys.setdefault(bytes(doc), set()).update(_key_set(str(keys)))
        return known

    @staticmethod
    def _materialize(
        materializer: DocumentMaterializer,
        doc: bytes,
        entries: Sequence[tuple[int, Entry]] | None = None,
    ) -> dict[str, Any] | tuple[str, str] | None:
        """The document's content; None when it is deleted or has no readable entry left;
        (reason, detail) when it cannot be read. ``entries``: all of its stored entries when
        the caller read them already (a one-change document is then materialized from them,
        `DocumentMaterializer.load_single_change`)."""
        try:
            md = None if not entries else materializer.load_single_change(doc, entries)
            if md is None:
                md = materializer.load(doc)
        except MissingKeyError as exc:
            materializer.forget(doc)
            return REASON_NO_KEY, str(exc)
        except NotFoundError:
            return None
        except (DecodeError, MindooError) as exc:
            materializer.forget(doc)
            return REASON_UNREADABLE, str(exc)
        if md.deleted:
            return None
        if not md.doc.heads() and md.doc.missing_deps():
            return REASON_MISSING_DEPENDENCY, (
                f"waits for {len(md.doc.missing_deps())} change(s) this node does not hold"
            )
        content = md.plain if md.plain is not None else md.doc.to_py()
        md.plain = content
        return content
