"""The on-disk layout of the entry store: sub-database names, key encodings, schema version.

Everything that decides which bytes go under which LMDB key lives here, so the writer
(`entry_store`), the readers and `fsck` agree by construction. All integers are big-endian so
that LMDB's byte-wise key order is numeric order.

Named sub-databases (``scope`` = :func:`scope_key`, 32 bytes; ``arrival`` = BE64 of the store-wide
arrival number, 1, 2, ...; ``seq`` = BE64 of a database's feed sequence, 1, 2, ...; ``=>`` marks a
DUPSORT|DUPFIXED table whose key holds a sorted list of fixed-size values: 16 bytes, 40 in
``recon_idx``)::

    meta        b"schema_version"                  -> BE32(SCHEMA_VERSION)
    sealed      arrival                            -> sealed entry bytes (never overwritten)
    ids         id(32)                             -> arrival
    scopes      scope(32)                          -> BE32(number)    1, 2, ... per database
    db_feed     scope(32)                          => seq + arrival   the database's arrival order
    doc_feed    BE32(number) + doc_id(16)          => seq + arrival   the document's entries
    databases   tenant_id(16) + database utf-8     -> b""
    author_seq  tenant_id(16) + author(32)         -> BE64(highest author_seq stored)
    scope_bytes scope(32)                          -> BE64(total sealed bytes of the database)
    scope_docs  scope(32)                          -> BE64(documents: distinct doc_feed keys)
    snapshots   scope(32) + doc_id(16)             -> seq (covered) + caller-encrypted blob
    recon_idx   scope(32)                          => BE64(timestamp_ms) + id(32)   (recon items)
    recon_agg   scope(32) + level(u8) + BE64(ts >> shift[level]) -> BE64(count) + sum(32, LE)
                (levels 3-6 always; levels 0-2 only under a bucket of > RECON_SPLIT_THRESHOLD items)
    by_author   tenant_id(16) + author(32)         => BE64(author_seq) + arrival
    retracted   arrival                            -> tenant_id(16)   no longer accepted, or
                                                      tenant_id(16) + 0x01: withdrawn, but kept
                                                      reconciled as fork evidence
    forks       tenant_id(16) + author(32)         -> BE64(fork seq) + 0-2 evidence ids (32 each)

Writes grow at the end: ``sealed`` is keyed by arrival and written in LMDB's append mode, and
the feeds, the author index and the reconciliation items append to the end of one key's value
list (MDB_APPENDDUP; an item older than the newest goes in its place), so a commit dirties pages
in proportion to the entries it writes, pages fill up instead of splitting in half, and an index
row costs its value's bytes (16, or 40) with no per-row header. Only ``ids`` and ``doc_feed``
(one key per document) and the small per-database and per-author rows take keys in random
places; ``doc_feed`` names the database by a 4-byte number from ``scopes`` instead of its
32-byte scope, which halves the bytes of a document with one entry.

The store-wide arrival order is ``sealed``'s key order (schema 3 kept it in a separate ``log``
table). A database's last sequence number is the last value of its ``db_feed`` list; a
document's first sequence number is the first value of its ``doc_feed`` list (schema 3 kept
them in ``documents``). Sequences are dense (1, 2, 3, ...) because nothing is ever deleted.

The reconciliation index (:mod:`._recon_index`) is derived data: ``recon_idx`` holds one value
per entry under its scope, in Negentropy's (timestamp, id) order, except entries whose timestamp
is the reserved 2**64-1; ``recon_agg`` holds, per scope, level and time bucket of
``2**RECON_SHIFTS[level]`` ms, the count and the sum (mod 2**256, of the ids as little-endian
integers) of the bucket's items. Levels 6 down to 3 (~2.2 years to ~4.4 minutes) have a row for
every bucket that holds items. Below them the tree adapts to density (schema 5): a bucket of level
1, 2 or 3 holding more than ``RECON_SPLIT_THRESHOLD`` items is *split*, i.e. it has a row for
each of its non-empty child buckets at the level below (~4.1 s, 64 ms, 1 ms); a bucket holding
fewer is a *leaf*, whose items a reader scans, as is every bucket of level 0 (one millisecond).
So a burst of writes (a bulk import, a device catching up) costs a reader the scan of at most
``RECON_SPLIT_THRESHOLD`` items per lookup instead of the whole burst, while a sparse store has
no fine rows at all (measured: see docs/architecture.md). Only many items of the very same
millisecond make a bigger leaf (the snapshot reader samples those; see ``_recon_snapshot``).
Whether a fine row exists follows from the counts alone, so fsck recomputes the expected rows.

``by_author`` lists every stored entry by (tenant, author, author_seq): a revocation that names
the last sequence number it accepts from an author finds the author's later entries with one
range scan. ``retracted`` marks stored entries that a revocation withdrew after they were
stored: their bytes stay (the log is append-only, and audit can read them), their feed rows
stay, but every read skips them and the reconciliation index no longer holds them, so the
accepted set is what every other node holds.

``forks`` records every author that forked (:mod:`mindoo_p2p.chains`: two entries at one
sequence number, or a link to another predecessor): the smallest sequence number at which it
did and the ids of the evidence kept there (the two smallest, sorted). Its entries above the
fork point are retracted; those at it are marked in ``retracted`` with the 17-byte value
(reads skip them) and, for the evidence, stay in the reconciliation index so that every node
receives them and reaches the same fork point (:mod:`._chains`).

Upgrades (:mod:`._upgrade`, on the first writable open, in one write transaction with the version
bump): a store of schema 4 (``recon_agg`` with the four levels of shifts 18, 24, 30, 36 numbered
0-3, no finer rows) gets its ``recon_agg`` rebuilt from ``recon_idx`` by one scan; a store of schema
1, 2 or 3 (tables ``entries`` id -> bytes, ``log``, ``feed``, ``doc_idx`` and ``documents`` with
32-byte ids as values, ``author_idx``, ``retracted`` keyed by id) is converted table by table,
keeping every feed sequence number (cursors and snapshots stay valid; databases are numbered in
scope order), and the legacy tables are dropped (``recon_idx`` too, which was a plain table keyed by
``scope + BE64(timestamp) + id``); then the indexes are built from the stored entries: the author
index and the reconciliation index. A store of schema 4 or 5 also
gets the ``forks`` table, filled by one scan of ``by_author`` (entries of one author at one
sequence number written before chains existed are forks too). A store of schema 6 or below gets
``scope_docs``, counted by one scan of ``doc_feed``'s keys.

``scope_docs`` (schema 7) is derived data, like ``scope_bytes``: the number of documents of a
database (its distinct ``doc_feed`` keys; nothing is ever deleted, so it only grows), raised in
the write transaction that stores a document's first entry, so ``status`` reads it instead of
walking every document (about a second at 10^6). fsck counts the keys and compares.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import lmdb

from ..entry import DOCUMENT_ID_SIZE, ID_SIZE, TENANT_ID_SIZE

SCHEMA_VERSION = 7
"""7: the ``scope_docs`` document counter. 6: the ``forks`` table and fork-evidence marks
(per-author hash chains). 5 is the reconciliation index with split hot buckets; the upgrade
steps are separate functions."""
CHAINS_SCHEMA_VERSION = 6
"""The first schema with ``forks`` (a store below it gets the table filled on upgrade)."""
SCHEMA_KEY = b"schema_version"
DOCUMENT_COUNT_SCHEMA_VERSION = 7
"""The first schema with ``scope_docs`` (a store below it gets the counters on upgrade)."""
UPGRADABLE_SCHEMA_VERSIONS = frozenset({1, 2, 3, 4, 5, 6})
"""Older versions a writable open upgrades in place (see the module docstring)."""

SCOPE_SIZE = 32
SEQ_SIZE = 8
AUTHOR_KEY_SIZE = TENANT_ID_SIZE + 32
DOC_KEY_SIZE = SCOPE_SIZE + DOCUMENT_ID_SIZE
"""Key size of ``snapshots``: scope + document id."""
SCOPE_NUMBER_SIZE = 4
DOC_FEED_KEY_SIZE = SCOPE_NUMBER_SIZE + DOCUMENT_ID_SIZE
DUP_SIZE = SEQ_SIZE + SEQ_SIZE
"""Size of every value of a DUPSORT table: two BE64 (a sequence number and an arrival)."""

RECON_SHIFTS = (0, 6, 12, 18, 24, 30, 36)
"""Bucket width per ``recon_agg`` level, as a shift of the ms timestamp: 1 ms, 64 ms, ~4.1 s,
~4.4 min, ~4.7 h, ~12 days, ~2.2 years. Each level's buckets split into 2**6 buckets of the
level below."""
RECON_FAN_SHIFT = 6
"""log2 of the number of child buckets of a bucket (the shifts of adjacent levels differ by it)."""
RECON_BASE_LEVEL = 3
"""Levels from this one up have a row for every non-empty bucket; finer ones only under a split
bucket."""
RECON_TOP_LEVEL = len(RECON_SHIFTS) - 1
RECON_SPLIT_THRESHOLD = 256
"""A bucket of level 1 to RECON_BASE_LEVEL holding more items than this has rows for its
children; one holding fewer is a leaf. Part of the format: fsck expects exactly these rows."""
RECON_V4_SHIFTS = (18, 24, 30, 36)
"""The levels of schema 4's ``recon_agg`` (numbered 0-3), which the upgrade to 5 replaces."""


