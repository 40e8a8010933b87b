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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    document_key_of_raw,
    tenant_id_of_raw,
)
from ..errors import DecodeError, StoreError
from ._batch import prepare_batch
from ._chains import TransactionChainFacts, read_fork, read_forks, settle_fork
from ._environment import SharedEnvironment, acquire, release
from ._fsck import run_fsck
from ._layout import (
    AUTHOR_KEY_SIZE,
    DOC_FEED_KEY_SIZE,
    DUP_SIZE,
    SCOPE_NUMBER_SIZE,
    SEQ_SIZE,
    pack_seq,
    prefix_successor,
    scope_key,
    unpack_seq,
)
from ._local_append import (
    OwnAuthorizer,
    SealInTransaction,
    append_local,
    read_last_author_seq,
    read_last_entry_id,
)
from ._recon_index import rebuild_recon_index
from ._recon_snapshot import DEFAULT_CACHE_ROWS, LmdbReconStorage
from ._retraction import authored_after, retract
from ._writer import last_dup_seq, scope_number, write_entries
from .results import AppendResult, Authorizer, FeedItem, FsckReport

MAX_BATCH_ENTRIES = 50_000
"""Most entries one `append` call takes (ValueError beyond)."""
MAX_BATCH_BYTES = 128 * 1024 * 1024
"""Most sealed bytes one `append` call takes (ValueError beyond)."""
MAX_FEED_PAGE = 10_000
"""`changes_since` returns at most this many items whatever `limit` asks for."""
MAX_SNAPSHOT_SIZE = 256 * 1024 * 1024
"""Largest snapshot blob `put_snapshot` accepts."""

