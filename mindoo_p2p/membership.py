"""Membership records and the membership log: who may write to a tenant. Pure, no I/O.

A membership record is the payload of an entry of kind ``EntryKind.MEMBERSHIP`` in the tenant
log (database ``TENANT_LOG``), signed by the tenant's admin key and encrypted (by the caller)
with the tenant's ``MEMBERSHIP_KEY``. Record encoding, version 1::

    magic     4 bytes  b"MDMR"
    version   u8       1
    action    u8       MembershipAction
    member    name (varint length <= 512 + UTF-8), Ed25519 key 32 bytes, X25519 key 32 bytes
    role      varint length <= 16 + ASCII: "admin", "member" or "mirror"

:class:`MembershipLog` is the state machine the records drive. Its rules (all of them live
here):

- A record is acceptable only in a MEMBERSHIP entry of this tenant's log, authored by the admin
  key. The caller has already checked the entry's signature and decrypted the record from it.
- ADD admits a signing key that the log has never seen. Adding a current member again with
  the same identity and role is accepted and changes nothing (a re-sent invite); with another
  name, encryption key or role it is refused (changing a member is not supported yet).
  Re-adding a revoked key is refused: a revoked key may have been compromised, so its owner
  must come back with a new identity.
- REVOKE must name a key the log knows; revoking an already revoked member is accepted and
  changes nothing (the first revocation stays).
- Applying the same entry twice changes nothing (idempotent per entry id).
- An ordinary entry is authorized when its author is the admin key or a current member.
  Revocation is total for now: every entry by a revoked key is rejected, whatever its time.
  (Deterministic rules for entries written before a revocation, and for records that arrive
  out of order, come later.)
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .codec import Reader, Writer
from .entry import TENANT_ID_SIZE, TENANT_LOG, Entry, EntryKind
from .errors import DecodeError, VerificationError
from .identity import (
    PUBLIC_KEY_SIZE,
    PublicIdentity,
    fingerprint_of,
    read_public_identity,
    write_public_identity,
)

RECORD_MAGIC = b"MDMR"
RECORD_VERSION = 1
ROLE_ADMIN = "admin"
ROLE_MEMBER = "member"
ROLE_MIRROR = "mirror"
"""A node granted replication by the admin: it stores, verifies and serves the tenant's
entries but holds no document key and may not author entries."""
ROLES = frozenset({ROLE_ADMIN, ROLE_MEMBER, ROLE_MIRROR})
MAX_ROLE_SIZE = 16
MAX_RECORD_SIZE = 4096


class MembershipAction(enum.IntEnum):
    ADD = 1
    """Admit the member's signing key to the tenant."""
    REVOKE = 2
    """Withdraw the member's signing key: from now on its entries are rejected."""


@dataclass(frozen=True, slots=True)
class MembershipRecord:
    """One membership change, as carried (encrypted) in a MEMBERSHIP entry."""

    action: MembershipAction
    member: PublicIdentity
    """The identity added, or (for REVOKE) the identity being revoked."""
    role: str
    """``"admin"`` (may also sign membership records, later) or ``"member"``."""

    def __post_init__(self) -> None:
        if not isinstance(self.action, MembershipAction):
            raise ValueError(f"unknown membership action {self.action!r}")
        if not isinstance(self.member, PublicIdentity):
            raise ValueError("member must be a PublicIdentity")
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} (use 'admin', 'member' or 'mirror')")

    def encode(self) -> bytes:
        """The canonical binary form (see the module docstring)."""
        w = Writer().raw(RECORD_MAGIC).u8(RECORD_VERSION).u8(int(self.action))
        write_public_identity(w, self.member)
        w.text(self.role)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> MembershipRecord:
        """Strictly decode :meth:`encode`'s output; raises :class:`DecodeError` and nothing else."""
        what = "membership record"
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_RECORD_SIZE:
            raise DecodeError(f"{what}: {len(data)} bytes, over the limit {MAX_RECORD_SIZE}")
        r = Reader(data, what)
        if r.fixed(len(RECORD_MAGIC), "magic") != RECORD_MAGIC:
            raise DecodeError(f"{what}: bad magic (not a membership record)")
        version = r.u8("version")
        if version != RECORD_VERSION:
            raise DecodeError(f"{what}: unsupported version {version}")
        action_value = r.u8("action")
        try:
            action = MembershipAction(action_value)
        except ValueError:
            raise DecodeError(f"{what}: unknown action {action_value}") from None
        member = read_public_identity(r, "member")
        role = r.text("role", MAX_ROLE_SIZE)
        if role not in ROLES:
            raise DecodeError(f"{what}: unknown role {role!r}")
        r.end()
        return cls(action=action, member=member, role=role)


@dataclass(frozen=True, slots=True)
class Member:
    """A signing key the tenant has admitted, and whether it was revoked since."""

    identity: PublicIdentity
    role: str
    added_entry: bytes
    """The id of the entry whose record added this member."""
    revoked_entry: bytes | None = None
    """The id of the entry whose record revoked this member, if any."""

    @property
    def active(self) -> bool:
        return self.revoked_entry is None


