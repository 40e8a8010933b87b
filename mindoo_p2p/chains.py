"""Per-author hash chains: contiguity, forks and where an author's accepted entries end. Pure.

Every entry names its author's sequence number in the tenant (``author_seq``) and, from entry
format 2 on, the id of that author's previous entry (``prev``; all zero for author_seq 1), so
an author's entries in a tenant form a hash chain that nobody but the author can extend and
that the author cannot rewrite without being caught. The rules (all of them live here; the
store applies them inside its write transaction, `admission` refuses early what they withdraw):

- **Contiguity, and an entry whose predecessor is missing.** An honest author numbers 1, 2, 3, ...
  with no gap, each entry linking the one before. An entry whose predecessor this node does not
  hold is *admitted with a gap* (not held back): sync and gossip deliver in any order, a
  tenant-log record may name a document entry as its predecessor, and a held entry would stall
  the handshake evidence of a device. Nothing is lost by admitting it, because every link is
  checked when *both* its ends are stored, whichever arrived last (see forks), so the outcome is
  the same in every arrival order. Gaps matter for one thing: a revocation's default cut is the
  end of the author's *contiguous* run from 1 (`contiguous_head`), never the highest number
  stored, so an entry numbered 2**64-1 pre-empts nothing.
- **Forks.** An author *forked at seq f* when this node holds, for that author:
  (a) two different entries at f; or (b) a chained entry at f whose ``prev`` is not the entry
  it holds at f - 1 (the author signed two different predecessors); or (c) an entry at f, the
  seq of a revocation cut that names another entry id (the admin's node held another entry
  there). `conflict_seq` finds (a) and (b) for one new entry against what is stored, in either
  order of arrival: a new entry is compared with its neighbours at seq - 1, seq and seq + 1;
  (c) is found by the tenant's revocation enforcement. The fork point of an author is the
  smallest such f; it only ever goes down.
- **The rule for a forked author (one rule, identical on every node).** The author is treated as
  revoked at the fork point: its entries below f stay accepted, every entry at f and above is
  withdrawn (both branches). Entries above f are refused on arrival, or retracted where they
  landed first. The entries *at* f are the evidence: the two with the smallest ids
  (`MAX_EVIDENCE`) are kept, withdrawn from reads but still reconciled, so every node receives
  them and reaches the same fork point; any further entry at f is refused, or retracted when a
  smaller one arrives. A fork is never forgotten (`ForkPoint` rows in the store, reported by
  `mindoo status`). Consequence: whoever holds an author's key (a thief of a revoked member's
  device) can withdraw that author's entries from any point on by forking there, but can never
  add a readable entry; what it mints is evidence, not content.
- **Revocation cuts.** A cut names the last accepted ``author_seq`` of a key and, from record
  version 4 on, the id of that entry (`membership.Cut.last_entry_id`). An author's *limit* is
  the smaller of its cut and its fork point - 1: entries up to the limit are accepted, the rest
  withdrawn. The entry id closes the door a number alone left open: with the whole chain up to
  the cut fixed by its last link, an entry minted below the cut with a revoked key is a fork
  (a, b) or contradicts the cut's id (c), never an accepted entry.

Version-1 entries (no ``prev``) take part by their sequence number: (a) and (c) apply to them,
(b) does not (they link nothing), and they are admitted with a gap like any entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .entry import ID_SIZE, Entry

MAX_SEQ = (1 << 64) - 1
MAX_EVIDENCE = 2
"""Entries kept (withdrawn but reconciled) at an author's fork point: two prove any fork."""


class ChainFacts(Protocol):
    """What the store holds of one author's chain (withdrawn entries included)."""

    def others_at(self, tenant_id: bytes, author: bytes, seq: int, entry_id: bytes) -> bool:
        """True when an entry of ``author`` other than ``entry_id`` is stored at ``seq``."""
        ...

    def holds_at(self, tenant_id: bytes, author: bytes, seq: int, entry_id: bytes) -> bool | None:
        """None when no entry of ``author`` is stored at ``seq``, else whether ``entry_id`` is
        one of them."""
        ...

    def prevs_at(self, tenant_id: bytes, author: bytes, seq: int) -> Sequence[bytes | None]:
        """The ``prev`` of each stored entry of ``author`` at ``seq`` (None for version 1)."""
        ...


def conflict_seq(entry: Entry, facts: ChainFacts) -> int | None:
    """The smallest seq at which ``entry``, with what ``facts`` holds (it may hold ``entry``
    itself already), proves its author forked (rules (a) and (b)), or None."""
    tenant_id, author, seq = entry.tenant_id, entry.author, entry.author_seq
    if facts.others_at(tenant_id, author, seq, entry.id):
        return seq  # (a): two entries at one sequence number
    prev = entry.prev
    if prev is not None and seq > 1 and facts.holds_at(tenant_id, author, seq - 1, prev) is False:
        return seq  # (b): this entry names another predecessor than the one stored
    if seq < MAX_SEQ and any(
        link is not None and link != entry.id for link in facts.prevs_at(tenant_id, author, seq + 1)
    ):
        return seq + 1  # (b), found from the other end: a successor names another entry
    return None


@dataclass(frozen=True, slots=True)
class ForkPoint:
    """Where an author forked: ``seq`` (its entries from here on are withdrawn) and the
    evidence kept there (at most `MAX_EVIDENCE` entry ids, smallest first)."""

    author: bytes
    seq: int
    evidence: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= MAX_SEQ:
            raise ValueError("a fork point is a sequence number 0 .. 2**64-1")
        if len(self.evidence) > MAX_EVIDENCE or any(len(i) != ID_SIZE for i in self.evidence):
            raise ValueError(f"a fork keeps at most {MAX_EVIDENCE} entry ids as evidence")

    def refuses(self, entry: Entry) -> bool:
        """True when ``entry`` is withdrawn on arrival by this fork: above the fork point, or at
        it with no room among the evidence (it sorts after the evidence kept)."""
        seq = entry.author_seq
        if seq > self.seq:
            return True
        if seq < self.seq or entry.id in self.evidence:
            return False
        return len(self.evidence) >= MAX_EVIDENCE and entry.id > max(self.evidence)


def limit_of(cut: int | None, fork: ForkPoint | None) -> int | None:
    """The last accepted ``author_seq`` of an author: the smaller of its revocation cut and its
    fork point - 1 (None: no limit; -1: nothing, a fork at the legacy sequence number 0)."""
    limits = [cut] if cut is not None else []
    if fork is not None:
        limits.append(fork.seq - 1)
    return min(limits) if limits else None


def contiguous_head(seqs: Sequence[tuple[int, bytes]]) -> tuple[int, bytes | None]:
    """The end of the contiguous run 1, 2, 3, ... of an author's accepted entries: ``seqs`` is
    (author_seq, entry id) of each, in ascending order. Returns (seq, id) of the last entry of
    the run, (0, None) when there is no entry 1; the run stops at the first gap or at a
    sequence number held twice (a fork). What a revocation accepts by default."""
    head: tuple[int, bytes | None] = (0, None)
    previous = 0
    for index, (seq, entry_id) in enumerate(seqs):
        if seq != previous + 1:
            break
        if index + 1 < len(seqs) and seqs[index + 1][0] == seq:
            break
        head = (seq, entry_id)
        previous = seq
    return head


__all__ = [
    "MAX_EVIDENCE",
    "ChainFacts",
    "ForkPoint",
    "conflict_seq",
    "contiguous_head",
    "limit_of",
]