def recon_is_leaf(level: int, count: int) -> bool:
    """Whether a bucket of ``level`` holding ``count`` items is read by scanning its items (no
    child rows exist under it)."""
    return level == 0 or (level <= RECON_BASE_LEVEL and count <= RECON_SPLIT_THRESHOLD)


RECON_IDX_KEY_SIZE = SCOPE_SIZE + SEQ_SIZE + ID_SIZE
RECON_ID_OFFSET = SCOPE_SIZE + SEQ_SIZE
"""Offset of the id in a ``recon_idx`` key."""
RECON_SUM_MODULUS = 1 << 256
"""``recon_agg`` sums ids modulo this (little-endian integers)."""
U64_LIMIT = 1 << 64
RECON_RESERVED_TS = b"\xff" * SEQ_SIZE
"""The reserved timestamp 2**64-1 (Negentropy's infinity): such entries are never indexed."""
RECON_AGG_KEY_SIZE = SCOPE_SIZE + 1 + SEQ_SIZE
RECON_AGG_VALUE_SIZE = SEQ_SIZE + ID_SIZE

_BE64 = struct.Struct(">Q")
_BE32 = struct.Struct(">I")
_DUP = struct.Struct(">QQ")

pack_seq = _BE64.pack
"""BE64 of a sequence number (0 <= n < 2**64)."""


