"""Why an arriving entry was not stored: a kind (what the rules say) and a message (for people).

Every check on an arriving entry (`mindoo_p2p.admission`, the membership rules in
`mindoo_p2p.membership`, the store) reports a refusal as a :class:`Rejected`. Code decides by
the :class:`RejectionKind`, never by the message text; :attr:`RejectionKind.sender_at_fault`
is the one place that says which kinds mean "whoever sent these bytes misbehaved" (a sync peer
or gossip forwarder is penalised) and which mean "refused here, nobody's fault" (e.g. an entry
by an author revoked after the forwarder stored it, or a record that arrived before what it
builds on).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RejectionKind(enum.Enum):
    """What kind of rule an entry broke. The value is a stable name for logs and JSON."""

    MALFORMED = "malformed"
    """The bytes do not decode, or an Entry's id is not the SHA-256 of its bytes."""
    BAD_SIGNATURE = "bad signature"
    """The author's Ed25519 signature does not verify."""
    MISROUTED = "misrouted"
    """An entry on a channel that never carries it: another tenant's entry in a sync session
    or on a gossip topic, a tenant-log entry by gossip."""
    RESERVED_TIMESTAMP = "reserved timestamp"
    """Timestamp 2**64-1 (Negentropy's infinity), refused by stores that reconcile every item."""
    UNKNOWN_TENANT = "unknown tenant"
    """This node does not hold the entry's tenant."""
    UNEXPECTED_KIND = "unexpected kind"
    """An entry kind its database does not hold (a CHANGE in the tenant log, a MEMBERSHIP
    entry elsewhere, a document entry without a document id)."""
    UNREADABLE_RECORD = "unreadable record"
    """A tenant-log entry this node cannot decrypt or whose record does not decode."""
    NOT_A_MEMBER = "not a member"
    """The author is not a member of the tenant (or a record is not signed by who may sign it)."""
    NOT_PERMITTED = "not permitted"
    """The author is known but its role does not allow this (a mirror writing, a device of a
    mirror, announcing the membership key, too many devices)."""
    REVOKED_ABOVE_CUT = "revoked above cut"
    """The author was revoked and the entry's author_seq is above the revocation's cut."""
    FORKED = "forked"
    """The author forked (two entries at one sequence number, or a link to another
    predecessor: `mindoo_p2p.chains`) and this entry is above the fork point, or at it with
    the evidence there complete: withdrawn on every node."""
    MISSING_DEPENDENCY = "missing dependency"
    """A tenant-log record that builds on one not applied yet (a REVOKE before its ADD): it
    lands when offered again after it."""
    NOT_REPLICATED = "not replicated"
    """An entry of a database this node forgot (`Tenant.forget_db`): refused, nobody's fault
    (the sender still holds the database)."""
    CONFLICT = "conflict"
    """A tenant-log record that contradicts the log (re-adding a revoked key, changing a
    member, announcing a key id twice differently, a key already taken)."""

    @property
    def sender_at_fault(self) -> bool:
        """True when no honest node would have sent this entry: its sender is penalised.

        Everything else is refused without blame: an honest forwarder may hold an entry that
        this node refuses (it stored it before a revocation reached it, or it knows a record
        this node has not seen yet).
        """
        return self in _SENDER_FAULTS


_SENDER_FAULTS = frozenset(
    {
        RejectionKind.MALFORMED,
        RejectionKind.BAD_SIGNATURE,
        RejectionKind.MISROUTED,
        RejectionKind.RESERVED_TIMESTAMP,
    }
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An offered entry that was not stored: which, what kind of rule it broke, and why."""

    entry_id: bytes
    """SHA-256 of the offered bytes (for undecodable input too)."""
    kind: RejectionKind
    message: str
    """Human-readable: "bad signature", "decode error: ...", a membership rule's reason."""

    @property
    def reason(self) -> str:
        """The message (for display; decide by :attr:`kind`)."""
        return self.message

    @property
    def sender_at_fault(self) -> bool:
        return self.kind.sender_at_fault


__all__ = ["Rejected", "RejectionKind"]
