"""`EntryStore`: the append-only, content-addressed LMDB log of sealed entries, with indexes.

One LMDB environment (a directory) per node, with named sub-databases; the key layout is
documented (and built) in :mod:`mindoo_p2p.store._layout`: ``sealed`` (arrival number -> sealed
bytes, the store-wide arrival order `iter_entries` reads), ``ids`` (id -> arrival number),
``db_feed`` (per-database arrival order), ``doc_feed``, ``databases``, ``author_seq``,
``by_author``, ``retracted``, ``snapshots``, ``scope_bytes`` (per-database byte totals, for
`stats`), ``meta`` (schema version) and the reconciliation index ``recon_idx``/``recon_agg``
(served by `recon_snapshot`).

Many readers, one writer: every read opens its own read
transaction (safe from many threads and processes); `append` checks a batch with no lock held,
then stores every accepted entry and all its index rows in ONE durable write transaction (the
environment is opened with ``sync=True, metasync=True``), so a crash never leaves half a batch.
LMDB serialises writers across processes.

Nothing is ever overwritten or deleted through this API, except the snapshot cache, which holds
derived data (encrypted by the caller) and may be replaced at any time. A revocation may
*retract* stored entries (`retract_authored_after`, see :mod:`._retraction`): they stay stored
(`get`, `has`, `count` and `fsck` still see them) but every other read skips them.

Every byte read back from disk is checked: an entry must decode and hash to an id that ``ids``
maps to the arrival number it was read under, or the read raises
:class:`~mindoo_p2p.errors.StoreError` (`fsck` reports instead of raising).

This class is the facade: it opens the environment, checks arguments, opens transactions and
delegates to the private modules, each with one responsibility and no state of its own:
`_environment` (open, share, upgrade on open), `_append` (a batch from elsewhere: bounds,
checks, accounting), `_local_append` (own writes), `_writer` (the rows of a stored entry),
`_entry_reads` (loading and checking an entry), `_feed_reads` (feeds and paged iteration),
`_scope_reads` (tenants, databases, documents, counters, authors), `_snapshots` (the
snapshot cache's rows), `_cursors` (shared table walks), `_retraction`, `_chains`,
`_recon_index` / `_recon_snapshot` and `_fsck`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import lmdb

from ..admission import VerifiedEntry
from ..chains import ForkPoint, contiguous_head
from ..entry import (
    DATABASE_NAME_RE,
    DOCUMENT_ID_SIZE,
    ID_SIZE,
    TENANT_ID_SIZE,
    TENANT_LOG,
    Entry,
    EntryKind,
)
from ..errors import StoreError
from . import _feed_reads, _scope_reads, _snapshots
from ._append import MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, append_batch, check_batch_bounds
from ._chains import TransactionChainFacts, read_fork, read_forks, settle_fork
from ._cursors import MAX_SEQ, dups_from
from ._entry_reads import arrival_of, load_arrival, load_by_id, retraction_check
from ._environment import MAX_READERS, SharedEnvironment, acquire, release
from ._fsck import run_fsck
from ._layout import scope_key, unpack_seq
from ._local_append import (
    OwnAuthorizer,
    SealInTransaction,
    append_local,
    read_last_author_seq,
    read_last_entry_id,
)
from ._recon_index import rebuild_recon_index
from ._recon_snapshot import DEFAULT_CACHE_ROWS, LmdbReconStorage, SharedRuns
from ._retraction import authored_after, retract
from ._snapshots import MAX_SNAPSHOT_SIZE
from ._writer import WrittenDocuments, last_dup_seq
from .results import AppendResult, Authorizer, FeedItem, FsckReport

MAX_FEED_PAGE = 10_000
"""`changes_since` returns at most this many items whatever `limit` asks for."""


class EntryStore:
    """The LMDB entry store of one node. See the module docstring for the guarantees."""

    def __init__(
        self, path: Path | str, *, map_size: int = 1 << 36, readonly: bool = False
    ) -> None:
        """Open (creating when writable and missing) the store in directory ``path``.

        Raises StoreError when the directory is not an entry store, has an unknown schema
        version or cannot be opened. Several EntryStore objects on one directory in one process
        share a single LMDB environment (LMDB allows only one per process).
        """
        self.path = Path(path)
        self.readonly = readonly
        shared = acquire(self.path, map_size=map_size, readonly=readonly)
        self._shared: SharedEnvironment | None = shared
        self._tables = shared.tables
        self._write_lock = shared.write_lock
        self._recon_runs = SharedRuns()
        """Reconciliation index runs kept across snapshots (each checked before use)."""
        self._own_rows = WrittenDocuments()
        """The feed rows the last committed `append_local` wrote (`_keep_own_rows`)."""
        self._own_rows_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close this store (the environment when it was its last user). Idempotent; any later
        call raises StoreError."""
        shared, self._shared = self._shared, None
        if shared is not None:
            release(shared)

    def __enter__(self) -> EntryStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._shared is None else ("read-only" if self.readonly else "open")
        return f"EntryStore({str(self.path)!r}, {state})"

    # -- transactions ------------------------------------------------------------------------
    def _live_env(self) -> lmdb.Environment:
        if self._shared is None:
            raise StoreError("the entry store is closed")
        return self._shared.env

    @staticmethod
    def _begin(env: lmdb.Environment, *, write: bool) -> lmdb.Transaction[bytes]:
        try:
            return env.begin(write=write)
        except lmdb.MapResizedError:
            env.set_mapsize(0)  # another process grew the map: adopt its size
            return env.begin(write=write)

    @contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction[bytes]]:
        """A read transaction; lmdb errors become StoreError."""
        env = self._live_env()
        try:
            with self._begin(env, write=False) as txn:
                yield txn
        except lmdb.ReadersFullError as exc:
            raise StoreError(
                f"entry store read failed: every reader slot of the home is taken ({MAX_READERS}"
                f" open read transactions across all processes on it): {exc}"
            ) from exc
        except lmdb.Error as exc:
            raise StoreError(f"entry store read failed: {type(exc).__name__}: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[lmdb.Transaction[bytes]]:
        """A write transaction committed on normal exit, aborted on an exception."""
        env = self._live_env()
        if self.readonly:
            raise StoreError("the entry store is open read-only")
        with self._write_lock:
            try:
                with self._begin(env, write=True) as txn:
                    yield txn
            except lmdb.MapFullError as exc:
                raise StoreError(
                    f"the entry store is full (map_size {env.info()['map_size']} bytes)"
                ) from exc
            except lmdb.Error as exc:
                raise StoreError(f"entry store write failed: {type(exc).__name__}: {exc}") from exc

    # -- writing -----------------------------------------------------------------------------
    def append(
        self,
        entries: Sequence[Entry | bytes | VerifiedEntry],
        authorize: Authorizer | None = None,
        *,
        sealed_here: bool = False,
    ) -> AppendResult:
        """Verify and durably store a batch; see the contract in :mod:`mindoo_p2p.store`.

        Bytes that do not decode, bad signatures and entries ``authorize`` refuses are rejected
        one by one (`VerifiedEntry` items, already through `mindoo_p2p.admission`, are neither
        decoded nor verified again); every other new entry lands, all in one write
        transaction. Signatures are checked and ``authorize`` runs before the write lock is
        taken, so concurrent appends overlap their CPU work with each other's commits. An
        entry another writer stores in between is reported as a duplicate. Should the write
        itself fail (StoreError), nothing of the batch is stored. ``authorize`` is an optional
        stateless filter; membership is the caller's (`Node.ingest` admits entries first).

        Raises ValueError when the batch is over MAX_BATCH_ENTRIES or MAX_BATCH_BYTES,
        TypeError for an item that is neither Entry nor bytes, StoreError when the store
        cannot be written; an exception from ``authorize`` propagates and writes nothing.

        ``sealed_here=True`` skips the signature check for `Entry` objects this process has just
        sealed with its own keys (local writes); never pass it for entries from elsewhere.
        """
        self._live_env()
        if self.readonly:
            raise StoreError("the entry store is open read-only")
        check_batch_bounds(entries)
        return append_batch(
            self._reading,
            self._writing,
            self._tables,
            entries,
            authorize,
            check_signatures=not sealed_here,
        )

    def append_local(
        self, seal: SealInTransaction, authorize: OwnAuthorizer | None = None
    ) -> list[Entry]:
        """Seal this node's own new entries inside ONE durable write transaction and store
        them; return them in commit order (tenant-log entries first).

        ``seal(positions)`` runs with the write lock held (LMDB serialises writers across
        processes too) and numbers its entries from ``positions.last_seq`` (see
        :class:`AuthorPositions`), so no two processes ever give one author's sequence number
        twice. All or nothing: an exception from ``seal``, an own entry ``authorize`` refuses
        (OwnEntryRefusedError), a sequence that does not continue the author's stored one or
        a failed write (StoreError) stores nothing. The contract, step by step, is in
        :mod:`._local_append`.
        """
        written = WrittenDocuments()
        with self._writing() as wtxn:
            entries = append_local(wtxn, self._tables, seal, authorize, written)
        self._keep_own_rows(written)
        return entries

    def _keep_own_rows(self, written: WrittenDocuments) -> None:
        """Keep the record of a committed own write for `document_updates`, unless a later
        write's is kept already (two threads' writes may end in either order; each row of a
        record is checked against the store before use, so this is about speed only)."""
        with self._own_rows_lock:
            if written.txn_id > self._own_rows.txn_id:
                self._own_rows = written

    def put_snapshot(
        self,
        tenant_id: bytes,
        database: str,
        document_id: bytes,
        covered_seq: int,
        blob: bytes,
    ) -> None:
        """Store (or replace) the caller-encrypted materialized state of one document.

        ``covered_seq`` is the database feed sequence the snapshot includes. Raises ValueError
        on malformed arguments, StoreError when the store cannot be written.
        """
        _check_scope_args(tenant_id, database)
        _snapshots.check_snapshot(document_id, covered_seq, blob)
        with self._writing() as txn:
            _snapshots.put_snapshot(
                txn, self._tables, tenant_id, database, document_id, covered_seq, blob
            )

    def get_snapshot(
        self, tenant_id: bytes, database: str, document_id: bytes
    ) -> tuple[int, bytes] | None:
        """``(covered_seq, blob)`` of the document's snapshot, or None."""
        if len(tenant_id) != TENANT_ID_SIZE or len(document_id) != DOCUMENT_ID_SIZE:
            return None
        with self._reading() as txn:
            return _snapshots.get_snapshot(txn, self._tables, tenant_id, database, document_id)

    def delete_snapshots(
        self, tenant_id: bytes, database: str, document_ids: Iterable[bytes]
    ) -> int:
        """Delete the snapshot rows of these documents (derived cache, never entries), all in
        one durable write transaction; return how many rows existed and were deleted.

        Used by crypto-shredding: a snapshot is a document's materialized state. LMDB frees the
        pages without overwriting them, so what was in them stays on disk until reused; that
        is the caller's ciphertext. Raises ValueError on malformed arguments (nothing deleted),
        StoreError when the store cannot be written.
        """
        _check_scope_args(tenant_id, database)
        wanted = _snapshots.checked_document_ids(document_ids)
        if not wanted:
            return 0
        with self._writing() as txn:
            return _snapshots.delete_snapshots(txn, self._tables, tenant_id, database, wanted)

    # -- reads by id -------------------------------------------------------------------------
    def get(self, entry_id: bytes) -> Entry | None:
        """The stored entry, or None. StoreError if its stored bytes are corrupt."""
        if len(entry_id) != ID_SIZE:
            return None
        with self._reading() as txn:
            return load_by_id(txn, self._tables, bytes(entry_id))

    def get_raw(self, entry_id: bytes) -> bytes | None:
        """The stored sealed bytes as they are on disk (not re-checked), or None."""
        if len(entry_id) != ID_SIZE:
            return None
        with self._reading() as txn:
            arrival = arrival_of(txn, self._tables, bytes(entry_id))
            return None if arrival is None else txn.get(arrival, db=self._tables.sealed)

    def get_raws(self, entry_ids: Sequence[bytes]) -> list[bytes | None]:
        """`get_raw` of each id, in the order given, in one short read transaction (a peer's
        fetch asks for hundreds at a time: one transaction each cost more than the reads)."""
        tables = self._tables
        found: list[bytes | None] = []
        with self._reading() as txn:
            for entry_id in entry_ids:
                arrival = (
                    arrival_of(txn, tables, bytes(entry_id)) if len(entry_id) == ID_SIZE else None
                )
                found.append(None if arrival is None else txn.get(arrival, db=tables.sealed))
        return found

    def has(self, entry_id: bytes) -> bool:
        if len(entry_id) != ID_SIZE:
            return False
        with self._reading() as txn:
            return txn.get(bytes(entry_id), db=self._tables.ids) is not None

    def missing(self, entry_ids: Iterable[bytes]) -> list[bytes]:
        """The ids of ``entry_ids`` that are not stored, in the order given."""
        asked = [bytes(entry_id) for entry_id in entry_ids]
        # One cursor walked in id order: each seek starts from the page it is on. py-lmdb
        # drops and retakes the GIL on every call, so beside a busy thread (a catch-up's
        # commit) each call waits for it: 0.81 ms a `txn.get`, 0.23 ms a sorted seek, beside
        # a thread that never releases the GIL (docs/architecture.md, perf-ingest).
        with self._reading() as txn:
            seek = txn.cursor(self._tables.ids).set_key
            held = {key for key in sorted(set(asked)) if len(key) == ID_SIZE and seek(key)}
        return [entry_id for entry_id in asked if entry_id not in held]

    def count(self) -> int:
        """How many entries are stored, in all tenants and databases."""
        with self._reading() as txn:
            return int(txn.stat(self._tables.sealed)["entries"])

    # -- listings ----------------------------------------------------------------------------
    def tenants(self) -> list[bytes]:
        """The ids of every tenant with at least one stored entry, sorted."""
        with self._reading() as txn:
            return _scope_reads.tenants(txn, self._tables)

    def databases(self, tenant_id: bytes) -> list[str]:
        """The names of the tenant's databases with stored entries (the tenant log too), sorted."""
        if len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        with self._reading() as txn:
            return _scope_reads.databases(txn, self._tables, bytes(tenant_id))

    def documents(self, tenant_id: bytes, database: str) -> list[bytes]:
        """The distinct document ids of a database, in order of their first entry's arrival."""
        scope = scope_key(tenant_id, database)
        with self._reading() as txn:
            return _scope_reads.documents(txn, self._tables, scope)

    # -- per-document and per-database reads -------------------------------------------------
    def document_entries(
        self, tenant_id: bytes, database: str, document_id: bytes, after_seq: int = 0
    ) -> list[tuple[int, Entry]]:
        """``(feed seq, entry)`` of the document's entries with seq > ``after_seq``, in order."""
        if len(document_id) != DOCUMENT_ID_SIZE or after_seq >= MAX_SEQ:
            return []
        with self._reading() as txn:
            return _feed_reads.document_entries(
                txn, self._tables, tenant_id, database, document_id, after_seq
            )

    def document_updates(
        self,
        tenant_id: bytes,
        database: str,
        document_id: bytes,
        after_seq: int,
        known_ids: AbstractSet[bytes],
    ) -> tuple[list[tuple[int, Entry]], int]:
        """Like `document_entries`, but entries whose id is in ``known_ids`` are not loaded.

        Returns the loaded ``(seq, entry)`` pairs and the highest seq seen (``after_seq`` when
        none): a cache that already holds some entries (its own writes) skips decoding them.
        ``known_ids`` must be entries of this document stored after ``after_seq`` (see
        `_feed_reads.document_updates`, also handed the rows the last `append_local` added to
        the document when they are all known).
        """
        if len(document_id) != DOCUMENT_ID_SIZE or after_seq >= MAX_SEQ:
            return [], after_seq
        written = self._own_rows  # one record, whatever another thread keeps meanwhile
        own = written.known_rows(tenant_id, database, document_id, known_ids)
        env, txn_id = self._live_env(), written.txn_id
        last = (
            None if own is None else _feed_reads.last_if_nothing_since(env, own, txn_id, after_seq)
        )
        if last is not None:
            return [], last
        with self._reading() as txn:
            return _feed_reads.document_updates(
                txn, self._tables, tenant_id, database, document_id, after_seq, known_ids, own
            )

    def documents_entries(
        self, tenant_id: bytes, database: str, document_ids: Sequence[bytes], max_entries: int
    ) -> list[list[tuple[int, Entry]] | None]:
        """`document_entries` of each document, in the order given, in ONE read transaction
        (the query index reads a page of documents at a time). None for a document with more
        than ``max_entries`` entries (not loaded) or one whose stored bytes do not check out:
        the caller reads that one on its own (`document_entries` raises the error)."""
        with self._reading() as txn:
            return _feed_reads.documents_entries(
                txn, self._tables, tenant_id, database, document_ids, max_entries
            )

    def document_entry_count(self, tenant_id: bytes, database: str, document_id: bytes) -> int:
        """How many entries the document has."""
        if len(document_id) != DOCUMENT_ID_SIZE:
            return 0
        with self._reading() as txn:
            return _feed_reads.document_entry_count(
                txn, self._tables, tenant_id, database, document_id
            )

    def changes_since(
        self, tenant_id: bytes, database: str, cursor: int = 0, limit: int = 1000
    ) -> tuple[list[FeedItem], int]:
        """Feed items with seq > ``cursor``, ascending, at most ``min(limit, MAX_FEED_PAGE)``.

        Returns ``(items, next_cursor)``: the last seq returned, or ``cursor`` when none. The
        feed only grows; the same cursor gives the same items, except entries a revocation
        retracted since (they are skipped: seqs may then have gaps).
        """
        if cursor < 0 or limit < 1:
            raise ValueError("cursor must be >= 0 and limit >= 1")
        if cursor >= MAX_SEQ:
            return [], cursor
        limit = min(limit, MAX_FEED_PAGE)
        scope = scope_key(tenant_id, database)
        with self._reading() as txn:
            items = _feed_reads.changes_since(txn, self._tables, scope, cursor, limit)
        return items, (items[-1].seq if items else cursor)

    def last_seq(self, tenant_id: bytes, database: str) -> int:
        """The highest feed sequence of the database (0 when it has no entries)."""
        scope = scope_key(tenant_id, database)
        with self._reading() as txn:
            return last_dup_seq(txn, self._tables.db_feed, scope)

    def next_author_seq(self, tenant_id: bytes, author: bytes) -> int:
        """The highest author_seq stored for ``author`` in the tenant, plus one (1 if none)."""
        with self._reading() as txn:
            return read_last_author_seq(txn, self._tables, bytes(tenant_id) + bytes(author)) + 1

    def last_entry_id(self, tenant_id: bytes, author: bytes) -> bytes:
        """The id of the author's entry at its highest author_seq stored (`entry.NO_PREV`
        when none): what its next entry names as ``prev``."""
        with self._reading() as txn:
            return read_last_entry_id(txn, self._tables, bytes(tenant_id) + bytes(author))

    def author_position(self, tenant_id: bytes, author: bytes) -> tuple[int, bytes]:
        """``(last_seq, last_entry_id)`` of the author in the tenant, read in one transaction:
        what a write transaction's `AuthorPositions` would answer now (a later commit, of this
        process or another, may move it on)."""
        key = bytes(tenant_id) + bytes(author)
        with self._reading() as txn:
            last_seq = read_last_author_seq(txn, self._tables, key)
            return last_seq, read_last_entry_id(txn, self._tables, key)

    def iter_entries(
        self,
        tenant_id: bytes | None = None,
        database: str | None = None,
        since_seq: int = 0,
    ) -> Iterator[Entry]:
        """Stored entries in arrival order: all, one tenant's, or one database's (retracted
        entries left out).

        With ``database`` (which needs ``tenant_id``), only that database's entries with feed
        seq > ``since_seq``. Reads in pages, each in its own short read transaction, so a slow
        consumer holds no transaction open; entries appended meanwhile may appear at the end.
        """
        if database is not None:
            if tenant_id is None:
                raise ValueError("iter_entries: database needs tenant_id")
            if since_seq < 0:
                raise ValueError("since_seq must be >= 0")
            scope = scope_key(tenant_id, database)
            return _feed_reads.iter_database(self._reading, self._tables, scope, since_seq)
        if since_seq != 0:
            raise ValueError("iter_entries: since_seq needs a database")
        if tenant_id is not None and len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError("tenant_id must be 16 bytes")
        tenant = None if tenant_id is None else bytes(tenant_id)
        return _feed_reads.iter_log(self._reading, self._tables, tenant)

    def iter_document_keys(
        self, tenant_id: bytes, database: str, since_seq: int = 0
    ) -> Iterator[tuple[EntryKind, bytes, bytes]]:
        """``(kind, document id, key id)`` of the database's entries with feed seq >
        ``since_seq``, in feed order (retracted ones left out), read from the stored bytes'
        fixed places without decoding them (`entry_fields.document_key_of_raw`): what the query
        index follows a database by, before it materializes the documents (which loads and
        checks their entries). Pages like `iter_entries`."""
        if since_seq < 0:
            raise ValueError("since_seq must be >= 0")
        scope = scope_key(tenant_id, database)
        yield from _feed_reads.iter_document_keys(self._reading, self._tables, scope, since_seq)

    def last_arrival(self) -> int:
        """The arrival number of the newest stored entry (0 when empty): a change counter that
        every commit storing entries moves, whichever process made it (one short read)."""
        with self._reading() as txn:
            cursor = txn.cursor(self._tables.sealed)
            if not cursor.last():
                return 0
            return unpack_seq(cursor.key())

    def entries_after(self, arrival: int, limit: int) -> tuple[list[Entry], int]:
        """Up to ``limit`` stored entries with an arrival number above ``arrival``, in arrival
        order (retracted ones included: they were stored), and the last arrival number read
        (``arrival`` when none)."""
        if arrival < 0 or limit < 1:
            raise ValueError("arrival must be >= 0 and limit >= 1")
        with self._reading() as txn:
            return _feed_reads.entries_after(txn, self._tables, arrival, limit)

    def raws_after(self, arrival: int, limit: int) -> tuple[list[bytes], int]:
        """`entries_after` as sealed bytes, neither decoded nor checked against ``ids`` (the
        daemon's store watch hashes them and decodes only what it reports)."""
        if arrival < 0 or limit < 1:
            raise ValueError("arrival must be >= 0 and limit >= 1")
        with self._reading() as txn:
            return _feed_reads.raws_after(txn, self._tables, arrival, limit)

    def stats(self, tenant_id: bytes, database: str) -> dict[str, int]:
        """``{"entries", "documents", "last_seq", "bytes"}`` of one database."""
        scope = scope_key(tenant_id, database)
        with self._reading() as txn:
            return _scope_reads.database_stats(txn, self._tables, scope)

    # -- revocation ---------------------------------------------------------------------------
    def authors(self, tenant_id: bytes) -> dict[bytes, int]:
        """Every author with stored entries in the tenant -> the highest author_seq stored
        (retracted entries included)."""
        if len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        with self._reading() as txn:
            return _scope_reads.authors(txn, self._tables, bytes(tenant_id))

    def retract_authored_after(
        self, tenant_id: bytes, author: bytes, after_seq: int
    ) -> list[Entry]:
        """Retract every stored entry by ``author`` in the tenant with author_seq >
        ``after_seq`` that is not retracted yet, in one durable write transaction; return them.

        Called when a revocation names ``after_seq`` as the last sequence number it accepts
        from ``author``. Idempotent: a second call retracts nothing more.
        """
        if after_seq < 0:
            raise ValueError("after_seq must be >= 0")
        with self._reading() as txn:
            if not authored_after(txn, self._tables, bytes(tenant_id), bytes(author), after_seq):
                return []
        with self._writing() as wtxn:
            arrivals = authored_after(
                wtxn, self._tables, bytes(tenant_id), bytes(author), after_seq
            )
            found = [(arrival, load_arrival(wtxn, self._tables, arrival)) for arrival in arrivals]
            retract(wtxn, self._tables, found)
        return [entry for _, entry in found]

    # -- chains and forks ------------------------------------------------------------------------
    def forks(self, tenant_id: bytes) -> list[ForkPoint]:
        """Every author of the tenant that forked (`mindoo_p2p.chains`), by author key."""
        with self._reading() as txn:
            return read_forks(txn, self._tables, bytes(tenant_id))

    def fork_of(self, tenant_id: bytes, author: bytes) -> ForkPoint | None:
        """The fork point of ``author`` in the tenant, or None when it never forked."""
        with self._reading() as txn:
            return read_fork(txn, self._tables, bytes(tenant_id), bytes(author))

    def record_fork(self, tenant_id: bytes, author: bytes, seq: int) -> ForkPoint:
        """Record that ``author`` forked at ``seq`` (e.g. an entry at a revocation cut that the
        cut does not name) and withdraw its entries from the fork point on, in one durable
        write transaction. The fork point stays the smallest ever recorded."""
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError("seq must be 0 .. 2**64-1")
        with self._writing() as wtxn:
            return settle_fork(wtxn, self._tables, bytes(tenant_id), bytes(author), seq)

    def ids_at(self, tenant_id: bytes, author: bytes, seq: int) -> list[bytes]:
        """The ids of the stored entries of ``author`` at ``seq`` in the tenant (withdrawn ones
        included): one, normally; more when the author forked there."""
        with self._reading() as txn:
            return TransactionChainFacts(txn, self._tables).ids_at(
                bytes(tenant_id), bytes(author), seq
            )

    def entries_of_author_from(self, tenant_id: bytes, author: bytes, seq: int) -> list[Entry]:
        """Every stored entry of ``author`` in the tenant with author_seq >= ``seq``, withdrawn
        ones included, in (author_seq, arrival) order."""
        key = bytes(tenant_id) + bytes(author)
        with self._reading() as txn:
            return [
                load_arrival(txn, self._tables, arrival)
                for _, arrival in dups_from(txn, self._tables.by_author, key, seq)
            ]

    def chain_head(self, tenant_id: bytes, author: bytes) -> tuple[int, bytes | None]:
        """(author_seq, id) of the last entry of the contiguous run 1, 2, 3, ... of the accepted
        (not withdrawn) stored entries of ``author`` in the tenant; (0, None) without an entry 1.
        The run stops at the first gap or fork (`chains.contiguous_head`): what a revocation
        accepts by default, whatever sequence numbers above a gap claim."""
        key = bytes(tenant_id) + bytes(author)
        with self._reading() as txn:
            retracted = retraction_check(txn, self._tables)
            rows = [
                (seq, arrival)
                for seq, arrival in dups_from(txn, self._tables.by_author, key, 1)
                if retracted is None or not retracted(arrival)
            ]
            seq, arrival = contiguous_head(rows)
            if arrival is None:
                return 0, None
            return seq, load_arrival(txn, self._tables, arrival).id

    def is_retracted(self, entry_id: bytes) -> bool:
        """True when ``entry_id`` is stored but a revocation retracted it."""
        if len(entry_id) != ID_SIZE:
            return False
        with self._reading() as txn:
            arrival = arrival_of(txn, self._tables, bytes(entry_id))
            return arrival is not None and txn.get(arrival, db=self._tables.retracted) is not None

    def retracted_ids(self, tenant_id: bytes) -> list[bytes]:
        """The ids of the tenant's retracted entries, sorted."""
        with self._reading() as txn:
            return sorted(
                load_arrival(txn, self._tables, arrival).id
                for arrival, value in txn.cursor(self._tables.retracted)
                if value[:TENANT_ID_SIZE] == bytes(tenant_id)
            )

    # -- set reconciliation ------------------------------------------------------------------
    @contextmanager
    def recon_snapshot(
        self, tenant_id: bytes, database: str, *, cache_rows: int = DEFAULT_CACHE_ROWS
    ) -> Iterator[LmdbReconStorage]:
        """The database's reconciliation items ((author timestamp, id) of every entry, the tenant
        log being a database like any other) as a ``ReconStorage`` for a whole session.

        The storage reads ONE read transaction held until the ``with`` block ends, so a session
        sees one snapshot whatever is appended meanwhile; it is closed on exit. Use it from one
        thread at a time and only for one session (an open read transaction keeps LMDB from
        reusing the pages written since). ``cache_rows`` bounds what it caches (about 230 bytes
        a row). ValueError on malformed arguments; StoreError when the store is closed or the
        index is damaged.
        """
        _check_scope_args(tenant_id, database)
        scope = scope_key(tenant_id, database)
        with self._reading() as txn:
            storage = LmdbReconStorage(
                txn, self._tables, scope, cache_rows=cache_rows, shared=self._recon_runs
            )
            try:
                yield storage
            finally:
                storage.close()

    def rebuild_recon_index(self) -> int:
        """Rebuild the reconciliation index from the stored entries by one scan, in one write
        transaction; return how many items it holds. Only for repairs (fsck reports a damaged
        index): appends keep it up to date, and opening an older store builds it once."""
        with self._writing() as txn:
            return rebuild_recon_index(txn, self._tables)

    # -- checking ----------------------------------------------------------------------------
    def fsck(self) -> FsckReport:
        """Re-read and re-verify every entry and index row; report problems, never raise them."""
        return run_fsck(self._live_env(), self._tables)


def _check_scope_args(tenant_id: bytes, database: str) -> None:
    if len(tenant_id) != TENANT_ID_SIZE:
        raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
    if database != TENANT_LOG and not DATABASE_NAME_RE.fullmatch(database):
        raise ValueError(f"invalid database name {database!r}")


__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_FEED_PAGE",
    "MAX_SNAPSHOT_SIZE",
    "EntryStore",
]
