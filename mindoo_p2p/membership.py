"""Membership records and the membership log: who may write to a tenant. Pure, no I/O.

A membership record is the payload of an entry of kind ``EntryKind.MEMBERSHIP`` in the tenant
log (database ``TENANT_LOG``), signed by the tenant's admin key and encrypted (by the caller)
with the tenant's ``MEMBERSHIP_KEY``. Every record has one canonical encoding: ADD and REVOKE
keep version 1 (so records written before key announcements existed still decode, and new ones
are byte-identical to what older nodes write); KEY_ANNOUNCE exists only in version 2::

    magic     4 bytes  b"MDMR"
    version   u8       1 (ADD, REVOKE) or 2 (KEY_ANNOUNCE)
    action    u8       MembershipAction
    version 1 body:
      member  name (varint length <= 512 + UTF-8), Ed25519 key 32 bytes, X25519 key 32 bytes
      role    varint length <= 16 + ASCII: "admin", "member" or "mirror"
    version 2 body (KEY_ANNOUNCE):
      key_id  16 bytes
      name    varint length <= 64 + ASCII (a valid key name)
      version varint, 1 .. 2**32-1
    (a KEY_ANNOUNCE never carries the key's secret)

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
- KEY_ANNOUNCE (:class:`KeyAnnouncement`) tells every member and mirror which key id has which
  name and version. It is refused when the key id was announced with another name or version,
  or when another key id was announced for the same name and version; announcing the same key
  again changes nothing. Key announcements build the key directory (:meth:`key_directory`).
  Rotating a key announces its next version (a new id under the same name); the ``default``
  key's versions may be announced like any other (its version 1 is announced, late, when it
  is first rotated). The ``$membership`` key is never announced (it is not rotated): such an
  announcement is refused.
- An ordinary entry is authorized when its author is the admin key or a current member.
  Revocation is total for now: every entry by a revoked key is rejected, whatever its time.
  (Deterministic rules for entries written before a revocation, and for records that arrive
  out of order, come later.)
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import ClassVar

from .codec import Reader, Writer
from .entry import TENANT_ID_SIZE, TENANT_LOG, Entry, EntryKind
from .errors import DecodeError, InvalidNameError, VerificationError
from .identity import (
    PUBLIC_KEY_SIZE,
    PublicIdentity,
    fingerprint_of,
    read_public_identity,
    write_public_identity,
)
from .keyring import MEMBERSHIP_KEY, validate_key_name

RECORD_MAGIC = b"MDMR"
RECORD_VERSION = 1
"""The encoding of ADD and REVOKE records."""
KEY_ANNOUNCE_VERSION = 2
"""The encoding of KEY_ANNOUNCE records."""
KEY_ID_SIZE = 16
MAX_KEY_NAME_SIZE = 64
MAX_KEY_VERSION = (1 << 32) - 1
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
    KEY_ANNOUNCE = 3
    """Publish a key's id, name and version (never its secret) to the whole tenant."""


MEMBER_ACTIONS = frozenset({MembershipAction.ADD, MembershipAction.REVOKE})


@dataclass(frozen=True, slots=True)
class MembershipRecord:
    """One membership change, as carried (encrypted) in a MEMBERSHIP entry."""

    action: MembershipAction
    member: PublicIdentity
    """The identity added, or (for REVOKE) the identity being revoked."""
    role: str
    """``"admin"`` (may also sign membership records, later) or ``"member"``."""

    def __post_init__(self) -> None:
        if not isinstance(self.action, MembershipAction) or self.action not in MEMBER_ACTIONS:
            raise ValueError(f"a membership record's action is ADD or REVOKE, not {self.action!r}")
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
        """Strictly decode an ADD or REVOKE record; raises :class:`DecodeError` and nothing else
        (a key announcement is a DecodeError here: use :func:`decode_tenant_log_record`)."""
        record = decode_tenant_log_record(data)
        if not isinstance(record, MembershipRecord):
            raise DecodeError("membership record: a key announcement, not a member record")
        return record


@dataclass(frozen=True, slots=True)
class KeyAnnouncement:
    """A KEY_ANNOUNCE record: which key id has which name and version. Carries no secret."""

    action: ClassVar[MembershipAction] = MembershipAction.KEY_ANNOUNCE
    key_id: bytes
    name: str
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_SIZE:
            raise ValueError(f"a key id is {KEY_ID_SIZE} bytes")
        validate_key_name(self.name)
        if not isinstance(self.version, int) or not 1 <= self.version <= MAX_KEY_VERSION:
            raise ValueError(f"a key version is 1-{MAX_KEY_VERSION}")

    def encode(self) -> bytes:
        """The canonical binary form (version 2, see the module docstring)."""
        w = Writer().raw(RECORD_MAGIC).u8(KEY_ANNOUNCE_VERSION).u8(int(self.action))
        w.fixed(self.key_id, KEY_ID_SIZE).text(self.name).varint(self.version)
        return w.getvalue()


