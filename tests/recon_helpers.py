"""Helpers shared by the reconciliation tests (test_recon, test_recon_sessions): one whole
session run in memory, the check against brute-force set differences, random item sets."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mindoo_p2p.recon import (
    ReconInitiator,
    ReconItem,
    ReconResponder,
    SessionState,
    SplitPolicy,
    VectorStorage,
)


@dataclass
class Session:
    have: list[bytes]
    need: list[bytes]
    rounds: int
    total_bytes: int
    largest_message: int


def reconcile(
    initiator_items: list[ReconItem],
    responder_items: list[ReconItem],
    frame_size_limit: int = 256 * 1024,
    split: SplitPolicy | None = None,
) -> Session:
    """Run one whole session between our initiator and our responder, in memory."""
    policy = split or SplitPolicy()
    initiator = ReconInitiator(VectorStorage(initiator_items), frame_size_limit, split=policy)
    responder = ReconResponder(VectorStorage(responder_items), frame_size_limit, split=policy)
    message: bytes | None = initiator.initiate()
    have: list[bytes] = []
    need: list[bytes] = []
    total = largest = 0
    while message is not None:
        reply = responder.reconcile(message)
        total += len(message) + len(reply)
        largest = max(largest, len(message), len(reply))
        message, new_have, new_need = initiator.reconcile(reply)
        have += new_have
        need += new_need
        assert initiator.rounds <= 5000, "session does not end"
    assert initiator.state is SessionState.DONE
    return Session(have, need, initiator.rounds, total, largest)


def assert_exact(session: Session, ours: list[ReconItem], theirs: list[ReconItem]) -> None:
    """have/need are exactly the brute-force set differences, each id reported once."""
    our_ids = {item.id for item in ours}
    their_ids = {item.id for item in theirs}
    assert len(session.have) == len(set(session.have))
    assert len(session.need) == len(set(session.need))
    assert set(session.have) == our_ids - their_ids
    assert set(session.need) == their_ids - our_ids


def random_items(
    rnd: random.Random, count: int, start: int = 0, span: int = 10**9
) -> list[ReconItem]:
    return [ReconItem(start + rnd.randrange(span), rnd.randbytes(32)) for _ in range(count)]


def pair(
    rnd: random.Random, common: int, only_initiator: int, only_responder: int, *, recent: bool
) -> tuple[list[ReconItem], list[ReconItem]]:
    """Two sets sharing ``common`` items; the differences are the newest items when ``recent``,
    else scattered over the whole time span."""
    base = 1_700_000_000_000
    shared = random_items(rnd, common, base, 10**9)
    start = base + 10**9 if recent else base
    span = 10**6 if recent else 10**9
    return (
        shared + random_items(rnd, only_initiator, start, span),
        shared + random_items(rnd, only_responder, start, span),
    )
