"""The query index on disk: one SQLCipher database per node home, ``HOME/index/query.db``.

Derived data only: everything in it is rebuilt from the log (`follower.IndexFollower`), so a
damaged, missing or outdated file is deleted and rebuilt, never repaired. Every page (and the
write-ahead log) is encrypted by SQLCipher 4 (AES-256, HMAC-SHA512 per page) under a random
32-byte *index key* kept in the node's keystore (`keystore.bin`, under the node password),
given to SQLCipher as a raw key (no second password derivation). Deleted rows are overwritten
(``secure_delete``) and the full-text index removes a document's tokens at once (FTS5
``secure-delete``), so a shredded document leaves no live or free page holding it.

Schema (version `SCHEMA_VERSION`; another version is rebuilt)::

    meta      key TEXT PK -> value TEXT         schema version
    sources   id PK, tenant BLOB(16), db TEXT,  one per (tenant, database) followed;
              cursor INT, docs INT              cursor = the database feed seq indexed up to;
                                                docs = its rows in docs (kept by triggers)
    tenants   tenant BLOB PK, key_fp BLOB,      key_fp: hash of the key ids held when last
              log_seq INT                       followed; log_seq: tenant-log feed seq seen
    docs      id PK, source, doc BLOB(16),      one row per readable, live document: its
              uid TEXT UNIQUE, body TEXT,       content as JSON (`body`), uid = tenant-hex/db/
              key_ids TEXT                      doc-hex (the stable tiebreak of every sort),
                                                key_ids = the key ids its entries are sealed
                                                under (hex, space separated)
    skipped   source, doc, reason, detail,      documents of a source not indexed, and why:
              key_ids                           no_key, missing_dependency, unreadable
    fts       FTS5(text), rowid = docs.id       the document's string values
    ix_*      expression indexes on json_extract(body, '$.path'), made for the paths that
              queries filter or sort on (`ensure_index`: equality paths, then sort paths)
    vf_*      facet tables (`ensure_facets`): per document, the values a view groups, totals
              and filters on as real columns, kept by triggers on docs, with a covering index;
              derived: all dropped when a view is removed or replaced (`drop_facets`) or a
              trigger fails a write (`write`), rebuilt by the views when next read
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import sqlcipher3

from .computed import Computed
from .expressions import JsonPath

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INDEX_DIR = "index"
INDEX_FILE = "query.db"
MAX_PATH_INDEXES = 48
MAX_FACET_TABLES = 16
_SIDE_FILES = ("-wal", "-shm", "-journal")

DatabaseError = sqlcipher3.DatabaseError

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (
    id INTEGER PRIMARY KEY, tenant BLOB NOT NULL, db TEXT NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0, docs INTEGER NOT NULL DEFAULT 0, UNIQUE (tenant, db));
CREATE TABLE tenants (tenant BLOB PRIMARY KEY, key_fp BLOB, log_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE docs (
    id INTEGER PRIMARY KEY, source INTEGER NOT NULL, doc BLOB NOT NULL, uid TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL, key_ids TEXT NOT NULL, UNIQUE (source, doc));
CREATE TABLE skipped (
    source INTEGER NOT NULL, doc BLOB NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    key_ids TEXT NOT NULL, PRIMARY KEY (source, doc));
CREATE INDEX skipped_reason ON skipped (source, reason);
CREATE TRIGGER docs_counted AFTER INSERT ON docs BEGIN
    UPDATE sources SET docs = docs + 1 WHERE id = new.source; END;
CREATE TRIGGER docs_uncounted AFTER DELETE ON docs BEGIN
    UPDATE sources SET docs = docs - 1 WHERE id = old.source; END;
CREATE VIRTUAL TABLE fts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
INSERT INTO fts (fts, rank) VALUES ('secure-delete', 1);
"""


def index_path(home: Path) -> Path:
    return home / INDEX_DIR / INDEX_FILE