def unpack_seq(data: bytes) -> int:
    """The integer of an 8-byte big-endian field (the caller checks the length)."""
    return int(_BE64.unpack(data)[0])


def pack_schema_version(version: int) -> bytes:
    return _BE32.pack(version)


def pack_scope_number(number: int) -> bytes:
    """A ``scopes`` value: BE32 of a database's number (1, 2, ...)."""
    return _BE32.pack(number)


def unpack_schema_version(data: bytes) -> int | None:
    """The stored schema version, or None when the value is not 4 bytes."""
    if len(data) != _BE32.size:
        return None
    return int(_BE32.unpack(data)[0])


def scope_key(tenant_id: bytes, database: str) -> bytes:
    """32 bytes: ``tenant_id`` (16) + blake2b(database utf-8, digest_size=16).

    The prefix of every per-database index key (set reconciliation keys its index by it too).
    Raises ValueError when ``tenant_id`` is not 16 bytes.
    """
    if len(tenant_id) != TENANT_ID_SIZE:
        raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes, got {len(tenant_id)}")
    return bytes(tenant_id) + hashlib.blake2b(database.encode("utf-8"), digest_size=16).digest()


def recon_idx_key(scope: bytes, timestamp_ms: int, entry_id: bytes) -> bytes:
    """The ``recon_idx`` key of an item: its bytewise order is (timestamp, id) order."""
    return scope + _BE64.pack(timestamp_ms) + entry_id


pack_dup = _DUP.pack
"""``pack_dup(seq, arrival)``: a DUPSORT value, BE64(seq) + BE64(arrival), so a key's values
sort by ``seq`` first."""


def unpack_dup(value: bytes) -> tuple[int, int]:
    """``(seq, arrival)`` of a DUPSORT value (the caller checks that it is DUP_SIZE bytes)."""
    seq, arrival = _DUP.unpack(value)
    return int(seq), int(arrival)


def recon_agg_key(scope: bytes, level: int, bucket: int) -> bytes:
    """The ``recon_agg`` key of bucket ``bucket`` (= timestamp >> RECON_SHIFTS[level])."""
    return scope + bytes((level,)) + _BE64.pack(bucket)


def pack_recon_agg(count: int, id_sum: int) -> bytes:
    """A ``recon_agg`` value: BE64(count) + (id_sum mod 2**256) as 32 bytes little-endian."""
    return _BE64.pack(count) + (id_sum % RECON_SUM_MODULUS).to_bytes(ID_SIZE, "little")