_MAX_SEQ = (1 << 64) - 1
_ITER_PAGE = 512


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

    def _arrival(self, txn: lmdb.Transaction[bytes], entry_id: bytes) -> bytes | None:
        """The arrival number (BE64) of a stored id, or None."""
        arrival = txn.get(entry_id, db=self._tables.ids)
        if arrival is not None and len(arrival) != SEQ_SIZE:
            raise StoreError(f"malformed ids row for {entry_id.hex()}: run fsck")
        return arrival

    def _load(self, txn: lmdb.Transaction[bytes], entry_id: bytes) -> Entry | None:
        arrival = self._arrival(txn, entry_id)
        if arrival is None:
            return None
        raw = txn.get(arrival, db=self._tables.sealed)
        if raw is None:
            raise StoreError(f"entry {entry_id.hex()} is indexed but not stored: run fsck")
        entry = _decode_stored(entry_id.hex(), raw)
        if entry.id != entry_id:
            raise StoreError(f"stored entry {entry_id.hex()} does not match its id: run fsck")
        return entry

    def _doc_feed_key(
        self, txn: lmdb.Transaction[bytes], tenant_id: bytes, database: str, document_id: bytes
    ) -> bytes | None:
        """The ``doc_feed`` key of a document (None when its database has no entries)."""
        number = scope_number(txn, self._tables, scope_key(tenant_id, database))
        return None if number is None else number + bytes(document_id)

    def _load_arrival(self, txn: lmdb.Transaction[bytes], arrival: bytes) -> Entry:
        """The entry stored under ``arrival`` (BE64), checked against ``ids``."""
        raw = txn.get(arrival, db=self._tables.sealed)
        if raw is None:
            raise StoreError(
                f"an index names arrival {unpack_seq(arrival)}, which is not stored: run fsck"
            )
        entry = _decode_stored(f"at arrival {unpack_seq(arrival)}", raw)
        if txn.get(entry.id, db=self._tables.ids) != arrival:
            raise StoreError(
                f"stored entry at arrival {unpack_seq(arrival)} does not match its id"
                f" (now {entry.id.hex()}): run fsck"
            )
        return entry

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
        if len(entries) > MAX_BATCH_ENTRIES:
            raise ValueError(f"batch of {len(entries)} entries, over {MAX_BATCH_ENTRIES}")
        total = sum(len(e.raw) if isinstance(e, Entry | VerifiedEntry) else len(e) for e in entries)
        if total > MAX_BATCH_BYTES:
            raise ValueError(f"batch of {total} bytes, over {MAX_BATCH_BYTES}")
        if not entries:
            return AppendResult([], [], [])

        if all(isinstance(e, VerifiedEntry) for e in entries):
            # Nothing to decode or verify: an entry stored already is found by the write
            # itself (reported as a duplicate), so no read transaction looks first.
            prepared = prepare_batch(entries, lambda ids: (), authorize)
        else:
            ids_db = self._tables.ids
            with self._reading() as txn:
                prepared = prepare_batch(
                    entries,
                    lambda ids: [i for i in ids if txn.get(i, db=ids_db) is not None],
                    authorize,
                    check_signatures=not sealed_here,
                )
        added: list[Entry] = []
        if prepared.accepted:
            with self._writing() as wtxn:
                added = write_entries(wtxn, self._tables, prepared.accepted)

        added_ids = [entry.id for entry in added]
        duplicates = prepared.duplicates
        rejected = prepared.rejected
        if len(added) != len(prepared.accepted):
            landed = set(added_ids)
            duplicates += [e.id for e in prepared.accepted if e.id not in landed]
        if prepared.repeats:
            refusals = {r.entry_id: r for r in rejected}
            for entry_id in prepared.repeats:
                refusal = refusals.get(entry_id)
                if refusal is None:
                    duplicates.append(entry_id)
                else:
                    rejected.append(refusal)
        return AppendResult(added_ids, duplicates, rejected)

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
        self._live_env()
        if self.readonly:
            raise StoreError("the entry store is open read-only")
        with self._writing() as wtxn:
            return append_local(wtxn, self._tables, seal, authorize)

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
        if len(document_id) != DOCUMENT_ID_SIZE:
            raise ValueError(f"document_id must be {DOCUMENT_ID_SIZE} bytes")
        if not 0 <= covered_seq <= _MAX_SEQ:
            raise ValueError("covered_seq must fit in 64 bits")
        if len(blob) > MAX_SNAPSHOT_SIZE:
            raise ValueError(f"snapshot of {len(blob)} bytes, over {MAX_SNAPSHOT_SIZE}")
        key = scope_key(tenant_id, database) + document_id
        with self._writing() as txn:
            txn.put(key, pack_seq(covered_seq) + bytes(blob), db=self._tables.snapshots)

    def get_snapshot(
        self, tenant_id: bytes, database: str, document_id: bytes
    ) -> tuple[int, bytes] | None:
        """``(covered_seq, blob)`` of the document's snapshot, or None."""
        if len(tenant_id) != TENANT_ID_SIZE or len(document_id) != DOCUMENT_ID_SIZE:
            return None
        key = scope_key(tenant_id, database) + document_id
        with self._reading() as txn:
            value = txn.get(key, db=self._tables.snapshots)
        if value is None:
            return None
        if len(value) < SEQ_SIZE:
            raise StoreError(f"malformed snapshot row for document {document_id.hex()}: run fsck")
        return unpack_seq(value[:SEQ_SIZE]), value[SEQ_SIZE:]

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
        wanted = [bytes(document_id) for document_id in document_ids]
        if any(len(document_id) != DOCUMENT_ID_SIZE for document_id in wanted):
            raise ValueError(f"document ids must be {DOCUMENT_ID_SIZE} bytes")
        if not wanted:
            return 0
        scope = scope_key(tenant_id, database)
        with self._writing() as txn:
            return sum(
                1
                for document_id in sorted(set(wanted))
                if txn.delete(scope + document_id, db=self._tables.snapshots)
            )

    # -- reads by id -------------------------------------------------------------------------
    def get(self, entry_id: bytes) -> Entry | None:
        """The stored entry, or None. StoreError if its stored bytes are corrupt."""
        if len(entry_id) != ID_SIZE:
            return None
        with self._reading() as txn:
            return self._load(txn, bytes(entry_id))

    def get_raw(self, entry_id: bytes) -> bytes | None:
        """The stored sealed bytes as they are on disk (not re-checked), or None."""
        if len(entry_id) != ID_SIZE:
            return None
        with self._reading() as txn:
            arrival = self._arrival(txn, bytes(entry_id))
            return None if arrival is None else txn.get(arrival, db=self._tables.sealed)

    def get_raws(self, entry_ids: Sequence[bytes]) -> list[bytes | None]:
        """`get_raw` of each id, in the order given, in one short read transaction (a peer's
        fetch asks for hundreds at a time: one transaction each cost more than the reads)."""
        sealed_db = self._tables.sealed
        found: list[bytes | None] = []
        with self._reading() as txn:
            for entry_id in entry_ids:
                arrival = self._arrival(txn, bytes(entry_id)) if len(entry_id) == ID_SIZE else None
                found.append(None if arrival is None else txn.get(arrival, db=sealed_db))
        return found

    def has(self, entry_id: bytes) -> bool:
        if len(entry_id) != ID_SIZE:
            return False
        with self._reading() as txn:
            return txn.get(bytes(entry_id), db=self._tables.ids) is not None

    def missing(self, entry_ids: Iterable[bytes]) -> list[bytes]:
        """The ids of ``entry_ids`` that are not stored, in the order given."""
        with self._reading() as txn:
            ids_db = self._tables.ids
            return [
                entry_id
                for entry_id in entry_ids
                if len(entry_id) != ID_SIZE or txn.get(bytes(entry_id), db=ids_db) is None
            ]

    def count(self) -> int:
        """How many entries are stored, in all tenants and databases."""
        with self._reading() as txn:
            return int(txn.stat(self._tables.sealed)["entries"])

    # -- listings ----------------------------------------------------------------------------
    def tenants(self) -> list[bytes]:
        """The ids of every tenant with at least one stored entry, sorted."""
        found: list[bytes] = []
        with self._reading() as txn:
            cursor = txn.cursor(self._tables.databases)
            positioned = cursor.first()
            while positioned:
                tenant = cursor.key()[:TENANT_ID_SIZE]
                found.append(tenant)
                successor = prefix_successor(tenant)
                positioned = successor is not None and cursor.set_range(successor)
        return found

    def databases(self, tenant_id: bytes) -> list[str]:
        """The names of the tenant's databases with stored entries (the tenant log too), sorted."""
        if len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        names: list[str] = []
        with self._reading() as txn:
            for key in _keys_with_prefix(txn, self._tables.databases, bytes(tenant_id)):
                try:
                    name = key[TENANT_ID_SIZE:].decode("utf-8")
                except UnicodeDecodeError:
                    raise StoreError("malformed databases row: run fsck") from None
                names.append(name)
        return sorted(names)

    def documents(self, tenant_id: bytes, database: str) -> list[bytes]:
        """The distinct document ids of a database, in order of their first entry's arrival."""
        scope = scope_key(tenant_id, database)
        firsts: list[tuple[int, bytes]] = []
        with self._reading() as txn:
            number = scope_number(txn, self._tables, scope)
            if number is None:
                return []
            for key, first in _firsts_with_prefix(txn, self._tables.doc_feed, number):
                if len(key) != DOC_FEED_KEY_SIZE or len(first) != DUP_SIZE:
                    raise StoreError("malformed doc_feed row: run fsck")
                firsts.append((unpack_seq(first[:SEQ_SIZE]), key[SCOPE_NUMBER_SIZE:]))
        firsts.sort()
        return [document_id for _, document_id in firsts]

    # -- per-document and per-database reads -------------------------------------------------
    def document_entries(
        self, tenant_id: bytes, database: str, document_id: bytes, after_seq: int = 0
    ) -> list[tuple[int, Entry]]:
        """``(feed seq, entry)`` of the document's entries with seq > ``after_seq``, in order."""
        if len(document_id) != DOCUMENT_ID_SIZE or after_seq >= _MAX_SEQ:
            return []
        found: list[tuple[int, Entry]] = []
        with self._reading() as txn:
            key = self._doc_feed_key(txn, tenant_id, database, document_id)
            if key is None:
                return []
            retracted = self._retraction_check(txn)
            for seq, arrival in _dups_from(txn, self._tables.doc_feed, key, after_seq + 1):
                if retracted is None or not retracted(arrival):
                    found.append((seq, self._load_arrival(txn, arrival)))
        return found

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
        """
        if len(document_id) != DOCUMENT_ID_SIZE or after_seq >= _MAX_SEQ:
            return [], after_seq
        found: list[tuple[int, Entry]] = []
        last = after_seq
        sealed = self._tables.sealed
        with self._reading() as txn:
            key = self._doc_feed_key(txn, tenant_id, database, document_id)
            if key is None:
                return [], after_seq
            retracted = self._retraction_check(txn)
            for last, arrival in _dups_from(txn, self._tables.doc_feed, key, after_seq + 1):
                if retracted is not None and retracted(arrival):
                    continue
                if known_ids:
                    raw = txn.get(arrival, db=sealed)
                    if raw is not None and hashlib.sha256(raw).digest() in known_ids:
                        continue  # the caller has it (a corrupt copy would not hash to it)
                found.append((last, self._load_arrival(txn, arrival)))
        return found, last

    def document_entry_count(self, tenant_id: bytes, database: str, document_id: bytes) -> int:
        """How many entries the document has."""
        if len(document_id) != DOCUMENT_ID_SIZE:
            return 0
        with self._reading() as txn:
            key = self._doc_feed_key(txn, tenant_id, database, document_id)
            if key is None:
                return 0
            retracted = self._retraction_check(txn)
            if retracted is None:
                cursor = txn.cursor(self._tables.doc_feed)
                return int(cursor.count()) if cursor.set_key(key) else 0
            return sum(
                1
                for _, arrival in _dups_from(txn, self._tables.doc_feed, key, 1)
                if not retracted(arrival)
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
        if cursor >= _MAX_SEQ:
            return [], cursor
        limit = min(limit, MAX_FEED_PAGE)
        scope = scope_key(tenant_id, database)
        items: list[FeedItem] = []
        with self._reading() as txn:
            retracted = self._retraction_check(txn)
            for seq, arrival in _dups_from(txn, self._tables.db_feed, scope, cursor + 1):
                if len(items) >= limit:
                    break
                if retracted is not None and retracted(arrival):
                    continue
                entry = self._load_arrival(txn, arrival)
                header = entry.header
                items.append(
                    FeedItem(
                        seq=seq,
                        entry_id=entry.id,
                        document_id=header.document_id,
                        kind=header.kind,
                        author=header.author,
                        author_seq=header.author_seq,
                        timestamp_ms=header.timestamp_ms,
                    )
                )
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
            return self._iter_database(scope_key(tenant_id, database), since_seq)
        if since_seq != 0:
            raise ValueError("iter_entries: since_seq needs a database")
        if tenant_id is not None and len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError("tenant_id must be 16 bytes")
        return self._iter_log(None if tenant_id is None else bytes(tenant_id))

    def _iter_database(self, scope: bytes, since_seq: int) -> Iterator[Entry]:
        next_seq = since_seq + 1
        while next_seq <= _MAX_SEQ:
            page: list[Entry] = []
            scanned = 0
            with self._reading() as txn:
                retracted = self._retraction_check(txn)
                for seq, arrival in _dups_from(txn, self._tables.db_feed, scope, next_seq):
                    if scanned >= _ITER_PAGE:
                        break
                    scanned += 1
                    next_seq = seq + 1
                    if retracted is None or not retracted(arrival):
                        page.append(self._load_arrival(txn, arrival))
            yield from page
            if scanned < _ITER_PAGE:
                return

    def iter_document_keys(
        self, tenant_id: bytes, database: str, since_seq: int = 0
    ) -> Iterator[tuple[EntryKind, bytes, bytes]]:
        """``(kind, document id, key id)`` of the database's entries with feed seq >
        ``since_seq``, in feed order (retracted ones left out), read from the stored bytes'
        fixed places without decoding them (`entry.document_key_of_raw`): what the query index
        follows a database by, before it materializes the documents (which loads and checks
        their entries). Pages like `iter_entries`."""
        if since_seq < 0:
            raise ValueError("since_seq must be >= 0")
        scope = scope_key(tenant_id, database)
        next_seq = since_seq + 1
        while next_seq <= _MAX_SEQ:
            page: list[tuple[EntryKind, bytes, bytes]] = []
            scanned = 0
            with self._reading() as txn:
                retracted = self._retraction_check(txn)
                for seq, arrival in _dups_from(txn, self._tables.db_feed, scope, next_seq):
                    if scanned >= _ITER_PAGE:
                        break
                    scanned += 1
                    next_seq = seq + 1
                    if retracted is not None and retracted(arrival):
                        continue
                    raw = txn.get(arrival, db=self._tables.sealed)
                    try:
                        page.append(document_key_of_raw(bytes(raw or b"")))
                    except DecodeError as exc:
                        where = f"arrival {unpack_seq(arrival)}"
                        raise StoreError(f"stored entry at {where}: {exc}: run fsck") from None
            yield from page
            if scanned < _ITER_PAGE:
                return

    def _iter_log(self, tenant_id: bytes | None) -> Iterator[Entry]:
        next_arrival = 1
        while True:
            page: list[Entry] = []
            scanned = 0
            with self._reading() as txn:
                retracted = self._retraction_check(txn)
                cursor = txn.cursor(self._tables.sealed)
                if cursor.set_range(pack_seq(next_arrival)):
                    for arrival, raw in cursor:
                        if scanned >= _ITER_PAGE:
                            break
                        scanned += 1
                        if len(arrival) != SEQ_SIZE:
                            raise StoreError("malformed sealed key: run fsck")
                        next_arrival = unpack_seq(arrival) + 1
                        if tenant_id is not None and tenant_id_of_raw(raw) != tenant_id:
                            continue
                        if retracted is None or not retracted(arrival):
                            page.append(self._load_arrival(txn, arrival))
            yield from page
            if scanned < _ITER_PAGE or next_arrival > _MAX_SEQ:
                return

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
        entries: list[Entry] = []
        last = arrival
        with self._reading() as txn:
            cursor = txn.cursor(self._tables.sealed)
            if cursor.set_range(pack_seq(arrival + 1)):
                for key, _raw in cursor:
                    if len(entries) >= limit:
                        break
                    entries.append(self._load_arrival(txn, key))
                    last = unpack_seq(key)
        return entries, last

    def raws_after(self, arrival: int, limit: int) -> tuple[list[bytes], int]:
        """`entries_after` as sealed bytes, neither decoded nor checked against ``ids`` (the
        daemon's store watch hashes them and decodes only what it reports)."""
        if arrival < 0 or limit < 1:
            raise ValueError("arrival must be >= 0 and limit >= 1")
        raws: list[bytes] = []
        last = arrival
        with self._reading() as txn:
            cursor = txn.cursor(self._tables.sealed)
            if cursor.set_range(pack_seq(arrival + 1)):
                for key, raw in cursor:
                    if len(raws) >= limit:
                        break
                    raws.append(bytes(raw))
                    last = unpack_seq(key)
        return raws, last

    def stats(self, tenant_id: bytes, database: str) -> dict[str, int]:
        """``{"entries", "documents", "last_seq", "bytes"}`` of one database."""
        scope = scope_key(tenant_id, database)
        with self._reading() as txn:
            last = last_dup_seq(txn, self._tables.db_feed, scope)
            documents = txn.get(scope, db=self._tables.scope_docs)
            size = txn.get(scope, db=self._tables.scope_bytes)
        if size is not None and len(size) != SEQ_SIZE:
            raise StoreError("malformed scope_bytes row: run fsck")
        if documents is not None and len(documents) != SEQ_SIZE:
            raise StoreError("malformed scope_docs row: run fsck")
        return {
            "entries": last,  # feed sequences are dense: 1..last
            "documents": 0 if documents is None else unpack_seq(documents),
            "last_seq": last,
            "bytes": 0 if size is None else unpack_seq(size),
        }

    # -- revocation ---------------------------------------------------------------------------
    def authors(self, tenant_id: bytes) -> dict[bytes, int]:
        """Every author with stored entries in the tenant -> the highest author_seq stored
        (retracted entries included)."""
        if len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        found: dict[bytes, int] = {}
        with self._reading() as txn:
            for key, value in _rows_with_prefix(txn, self._tables.author_seq, bytes(tenant_id)):
                if len(key) != AUTHOR_KEY_SIZE or len(value) != SEQ_SIZE:
                    raise StoreError("malformed author_seq row: run fsck")
                found[key[TENANT_ID_SIZE:]] = unpack_seq(value)
        return found

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
            found = [(arrival, self._load_arrival(wtxn, arrival)) for arrival in arrivals]
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
        if not 0 <= seq <= _MAX_SEQ:
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
                self._load_arrival(txn, arrival)
                for _, arrival in _dups_from(txn, self._tables.by_author, key, seq)
            ]

    def chain_head(self, tenant_id: bytes, author: bytes) -> tuple[int, bytes | None]:
        """(author_seq, id) of the last entry of the contiguous run 1, 2, 3, ... of the accepted
        (not withdrawn) stored entries of ``author`` in the tenant; (0, None) without an entry 1.
        The run stops at the first gap or fork (`chains.contiguous_head`): what a revocation
        accepts by default, whatever sequence numbers above a gap claim."""
        key = bytes(tenant_id) + bytes(author)
        with self._reading() as txn:
            retracted = self._retraction_check(txn)
            rows = [
                (seq, arrival)
                for seq, arrival in _dups_from(txn, self._tables.by_author, key, 1)
                if retracted is None or not retracted(arrival)
            ]
            seq, arrival = contiguous_head(rows)
            if arrival is None:
                return 0, None
            return seq, self._load_arrival(txn, arrival).id

    def is_retracted(self, entry_id: bytes) -> bool:
        """True when ``entry_id`` is stored but a revocation retracted it."""
        if len(entry_id) != ID_SIZE:
            return False
        with self._reading() as txn:
            arrival = self._arrival(txn, bytes(entry_id))
            return arrival is not None and txn.get(arrival, db=self._tables.retracted) is not None

    def retracted_ids(self, tenant_id: bytes) -> list[bytes]:
        """The ids of the tenant's retracted entries, sorted."""
        with self._reading() as txn:
            return sorted(
                self._load_arrival(txn, arrival).id
                for arrival, value in txn.cursor(self._tables.retracted)
                if value[:TENANT_ID_SIZE] == bytes(tenant_id)
            )

    def _retraction_check(self, txn: lmdb.Transaction[bytes]) -> Callable[[bytes], bool] | None:
        """A test ``arrival (BE64) -> is it retracted`` for reads in ``txn``, or None when
        nothing is."""
        if not txn.stat(self._tables.retracted)["entries"]:
            return None
        db = self._tables.retracted
        return lambda arrival: txn.get(arrival, db=db) is not None

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
            storage = LmdbReconStorage(txn, self._tables, scope, cache_rows=cache_rows)
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