class IndexStore:
    """The SQLCipher connection and the index's rows. Thread-safe by one lock (the daemon runs
    commands in worker threads); writes go in `transaction()` blocks (BEGIN IMMEDIATE: SQLite
    serialises writers across processes)."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the index key must be 32 bytes")
        self.path = path
        self._key = key
        self._lock = threading.RLock()
        self.rebuilt_because: str | None = None
        """Why the file was (re)created on open: 'missing', 'damaged: ...', 'schema N'; None
        when an existing index was opened as it was."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        existed = path.exists()
        self._conn = self._connect()
        problem = self._check() if existed else "missing"
        if problem is not None:
            if existed:
                log.warning("query index %s %s: rebuilding it from the log", path, problem)
            self._conn.close()
            self._remove_files()
            self._conn = self._connect()
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            self.rebuilt_because = problem
        self._failed_facets: set[str] = set()
        """Facet shapes whose build failed on a stored document: their views read docs."""
        self._path_indexes = {
            name
            for (name,) in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix\\_%'"
                " ESCAPE '\\'"
            )
        }

    def _connect(self) -> sqlcipher3.Connection:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        conn = sqlcipher3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        # PRAGMA takes no parameters; the key is our own 32 random bytes, written as hex.
        conn.execute(f"PRAGMA key = \"x'{self._key.hex()}'\"")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB of decrypted pages at most
        conn.execute("PRAGMA foreign_keys = OFF")
        with contextlib.suppress(DatabaseError):
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _check(self) -> str | None:
        """None when the file opens with the key, passes SQLite's quick check and has this
        schema version; otherwise why not."""
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != str(SCHEMA_VERSION):
                return f"has schema {row[0] if row else 'none'}, not {SCHEMA_VERSION}"
            result = self._conn.execute("PRAGMA quick_check").fetchall()
            if result != [("ok",)]:
                return f"is damaged ({'; '.join(str(r[0]) for r in result[:3])})"
        except DatabaseError as exc:
            return f"is damaged or not ours ({exc})"
        return None

    def _remove_files(self) -> None:
        for suffix in ("", *_SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def delete_all(self) -> None:
        """Remove the index file: the next `IndexStore` over the path builds a fresh one."""
        with self._lock:
            self._conn.close()
            self._remove_files()

    def reencrypt(self, new_key: bytes, save_key: Callable[[bytes], None]) -> None:
        """Move the index to a new file under ``new_key`` and destroy the old key: the live
        content is copied (``sqlcipher_export``), ``save_key`` records the new key (the
        keystore overwrites the old one), and the new file replaces the old. What deleted rows
        left in freed pages, old write-ahead-log frames or disk blocks of the old file was
        encrypted under the old key, which no longer exists: erased, not just unlinked.
        A crash on the way leaves a file the key does not open: rebuilt on the next open."""
        if len(new_key) != 32:
            raise ValueError("the index key must be 32 bytes")
        fresh = Path(f"{self.path}.next")
        with self._lock:
            for suffix in ("", *_SIDE_FILES):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{fresh}{suffix}")
            fd = os.open(fresh, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
            os.close(fd)
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # ATTACH takes the path as a parameter; the key is our own random bytes, in hex.
            self._conn.execute(
                f"ATTACH DATABASE ? AS fresh KEY \"x'{new_key.hex()}'\"", (str(fresh),)
            )
            try:
                self._conn.execute("SELECT sqlcipher_export('fresh')")
            finally:
                self._conn.execute("DETACH DATABASE fresh")
            save_key(new_key)
            self._conn.close()
            os.replace(fresh, self.path)
            for suffix in _SIDE_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            self._key = new_key
            self._conn = self._connect()

    # -- transactions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlcipher3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            rows: list[Any] = self._conn.execute(sql, tuple(params)).fetchall()
            return rows

    def checkpoint(self) -> None:
        """Move the write-ahead log into the file and truncate it (after an erasure)."""
        with self._lock, contextlib.suppress(DatabaseError):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- sources and tenants -----------------------------------------------------------------
    def source_id(self, tenant_id: bytes, database: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM sources WHERE tenant = ? AND db = ?", (tenant_id, database)
            ).fetchone()
            if row is not None:
                return int(row[0])
            cur = self._conn.execute(
                "INSERT INTO sources (tenant, db) VALUES (?, ?)", (tenant_id, database)
            )
            return int(cur.lastrowid or 0)

    def find_source(self, tenant_id: bytes, database: str) -> int | None:
        rows = self.read(
            "SELECT id FROM sources WHERE tenant = ? AND db = ?", (tenant_id, database)
        )
        return int(rows[0][0]) if rows else None

    def source_cursor(self, source: int) -> int:
        rows = self.read("SELECT cursor FROM sources WHERE id = ?", (source,))
        return int(rows[0][0]) if rows else 0

    def sources(self) -> list[tuple[int, bytes, str, int]]:
        return [
            (int(i), bytes(t), str(d), int(c))
            for i, t, d, c in self.read("SELECT id, tenant, db, cursor FROM sources ORDER BY id")
        ]

    def tenant_state(self, tenant_id: bytes) -> tuple[bytes | None, int]:
        rows = self.read("SELECT key_fp, log_seq FROM tenants WHERE tenant = ?", (tenant_id,))
        if not rows:
            return None, 0
        return (bytes(rows[0][0]) if rows[0][0] is not None else None), int(rows[0][1])

    # -- path indexes ------------------------------------------------------------------------
    def ensure_path_index(self, path: JsonPath) -> bool:
        """An expression index on ``path`` (made once; at most `MAX_PATH_INDEXES`)."""
        return self.ensure_index([path]) is not None

    def ensure_index(self, paths: Sequence[JsonPath], *, with_source: bool = False) -> str | None:
        """An expression index on ``paths`` in this order (then the source column when
        ``with_source``): a view's categories then its totals' paths make an index that
        covers its grouped query, so the tree is read from the index alone. Made once; at
        most `MAX_PATH_INDEXES` in all. Returns its name (None when that many exist)."""
        columns = [p.sql for p in paths] + (["source"] if with_source else [])
        name = "ix_" + hashlib.sha256("\x00".join(columns).encode()).hexdigest()[:16]
        if name in self._path_indexes:
            return name
        if len(self._path_indexes) >= MAX_PATH_INDEXES:
            return None
        with self._lock:
            # The paths are validated (expressions.parse_path) and the name is a hash of them.
            self._conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON docs ({', '.join(columns)})")
            self._conn.execute("ANALYZE")
            self._path_indexes.add(name)
        return name

    # -- view facets -------------------------------------------------------------------------
    def ensure_facets(
        self, values: Sequence[JsonPath | Computed], types: Sequence[JsonPath] = ()
    ) -> Facets | None:
        """A *facet table* holding, per document, the values at ``values`` (paths, or computed
        values: `computed.Computed`) and the JSON types at ``types`` as real columns, kept
        equal to ``docs`` by triggers (insert, update, delete, in the same transaction), with
        an index on the value columns in this order then the source. A view's grouped query
        reads that index alone (covering), instead of parsing every document's JSON. Made
        once per shape; None when `MAX_FACET_TABLES` exist or no path is given (the caller
        then reads ``docs``). A computed value's literals are rows of a constants table
        (``vk_*``, written with bound parameters) that its SQL reads, since a trigger cannot
        hold parameters and nothing given is ever written into SQL."""
        spec: list[tuple[str, JsonPath | Computed]] = [("v", p) for p in values]
        spec += [("t", p) for p in types]
        if not spec:
            return None
        digest = hashlib.sha256("\x00".join(_facet_key(k, p) for k, p in spec).encode())
        name = f"vf_{digest.hexdigest()[:16]}"
        constants = f"vk_{digest.hexdigest()[:16]}"
        columns = {_facet_column_key(k, p): f"c{i}" for i, (k, p) in enumerate(spec)}
        facets = Facets(name, columns)
        with self._lock:
            if name in self._failed_facets:
                return None
            bound: list[Any] = []  # the computed values' literals, in order
            first: dict[int, int] = {}
            for i, (_kind, p) in enumerate(spec):
                if isinstance(p, Computed):
                    first[i] = len(bound)
                    bound.extend(p.sql().params)  # the same whatever reads the paths

            def read(row: str) -> list[str]:
                """The SQL of each column, reading ``row.body``."""
                out = []
                for i, (kind, p) in enumerate(spec):
                    if isinstance(p, JsonPath):
                        out.append(p.sql_on(row, exists=kind == "t"))
                    else:
                        sql = p.sql(partial(_on_row, row)).text
                        out.append(_constants_read(sql, constants, first[i]))
                return out

            fill = ", ".join(read("docs"))
            inserted = ", ".join(read("new"))
            sets = ", ".join(f"c{i} = {sql}" for i, sql in enumerate(read("new")))
            cols = ", ".join(f"c{i}" for i in range(len(spec)))
            indexed = ", ".join(
                [*(f"c{i}" for i, (k, _p) in enumerate(spec) if k == "v"), "source"]
            )
            # Names are hashes, paths are validated (expressions.parse_path), computed values
            # are fixed templates whose literals are rows of the constants table: no value is
            # ever written into this SQL.
            # Existence and count are read inside the write transaction: another process
            # making the same shape at once either made it already (seen here) or waits.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                exists = self._conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
                ).fetchone()
                count = len(self._facet_tables())
                if exists or count >= MAX_FACET_TABLES:
                    self._conn.execute("ROLLBACK")
                    return facets if exists else None
                if bound:
                    self._conn.execute(f"CREATE TABLE {constants} (id INTEGER PRIMARY KEY, v)")
                    self._conn.executemany(
                        f"INSERT INTO {constants} (id, v) VALUES (?, ?)", enumerate(bound)
                    )
                for statement in (
                    f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, source INTEGER NOT NULL,"
                    f" {cols})",
                    f"INSERT INTO {name} SELECT id, source, {fill} FROM docs",
                    f"CREATE INDEX {name}_ix ON {name} ({indexed})",
                    f"CREATE TRIGGER {name}_ins AFTER INSERT ON docs BEGIN"
                    f" INSERT INTO {name} VALUES (new.id, new.source, {inserted}); END",
                    f"CREATE TRIGGER {name}_upd AFTER UPDATE OF body ON docs BEGIN"
                    f" UPDATE {name} SET {sets} WHERE id = new.id; END",
                    f"CREATE TRIGGER {name}_del AFTER DELETE ON docs BEGIN"
                    f" DELETE FROM {name} WHERE id = old.id; END",
                    "ANALYZE",
                ):
                    self._conn.execute(statement)
            except sqlcipher3.OperationalError as exc:
                # A value this shape computes failed on a stored document (no operator can
                # since they are total: a second line of defence): the view reads docs.
                self._conn.execute("ROLLBACK")
                self._failed_facets.add(name)
                log.warning("view facet table %s not built (%s): reading documents", name, exc)
                return None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return facets

    def _facet_tables(self) -> list[str]:
        return [
            str(name)
            for (name,) in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'vf\\_%'"
                " ESCAPE '\\'"
            )
        ]

    def _drop_facets_in(self, tx: sqlcipher3.Connection) -> int:
        """Drop every facet table, its triggers (on docs), its index (with it) and its
        constants table, in the caller's transaction; returns how many there were."""
        tables = self._facet_tables()
        for table in tables:
            # Names come from sqlite_master and match vf_<hex>: no outside text.
            for trigger in ("ins", "upd", "del"):
                tx.execute(f"DROP TRIGGER IF EXISTS {table}_{trigger}")
            tx.execute(f"DROP TABLE IF EXISTS {table}")
            tx.execute(f"DROP TABLE IF EXISTS vk_{table[3:]}")
        return len(tables)

    def drop_facets(self) -> int:
        """Drop every facet table (a view was removed: tables no view uses any more must not
        stay, nor their triggers run on every write). Derived data: each view still defined
        rebuilds its own the next time it is read. Returns how many were dropped."""
        with self.transaction() as tx:
            dropped = self._drop_facets_in(tx)
        self._failed_facets.clear()
        return dropped

    def write(self, work: Callable[[sqlcipher3.Connection], None]) -> None:
        """``work`` in one write transaction. Should it fail in SQL (OperationalError) while
        facet tables exist, it runs once more, in a transaction that first drops every facet
        table: when that succeeds a facet trigger was the cause (a value a view computes
        failed on this document), and no view's facets may stop the index of every tenant on
        this node; the views rebuild theirs when next read (`ensure_facets`), reading
        documents when the build fails again. When the retry fails too, the facets stay (DDL
        is transactional) and the first error is raised. ``work`` must be repeatable."""
        with self._lock:
            try:
                with self.transaction() as tx:
                    work(tx)
                return
            except sqlcipher3.OperationalError as exc:
                if not self._facet_tables():
                    raise
                first = exc
            try:
                with self.transaction() as tx:
                    dropped = self._drop_facets_in(tx)
                    work(tx)
            except sqlcipher3.OperationalError:
                raise first from None
            self._failed_facets.clear()
            log.warning(
                "a write of the query index failed in a view's facet trigger (%s): dropped %d"
                " facet tables, rebuilt when their views are next read",
                first,
                dropped,
            )

    # -- size --------------------------------------------------------------------------------
    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", *_SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total


