"""The full consistency check of an entry store (`EntryStore.fsck`).

Runs in one read transaction, so it sees one consistent snapshot while writers go on. Every
entry is decoded once, its SHA-256 looked up in ``ids`` (which must map it back to the arrival
number it is stored under) and its signature checked (in batches), with the admission
pipeline's own steps (`admission.decode`, `admission.verify_all`, `admission.verify_one`);
then every index table is walked and each row checked against the entry it names, and every
entry against the rows it must have (one ``db_feed`` row, one ``doc_feed`` row under its
database's number from ``scopes`` with the same sequence number, one ``by_author`` row, one
``ids`` row; no other rows); the per-database counters (``author_seq``, ``scope_bytes``, and
``scope_docs``, the documents the entries name) hold what the entries add up to.
Problems are collected, never raised: an lmdb error inside one pass is reported and the next
pass runs.

An entry whose bytes are damaged (they do not decode, or hash to no id that maps back to them)
is reported once, under the id that ``ids`` names for it when there is one; rows that name it
are not reported again, and the counters of its database and tenant are checked loosely.

The reconciliation index is checked against the entries (per database: a count and a hash sum
of the keys expected, then row by row only where they differ) and its aggregates against it.

Memory: about 40 bytes per entry (arrival, database, sequence number, document and author
fingerprints, flags) plus per-database and per-author tables, and the reconciliation
aggregates (a few rows per leaf bucket of ~4.4 minutes).
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
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
    DOC_FEED_KEY_SIZE,
    DOC_KEY_SIZE,
    DUP_SIZE,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    SCOPE_NUMBER_SIZE,
    SCOPE_SIZE,
    SEQ_SIZE,
    Tables,
    is_evidence_mark,
    pack_seq,
    scope_key,
    unpack_fork,
    unpack_schema_version,
    unpack_seq,
)
from ._recon_index import ReconIndexCheck
from .results import FsckProblem, FsckReport

_VERIFY_CHUNK = 1024

_GOOD = 1
"""The entry decodes and ``ids`` maps its id back to its arrival number."""
_IN_FEED = 2
_IN_DOC_FEED = 4
_IN_AUTHORS = 8


@dataclass
class _State:
    """What the passes learn and share. Per-entry facts live in arrays indexed by position
    (the rank of the entry's arrival number among the stored ones)."""

    txn: lmdb.Transaction[bytes]
    tables: Tables
    problems: list[FsckProblem] = field(default_factory=list)
    checked: int = 0
    arrivals: array[int] = field(default_factory=lambda: array("Q"))
    scope_of: array[int] = field(default_factory=lambda: array("l"))
    """Index into ``scopes`` of each entry (-1 while unknown: a damaged entry)."""
    seq_of: array[int] = field(default_factory=lambda: array("Q"))
    """Feed sequence number of each entry, as its ``db_feed`` row says (0: none seen)."""
    doc_of: array[int] = field(default_factory=lambda: array("q"))
    """hash() of scope + document id of each entry."""
    author_of: array[int] = field(default_factory=lambda: array("q"))
    """hash() of tenant + author + BE64(author_seq) of each entry."""
    flags: bytearray = field(default_factory=bytearray)
    damaged: dict[int, str] = field(default_factory=dict)
    """position -> why the entry cannot be read (reported once, by the ids pass)."""
    damaged_ids: set[bytes] = field(default_factory=set)
    unindexed: list[int] = field(default_factory=list)
    """Positions of intact entries (their signature verifies) that ``ids`` does not map to."""
    matched: int = 0
    scopes: list[bytes] = field(default_factory=list)
    scope_index: dict[bytes, int] = field(default_factory=dict)
    numbers: dict[bytes, bytes] = field(default_factory=dict)
    """scope -> its 4-byte number, as ``scopes`` says (read first)."""
    last_seq: dict[bytes, int] = field(default_factory=dict)
    author_max: dict[bytes, int] = field(default_factory=dict)
    database_keys: set[bytes] = field(default_factory=set)
    scope_bytes: dict[bytes, int] = field(default_factory=dict)
    unreadable_scopes: set[bytes] = field(default_factory=set)
    """Scopes with a damaged entry: their derived rows are checked loosely (the entry's own
    problem is the one to report)."""
    pending: list[Entry] = field(default_factory=list)
    """Decoded entries awaiting the batched signature check."""
    recon: ReconIndexCheck = field(default_factory=ReconIndexCheck)
    """Learns, from every readable entry, what the reconciliation index holds."""

    def tenant_has_unreadable_entries(self, key: bytes) -> bool:
        """True when ``key`` starts with a tenant id that has a damaged entry."""
        return any(key[:TENANT_ID_SIZE] == s[:TENANT_ID_SIZE] for s in self.unreadable_scopes)

    def problem(self, entry_id: bytes | None, where: str, reason: str) -> None:
        self.problems.append(FsckProblem(entry_id, where, reason))

    def position(self, arrival: bytes) -> int | None:
        """The position of a stored arrival number (BE64), or None when none is stored."""
        if len(arrival) != SEQ_SIZE:
            return None
        number = unpack_seq(arrival)
        arrivals = self.arrivals
        guess = number - 1
        if 0 <= guess < len(arrivals) and arrivals[guess] == number:
            return guess  # dense arrivals: the usual case
        found = bisect.bisect_left(arrivals, number)
        return found if found < len(arrivals) and arrivals[found] == number else None

    def id_at(self, position: int) -> bytes | None:
        """The id of a readable entry (hashed again from its bytes; for reports), else None."""
        if not self.flags[position] & _GOOD:
            return None
        raw = self.txn.get(pack_seq(self.arrivals[position]), db=self.tables.sealed)
        return None if raw is None else hashlib.sha256(raw).digest()

    def scope_number(self, scope: bytes) -> int:
        number = self.scope_index.get(scope)
        if number is None:
            number = self.scope_index[scope] = len(self.scopes)
            self.scopes.append(scope)
        return number

    def flush_signatures(self) -> None:
        """The admission pipeline's signature step over the queued entries."""
        for checked in admission.verify_all(self.pending):
            if isinstance(checked, Rejected):
                self.problem(checked.entry_id, "entries", checked.message)
        self.pending.clear()


def _check_sealed(state: _State) -> None:
    """Every stored entry: dense arrival numbers, decodes, ``ids`` maps its id back to it;
    queue its signature and learn what its index rows must be."""
    txn, tables = state.txn, state.tables
    ids_db = tables.ids
    expected = 1
    for arrival, raw in txn.cursor(tables.sealed):
        if len(arrival) != SEQ_SIZE:
            state.problem(None, "sealed", f"malformed key {arrival.hex()}")
            continue
        number = unpack_seq(arrival)
        if number != expected:
            state.problem(None, "sealed", f"arrival {number} where {expected} was expected")
        expected = number + 1
        position = len(state.arrivals)
        state.arrivals.append(number)
        state.scope_of.append(-1)
        state.seq_of.append(0)
        state.doc_of.append(0)
        state.author_of.append(0)
        state.flags.append(0)
        state.checked += 1
        entry = admission.decode(raw, "stored entry")
        if isinstance(entry, Rejected):
            state.damaged[position] = f"does not decode: {entry.message}"
            continue
        header = entry.header
        if txn.get(entry.id, db=ids_db) == arrival:
            state.matched += 1
            state.pending.append(entry)
            if len(state.pending) >= _VERIFY_CHUNK:
                state.flush_signatures()
        elif not isinstance(admission.verify_one(entry), Rejected):
            state.unindexed.append(position)  # intact bytes: the ``ids`` row is what is wrong
        else:
            state.damaged[position] = "sha256 of the stored bytes differs from its id"
            continue
        state.flags[position] = _GOOD
        scope = scope_key(header.tenant_id, header.database)
        state.scope_of[position] = state.scope_number(scope)
        state.doc_of[position] = hash(state.numbers.get(scope, b"") + header.document_id)
        author_key = header.tenant_id + header.author
        state.author_of[position] = hash(author_key + pack_seq(header.author_seq))
        if state.author_max.get(author_key, 0) < header.author_seq:
            state.author_max[author_key] = header.author_seq
        state.database_keys.add(header.tenant_id + header.database.encode("utf-8"))
        state.scope_bytes[scope] = state.scope_bytes.get(scope, 0) + len(raw)
        mark = txn.get(arrival, db=tables.retracted)
        if mark is None or is_evidence_mark(bytes(mark)):
            state.recon.expect(entry)


def _check_ids(state: _State) -> None:
    """``ids`` holds one row per readable entry and nothing else; a damaged entry is reported
    here, under the id its row names."""
    txn, tables = state.txn, state.tables
    rows = int(txn.stat(tables.ids)["entries"])
    named: set[int] = set()
    if rows != state.matched or state.damaged or state.unindexed:
        for entry_id, arrival in txn.cursor(tables.ids):
            if len(entry_id) != ID_SIZE or len(arrival) != SEQ_SIZE:
                state.problem(None, "ids", f"malformed row {entry_id.hex()}")
                continue
            position = state.position(arrival)
            if position is None:
                state.problem(
                    entry_id, "ids", f"row names arrival {unpack_seq(arrival)}, not stored"
                )
            elif position in state.damaged:
                state.problem(entry_id, "entries", state.damaged[position])
                state.damaged_ids.add(entry_id)
                named.add(position)
            elif state.flags[position] & _GOOD:
                raw = txn.get(arrival, db=tables.sealed) or b""
                if hashlib.sha256(raw).digest() != entry_id:
                    state.problem(entry_id, "ids", "row names the arrival of another entry")
    for position in state.unindexed:
        state.problem(state.id_at(position), "ids", "stored entry has no row")
    for position, reason in state.damaged.items():
        if position not in named:
            number = state.arrivals[position]
            state.problem(None, "sealed", f"entry at arrival {number}: {reason}; no id names it")
    for entry_id in state.damaged_ids:
        state.recon.tolerate(entry_id)


def _check_dups(
    state: _State,
    db: lmdb._Database,
    where: str,
    key_size: int,
    check: Callable[[bytes, int, int], str | None],
    flag: int,
) -> None:
    """Walk a DUPSORT table: each value well formed, naming a stored entry, ``check(key,
    seq, position)`` happy, each entry named once; then every readable entry named."""
    for key, value in state.txn.cursor(db):
        if len(key) != key_size or len(value) != DUP_SIZE:
            state.problem(None, where, f"malformed row {key.hex()} {value.hex()}")
            continue
        seq = unpack_seq(value[:SEQ_SIZE])
        position = state.position(value[SEQ_SIZE:])
        if position is None:
            state.problem(
                None, where, f"row names arrival {unpack_seq(value[SEQ_SIZE:])}, not stored"
            )
            continue
        if state.flags[position] & flag:
            state.problem(state.id_at(position), where, "entry listed twice")
            continue
        state.flags[position] |= flag
        reason = check(key, seq, position)
        if reason is not None:
            state.problem(state.id_at(position), where, reason)
    if any(f & _GOOD and not f & flag for f in state.flags):
        for position, f in enumerate(state.flags):
            if f & _GOOD and not f & flag:
                state.problem(state.id_at(position), where, "entry has no row")


def _read_scopes(state: _State) -> None:
    """Read ``scopes`` (scope -> number): well-formed rows, no number used twice."""
    owners: dict[bytes, bytes] = {}
    for scope, number in state.txn.cursor(state.tables.scopes):
        if len(scope) != SCOPE_SIZE or len(number) != SCOPE_NUMBER_SIZE or number == bytes(4):
            state.problem(None, "scopes", f"malformed row {scope.hex()}")
            continue
        if number in owners:
            state.problem(None, "scopes", f"number {number.hex()} given to two databases")
        owners[number] = scope
        state.numbers[scope] = number


def _check_scopes(state: _State) -> None:
    """Every database with entries has a number, and only those."""
    used = set(state.scopes)
    for scope in used - state.numbers.keys():
        state.problem(None, "scopes", f"missing row for database scope {scope.hex()}")
    for scope in state.numbers.keys() - used - state.unreadable_scopes:
        state.problem(None, "scopes", f"row without entries {scope.hex()}")


def _check_db_feed(state: _State) -> None:
    """Per database: dense sequence numbers from 1, each naming an entry of that database."""

    def check(scope: bytes, seq: int, position: int) -> str | None:
        expected = state.last_seq.get(scope, 0) + 1
        state.last_seq[scope] = seq
        state.seq_of[position] = seq
        if not state.flags[position] & _GOOD:
            state.unreadable_scopes.add(scope)
            raw = state.txn.get(pack_seq(state.arrivals[position]), db=state.tables.sealed)
            state.scope_bytes[scope] = state.scope_bytes.get(scope, 0) + len(raw or b"")
            return None
        if seq != expected:
            return f"sequence {seq} where {expected} was expected"
        if state.scopes[state.scope_of[position]] != scope:
            return "row scope differs from the entry's tenant/database"
        return None

    _check_dups(state, state.tables.db_feed, "db_feed", SCOPE_SIZE, check, _IN_FEED)


def _check_doc_feed(state: _State) -> None:
    """Each entry under its document, with the sequence number of its ``db_feed`` row."""

    def check(key: bytes, seq: int, position: int) -> str | None:
        if not state.flags[position] & _GOOD:
            return None
        if state.doc_of[position] != hash(key):
            return "row differs from the entry's database or document"
        if state.seq_of[position] != seq:
            return f"sequence {seq} where db_feed says {state.seq_of[position]}"
        return None

    _check_dups(state, state.tables.doc_feed, "doc_feed", DOC_FEED_KEY_SIZE, check, _IN_DOC_FEED)


def _check_by_author(state: _State) -> None:
    """Each entry under its tenant and author, with its author_seq."""

    def check(key: bytes, seq: int, position: int) -> str | None:
        if not state.flags[position] & _GOOD:
            return None
        if state.author_of[position] != hash(key + pack_seq(seq)):
            return "row differs from the entry's tenant, author or author_seq"
        return None

    _check_dups(state, state.tables.by_author, "by_author", AUTHOR_KEY_SIZE, check, _IN_AUTHORS)


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


def _documents_of_entries(state: _State) -> dict[bytes, int]:
    """scope -> how many documents its readable entries name: what ``scope_docs`` holds (a
    damaged entry's database may hold more)."""
    documents: dict[int, set[int]] = {}
    for position, flags in enumerate(state.flags):
        if flags & _GOOD:
            documents.setdefault(state.scope_of[position], set()).add(state.doc_of[position])
    return {state.scopes[number]: len(docs) for number, docs in documents.items()}


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


def _check_retracted(state: _State) -> None:
    """Every ``retracted`` row names a stored entry of its tenant."""
    for arrival, value in state.txn.cursor(state.tables.retracted):
        position = state.position(arrival)
        tenant = value[:TENANT_ID_SIZE]
        if len(arrival) != SEQ_SIZE or (
            len(value) != TENANT_ID_SIZE and not is_evidence_mark(value)
        ):
            state.problem(None, "retracted", f"malformed row {arrival.hex()}")
        elif position is None:
            state.problem(None, "retracted", f"row names arrival {unpack_seq(arrival)}, not stored")
        elif (
            state.flags[position] & _GOOD
            and state.scopes[state.scope_of[position]][:TENANT_ID_SIZE] != tenant
        ):
            state.problem(state.id_at(position), "retracted", "row tenant differs from the entry's")


def _check_forks(state: _State) -> None:
    """Every ``forks`` row is well formed and its evidence is stored, marked as evidence."""
    txn, tables = state.txn, state.tables
    for key, value in txn.cursor(tables.forks):
        unpacked = unpack_fork(value)
        if len(key) != AUTHOR_KEY_SIZE or unpacked is None:
            state.problem(None, "forks", f"malformed row {key.hex()}")
            continue
        for entry_id in unpacked[1]:
            arrival = txn.get(entry_id, db=tables.ids)
            mark = None if arrival is None else txn.get(arrival, db=tables.retracted)
            if mark is None or not is_evidence_mark(mark):
                state.problem(entry_id, "forks", "fork evidence not stored as evidence")


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
            ("scopes", lambda: _read_scopes(state)),
            ("sealed", lambda: _check_sealed(state)),
            ("signatures", state.flush_signatures),
            ("ids", lambda: _check_ids(state)),
            ("db_feed", lambda: _check_db_feed(state)),
            ("scopes", lambda: _check_scopes(state)),
            ("doc_feed", lambda: _check_doc_feed(state)),
            ("by_author", lambda: _check_by_author(state)),
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
            (
                "scope_docs",
                lambda: _check_counters(
                    state,
                    tables.scope_docs,
                    "scope_docs",
                    SCOPE_SIZE,
                    _documents_of_entries(state),
                    lambda key: key in state.unreadable_scopes,
                ),
            ),
            ("retracted", lambda: _check_retracted(state)),
            ("forks", lambda: _check_forks(state)),
            ("snapshots", lambda: _check_snapshots(state)),
            ("recon_idx", lambda: state.recon.check(txn, tables, state.problem)),
        ]
        for where, check in passes:
            try:
                check()
            except Exception as exc:  # corruption must be reported, whatever it breaks
                state.problem(None, where, f"check aborted: {type(exc).__name__}: {exc}")
        return FsckReport(state.checked, state.problems)