class MembershipLog:
    """Who may write to a tenant, derived from its membership entries. Pure state machine.

    Feed it the tenant log's membership records in log order through :meth:`apply`; ask it
    about ordinary entries with :meth:`authorize_author`.
    """

    __slots__ = ("_admin_key", "_applied", "_members", "_tenant_id")

    def __init__(self, tenant_id: bytes, admin_key: bytes) -> None:
        if not isinstance(tenant_id, bytes) or len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        if not isinstance(admin_key, bytes) or len(admin_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"admin_key must be a {PUBLIC_KEY_SIZE}-byte Ed25519 public key")
        self._tenant_id = tenant_id
        self._admin_key = admin_key
        self._members: dict[bytes, Member] = {}
        """By signing key, in order of addition."""
        self._applied: set[bytes] = set()

    @property
    def tenant_id(self) -> bytes:
        return self._tenant_id

    @property
    def admin_key(self) -> bytes:
        return self._admin_key

    # -- membership records ----------------------------------------------------------------
    def authorize_record(self, entry: Entry, record: MembershipRecord) -> str | None:
        """None if ``record`` (decrypted from ``entry``) may be applied, else the reason.

        Does not change state. Assumes the entry's signature was verified.
        """
        label = f"membership entry {entry.id.hex()[:16]}"
        if entry.tenant_id != self._tenant_id:
            return f"{label} belongs to tenant {entry.tenant_id.hex()}, not {self._tenant_id.hex()}"
        if entry.database != TENANT_LOG:
            return f"{label} is in database {entry.database!r}, not the tenant log"
        if entry.kind != EntryKind.MEMBERSHIP:
            return f"{label} has kind {entry.kind.name}, not MEMBERSHIP"
        if entry.author != self._admin_key:
            return (
                f"{label} is signed by {fingerprint_of(entry.author)}, not by the admin key"
                f" {fingerprint_of(self._admin_key)} of tenant {self._tenant_id.hex()}"
            )
        if entry.id in self._applied:
            return None
        member = record.member
        known = self._members.get(member.signing_key)
        if record.action is MembershipAction.ADD:
            if known is not None and known.revoked_entry is not None:
                return (
                    f"{label} adds {member}, whose key was revoked; a revoked key cannot be"
                    " added again"
                )
            if known is not None and (known.identity != member or known.role != record.role):
                return (
                    f"{label} adds {member} as {record.role!r}, who is already a member as"
                    f" {known.role!r} with {'the same' if known.identity == member else 'another'}"
                    " identity; changing a member is not supported"
                )
        elif known is None:
            return f"{label} revokes {member}, who is not a member"
        return None

    def apply(self, entry: Entry, record: MembershipRecord) -> None:
        """Apply an accepted record; a second apply of the same entry changes nothing.

        Raises :class:`VerificationError` with the reason when :meth:`authorize_record` refuses
        it, so unauthorized records can never change the state.
        """
        if entry.id in self._applied:
            return
        reason = self.authorize_record(entry, record)
        if reason is not None:
            raise VerificationError(reason)
        key = record.member.signing_key
        if record.action is MembershipAction.ADD:
            if key not in self._members:
                self._members[key] = Member(
                    identity=record.member, role=record.role, added_entry=entry.id
                )
        else:
            known = self._members[key]
            if known.revoked_entry is None:
                self._members[key] = dataclasses.replace(known, revoked_entry=entry.id)
        self._applied.add(entry.id)

    # -- ordinary entries ------------------------------------------------------------------
    def authorize_author(self, entry: Entry) -> str | None:
        """None if ``entry``'s author may write to this tenant now, else the reason."""
        if entry.tenant_id != self._tenant_id:
            return (
                f"entry {entry.id.hex()[:16]} belongs to tenant {entry.tenant_id.hex()},"
                f" not {self._tenant_id.hex()}"
            )
        author = entry.author
        if author == self._admin_key:
            return None
        member = self._members.get(author)
        if member is None:
            return (
                f"author {fingerprint_of(author)} is not a member of tenant {self._tenant_id.hex()}"
            )
        if member.revoked_entry is not None:
            return (
                f"author {member.identity} was revoked from tenant {self._tenant_id.hex()}"
                f" (by entry {member.revoked_entry.hex()[:16]})"
            )
        if member.role == ROLE_MIRROR:
            return (
                f"author {member.identity} is a mirror of tenant {self._tenant_id.hex()}:"
                " mirrors may not write"
            )
        return None

    def is_member(self, signing_key: bytes) -> bool:
        """True when ``signing_key`` was added and not revoked (the admin key counts only if
        it was added as a member; :meth:`authorize_author` accepts it regardless)."""
        member = self._members.get(signing_key)
        return member is not None and member.revoked_entry is None

    def member(self, signing_key: bytes) -> Member | None:
        """The member record of ``signing_key``, revoked or not; None if never added."""
        return self._members.get(signing_key)

    def members(self) -> list[Member]:
        """Every member ever added, revoked ones included, in order of addition."""
        return list(self._members.values())
