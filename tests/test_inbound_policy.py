"""The inbound admission policy, driven with numbers (no sockets): budget, shares, bans, one
connection per peer, proof deadlines."""

from __future__ import annotations

import pytest

from mindoo_p2p.net.inbound_policy import Existing, InboundLimits, InboundPolicy, Refused

NONE = Existing.NONE
LIMITS = InboundLimits(
    unproven_budget=4, unproven_per_address=2, unproven_per_subnet=3, proof_deadline=10.0
)


def test_the_budget_and_the_shares_bound_unproven_connections() -> None:
    policy = InboundPolicy(LIMITS)
    policy.accept("192.0.2.1", 0)
    policy.accept("192.0.2.1", 0)
    with pytest.raises(Refused, match=r"192\.0\.2\.1 holds 2"):
        policy.accept("192.0.2.1", 0)
    policy.accept("192.0.2.2", 0)
    with pytest.raises(Refused, match=r"subnet 192.0.2.0/24 holds 3"):
        policy.accept("192.0.2.3", 0)
    policy.accept("198.51.100.7", 0)
    with pytest.raises(Refused, match="budget"):
        policy.accept("203.0.113.9", 0)
    assert policy.unproven == 4


def test_ipv6_shares_are_per_48() -> None:
    policy = InboundPolicy(LIMITS)
    for host in ("2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"):
        policy.accept(host, 0)
    with pytest.raises(Refused, match="2001:db8:1::/48"):
        policy.accept("2001:db8:1:ffff::5", 0)


def test_loopback_skips_the_shares_but_not_the_budget() -> None:
    policy = InboundPolicy(LIMITS)
    for _ in range(4):
        policy.accept("127.0.0.1", 0)
    with pytest.raises(Refused, match="budget"):
        policy.accept("127.0.0.1", 0)
    strict = InboundPolicy(InboundLimits(unproven_per_address=1, exempt_loopback=False))
    strict.accept("127.0.0.1", 0)
    with pytest.raises(Refused, match=r"127\.0\.0\.1 holds 1"):
        strict.accept("127.0.0.1", 0)


def test_a_closed_or_proven_connection_frees_its_place() -> None:
    policy = InboundPolicy(LIMITS)
    first = policy.accept("192.0.2.1", 0)
    second = policy.accept("192.0.2.1", 0)
    policy.close(first)
    policy.close(first)  # idempotent
    third = policy.accept("192.0.2.1", 0)
    policy.authenticate(
        second, "peer-2", banned=False, existing=Existing.NONE, local_peer_id="node"
    )
    policy.prove("peer-2")
    assert second.proven
    policy.accept("192.0.2.1", 0)
    assert policy.unproven == 2
    policy.close(third)
    assert policy.unproven == 1


def test_banned_peers_are_refused_whatever_they_hold() -> None:
    policy = InboundPolicy(LIMITS)
    for existing in Existing:
        ticket = policy.accept("192.0.2.1", 0)
        with pytest.raises(Refused, match="banned"):
            policy.authenticate(
                ticket, "mallory", banned=True, existing=existing, local_peer_id="node"
            )
        policy.close(ticket)


@pytest.mark.parametrize(
    ("existing", "local", "verdict"),
    [
        (Existing.NONE, "node", "accept"),
        (Existing.INBOUND, "node", "replace"),  # the peer redialled: the newer one stays
        (Existing.INBOUND, "a", "replace"),
        (Existing.OUTBOUND, "a", "refuse"),  # our dial is the smaller id's: it stays
        (Existing.OUTBOUND, "z", "replace"),  # the peer's dial is the smaller id's
    ],
)
def test_one_connection_per_peer(existing: Existing, local: str, verdict: str) -> None:
    policy = InboundPolicy(LIMITS)
    ticket = policy.accept("192.0.2.1", 0)
    if verdict == "refuse":
        with pytest.raises(Refused, match="one connection per peer"):
            policy.authenticate(ticket, "m", banned=False, existing=existing, local_peer_id=local)
        return
    replace = policy.authenticate(ticket, "m", banned=False, existing=existing, local_peer_id=local)
    assert replace == (verdict == "replace")


def test_a_simultaneous_dial_keeps_exactly_one_connection() -> None:
    """Both sides see the other's dial arrive while their own exists: the same rule keeps the
    connection dialed by the smaller peer id on both."""
    kept = []
    for local, remote in (("alice", "bob"), ("bob", "alice")):
        policy = InboundPolicy(LIMITS)
        ticket = policy.accept("192.0.2.1", 0)
        try:
            policy.authenticate(
                ticket, remote, banned=False, existing=Existing.OUTBOUND, local_peer_id=local
            )
        except Refused:
            kept.append(f"{local}'s dial")  # the inbound one (remote's dial) was refused
        else:
            kept.append(f"{remote}'s dial")  # the inbound one replaced our dial
    assert kept == ["alice's dial", "alice's dial"]


def test_unproven_peers_expire_at_the_deadline_and_proven_ones_never() -> None:
    policy = InboundPolicy(LIMITS)
    idle = policy.accept("192.0.2.1", 0)
    policy.authenticate(idle, "idle", banned=False, existing=Existing.NONE, local_peer_id="node")
    member = policy.accept("198.51.100.1", 3)
    policy.authenticate(
        member, "member", banned=False, existing=Existing.NONE, local_peer_id="node"
    )
    handshaking = policy.accept("203.0.113.1", 0)  # Noise not done: libp2p times it out
    assert policy.next_deadline() == 10.0
    assert policy.expired(9.99) == []
    policy.prove("member")
    assert policy.expired(10.0) == ["idle"]
    assert policy.expired(1000.0) == ["idle"]
    policy.close(idle)
    assert policy.expired(1000.0) == []
    assert policy.next_deadline() is None
    assert not handshaking.proven


def test_a_proven_peer_that_reconnects_must_prove_itself_again() -> None:
    policy = InboundPolicy(LIMITS)
    ticket = policy.accept("192.0.2.1", 0)
    policy.authenticate(ticket, "bob", banned=False, existing=Existing.NONE, local_peer_id="node")
    policy.prove("bob")
    policy.close(ticket)
    policy.forget_peer("bob")
    again = policy.accept("192.0.2.1", 100)
    policy.authenticate(again, "bob", banned=False, existing=Existing.NONE, local_peer_id="node")
    assert not again.proven
    assert policy.expired(110) == ["bob"]


def test_proof_before_the_connection_counts_on_arrival() -> None:
    """A peer proven over one connection (e.g. our outbound one) is proven on a new inbound
    one while it stays connected."""
    policy = InboundPolicy(LIMITS)
    policy.prove("bob")
    ticket = policy.accept("192.0.2.1", 0)
    policy.authenticate(ticket, "bob", banned=False, existing=Existing.NONE, local_peer_id="node")
    assert ticket.proven and policy.unproven == 0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        InboundLimits(unproven_budget=0)
    with pytest.raises(ValueError):
        InboundLimits(proof_deadline=0)
