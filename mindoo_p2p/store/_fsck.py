"""The full consistency check of an entry store (`EntryStore.fsck`).

Runs in one read transaction, so it sees one consistent snapshot while writers go on. Every
entry is decoded once, its SHA-256 compared with its key and its signature checked (in
batches), with the admission pipeline's own steps (`admission.decode`, `admission.verify_all`);
every index row is checked against the entry it names. Problems
are collected, never raised: an lmdb error inside one pass is reported and the next pass runs.

The reconciliation index is checked against the entries (per database: a count and a hash sum
of the keys expected, then row by row only where they differ) and its aggregates against it.

Memory: one set of ids (about 100 bytes per entry) plus per-document and per-author tables, and
the reconciliation aggregates (a few rows per leaf bucket of ~4.4 minutes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import lmdb

from .. import admission
from ..entry import (
    DATABASE_NAME_RE,
    ID_SIZE,
    TENANT_ID_SIZE,
    TENANT_LOG,
    Entry,
)
from ..rejection import Rejected
from ._layout import (
    AUTHOR_KEY_SIZE,
    DOC_IDX_KEY_SIZE,
    DOC_KEY_SIZE,
    FEED_KEY_SIZE,
    LOG_VALUE_SIZE,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    SCOPE_SIZE,
    SEQ_SIZE,
    Tables,
    author_idx_key,
    scope_key,
    unpack_schema_version,
    unpack_seq,
)
from ._recon_index import ReconIndexCheck
from .results import FsckProblem, FsckReport

_VERIFY_CHUNK = 1024


@dataclass
class _State:
    """What the passes learn and share."""

    txn: lmdb.Transaction[bytes]
    tables: Tables
    problems: list[FsckProblem] = field(default_factory=list)
    checked: int = 0
    indexed: dict[bytes, bytes] = field(default_factory=dict)
    """id -> tenant of every entry reached through the feed."""
    feed_rows: int = 0
    author_rows: int = 0
    """Feed entries whose ``author_idx`` row was found."""
    unreadable_entries: int = 0
    """Feed entries that could not be read (their author_idx row cannot be checked)."""
    last_seq: dict[bytes, int] = field(default_factory=dict)
    first_seq: dict[bytes, int] = field(default_factory=dict)
    author_max: dict[bytes, int] = field(default_factory=dict)
    database_keys: set[bytes] = field(default_factory=set)
    scope_bytes: dict[bytes, int] = field(default_factory=dict)
    unreadable_scopes: set[bytes] = field(default_factory=set)
    """Scopes with a feed entry that could not be read: their derived rows are checked loosely
    (the entry's own problem is the one to report)."""
    pending: list[Entry] = field(default_factory=list)
    """(id, author, signed message, signature) awaiting a batched signature check."""
    recon: ReconIndexCheck = field(default_factory=ReconIndexCheck)
    """Learns, from every entry reached through the feed, what the reconciliation index holds."""

    def tenant_has_unreadable_entries(self, key: bytes) -> bool:
        """True when ``key`` starts with a tenant id that has an unreadable feed entry."""
        return any(key[:TENANT_ID_SIZE] == s[:TENANT_ID_SIZE] for s in self.unreadable_scopes)

    def problem(self, entry_id: bytes | None, where: str, reason: str) -> None:
        self.problems.append(FsckProblem(entry_id, where, reason))

    def load(self, entry_id: bytes) -> Entry | None:
        """Decode and hash-check a stored entry, queue its signature; None (reported) if bad."""
        raw = self.txn.get(entry_id, db=self.tables.entries)
        if raw is None:
            self.problem(entry_id, "entries", "index row names an entry that is not stored")
            return None
        self.checked += 1
        entry = admission.decode(raw, "stored entry")
        if isinstance(entry, Rejected):
            self.problem(entry_id, "entries", entry.message)
            return None
        if entry.id != entry_id:
            self.problem(entry_id, "entries", "sha256 of the stored bytes differs from its key")
            return None
        self.pending.append(entry)
        if len(self.pending) >= _VERIFY_CHUNK:
            self.flush_signatures()
        return entry

    def flush_signatures(self) -> None:
        """The admission pipeline's signature step over the queued entries."""
        for checked in admission.verify_all(self.pending):
            if isinstance(checked, Rejected):
                self.problem(checked.entry_id, "entries", checked.message)
        self.pending.clear()


def _check_feed(state: _State) -> None:
    """Every feed row: dense sequence, a stored valid entry of that scope, its doc_idx row."""
    txn, tables = state.txn, state.tables
    for key, value in txn.cursor(tables.feed):
        if len(key) != FEED_KEY_SIZE or len(value) != ID_SIZE:
            state.problem(None, "feed", f"malformed row {key.hex()}")
            continue
        scope, seq = key[:SCOPE_SIZE], unpack_seq(key[SCOPE_SIZE:])
        expected = state.last_seq.get(scope, 0) + 1
        if seq != expected:
            state.problem(value, "feed", f"sequence {seq} where {expected} was expected")
        state.last_seq[scope] = seq
        state.feed_rows += 1
        if value in state.indexed:
            state.problem(value, "feed", "entry listed twice")
            continue
        entry = state.load(value)
        if entry is None:
            # Reported already; count its bytes and stop expecting exact derived rows here.
            state.recon.tolerate(value)
            state.unreadable_entries += 1
            state.indexed[value] = b""
            state.unreadable_scopes.add(scope)
            raw = txn.get(value, db=tables.entries)
            state.scope_bytes[scope] = state.scope_bytes.get(scope, 0) + len(raw or b"")
            continue
        header = entry.header
        state.indexed[value] = header.tenant_id
        if txn.get(value, db=tables.retracted) is None:
            state.recon.expect(entry)
        row = author_idx_key(header.tenant_id, header.author, header.author_seq, value)
        if txn.get(row, db=tables.author_idx) is None:
            state.problem(value, "author_idx", "entry has no row")
        else:
            state.author_rows += 1
        if scope_key(header.tenant_id, header.database) != scope:
            state.problem(value, "feed", "row scope differs from the entry's tenant/database")
            continue
        doc_key = scope + header.document_id
        if txn.get(doc_key + key[SCOPE_SIZE:], db=tables.doc_idx) != value:
            state.problem(value, "doc_idx", f"no row for feed sequence {seq}")
        state.first_seq.setdefault(doc_key, seq)
        author_key = header.tenant_id + header.author
        if state.author_max.get(author_key, 0) < header.author_seq:
            state.author_max[author_key] = header.author_seq
        state.database_keys.add(header.tenant_id + header.database.encode("utf-8"))
        state.scope_bytes[scope] = state.scope_bytes.get(scope, 0) + len(entry.raw)


def _check_entries(state: _State) -> None:
    """Every stored entry is reachable through the feed (unreached ones are checked here)."""
    cursor = state.txn.cursor(state.tables.entries)
    for key in cursor.iternext(keys=True, values=False):
        if key in state.indexed:
            continue
        if len(key) != ID_SIZE:
            state.problem(None, "entries", f"malformed key {key.hex()}")
            continue
        state.problem(key, "feed", "stored entry is missing from the feed")
        state.load(key)


def _check_doc_idx(state: _State) -> None:
    """Every doc_idx row matches the feed row of its sequence; no extra rows."""
    txn, tables = state.txn, state.tables
    rows = 0
    for key, value in txn.cursor(tables.doc_idx):
        rows += 1
        if len(key) != DOC_IDX_KEY_SIZE or len(value) != ID_SIZE:
            state.problem(None, "doc_idx", f"malformed row {key.hex()}")
            continue
        if txn.get(key[:SCOPE_SIZE] + key[DOC_KEY_SIZE:], db=tables.feed) != value:
            state.problem(value, "doc_idx", "row does not match the feed row of its sequence")
    if rows != state.feed_rows:
        state.problem(None, "doc_idx", f"{rows} rows for {state.feed_rows} feed rows")


def _check_documents(state: _State) -> None:
    """documents rows hold each document's first sequence, one row per document."""
    expected = dict(state.first_seq)
    for key, value in state.txn.cursor(state.tables.documents):
        first = expected.pop(key, None)
        loose = key[:SCOPE_SIZE] in state.unreadable_scopes
        if len(key) != DOC_KEY_SIZE or len(value) != SEQ_SIZE:
            state.problem(None, "documents", f"malformed row {key.hex()}")
        elif first is None:
            if not loose:
                state.problem(None, "documents", f"row for a document without entries {key.hex()}")
        elif unpack_seq(value) != first and not (loose and unpack_seq(value) < first):
            state.problem(None, "documents", f"first sequence {unpack_seq(value)} != {first}")
    for key in expected:
        state.problem(None, "documents", f"missing row for document {key[SCOPE_SIZE:].hex()}")


def _check_databases(state: _State) -> None:
    expected = set(state.database_keys)
    for key, _ in state.txn.cursor(state.tables.databases):
        name = key[TENANT_ID_SIZE:].decode("utf-8", errors="replace")
        valid = name == TENANT_LOG or DATABASE_NAME_RE.fullmatch(name) is not None
        if len(key) <= TENANT_ID_SIZE or not valid:
            state.problem(None, "databases", f"malformed row {key.hex()}")
        elif key not in expected and not state.tenant_has_unreadable_entries(key):
            state.problem(None, "databases", f"database {name!r} has no entries")
        expected.discard(key)
    for key in expected:
        state.problem(None, "databases", f"missing row for {key[TENANT_ID_SIZE:]!r}")


def _check_counters(
    state: _State,
    db: lmdb._Database,
    where: str,
    key_size: int,
    expected: dict[bytes, int],
    loose: Callable[[bytes], bool],
) -> None:
    """Each row holds exactly the expected BE64 value; a ``loose`` key may hold more."""
    remaining = dict(expected)
    for key, value in state.txn.cursor(db):
        want = remaining.pop(key, None)
        if len(key) != key_size or len(value) != SEQ_SIZE:
            state.problem(None, where, f"malformed row {key.hex()}")
        elif want is None:
            if not loose(key):
                state.problem(None, where, f"row without entries {key.hex()}")
        elif unpack_seq(value) != want and not (loose(key) and unpack_seq(value) > want):
            state.problem(None, where, f"value {unpack_seq(value)} != {want} for {key.hex()}")
    for key in remaining:
        state.problem(None, where, f"missing row {key.hex()}")


def _check_log(state: _State) -> None:
    """The global arrival log lists every indexed entry exactly once, densely numbered."""
    remaining = dict(state.indexed)
    expected_seq = 1
    for key, value in state.txn.cursor(state.tables.log):
        if len(key) != SEQ_SIZE or len(value) != LOG_VALUE_SIZE:
            state.problem(None, "log", f"malformed row {key.hex()}")
            continue
        seq = unpack_seq(key)
        if seq != expected_seq:
            state.problem(None, "log", f"sequence {seq} where {expected_seq} was expected")
        expected_seq = seq + 1
        entry_id = value[TENANT_ID_SIZE:]
        tenant = remaining.pop(entry_id, None)
        if tenant is None:
            state.problem(entry_id, "log", "row names an entry not in the feed, or twice")
        elif tenant and tenant != value[:TENANT_ID_SIZE]:
            state.problem(entry_id, "log", "row tenant differs from the entry's")
    for entry_id in remaining:
        state.problem(entry_id, "log", "entry is missing from the log")


def _check_author_index(state: _State) -> None:
    """``author_idx`` holds one row per feed entry (each was looked up by the feed pass) and
    nothing else; every ``retracted`` row names a stored entry of its tenant."""
    txn, tables = state.txn, state.tables
    rows = int(txn.stat(tables.author_idx)["entries"])
    if not state.author_rows <= rows <= state.author_rows + state.unreadable_entries:
        state.problem(
            None, "author_idx", f"{rows} rows where the feed's entries give {state.author_rows}"
        )
    for key, value in txn.cursor(tables.retracted):
        tenant = state.indexed.get(key)
        if len(key) != ID_SIZE or len(value) != TENANT_ID_SIZE:
            state.problem(None, "retracted", f"malformed row {key.hex()}")
        elif tenant is None:
            state.problem(key, "retracted", "row names an entry not in the feed")
        elif tenant and tenant != value:
            state.problem(key, "retracted", "row tenant differs from the entry's")


def _check_snapshots(state: _State) -> None:
    for key, value in state.txn.cursor(state.tables.snapshots):
        if len(key) != DOC_KEY_SIZE or len(value) < SEQ_SIZE:
            state.problem(None, "snapshots", f"malformed row {key.hex()}")
            continue
        covered = unpack_seq(value[:SEQ_SIZE])
        last = state.last_seq.get(key[:SCOPE_SIZE], 0)
        if covered > last:
            state.problem(None, "snapshots", f"covers sequence {covered} beyond {last}")


def _check_meta(state: _State) -> None:
    stored = state.txn.get(SCHEMA_KEY, db=state.tables.meta)
    version = None if stored is None else unpack_schema_version(stored)
    if version != SCHEMA_VERSION:
        state.problem(None, "meta", f"schema version {version}, expected {SCHEMA_VERSION}")


def run_fsck(env: lmdb.Environment, tables: Tables) -> FsckReport:
    """Check the whole store; never raises on corruption (a pass that fails is reported as a
    problem, and the next pass runs)."""
    problems: list[FsckProblem] = []
    try:
        txn = env.begin()
    except lmdb.Error as exc:
        return FsckReport(0, [FsckProblem(None, "lmdb", f"cannot read: {exc}")])
    with txn:
        state = _State(txn, tables, problems)
        passes: list[tuple[str, Callable[[], None]]] = [
            ("meta", lambda: _check_meta(state)),
            ("feed", lambda: _check_feed(state)),
            ("entries", lambda: _check_entries(state)),
            ("signatures", state.flush_signatures),
            ("doc_idx", lambda: _check_doc_idx(state)),
            ("documents", lambda: _check_documents(state)),
            ("databases", lambda: _check_databases(state)),
            (
                "author_seq",
                lambda: _check_counters(
                    state,
                    tables.author_seq,
                    "author_seq",
                    AUTHOR_KEY_SIZE,
                    state.author_max,
                    state.tenant_has_unreadable_entries,
                ),
            ),
            (
                "scope_bytes",
                lambda: _check_counters(
                    state,
                    tables.scope_bytes,
                    "scope_bytes",
                    SCOPE_SIZE,
                    state.scope_bytes,
                    lambda key: False,
                ),
            ),
            ("log", lambda: _check_log(state)),
            ("author_idx", lambda: _check_author_index(state)),
            ("snapshots", lambda: _check_snapshots(state)),
            ("recon_idx", lambda: state.recon.check(txn, tables, state.problem)),
        ]
        for where, check in passes:
            try:
                check()
            except Exception as exc:  # corruption must be reported, whatever it breaks
                state.problem(None, where, f"check aborted: {type(exc).__name__}: {exc}")
        return FsckReport(state.checked, state.problems)
