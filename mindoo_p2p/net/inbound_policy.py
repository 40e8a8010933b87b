"""Which inbound connections a node takes, and for how long it keeps an unproven one. Pure.

An inbound connection goes through three points, and the policy decides at each:

1. **Accepted** (TCP, before any handshake): the remote IP address is known. The connection is
   *unproven*. Refused when unproven inbound connections already fill the node's budget, or
   the address's share of it (per IP address, and per subnet: /24 for IPv4, /48 for IPv6).
   Loopback addresses are exempt from the per-address shares (every local test cluster shares
   127.0.0.1, and a local user has easier ways to hurt the node); the budget still holds.
2. **Authenticated** (Noise done): the peer id is known. Refused when the peer is banned,
   whatever connections it already has. One connection per peer, so that an outsider cannot
   multiply its slots under one identity: when the peer already has one, the newer inbound
   connection *replaces* an older inbound one (the peer redialled: it restarted, or its old
   path died silently), and against a connection this node dialed the one dialed by the peer
   with the smaller id stays (both sides apply the same rule to a simultaneous dial, so
   exactly one connection survives).
3. **Proven**: the node's sync layer says the peer proved that it shares a tenant
   (`PeerHost.mark_proven`). From then on the connection no longer counts against the unproven
   budget, and it has no deadline. An inbound connection still unproven `proof_deadline`
   seconds after it was accepted is **expired**: the host closes it.

So idle outsiders can hold at most the budget, never the slots of members, and not for long.
Outbound connections (this node dialed them) are outside the policy. Time is passed in (the
host uses trio's clock), so tests drive the policy with numbers.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

DEFAULT_UNPROVEN_BUDGET = 32
DEFAULT_UNPROVEN_PER_ADDRESS = 8
DEFAULT_UNPROVEN_PER_SUBNET = 16
DEFAULT_PROOF_DEADLINE = 30.0


@dataclass(frozen=True)
class InboundLimits:
    unproven_budget: int = DEFAULT_UNPROVEN_BUDGET
    """Unproven inbound connections at once, from everybody."""
    unproven_per_address: int = DEFAULT_UNPROVEN_PER_ADDRESS
    unproven_per_subnet: int = DEFAULT_UNPROVEN_PER_SUBNET
    proof_deadline: float = DEFAULT_PROOF_DEADLINE
    """Seconds an inbound peer has to prove that it shares a tenant."""
    exempt_loopback: bool = True
    """Loopback addresses skip the per-address shares (tests of the shares turn this off)."""

    def __post_init__(self) -> None:
        counts = (self.unproven_budget, self.unproven_per_address, self.unproven_per_subnet)
        if min(counts) < 1:
            raise ValueError("inbound limits must be at least 1")
        if not self.proof_deadline > 0:
            raise ValueError("proof_deadline must be positive")


@dataclass(eq=False)
class InboundTicket:
    """One inbound connection, from acceptance until it closes."""

    address: str
    subnet: str | None
    """None for loopback (exempt from the per-address shares)."""
    accepted_at: float
    peer_id: str | None = None
    proven: bool = False
    closed: bool = False


class Refused(Exception):
    """The policy refuses a connection; the message says why."""


class Existing(enum.Enum):
    """The connection a peer already has when a new inbound one authenticates."""

    NONE = "none"
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    """One this node dialed."""


@dataclass
class InboundPolicy:
    """The bookkeeping of the rules above, for one host."""

    limits: InboundLimits = field(default_factory=InboundLimits)
    _unproven: set[InboundTicket] = field(default_factory=set)
    _by_peer: dict[str, set[InboundTicket]] = field(default_factory=dict)
    _proven_peers: set[str] = field(default_factory=set)

    # -- the three points ----------------------------------------------------------------------
    def accept(self, address: str, now: float) -> InboundTicket:
        """A TCP connection from ``address``; raises Refused, else a ticket to pass on."""
        subnet = _subnet_of(address, self.limits.exempt_loopback)
        if len(self._unproven) >= self.limits.unproven_budget:
            raise Refused(f"unproven inbound connections fill the budget of {len(self._unproven)}")
        if subnet is not None:
            same_address = sum(1 for t in self._unproven if t.address == address)
            if same_address >= self.limits.unproven_per_address:
                raise Refused(f"{address} holds {same_address} unproven connections already")
            same_subnet = sum(1 for t in self._unproven if t.subnet == subnet)
            if same_subnet >= self.limits.unproven_per_subnet:
                raise Refused(f"subnet {subnet} holds {same_subnet} unproven connections already")
        ticket = InboundTicket(address, subnet, now)
        self._unproven.add(ticket)
        return ticket

    def authenticate(
        self,
        ticket: InboundTicket,
        peer_id: str,
        *,
        banned: bool,
        existing: Existing,
        local_peer_id: str,
    ) -> bool:
        """Noise authenticated ``peer_id`` on ``ticket``'s connection. Returns whether the
        peer's existing connection must be closed (the new one replaces it); raises Refused
        (the caller closes the new connection, then calls `close`)."""
        if banned:
            raise Refused(f"peer {peer_id} is banned")
        replace = existing is Existing.INBOUND
        if existing is Existing.OUTBOUND:
            if local_peer_id < peer_id:
                raise Refused(
                    f"peer {peer_id} is connected already by our dial: one connection per peer"
                )
            replace = True
        ticket.peer_id = peer_id
        self._by_peer.setdefault(peer_id, set()).add(ticket)
        if peer_id in self._proven_peers:
            self._prove(ticket)
        return replace

    def prove(self, peer_id: str) -> None:
        """``peer_id`` proved that it shares a tenant: its connections are proven, now and
        until it disconnects."""
        self._proven_peers.add(peer_id)
        for ticket in self._by_peer.get(peer_id, ()):
            self._prove(ticket)

    def close(self, ticket: InboundTicket) -> None:
        """The connection of ``ticket`` closed (or was refused). Idempotent."""
        if ticket.closed:
            return
        ticket.closed = True
        self._unproven.discard(ticket)
        if ticket.peer_id is not None:
            tickets = self._by_peer.get(ticket.peer_id)
            if tickets is not None:
                tickets.discard(ticket)
                if not tickets:
                    del self._by_peer[ticket.peer_id]
                    self._proven_peers.discard(ticket.peer_id)

    def forget_peer(self, peer_id: str) -> None:
        """The peer has no connection left: it must prove itself again next time."""
        if not self._by_peer.get(peer_id):
            self._proven_peers.discard(peer_id)

    # -- deadlines -----------------------------------------------------------------------------
    def expired(self, now: float) -> list[str]:
        """Peer ids whose inbound connection is still unproven past the deadline, sorted."""
        deadline = self.limits.proof_deadline
        return sorted(
            {
                t.peer_id
                for t in self._unproven
                if t.peer_id is not None and now - t.accepted_at >= deadline
            }
        )

    def next_deadline(self) -> float | None:
        """When the oldest unproven, authenticated connection expires (None: none waits)."""
        waiting = [t.accepted_at for t in self._unproven if t.peer_id is not None]
        return min(waiting) + self.limits.proof_deadline if waiting else None

    @property
    def unproven(self) -> int:
        return len(self._unproven)

    def _prove(self, ticket: InboundTicket) -> None:
        ticket.proven = True
        self._unproven.discard(ticket)


def _subnet_of(address: str, exempt_loopback: bool) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) of ``address``; None for an exempt loopback address. An
    address that does not parse is its own subnet (it is still counted)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.is_loopback and exempt_loopback:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