@dataclass(frozen=True)
class Facets:
    """A facet table: its name and the column of each (json path or computed value's JSON,
    type-not-value)."""

    table: str
    columns: dict[tuple[str, bool], str]

    def column(self, path: JsonPath, exists: bool) -> str:
        return self.columns[(path.json_path, exists)]

    def computed_column(self, value: Computed) -> str:
        return self.columns[_facet_column_key("v", value)]


def _facet_key(kind: str, value: JsonPath | Computed) -> str:
    if isinstance(value, JsonPath):
        return f"{kind}{value.json_path}"  # as before computed values: existing tables match
    return f"e{_facet_column_key(kind, value)[0]}"


def _facet_column_key(kind: str, value: JsonPath | Computed) -> tuple[str, bool]:
    if isinstance(value, JsonPath):
        return (value.json_path, kind == "t")
    return ("=" + value.key, False)


def _on_row(row: str, path: JsonPath, exists: bool) -> str:
    return path.sql_on(row, exists=exists)


_PARAMETER = re.compile(r"\?")


def _constants_read(sql: str, table: str, first: int) -> str:
    """``sql`` with its n-th ``?`` reading row ``first + n`` of the constants ``table``. The
    SQL is a computed value's fixed templates and validated paths: no ``?`` but parameters."""
    numbers = iter(range(first, first + sql.count("?")))
    return _PARAMETER.sub(lambda _m: f"(SELECT v FROM {table} WHERE id = {next(numbers)})", sql)


def fingerprint(key_ids: Sequence[bytes]) -> bytes:
    return hashlib.sha256(b"".join(sorted(key_ids))).digest()