def unpack_recon_agg(value: bytes) -> tuple[int, int] | None:
    """``(count, id_sum)`` of a ``recon_agg`` value, or None when it is not 40 bytes."""
    if len(value) != RECON_AGG_VALUE_SIZE:
        return None
    return int(_BE64.unpack(value[:SEQ_SIZE])[0]), int.from_bytes(value[SEQ_SIZE:], "little")


RETRACTED_SIZE = TENANT_ID_SIZE
"""A ``retracted`` value: the entry's tenant id."""
EVIDENCE_MARK = b"\x01"
"""Appended to a ``retracted`` value: withdrawn, but kept in the reconciliation index (fork
evidence)."""
FORK_HEADER_SIZE = SEQ_SIZE


def is_evidence_mark(value: bytes) -> bool:
    """True for a ``retracted`` value that marks fork evidence (still reconciled)."""
    return len(value) == RETRACTED_SIZE + 1 and value[-1:] == EVIDENCE_MARK


def pack_fork(seq: int, evidence: tuple[bytes, ...]) -> bytes:
    """A ``forks`` value: BE64(seq) + the evidence ids, sorted."""
    return _BE64.pack(seq) + b"".join(sorted(evidence))


def unpack_fork(value: bytes) -> tuple[int, tuple[bytes, ...]] | None:
    """``(seq, evidence ids)`` of a ``forks`` value, or None when it is malformed."""
    rest = len(value) - FORK_HEADER_SIZE
    if rest < 0 or rest % ID_SIZE or rest > 2 * ID_SIZE:
        return None
    seq = int(_BE64.unpack(value[:FORK_HEADER_SIZE])[0])
    evidence = tuple(
        value[FORK_HEADER_SIZE + i : FORK_HEADER_SIZE + i + ID_SIZE]
        for i in range(0, rest, ID_SIZE)
    )
    if list(evidence) != sorted(set(evidence)):
        return None
    return seq, evidence


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True, slots=True)
class Tables:
    """Open handles of the named sub-databases of one environment."""

    meta: lmdb._Database
    sealed: lmdb._Database
    ids: lmdb._Database
    scopes: lmdb._Database
    db_feed: lmdb._Database
    doc_feed: lmdb._Database
    databases: lmdb._Database
    author_seq: lmdb._Database
    scope_bytes: lmdb._Database
    scope_docs: lmdb._Database
    snapshots: lmdb._Database
    recon_idx: lmdb._Database
    recon_agg: lmdb._Database
    by_author: lmdb._Database
    retracted: lmdb._Database
    forks: lmdb._Database


TABLE_NAMES: tuple[str, ...] = (
    "meta",
    "sealed",
    "ids",
    "scopes",
    "db_feed",
    "doc_feed",
    "databases",
    "author_seq",
    "scope_bytes",
    "scope_docs",
    "snapshots",
    "recon_idx",
    "recon_agg",
    "by_author",
    "retracted",
    "forks",
)
"""The sub-database names, in the order of the :class:`Tables` fields."""

DUPSORT_TABLES = frozenset({"db_feed", "doc_feed", "by_author", "recon_idx"})
"""Tables opened DUPSORT|DUPFIXED: each key holds a sorted list of fixed-size values."""

LEGACY_TABLE_NAMES: tuple[str, ...] = (
    "entries",
    "log",
    "feed",
    "doc_idx",
    "documents",
    "author_idx",
)
"""Tables of schemas 1-3 that schema 4 replaced: an upgrade converts them, then drops them.
(Their ``recon_idx`` was a plain table: it is dropped before the tables are opened, and rebuilt.)
"""

LEGACY_MARKER = b"entries"
"""A table present in every store of schemas 1-3 and absent from schema 4."""


def open_tables(
    env: lmdb.Environment, txn: lmdb.Transaction[bytes] | None, *, create: bool
) -> Tables:
    """Open (and with ``create``, create) every sub-database, inside ``txn`` when given.

    Raises lmdb.NotFoundError when ``create`` is false and one is missing.
    """
    handles = [
        env.open_db(
            name.encode(),
            txn=txn,
            create=create,
            dupsort=name in DUPSORT_TABLES,
            dupfixed=name in DUPSORT_TABLES,
        )
        for name in TABLE_NAMES
    ]
    return Tables(*handles)
