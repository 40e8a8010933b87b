"""Per-author chains in the store: fork detection and the fork rule, in the write transaction.

The rules are `mindoo_p2p.chains`' (pure); this module reads what they need from the tables
and applies what they decide, always inside the caller's write transaction, so a fork is
recorded by whichever write makes it visible, whatever process or path (ingest, own writes,
bundles) that is:

- `TransactionChainFacts` answers `chains.ChainFacts` from ``by_author`` and ``sealed``.
- `settle_new_entries` runs after `write_entries` has put a batch's rows: each new entry is
  compared with its neighbours (`chains.conflict_seq`; not asked for a plain link of a run,
  where `TransactionChainFacts.links_plainly` shows from the rows read that it would find
  nothing); for every author whose fork point is
  new or lower, or who already forked and gained entries at or above the fork point,
  `settle_fork` applies the rule. Own entries that the write transaction checked to extend
  their author's stored head (`_local_append`), and received entries that `plain_run_entries`
  finds to extend the top of their author's rows (a catch-up's runs), skip the neighbour
  comparison, which could find nothing for them; a recorded fork point still applies to them.
- `settle_fork` records the fork point (the smallest ever) with its evidence and withdraws the
  author's entries from it on: above it, retracted (reads skip them, the reconciliation index
  drops them); at it, the `chains.MAX_EVIDENCE` smallest ids are marked as evidence
  (``retracted`` value + `EVIDENCE_MARK`: reads skip them, the reconciliation index keeps
  them), the others retracted.
- `record_stored_forks` finds the forks of a store written before ``forks`` existed (upgrade).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Collection, Iterable

import lmdb

from ..chains import MAX_EVIDENCE, ForkPoint, conflict_seq
from ..entry import TENANT_ID_SIZE, Entry
from ..entry_fields import prev_of_raw
from ..errors import DecodeError, StoreError
from ._layout import (
    AUTHOR_KEY_SIZE,
    DUP_SIZE,
    EVIDENCE_MARK,
    SEQ_SIZE,
    Tables,
    is_evidence_mark,
    pack_fork,
    pack_seq,
    scope_key,
    unpack_dup,
    unpack_fork,
)
from ._recon_index import unindex_items


def arrivals_at(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    author_key: bytes,
    seq: int,
    cursor: lmdb.Cursor[bytes] | None = None,
) -> list[bytes]:
    """Arrival numbers (BE64) of the stored entries of ``author_key`` (tenant + author) at
    ``seq``, withdrawn ones included (``cursor``: a ``by_author`` cursor to reuse)."""
    if cursor is None:
        cursor = txn.cursor(tables.by_author)
    found: list[bytes] = []
    if not cursor.set_range_dup(author_key, pack_seq(seq)):
        return found
    for value in cursor.iternext_dup(keys=False, values=True):
        if len(value) != DUP_SIZE:
            raise StoreError(f"malformed by_author row under {author_key.hex()}: run fsck")
        row_seq, _ = unpack_dup(value)
        if row_seq != seq:
            break
        found.append(value[SEQ_SIZE:])
    return found


def _raw_at(txn: lmdb.Transaction[bytes], tables: Tables, arrival: bytes) -> bytes:
    raw = txn.get(arrival, db=tables.sealed)
    if raw is None:
        raise StoreError(f"by_author names arrival {arrival.hex()}, which is not stored: run fsck")
    return bytes(raw)


class TransactionChainFacts:
    """`chains.ChainFacts` read from one transaction (by arrival numbers: nothing is hashed or
    decoded; a successor's ``prev`` is read from its fixed place in the stored bytes).

    `chains.conflict_seq` asks about seq, seq - 1 and seq + 1 of one author: they are adjacent
    in ``by_author``, so the first question reads all three with one cursor positioning and
    the other two are answered from that window. `preload` reads the rows of a whole batch
    beforehand, one cursor walk per author and run of nearby sequence numbers (a catch-up
    brings an author's entries in runs of thousands: one walk instead of one positioning per
    entry). ``arrivals`` (entry id -> arrival) names the arrivals of entries the caller has
    just written, so their ``ids`` rows are not read."""

    __slots__ = (
        "_arrivals",
        "_cursor",
        "_loaded",
        "_tables",
        "_txn",
        "_window",
        "_window_key",
        "_written",
    )

    def __init__(
        self,
        txn: lmdb.Transaction[bytes],
        tables: Tables,
        arrivals: dict[bytes, bytes] | None = None,
    ) -> None:
        self._txn = txn
        self._tables = tables
        self._cursor = txn.cursor(tables.by_author)
        self._arrivals = arrivals or {}
        self._written = frozenset(self._arrivals.values())
        self._window_key: tuple[bytes, int, int] | None = None
        self._window: dict[int, list[bytes]] = {}
        self._loaded: dict[tuple[bytes, int], list[bytes]] = {}
        """(author key, seq) -> arrivals there, for every seq `preload` covered (empty lists
        included: nothing stored there)."""

    def preload(self, entries: Iterable[Entry]) -> None:
        """Read the rows `chains.conflict_seq` will ask about for ``entries`` (seq - 1 .. seq + 1
        of each): per author, one cursor walk over each run of sequence numbers at most 2
        apart, so no row outside the questions' range is read. Answers are the same as
        without it."""
        wanted: dict[bytes, set[int]] = {}
        for entry in entries:
            wanted.setdefault(entry.tenant_id + entry.author, set()).add(entry.author_seq)
        for author_key, seqs in wanted.items():
            ordered = sorted(seqs)
            start = previous = ordered[0]
            for seq in ordered[1:]:
                if seq - previous > 2:
                    self._load(author_key, max(start - 1, 0), previous + 1)
                    start = seq
                previous = seq
            self._load(author_key, max(start - 1, 0), previous + 1)

    def _load(self, author_key: bytes, low: int, high: int) -> None:
        loaded = self._loaded
        for seq in range(low, high + 1):
            loaded[(author_key, seq)] = []
        cursor = self._cursor
        if cursor.set_range_dup(author_key, pack_seq(low)):
            for value in cursor.iternext_dup(keys=False, values=True):
                if len(value) != DUP_SIZE:
                    raise StoreError(f"malformed by_author row under {author_key.hex()}: run fsck")
                row_seq = int.from_bytes(value[:SEQ_SIZE], "big")
                if row_seq > high:
                    break
                loaded[(author_key, row_seq)].append(value[SEQ_SIZE:])

    def links_plainly(self, entry: Entry) -> bool:
        """True when what `preload` read proves that `chains.conflict_seq` finds nothing for
        ``entry``, one of the entries this write just stored: it is alone at its seq, the row
        below holds nothing or its ``prev`` alone (written by this same write), and every row
        above was written by this same write too (each checks its own link). The usual entry
        of a run of consecutive seqs; False (ask `conflict_seq`) for anything else."""
        own = self._arrivals.get(entry.id)
        if own is None:
            return False
        header = entry.header
        author_key = header.tenant_id + header.author
        seq = header.author_seq
        loaded = self._loaded
        if loaded.get((author_key, seq)) != [own]:
            return False
        prev = header.prev
        if prev is not None and seq > 1:
            below = loaded.get((author_key, seq - 1))
            if below is None or (below and below != [self._arrivals.get(prev)]):
                return False
        above = loaded.get((author_key, seq + 1))
        written = self._written
        return above is not None and all(arrival in written for arrival in above)

    def _at(self, tenant_id: bytes, author: bytes, seq: int) -> list[bytes]:
        author_key = tenant_id + author
        loaded = self._loaded.get((author_key, seq))
        if loaded is not None:
            return loaded
        key = self._window_key
        if key is None or key[0] != author_key or not key[1] <= seq <= key[2]:
            low, high = max(seq - 1, 0), seq + 1
            self._window_key = (author_key, low, high)
            window: dict[int, list[bytes]] = {}
            self._window = window
            cursor = self._cursor
            if cursor.set_range_dup(author_key, pack_seq(low)):
                for value in cursor.iternext_dup(keys=False, values=True):
                    if len(value) != DUP_SIZE:
                        raise StoreError(
                            f"malformed by_author row under {author_key.hex()}: run fsck"
                        )
                    row_seq, _ = unpack_dup(value)
                    if row_seq > high:
                        break
                    window.setdefault(row_seq, []).append(value[SEQ_SIZE:])
        return self._window.get(seq, [])

    def _arrival_of(self, entry_id: bytes) -> bytes | None:
        known = self._arrivals.get(entry_id)
        if known is not None:
            return known
        stored = self._txn.get(entry_id, db=self._tables.ids)
        return None if stored is None else bytes(stored)

    def others_at(self, tenant_id: bytes, author: bytes, seq: int, entry_id: bytes) -> bool:
        arrivals = self._at(tenant_id, author, seq)
        if not arrivals:
            return False
        own = self._arrival_of(entry_id)
        return any(arrival != own for arrival in arrivals)

    def holds_at(self, tenant_id: bytes, author: bytes, seq: int, entry_id: bytes) -> bool | None:
        arrivals = self._at(tenant_id, author, seq)
        if not arrivals:
            return None
        return self._arrival_of(entry_id) in arrivals

    def ids_at(self, tenant_id: bytes, author: bytes, seq: int) -> list[bytes]:
        """The ids of the stored entries of ``author`` at ``seq``."""
        return [
            hashlib.sha256(_raw_at(self._txn, self._tables, arrival)).digest()
            for arrival in self._at(tenant_id, author, seq)
        ]

    def prevs_at(self, tenant_id: bytes, author: bytes, seq: int) -> list[bytes | None]:
        """As `chains.ChainFacts` says, except that entries written by this same write (in
        ``arrivals``) are left out: each of them checks its own link (``holds_at``), which is
        the same check from the other end."""
        prevs: list[bytes | None] = []
        written = self._written
        for arrival in self._at(tenant_id, author, seq):
            if arrival in written:
                continue
            raw = _raw_at(self._txn, self._tables, arrival)
            try:
                prevs.append(prev_of_raw(raw))
            except DecodeError:
                raise StoreError(
                    f"stored entry at {arrival.hex()} does not decode: run fsck"
                ) from None
        return prevs


def read_fork(
    txn: lmdb.Transaction[bytes], tables: Tables, tenant_id: bytes, author: bytes
) -> ForkPoint | None:
    """The recorded fork point of ``author`` in the tenant, or None."""
    value = txn.get(tenant_id + author, db=tables.forks)
    if value is None:
        return None
    unpacked = unpack_fork(bytes(value))
    if unpacked is None:
        raise StoreError(f"malformed forks row {(tenant_id + author).hex()}: run fsck")
    return ForkPoint(author, *unpacked)


def read_forks(txn: lmdb.Transaction[bytes], tables: Tables, tenant_id: bytes) -> list[ForkPoint]:
    """Every recorded fork of the tenant, by author."""
    forks: list[ForkPoint] = []
    cursor = txn.cursor(tables.forks)
    if not cursor.set_range(tenant_id):
        return forks
    for key, value in cursor:
        if key[:TENANT_ID_SIZE] != tenant_id:
            break
        unpacked = unpack_fork(bytes(value))
        if len(key) != AUTHOR_KEY_SIZE or unpacked is None:
            raise StoreError(f"malformed forks row {key.hex()}: run fsck")
        forks.append(ForkPoint(key[TENANT_ID_SIZE:], *unpacked))
    return forks


def _author_seq_of(entry: Entry) -> int:
    return entry.header.author_seq


def plain_run_entries(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    entries: Iterable[Entry],
    skip: Collection[bytes] = (),
) -> set[bytes]:
    """The ids of those of ``entries`` (about to be written in ``txn``, their ``by_author``
    rows not put yet) that extend the top of their author's stored rows, one after another:
    for each such entry `chains.conflict_seq` finds nothing once the batch is written, so
    `settle_new_entries` need not ask it (nor read rows for it). Authors in ``skip`` (author
    keys, tenant_id + author) are not looked at.

    Per author, sorted by author_seq, the entries ``s0 + 1, s0 + 2, ...`` as long as each number
    is held by one entry of the batch, the first names the entry of the author's highest
    ``by_author`` row (at ``s0``; 0 and nothing to name with no row) as ``prev``, and each later
    one names the entry before it; the run stops at the first entry that does not. Each entry
    of the run is alone at its number (nothing was stored above ``s0``), its link is the one
    held below it, and what lies above it is written by this batch (each of those checks its
    own link): `conflict_seq` finds nothing, whatever follows. A catch-up brings an author's
    entries this way, in runs of thousands (fetched in timestamp order, a few of them land in
    the next batch, below its top); the entries at or below ``s0`` and those after a break (a
    gap, a twin, a legacy entry without ``prev``, a link to another entry) are checked one by
    one. Costs one ``by_author`` positioning and one ``ids`` look-up per author."""
    runs: dict[bytes, list[Entry]] = {}
    for entry in entries:
        header = entry.header
        author_key = header.tenant_id + header.author
        if author_key not in skip:
            runs.setdefault(author_key, []).append(entry)
    cursor = txn.cursor(tables.by_author)
    plain: set[bytes] = set()
    for author_key, run in runs.items():
        _add_plain_run(txn, tables, cursor, author_key, sorted(run, key=_author_seq_of), plain)
    return plain


def _add_plain_run(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    cursor: lmdb.Cursor[bytes],
    author_key: bytes,
    run: list[Entry],
    plain: set[bytes],
) -> None:
    """Add to ``plain`` the ids of the start of ``run`` (one author's new entries, by
    author_seq) that extends the author's top ``by_author`` row (`plain_run_entries`)."""
    seq = 0
    start = 0
    if cursor.set_key(author_key):
        cursor.last_dup()
        value = cursor.value()
        if len(value) != DUP_SIZE:
            raise StoreError(f"malformed by_author row under {author_key.hex()}: run fsck")
        seq = int.from_bytes(value[:SEQ_SIZE], "big")
        # Entries at or below the top (filling gaps, or twins) are checked one by one.
        start = bisect_right(run, seq, key=_author_seq_of)
        if start == len(run):
            return
        first_prev = run[start].header.prev
        if first_prev is None or txn.get(first_prev, db=tables.ids) != value[SEQ_SIZE:]:
            return
    previous: bytes | None = None
    last = len(run) - 1
    for index in range(start, len(run)):
        entry = run[index]
        header = entry.header
        seq += 1
        if (
            header.author_seq != seq
            or (previous is not None and header.prev != previous)
            or (index < last and run[index + 1].header.author_seq == seq)
        ):
            return
        plain.add(entry.id)
        previous = entry.id


def settle_new_entries(
    txn: lmdb.Transaction[bytes],
    tables: Tables,
    added: Iterable[Entry],
    arrivals: dict[bytes, bytes] | None = None,
    continuing: Collection[bytes] = (),
    plain: Collection[bytes] = (),
) -> None:
    """Apply the fork rule after ``added`` were written in ``txn`` (see the module docstring;
    ``arrivals``: their arrival numbers by id, when the caller knows them).

    ``continuing``: author keys (tenant_id + author) whose entries in ``added`` the caller has
    checked, in this transaction, to extend the author's stored head: before the write the
    author's highest ``by_author`` row was at ``s0`` (the ``author_seq`` row), and its new
    entries are ``s0 + 1, s0 + 2, ...``, the first naming the stored entry at ``s0`` as
    ``prev`` and each later one the entry before it (`_local_append` does this for own writes).
    Such an entry cannot show a fork: nothing else is stored at its number or above it, and
    both its links are the ones checked, so `chains.conflict_seq` would find nothing and is not
    asked (`_local_append` checks this for own writes). A fork point already recorded for the
    author is still applied to them.

    ``plain``: ids of entries of ``added`` that `plain_run_entries` found to extend their
    author's stored top one after another: not compared with their neighbours either (nor are
    their rows read), but otherwise treated as every other entry."""
    compared = list(added)
    highest: dict[tuple[bytes, bytes], int] = {}
    """The highest new seq of each continuing author: all a recorded fork point is compared with."""
    if continuing:
        others: list[Entry] = []
        for entry in compared:
            header = entry.header
            if header.tenant_id + header.author in continuing:
                author = (header.tenant_id, header.author)
                if highest.get(author, 0) < header.author_seq:
                    highest[author] = header.author_seq
            else:
                others.append(entry)
        compared = others
    known: dict[tuple[bytes, bytes], ForkPoint | None] = {}
    lowest: dict[tuple[bytes, bytes], int] = {}
    if compared:
        facts = TransactionChainFacts(txn, tables, arrivals)
        facts.preload(entry for entry in compared if entry.id not in plain)
        for entry in compared:
            header = entry.header
            author = (header.tenant_id, header.author)
            if author not in known:
                known[author] = read_fork(txn, tables, *author)
            low = lowest.get(author)
            fork = known[author]
            if fork is not None and header.author_seq >= fork.seq:
                # landed at or above a known fork point: settle it
                low = fork.seq if low is None else min(low, fork.seq)
            if entry.id not in plain and not facts.links_plainly(entry):
                conflict = conflict_seq(entry, facts)
                if conflict is not None:
                    low = conflict if low is None else min(low, conflict)
            if low is not None:
                lowest[author] = low
    for author, top in highest.items():
        fork = known[author] if author in known else read_fork(txn, tables, *author)
        if fork is not None and top >= fork.seq:  # landed at or above a known fork point
            lowest[author] = min(lowest.get(author, fork.seq), fork.seq)
    for (tenant_id, author_key), seq in lowest.items():
        settle_fork(txn, tables, tenant_id, author_key, seq)


def settle_fork(
    txn: lmdb.Transaction[bytes], tables: Tables, tenant_id: bytes, author: bytes, seq: int
) -> ForkPoint:
    """Record that ``author`` forked at ``seq`` (the fork point stays the smallest recorded)
    and withdraw its entries from the fork point on; return the fork point."""
    known = read_fork(txn, tables, tenant_id, author)
    if known is not None:
        seq = min(seq, known.seq)
    author_key = tenant_id + author
    withdrawn: list[tuple[bytes, Entry]] = []
    candidates: list[tuple[bytes, bytes, Entry]] = []
    cursor = txn.cursor(tables.by_author)
    if cursor.set_range_dup(author_key, pack_seq(seq)):
        for value in cursor.iternext_dup(keys=False, values=True):
            row_seq, _ = unpack_dup(value)
            arrival = value[SEQ_SIZE:]
            mark = txn.get(arrival, db=tables.retracted)
            if mark is not None and not is_evidence_mark(bytes(mark)):
                continue  # retracted already (above a cut, or displaced evidence)
            try:
                entry = Entry.decode(_raw_at(txn, tables, arrival))
            except DecodeError:
                raise StoreError(
                    f"stored entry at {arrival.hex()} does not decode: run fsck"
                ) from None
            if row_seq == seq:
                candidates.append((entry.id, arrival, entry))
            else:
                withdrawn.append((arrival, entry))
    candidates.sort()
    evidence = candidates[:MAX_EVIDENCE]
    withdrawn += [(arrival, entry) for _, arrival, entry in candidates[MAX_EVIDENCE:]]
    for _, arrival, entry in evidence:
        if txn.get(arrival, db=tables.retracted) is None:
            txn.put(arrival, entry.tenant_id + EVIDENCE_MARK, db=tables.retracted)
            _drop_snapshot(txn, tables, entry)
    withdraw(txn, tables, withdrawn)
    fork = ForkPoint(author, seq, tuple(entry_id for entry_id, _, _ in evidence))
    if known is None or known != fork:
        txn.put(author_key, pack_fork(fork.seq, fork.evidence), db=tables.forks)
    return fork


def _drop_snapshot(txn: lmdb.Transaction[bytes], tables: Tables, entry: Entry) -> None:
    scope = scope_key(entry.tenant_id, entry.database)
    txn.delete(scope + entry.document_id, db=tables.snapshots)


def withdraw(
    txn: lmdb.Transaction[bytes], tables: Tables, entries: list[tuple[bytes, Entry]]
) -> list[Entry]:
    """Retract ``entries`` ((arrival BE64, entry) pairs, stored): mark them in ``retracted``
    (an evidence mark becomes a plain one), remove them from the reconciliation index and drop
    the snapshots of their documents. Entries retracted already are left alone. Returns those
    newly retracted."""
    recon_items: list[tuple[bytes, int, bytes]] = []
    newly: list[Entry] = []
    for arrival, entry in entries:
        header = entry.header
        if len(arrival) != SEQ_SIZE:
            raise ValueError("withdraw takes stored entries")
        mark = txn.get(arrival, db=tables.retracted)
        if mark is not None:
            if not is_evidence_mark(bytes(mark)):
                continue
            _forget_evidence(txn, tables, entry)  # above a revocation cut: no longer needed
        txn.put(arrival, header.tenant_id, db=tables.retracted)
        scope = scope_key(header.tenant_id, header.database)
        recon_items.append((scope, header.timestamp_ms, entry.id))
        _drop_snapshot(txn, tables, entry)
        newly.append(entry)
    unindex_items(txn, tables, recon_items)
    return newly


def _forget_evidence(txn: lmdb.Transaction[bytes], tables: Tables, entry: Entry) -> None:
    """Drop ``entry`` from the evidence its author's ``forks`` row lists (the fork point
    stays recorded)."""
    fork = read_fork(txn, tables, entry.tenant_id, entry.author)
    if fork is not None and entry.id in fork.evidence:
        kept = tuple(i for i in fork.evidence if i != entry.id)
        txn.put(entry.tenant_id + entry.author, pack_fork(fork.seq, kept), db=tables.forks)


def record_stored_forks(txn: lmdb.Transaction[bytes], tables: Tables) -> int:
    """Find the forks among the stored entries (one scan of ``by_author``) and settle each:
    for a store written before ``forks`` existed. Returns how many authors forked."""
    found: list[tuple[bytes, int]] = []
    author_key = b""
    previous_seq = -1
    for key, value in txn.cursor(tables.by_author):
        if len(key) != AUTHOR_KEY_SIZE or len(value) != DUP_SIZE:
            continue  # fsck reports it
        seq, _ = unpack_dup(value)
        if key != author_key:
            author_key, previous_seq = key, -1
        elif seq == previous_seq and (not found or found[-1][0] != key):
            found.append((key, seq))
        previous_seq = seq
    for key, seq in found:
        settle_fork(txn, tables, key[:TENANT_ID_SIZE], key[TENANT_ID_SIZE:], seq)
    return len(found)