TenantLogRecord = MembershipRecord | KeyAnnouncement
"""Any record a MEMBERSHIP entry of the tenant log carries."""


def decode_tenant_log_record(data: bytes) -> TenantLogRecord:
    """Strictly decode a record of either version; raises :class:`DecodeError` and nothing else.

    Each record has one encoding: ADD/REVOKE only as version 1, KEY_ANNOUNCE only as version 2.
    """
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
    if version not in (RECORD_VERSION, KEY_ANNOUNCE_VERSION):
        raise DecodeError(f"{what}: unsupported version {version}")
    action_value = r.u8("action")
    try:
        action = MembershipAction(action_value)
    except ValueError:
        raise DecodeError(f"{what}: unknown action {action_value}") from None
    expected = KEY_ANNOUNCE_VERSION if action is MembershipAction.KEY_ANNOUNCE else RECORD_VERSION
    if version != expected:
        if version == RECORD_VERSION:
            raise DecodeError(f"{what}: unknown action {action_value} in version {version}")
        raise DecodeError(f"{what}: unsupported version {version} for action {action.name}")
    if action is MembershipAction.KEY_ANNOUNCE:
        key_id = r.fixed(KEY_ID_SIZE, "key id")
        name = r.text("key name", MAX_KEY_NAME_SIZE)
        key_version = r.varint("key version", max_value=MAX_KEY_VERSION)
        r.end()
        try:
            return KeyAnnouncement(key_id=key_id, name=name, version=key_version)
        except (ValueError, InvalidNameError) as exc:
            raise DecodeError(f"{what}: {exc}") from None
    member = read_public_identity(r, "member")
    role = r.text("role", MAX_ROLE_SIZE)
    if role not in ROLES:
        raise DecodeError(f"{what}: unknown role {role!r}")
    r.end()
    return MembershipRecord(action=action, member=member, role=role)


@dataclass(frozen=True, slots=True)
class AnnouncedKey:
    """A key the tenant log announced: its id, name and version, and the announcing entry."""

    key_id: bytes
    name: str
    version: int
    entry_id: bytes


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

    __slots__ = ("_admin_key", "_applied", "_keys", "_members", "_tenant_id")

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
        self._keys: dict[bytes, AnnouncedKey] = {}
        """The key directory: announced keys by key id."""

    @property
    def tenant_id(self) -> bytes:
        return self._tenant_id

    @property
    def admin_key(self) -> bytes:
        return self._admin_key

    # -- membership records ----------------------------------------------------------------
    def authorize_record(self, entry: Entry, record: TenantLogRecord) -> str | None:
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
        if isinstance(record, KeyAnnouncement):
            return self._authorize_announcement(label, record)
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

    def _authorize_announcement(self, label: str, record: KeyAnnouncement) -> str | None:
        if record.name == MEMBERSHIP_KEY:
            return f"{label} announces the {MEMBERSHIP_KEY!r} key, which is never announced"
        known = self._keys.get(record.key_id)
        if known is not None:
            if (known.name, known.version) != (record.name, record.version):
                return (
                    f"{label} announces key {record.key_id.hex()} as {record.name!r} version"
                    f" {record.version}, but it was announced as {known.name!r} version"
                    f" {known.version}"
                )
            return None
        for other in self._keys.values():
            if (other.name, other.version) == (record.name, record.version):
                return (
                    f"{label} announces another key {record.key_id.hex()} as {record.name!r}"
                    f" version {record.version}, already key {other.key_id.hex()}"
                )
        return None

    def apply(self, entry: Entry, record: TenantLogRecord) -> None:
        """Apply an accepted record; a second apply of the same entry changes nothing.

        Raises :class:`VerificationError` with the reason when :meth:`authorize_record` refuses
        it, so unauthorized records can never change the state.
        """
        if entry.id in self._applied:
            return
        reason = self.authorize_record(entry, record)
        if reason is not None:
            raise VerificationError(reason)
        if isinstance(record, KeyAnnouncement):
            if record.key_id not in self._keys:
                self._keys[record.key_id] = AnnouncedKey(
                    record.key_id, record.name, record.version, entry.id
                )
            self._applied.add(entry.id)
            return
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

    # -- key directory ---------------------------------------------------------------------
    def key_directory(self) -> list[AnnouncedKey]:
        """Every announced key, sorted by name then version."""
        return sorted(self._keys.values(), key=lambda k: (k.name, k.version, k.key_id))

    def announced_key(self, key_id: bytes) -> AnnouncedKey | None:
        """The announcement of ``key_id``, or None when the log never announced it."""
        return self._keys.get(key_id)