def _decode_stored(what: str, raw: bytes) -> Entry:
    try:
        return Entry.decode(raw, what="stored entry")
    except DecodeError as exc:
        raise StoreError(f"stored entry {what} is corrupt ({exc}): run fsck") from None


def _dups_from(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, key: bytes, first_seq: int
) -> Iterator[tuple[int, bytes]]:
    """``(seq, arrival BE64)`` of the values under ``key`` in a DUPSORT table, from the first
    with seq >= ``first_seq`` on."""
    if first_seq > _MAX_SEQ:
        return
    cursor = txn.cursor(db)
    if not cursor.set_key(key) or not cursor.set_range_dup(key, pack_seq(max(first_seq, 0))):
        return
    for value in cursor.iternext_dup(keys=False, values=True):
        if len(value) != DUP_SIZE:
            raise StoreError(f"malformed row under {key.hex()}: run fsck")
        yield unpack_seq(value[:SEQ_SIZE]), value[SEQ_SIZE:]


def _firsts_with_prefix(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """Every key starting with ``prefix`` in a DUPSORT table, with its first value."""
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor.iternext_nodup(keys=True, values=True):
        if not key.startswith(prefix):
            return
        yield key, value


def _keys_with_prefix(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes
) -> Iterator[bytes]:
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key


def _rows_with_prefix(
    txn: lmdb.Transaction[bytes], db: lmdb._Database, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


def _check_scope_args(tenant_id: bytes, database: str) -> None:
    if len(tenant_id) != TENANT_ID_SIZE:
        raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
    if database != TENANT_LOG and not DATABASE_NAME_RE.fullmatch(database):
        raise ValueError(f"invalid database name {database!r}")
