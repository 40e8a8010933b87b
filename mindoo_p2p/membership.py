"""Membership records and the membership log: who may write to a tenant. Pure, no I/O.

A membership record is the payload of an entry of kind ``EntryKind.MEMBERSHIP`` in the tenant
log (database ``TENANT_LOG``), signed by the tenant's admin key and encrypted (by the caller)
with the tenant's ``MEMBERSHIP_KEY``. Every record has one canonical encoding: ADD and REVOKE
keep version 1 (so records written before key announcements existed still decode, and new ones
are byte-identical to what older nodes write); KEY_ANNOUNCE exists only in version 2; a
revocation that names the last sequence numbers it accepts (:class:`Revocation`) is a REVOKE in
version 3::

    magic     4 bytes  b"MDMR"
    version   u8       1 (ADD, REVOKE), 2 (KEY_ANNOUNCE) or 3 (REVOKE with cuts)
    action    u8       MembershipAction
    version 1 body:
      member  name (varint length <= 512 + UTF-8), Ed25519 key 32 bytes, X25519 key 32 bytes
      role    varint length <= 16 + ASCII: "admin", "member" or "mirror"
    version 2 body (KEY_ANNOUNCE):
      key_id  16 bytes
      name    varint length <= 64 + ASCII (a valid key name)
      version varint, 1 .. 2**32-1
    (a KEY_ANNOUNCE never carries the key's secret)
    version 3 body (REVOKE, a Revocation):
      member  Ed25519 key 32 bytes (the member revoked)
      cuts    varint count 1 .. 64, then per cut, in ascending key order, keys unique:
              Ed25519 key 32 bytes, last_seq varint 0 .. 2**64-1
              (one cut names the member's own key)
    version 3 body (DEVICE_ADD, a DeviceEnrolment):
      user    Ed25519 key 32 bytes (the member whose device this is)
      device  name (varint length <= 512 + UTF-8), Ed25519 key 32 bytes, X25519 key 32 bytes
    version 3 body (DEVICE_REVOKE, a DeviceRevocation):
      user    Ed25519 key 32 bytes, device Ed25519 key 32 bytes, last_seq varint
    version 4 body (REVOKE whose cuts name entry ids, a Revocation):
      member  Ed25519 key 32 bytes
      cuts    varint count 1 .. 64, then per cut, in ascending key order, keys unique:
              Ed25519 key 32 bytes, last_seq varint, has_id u8 (0 or 1; 0 when last_seq
              is 0), then when has_id the last accepted entry id, 32 bytes; at least one
              cut has an id (a revocation without any is version 3)
    version 4 body (DEVICE_REVOKE naming the entry id, a DeviceRevocation):
      user    Ed25519 key 32 bytes, device Ed25519 key 32 bytes, last_seq varint (>= 1),
      last accepted entry id 32 bytes
    version 5 body (KEY_ANNOUNCE with the key's commitment):
      as version 2, then commitment 32 bytes (`TenantKey.commitment`: HMAC keyed by the
      secret, which it does not reveal)
    version 5 body (DEVICE_ADD with the device's proof):
      as version 3, then proof 64 bytes (the device's Ed25519 signature, `device_request`)

:class:`MembershipLog` is the state machine the records drive. Its rules (all of them live
here):

- A record is acceptable only in a MEMBERSHIP entry of this tenant's log, authored by the admin
  key. The caller has already checked the entry's signature and decrypted the record from it.
- ADD admits a signing key that the log has never seen. Adding a current member again with
  the same identity and role is accepted and changes nothing (a re-sent invite); with another
  name, encryption key or role it is refused (changing a member is not supported yet).
  Re-adding a revoked key is refused: a revoked key may have been compromised, so its owner
  must come back with a new identity.
- REVOKE must name a key the log knows; revoking an already revoked member again is accepted.
- Revocation is deterministic: every node ends with the same accepted entries, whatever order
  it received entries and revocations in. A :class:`Revocation` carries *cuts*: for the
  member's signing key (and, later, each of its devices) the last ``author_seq`` the admin
  accepts. An entry by a revoked key is accepted when its ``author_seq`` is at most the key's
  cut, whenever it arrives (a late delivery of an old entry still lands), and rejected above it
  (a backdated timestamp changes nothing: the author's own sequence number decides). When
  several revocations name the same key, the smallest cut wins (a rule independent of their
  order). A cut of record version 4 also names the *id* of the last accepted entry
  (:meth:`cut_point`): with per-author hash chains (`mindoo_p2p.chains`) that fixes the whole
  chain the revocation accepts, so an entry minted later at a sequence number within the cut
  is a fork (two entries at one number, or one at the cut that is not the entry it names),
  which withdraws the author from there on and is never accepted itself; the tenant enforces
  the "not the named entry" case (`TenantAccess.enforce_revocations`), the store the others.
  Entries above the cut that a node stored before the revocation reached it are retracted
  (:meth:`cuts` lists what to enforce; `Tenant.enforce_revocations` does it). A
  version-1 REVOKE (written before cuts existed) is a cut at 0: nothing of that key is
  accepted.
- Applying the same entry twice changes nothing (idempotent per entry id).
- KEY_ANNOUNCE (:class:`KeyAnnouncement`) tells every member and mirror which key id has which
  name and version, and (version 5) the key's commitment, against which invites, enrolments
  and key files are checked. It is refused when the key id was announced with another name,
  version or commitment, or when another key id was announced for the same name and version;
  announcing the same key again changes nothing, and a version-5 announcement of a key
  announced in version 2 adds its commitment. Key announcements build the key directory
  (:meth:`key_directory`). Every key version is announced: ``default`` and ``$membership``
  version 1 when the tenant is created (or, for a tenant created earlier, by the admin's next
  invite, key rotation or export), each rotation its next version. ``$membership`` is only
  announced with its commitment.
- An ordinary entry is authorized when its author is the admin key, a current member (not a
  mirror), or a revoked member and the entry's ``author_seq`` is within the member's cut.
- Devices: a member (the *user*, identified by the signing key it was added with) may enroll
  further devices, each with its own signing key (DEVICE_ADD), and revoke one of them
  (DEVICE_REVOKE, with a cut like a Revocation's). These two records are signed by the user's
  own key or by the admin key; a user may have at most MAX_CUTS - 1 devices, mirrors none. A
  device writes as its user (same role); revoking a device limits that device only;
  revoking the user limits every device too (each at the cut the Revocation names for it,
  0 when it names none). A version-5 enrolment carries the device's own signature naming its
  user (a member cannot enroll someone else's key); one with a bad proof is refused. The
  outcome never depends on arrival order (`membership_devices`): every acceptable enrolment
  of a key is kept, the proven one with the smallest entry id wins over legacy (version-3,
  unproven) ones, and the admin's ADD of a key always wins over any enrolment of it (the
  enrolment stays stored, inert), so a member-add and a device-add of one key no longer
  refuse each other. A device revocation names (user, device) and limits the device while
  that user's enrolment is the winner; re-enrolling a revoked device leaves it revoked.
- Records that arrive before what they build on (a REVOKE before its ADD) are refused and
  land when offered again after it; sync offers them again, so the final state is the same.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
from dataclasses import dataclass
from typing import ClassVar

from .codec import Reader, Writer
from .crypto.signing import SIGNATURE_SIZE
from .device_request import DeviceRequest, device_proof_valid
from .entry import TENANT_ID_SIZE, TENANT_LOG, Entry, EntryKind
from .errors import DecodeError, InvalidNameError, VerificationError
from .identity import (
    PUBLIC_KEY_SIZE,
    PublicIdentity,
    fingerprint_of,
    read_public_identity,
    write_public_identity,
)
from .keyring import KEY_COMMITMENT_SIZE, MEMBERSHIP_KEY, TenantKey, validate_key_name
from .membership_devices import Device, DeviceRegistry, name_cut_entry
from .membership_key_grant import KEY_GRANT_ACTION, MembershipKeyGrant, read_key_grant
from .rejection import Rejected, RejectionKind

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
REVOCATION_VERSION = 3
"""The encoding of REVOKE records with cuts (:class:`Revocation`)."""
CHAINED_CUT_VERSION = 4
"""The encoding of REVOKE and DEVICE_REVOKE records whose cuts name the last accepted entry
id (per-author hash chains)."""
ENTRY_ID_SIZE = 32
PROVEN_RECORD_VERSION = 5
"""The encoding of KEY_ANNOUNCE with the key's commitment and DEVICE_ADD with the device's
proof (version 4 is the revocation records of the hash chains, `CHAINED_CUT_VERSION`)."""
MAX_CUTS = 64
MAX_SEQ = (1 << 64) - 1


class MembershipAction(enum.IntEnum):
    ADD = 1
    """Admit the member's signing key to the tenant."""
    REVOKE = 2
    """Withdraw the member's signing key: from now on its entries are rejected."""
    KEY_ANNOUNCE = 3
    """Publish a key's id, name and version (never its secret) to the whole tenant."""
    DEVICE_ADD = 4
    """Enroll another device (its own signing key) of a member."""
    DEVICE_REVOKE = 5
    """Withdraw one device of a member, naming its last accepted author_seq."""
    KEY_GRANT = KEY_GRANT_ACTION
    """A new membership key version, sealed to each remaining holder (`membership_key_grant`)."""


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
    """A KEY_ANNOUNCE record: which key id has which name and version, and (version 5) the
    key's commitment (`TenantKey.commitment`), which binds the secret without revealing it.
    Carries no secret."""

    action: ClassVar[MembershipAction] = MembershipAction.KEY_ANNOUNCE
    key_id: bytes
    name: str
    version: int
    commitment: bytes | None = None
    """None only in version-2 records (written before commitments existed)."""

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_SIZE:
            raise ValueError(f"a key id is {KEY_ID_SIZE} bytes")
        validate_key_name(self.name)
        if not isinstance(self.version, int) or not 1 <= self.version <= MAX_KEY_VERSION:
            raise ValueError(f"a key version is 1-{MAX_KEY_VERSION}")
        if self.commitment is not None and (
            not isinstance(self.commitment, bytes) or len(self.commitment) != KEY_COMMITMENT_SIZE
        ):
            raise ValueError(f"a key commitment is {KEY_COMMITMENT_SIZE} bytes")

    @classmethod
    def of(cls, key: TenantKey) -> KeyAnnouncement:
        """The announcement of ``key``, with its commitment."""
        return cls(key.key_id, key.name, key.version, key.commitment())

    def matches(self, key: TenantKey) -> bool:
        """True when ``key`` is the key announced: same id, name, version and commitment."""
        return (
            self.commitment is not None
            and (key.key_id, key.name, key.version) == (self.key_id, self.name, self.version)
            and hmac.compare_digest(key.commitment(), self.commitment)
        )

    def encode(self) -> bytes:
        """The canonical binary form (version 2 without a commitment, 5 with one; see the
        module docstring)."""
        version = KEY_ANNOUNCE_VERSION if self.commitment is None else PROVEN_RECORD_VERSION
        w = Writer().raw(RECORD_MAGIC).u8(version).u8(int(self.action))
        w.fixed(self.key_id, KEY_ID_SIZE).text(self.name).varint(self.version)
        if self.commitment is not None:
            w.fixed(self.commitment, KEY_COMMITMENT_SIZE)
        return w.getvalue()


@dataclass(frozen=True, slots=True)
class Cut:
    """The last ``author_seq`` a revocation accepts from one signing key, and (record
    version 4) the id of that entry."""

    signing_key: bytes
    last_seq: int
    last_entry_id: bytes | None = None
    """The id of the key's entry at ``last_seq``: the end of the chain the revocation accepts
    (None: the number alone, as in record version 3; always None when ``last_seq`` is 0)."""

    def __post_init__(self) -> None:
        if not isinstance(self.signing_key, bytes) or len(self.signing_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"a cut names a {PUBLIC_KEY_SIZE}-byte signing key")
        if not isinstance(self.last_seq, int) or not 0 <= self.last_seq <= MAX_SEQ:
            raise ValueError("a cut's last_seq is 0 .. 2**64-1")
        if self.last_entry_id is not None:
            if not isinstance(self.last_entry_id, bytes) or len(self.last_entry_id) != (
                ENTRY_ID_SIZE
            ):
                raise ValueError(f"a cut's last entry id is {ENTRY_ID_SIZE} bytes")
            if self.last_seq == 0:
                raise ValueError("a cut at 0 accepts nothing and names no entry")


@dataclass(frozen=True, slots=True)
class CutPoint:
    """Where revocations cut one signing key: the last accepted ``author_seq`` and the entry
    ids named for it (empty when no revocation at that number names one)."""

    seq: int
    entry_ids: frozenset[bytes] = frozenset()

    def names_another(self, seq: int, entry_id: bytes) -> bool:
        """True when an entry ``entry_id`` at ``seq`` is not the one the cut names there."""
        return seq == self.seq and bool(self.entry_ids) and entry_id not in self.entry_ids


@dataclass(frozen=True, slots=True)
class Revocation:
    """A REVOKE record (version 3): the member revoked and, per signing key, the last
    ``author_seq`` still accepted. ``cuts`` is sorted by key, unique, and names the member."""

    action: ClassVar[MembershipAction] = MembershipAction.REVOKE
    member_key: bytes
    cuts: tuple[Cut, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.member_key, bytes) or len(self.member_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"member_key must be a {PUBLIC_KEY_SIZE}-byte signing key")
        if not isinstance(self.cuts, tuple) or not all(isinstance(c, Cut) for c in self.cuts):
            raise ValueError("cuts must be a tuple of Cut")
        if not 1 <= len(self.cuts) <= MAX_CUTS:
            raise ValueError(f"a revocation has 1-{MAX_CUTS} cuts")
        keys = [c.signing_key for c in self.cuts]
        if keys != sorted(set(keys)):
            raise ValueError("a revocation's cuts are sorted by key, each key once")
        if self.member_key not in keys:
            raise ValueError("a revocation's cuts name the member's own key")

    @classmethod
    def of(
        cls,
        member_key: bytes,
        last_seqs: dict[bytes, int],
        last_ids: dict[bytes, bytes | None] | None = None,
    ) -> Revocation:
        """The revocation of ``member_key`` accepting up to ``last_seqs[key]`` of each key,
        naming ``last_ids[key]`` as the last accepted entry where given."""
        ids = last_ids or {}
        return cls(member_key, tuple(Cut(k, last_seqs[k], ids.get(k)) for k in sorted(last_seqs)))

    @property
    def names_entries(self) -> bool:
        """True when a cut names its last entry id (record version 4)."""
        return any(cut.last_entry_id is not None for cut in self.cuts)

    def cut_of(self, signing_key: bytes) -> int | None:
        for cut in self.cuts:
            if cut.signing_key == signing_key:
                return cut.last_seq
        return None

    def encode(self) -> bytes:
        """The canonical binary form (version 4 when a cut names its entry id, else 3; see
        the module docstring)."""
        chained = self.names_entries
        version = CHAINED_CUT_VERSION if chained else REVOCATION_VERSION
        w = Writer().raw(RECORD_MAGIC).u8(version).u8(int(self.action))
        w.fixed(self.member_key, PUBLIC_KEY_SIZE).varint(len(self.cuts))
        for cut in self.cuts:
            w.fixed(cut.signing_key, PUBLIC_KEY_SIZE).varint(cut.last_seq)
            if chained:
                if cut.last_entry_id is None:
                    w.u8(0)
                else:
                    w.u8(1).fixed(cut.last_entry_id, ENTRY_ID_SIZE)
        return w.getvalue()


@dataclass(frozen=True, slots=True)
class DeviceEnrolment:
    """A DEVICE_ADD record: ``device`` is a device of the member whose key is ``user_key``.

    ``proof`` is the device's own signature saying so (`device_request`): version 5. A
    version-3 record (written before proofs existed) has none and loses to any proven
    enrolment of the same key (`membership_devices`)."""

    action: ClassVar[MembershipAction] = MembershipAction.DEVICE_ADD
    user_key: bytes
    device: PublicIdentity
    proof: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.user_key, bytes) or len(self.user_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"user_key must be a {PUBLIC_KEY_SIZE}-byte signing key")
        if not isinstance(self.device, PublicIdentity):
            raise ValueError("device must be a PublicIdentity")
        if self.device.signing_key == self.user_key:
            raise ValueError("a device has its own signing key, not the user's")
        if self.proof is not None and (
            not isinstance(self.proof, bytes) or len(self.proof) != SIGNATURE_SIZE
        ):
            raise ValueError(f"a device proof is a {SIGNATURE_SIZE}-byte signature")

    @classmethod
    def of(cls, request: DeviceRequest) -> DeviceEnrolment:
        """The enrolment a device asked for (its proof included)."""
        return cls(request.user_key, request.device, request.proof)

    def proven(self) -> bool:
        """True when the record carries the device's valid proof."""
        return self.proof is not None and device_proof_valid(self.user_key, self.device, self.proof)

    def encode(self) -> bytes:
        version = REVOCATION_VERSION if self.proof is None else PROVEN_RECORD_VERSION
        w = Writer().raw(RECORD_MAGIC).u8(version).u8(int(self.action))
        w.fixed(self.user_key, PUBLIC_KEY_SIZE)
        write_public_identity(w, self.device)
        if self.proof is not None:
            w.fixed(self.proof, SIGNATURE_SIZE)
        return w.getvalue()


@dataclass(frozen=True, slots=True)
class DeviceRevocation:
    """A DEVICE_REVOKE record: the device's entries above ``last_seq`` are not accepted."""

    action: ClassVar[MembershipAction] = MembershipAction.DEVICE_REVOKE
    user_key: bytes
    device_key: bytes
    last_seq: int
    last_entry_id: bytes | None = None
    """The id of the device's entry at ``last_seq`` (record version 4), or None."""

    def __post_init__(self) -> None:
        for value, what in ((self.user_key, "user_key"), (self.device_key, "device_key")):
            if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_SIZE:
                raise ValueError(f"{what} must be a {PUBLIC_KEY_SIZE}-byte signing key")
        if not isinstance(self.last_seq, int) or not 0 <= self.last_seq <= MAX_SEQ:
            raise ValueError("last_seq is 0 .. 2**64-1")
        Cut(self.device_key, self.last_seq, self.last_entry_id)  # the same rules as a cut

    def encode(self) -> bytes:
        chained = self.last_entry_id is not None
        version = CHAINED_CUT_VERSION if chained else REVOCATION_VERSION
        w = Writer().raw(RECORD_MAGIC).u8(version).u8(int(self.action))
        w.fixed(self.user_key, PUBLIC_KEY_SIZE).fixed(self.device_key, PUBLIC_KEY_SIZE)
        w.varint(self.last_seq)
        if self.last_entry_id is not None:
            w.fixed(self.last_entry_id, ENTRY_ID_SIZE)
        return w.getvalue()


DeviceRecord = DeviceEnrolment | DeviceRevocation

TenantLogRecord = (
    MembershipRecord | KeyAnnouncement | Revocation | DeviceRecord | MembershipKeyGrant
)
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
    if version not in (
        RECORD_VERSION,
        KEY_ANNOUNCE_VERSION,
        REVOCATION_VERSION,
        CHAINED_CUT_VERSION,
        PROVEN_RECORD_VERSION,
    ):
        raise DecodeError(f"{what}: unsupported version {version}")
    action_value = r.u8("action")
    try:
        action = MembershipAction(action_value)
    except ValueError:
        raise DecodeError(f"{what}: unknown action {action_value}") from None
    if version == PROVEN_RECORD_VERSION:
        return _read_proven_record(r, what, action)
    if version == CHAINED_CUT_VERSION:
        if action is MembershipAction.REVOKE:
            return _read_revocation(r, what, chained=True)
        if action is MembershipAction.DEVICE_REVOKE:
            user_key = r.fixed(PUBLIC_KEY_SIZE, "user key")
            device_key = r.fixed(PUBLIC_KEY_SIZE, "device key")
            last_seq = r.varint("last_seq", max_value=MAX_SEQ)
            last_id = r.fixed(ENTRY_ID_SIZE, "last entry id")
            r.end()
            try:
                return DeviceRevocation(user_key, device_key, last_seq, last_id)
            except ValueError as exc:
                raise DecodeError(f"{what}: {exc}") from None
        raise DecodeError(f"{what}: unsupported version {version} for action {action.name}")
    if version == REVOCATION_VERSION:
        if action is MembershipAction.REVOKE:
            return _read_revocation(r, what, chained=False)
        if action is MembershipAction.DEVICE_ADD:
            user_key = r.fixed(PUBLIC_KEY_SIZE, "user key")
            device = read_public_identity(r, "device")
            r.end()
            try:
                return DeviceEnrolment(user_key, device)
            except ValueError as exc:
                raise DecodeError(f"{what}: {exc}") from None
        if action is MembershipAction.DEVICE_REVOKE:
            user_key = r.fixed(PUBLIC_KEY_SIZE, "user key")
            device_key = r.fixed(PUBLIC_KEY_SIZE, "device key")
            last_seq = r.varint("last_seq", max_value=MAX_SEQ)
            r.end()
            return DeviceRevocation(user_key, device_key, last_seq)
        raise DecodeError(f"{what}: unsupported version {version} for action {action.name}")
    if action in (
        MembershipAction.DEVICE_ADD,
        MembershipAction.DEVICE_REVOKE,
        MembershipAction.KEY_GRANT,
    ):
        if version == RECORD_VERSION:
            raise DecodeError(f"{what}: unknown action {action_value} in version {version}")
        raise DecodeError(f"{what}: unsupported version {version} for action {action.name}")
    expected = KEY_ANNOUNCE_VERSION if action is MembershipAction.KEY_ANNOUNCE else RECORD_VERSION
    if version != expected:
        if version == RECORD_VERSION:
            raise DecodeError(f"{what}: unknown action {action_value} in version {version}")
        raise DecodeError(f"{what}: unsupported version {version} for action {action.name}")
    if action is MembershipAction.KEY_ANNOUNCE:
        return _read_key_announcement(r, what, committed=False)
    member = read_public_identity(r, "member")
    role = r.text("role", MAX_ROLE_SIZE)
    if role not in ROLES:
        raise DecodeError(f"{what}: unknown role {role!r}")
    r.end()
    return MembershipRecord(action=action, member=member, role=role)


def _read_key_announcement(r: Reader, what: str, *, committed: bool) -> KeyAnnouncement:
    key_id = r.fixed(KEY_ID_SIZE, "key id")
    name = r.text("key name", MAX_KEY_NAME_SIZE)
    key_version = r.varint("key version", max_value=MAX_KEY_VERSION)
    commitment = r.fixed(KEY_COMMITMENT_SIZE, "key commitment") if committed else None
    r.end()
    try:
        return KeyAnnouncement(key_id, name, key_version, commitment)
    except (ValueError, InvalidNameError) as exc:
        raise DecodeError(f"{what}: {exc}") from None


def _read_proven_record(r: Reader, what: str, action: MembershipAction) -> TenantLogRecord:
    """The body of a version-5 record: KEY_ANNOUNCE with a commitment, DEVICE_ADD with the
    device's proof."""
    if action is MembershipAction.KEY_ANNOUNCE:
        return _read_key_announcement(r, what, committed=True)
    if action is MembershipAction.DEVICE_ADD:
        user_key = r.fixed(PUBLIC_KEY_SIZE, "user key")
        device = read_public_identity(r, "device")
        proof = r.fixed(SIGNATURE_SIZE, "device proof")
        r.end()
        try:
            return DeviceEnrolment(user_key, device, proof)
        except ValueError as exc:
            raise DecodeError(f"{what}: {exc}") from None
    if action is MembershipAction.KEY_GRANT:
        return read_key_grant(r, what)
    raise DecodeError(f"{what}: unsupported version {PROVEN_RECORD_VERSION} for {action.name}")


def _read_revocation(r: Reader, what: str, *, chained: bool) -> Revocation:
    member_key = r.fixed(PUBLIC_KEY_SIZE, "member key")
    count = r.varint("cut count", max_value=MAX_CUTS)
    cuts = []
    try:
        for _ in range(count):
            key = r.fixed(PUBLIC_KEY_SIZE, "cut key")
            last_seq = r.varint("cut last_seq", max_value=MAX_SEQ)
            last_id = None
            if chained:
                has_id = r.u8("cut has_id")
                if has_id > 1:
                    raise DecodeError(f"{what}: cut has_id is {has_id}, not 0 or 1")
                if has_id:
                    last_id = r.fixed(ENTRY_ID_SIZE, "cut last entry id")
            cuts.append(Cut(key, last_seq, last_id))
        r.end()
        revocation = Revocation(member_key, tuple(cuts))
    except ValueError as exc:
        raise DecodeError(f"{what}: {exc}") from None
    if chained and not revocation.names_entries:
        raise DecodeError(f"{what}: a version 4 revocation names at least one entry id")
    return revocation


@dataclass(frozen=True, slots=True)
class AnnouncedKey:
    """A key the tenant log announced: its id, name and version, and the announcing entry."""

    key_id: bytes
    name: str
    version: int
    entry_id: bytes
    commitment: bytes | None = None
    """The key's commitment (`TenantKey.commitment`), once a version-5 record announced it."""
    commitment_entry: bytes | None = None
    """The entry that announced the commitment (``entry_id`` when it was the same)."""

    def matches(self, key: TenantKey) -> bool:
        """True when ``key`` is this key: same id, name, version and commitment."""
        return KeyAnnouncement(self.key_id, self.name, self.version, self.commitment).matches(key)

    def entry_ids(self) -> list[bytes]:
        """The entries that announced this key (its name, then its commitment)."""
        ids = [self.entry_id]
        if self.commitment_entry is not None and self.commitment_entry != self.entry_id:
            ids.append(self.commitment_entry)
        return ids


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

    __slots__ = (
        "_admin_key",
        "_applied",
        "_cut_ids",
        "_cuts",
        "_cuts_revision",
        "_devices",
        "_key_grants",
        "_keys",
        "_members",
        "_tenant_id",
    )

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
        self._cuts: dict[bytes, dict[bytes, int]] = {}
        """Revoked member key -> signing key -> the smallest cut any revocation names."""
        self._cut_ids: dict[bytes, dict[int, frozenset[bytes]]] = {}
        """Signing key -> seq -> the entry ids REVOKE records name as the last accepted at seq
        (DEVICE_REVOKE records name theirs in the registry, per (user, device) pair)."""
        self._devices = DeviceRegistry()
        """Device enrolments and revocations (a member's key is never a device), with the
        cuts and entry ids DEVICE_REVOKE records name."""
        self._key_grants: dict[tuple[bytes, bytes], bytes] = {}
        """(membership key id, recipient signing key) -> the sealed secret (the smallest, if
        several records grant it)."""
        self._cuts_revision = 0
        """Counts the records that may have changed `cuts` (see :attr:`cuts_revision`)."""

    def copy(self) -> MembershipLog:
        """An independent copy: applying records to it leaves this log unchanged (how a
        published snapshot stays immutable while the next one is built)."""
        twin = MembershipLog(self._tenant_id, self._admin_key)
        twin._members = dict(self._members)
        twin._applied = set(self._applied)
        twin._keys = dict(self._keys)
        twin._cuts = {key: dict(cuts) for key, cuts in self._cuts.items()}
        twin._cut_ids = {key: dict(named) for key, named in self._cut_ids.items()}
        twin._devices = self._devices.copy()
        twin._key_grants = dict(self._key_grants)
        twin._cuts_revision = self._cuts_revision
        return twin

    @property
    def tenant_id(self) -> bytes:
        return self._tenant_id

    @property
    def admin_key(self) -> bytes:
        return self._admin_key

    # -- membership records ----------------------------------------------------------------
    def authorize_record(self, entry: Entry, record: TenantLogRecord) -> str | None:
        """None if ``record`` (decrypted from ``entry``) may be applied, else the reason
        (:meth:`check_record`'s message)."""
        refusal = self.check_record(entry, record)
        return None if refusal is None else refusal.message

    def check_record(self, entry: Entry, record: TenantLogRecord) -> Rejected | None:
        """None if ``record`` (decrypted from ``entry``) may be applied, else the refusal.

        Does not change state. Assumes the entry's signature was verified.
        """
        label = f"membership entry {entry.id.hex()[:16]}"
        if entry.tenant_id != self._tenant_id:
            return _refuse(
                entry,
                RejectionKind.MISROUTED,
                f"{label} belongs to tenant {entry.tenant_id.hex()}, not {self._tenant_id.hex()}",
            )
        if entry.database != TENANT_LOG:
            return _refuse(
                entry,
                RejectionKind.UNEXPECTED_KIND,
                f"{label} is in database {entry.database!r}, not the tenant log",
            )
        if entry.kind != EntryKind.MEMBERSHIP:
            return _refuse(
                entry,
                RejectionKind.UNEXPECTED_KIND,
                f"{label} has kind {entry.kind.name}, not MEMBERSHIP",
            )
        if entry.id in self._applied:
            return None
        if isinstance(record, DeviceEnrolment | DeviceRevocation):
            return self._check_device_record(label, entry, record)
        if entry.author != self._admin_key:
            return _refuse(
                entry,
                RejectionKind.NOT_A_MEMBER,
                (
                    f"{label} is signed by {fingerprint_of(entry.author)}, not by the admin key"
                    f" {fingerprint_of(self._admin_key)} of tenant {self._tenant_id.hex()}"
                ),
            )
        if isinstance(record, KeyAnnouncement):
            return self._check_announcement(label, entry, record)
        if isinstance(record, MembershipKeyGrant):
            return self._check_announcement(label, entry, _announcement_of(record))
        if isinstance(record, Revocation):
            if record.member_key not in self._members:
                return _refuse(
                    entry,
                    RejectionKind.MISSING_DEPENDENCY,
                    f"{label} revokes {fingerprint_of(record.member_key)}, who is not a member",
                )
            return None
        member = record.member
        known = self._members.get(member.signing_key)
        if record.action is MembershipAction.ADD:
            # A key enrolled as a device may still be added: the admin's ADD always wins
            # (the enrolment stays recorded, inert), whichever arrived first.
            if known is not None and known.revoked_entry is not None:
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} adds {member}, whose key was revoked; a revoked key cannot be"
                        " added again"
                    ),
                )
            if known is not None and (known.identity != member or known.role != record.role):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} adds {member} as {record.role!r}, who is already a member as"
                        f" {known.role!r} with"
                        f" {'the same' if known.identity == member else 'another'}"
                        " identity; changing a member is not supported"
                    ),
                )
        elif known is None:
            return _refuse(
                entry,
                RejectionKind.MISSING_DEPENDENCY,
                f"{label} revokes {member}, who is not a member",
            )
        return None

    def _check_device_record(
        self, label: str, entry: Entry, record: DeviceEnrolment | DeviceRevocation
    ) -> Rejected | None:
        user = self._members.get(record.user_key)
        if user is None:
            return _refuse(
                entry,
                RejectionKind.MISSING_DEPENDENCY,
                f"{label} names user {fingerprint_of(record.user_key)}, who is not a member",
            )
        if entry.author not in (self._admin_key, record.user_key):
            return _refuse(
                entry,
                RejectionKind.NOT_A_MEMBER,
                (
                    f"{label} is signed by {fingerprint_of(entry.author)}: device records are"
                    f" signed by their user {user.identity} or the admin key"
                ),
            )
        if entry.author == record.user_key:
            cut = self.cut_of(record.user_key)
            if cut is not None and entry.header.author_seq > cut:
                return _refuse(
                    entry,
                    RejectionKind.REVOKED_ABOVE_CUT,
                    (
                        f"{label}: user {user.identity} was revoked after their entry #{cut};"
                        f" this entry is #{entry.header.author_seq}"
                    ),
                )
        if user.role == ROLE_MIRROR:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                f"{label}: {user.identity} is a mirror; mirrors have no devices",
            )
        if isinstance(record, DeviceRevocation):
            if not self._devices.claimed_by(record.user_key, record.device_key):
                return _refuse(
                    entry,
                    RejectionKind.MISSING_DEPENDENCY,
                    (
                        f"{label} revokes {fingerprint_of(record.device_key)}, which is not a"
                        f" device of {user.identity}"
                    ),
                )
            return None
        # Only rules that do not depend on what arrived before refuse an enrolment: a key
        # claimed otherwise, re-enrolled after its revocation or added as a member is
        # settled by `DeviceRegistry`'s ranking and by the ADD winning, on every node alike.
        key = record.device.signing_key
        if record.proof is not None and not record.proven():
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                (
                    f"{label} enrolls {record.device}, but its proof is not that device's"
                    " signature (a device enrolment must be signed by the device's own key)"
                ),
            )
        if key == self._admin_key:
            return _refuse(
                entry,
                RejectionKind.CONFLICT,
                f"{label} enrolls the tenant's admin key as a device",
            )
        if self._devices.claimed_by(record.user_key, key):
            return None
        count = self._devices.claims_of(record.user_key)
        if count >= MAX_CUTS - 1:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                f"{label}: {user.identity} has {count} devices already (the most there can be)",
            )
        return None

    def _check_announcement(
        self, label: str, entry: Entry, record: KeyAnnouncement
    ) -> Rejected | None:
        if record.name == MEMBERSHIP_KEY and record.commitment is None:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                f"{label} announces the {MEMBERSHIP_KEY!r} key without its commitment",
            )
        known = self._keys.get(record.key_id)
        if known is not None:
            if (known.name, known.version) != (record.name, record.version):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} announces key {record.key_id.hex()} as {record.name!r} version"
                        f" {record.version}, but it was announced as {known.name!r} version"
                        f" {known.version}"
                    ),
                )
            if (
                known.commitment is not None
                and record.commitment is not None
                and known.commitment != record.commitment
            ):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    f"{label} announces key {record.key_id.hex()} with another commitment",
                )
            return None
        for other in self._keys.values():
            if (other.name, other.version) == (record.name, record.version):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} announces another key {record.key_id.hex()} as {record.name!r}"
                        f" version {record.version}, already key {other.key_id.hex()}"
                    ),
                )
        return None

    def apply(self, entry: Entry, record: TenantLogRecord) -> None:
        """Apply an accepted record; a second apply of the same entry changes nothing.

        Raises :class:`VerificationError` with the reason when :meth:`authorize_record` refuses
        it, so unauthorized records can never change the state.
        """
        if entry.id in self._applied:
            return
        refusal = self.check_record(entry, record)
        if refusal is not None:
            raise VerificationError(refusal.message)
        if isinstance(record, KeyAnnouncement):
            self._announce(entry, record)
            self._applied.add(entry.id)
            return
        if isinstance(record, MembershipKeyGrant):
            self._announce(entry, _announcement_of(record))
            for recipient, sealed in record.grants:
                known = self._key_grants.get((record.key_id, recipient))
                pair = (record.key_id, recipient)
                self._key_grants[pair] = sealed if known is None else min(known, sealed)
            self._applied.add(entry.id)
            return
        if isinstance(record, Revocation):
            self._revoke(entry, record.member_key, {c.signing_key: c.last_seq for c in record.cuts})
            for cut in record.cuts:
                self._name_cut_entry(cut.signing_key, cut.last_seq, cut.last_entry_id)
            self._applied.add(entry.id)
            return
        if isinstance(record, DeviceEnrolment):
            self._devices.enrol(record.device, record.user_key, entry.id, record.proven())
            self._cuts_revision += 1
            self._applied.add(entry.id)
            return
        if isinstance(record, DeviceRevocation):
            self._devices.revoke(
                record.user_key,
                record.device_key,
                entry.id,
                record.last_seq,
                record.last_entry_id,
            )
            self._cuts_revision += 1
            self._applied.add(entry.id)
            return
        key = record.member.signing_key
        if record.action is MembershipAction.ADD:
            if key not in self._members:
                self._members[key] = Member(
                    identity=record.member, role=record.role, added_entry=entry.id
                )
                self._cuts_revision += 1  # a device of that key, if any, no longer counts
        else:
            self._revoke(entry, key, {key: 0})  # a version-1 REVOKE accepts nothing more
        self._applied.add(entry.id)

    def _name_cut_entry(self, signing_key: bytes, seq: int, entry_id: bytes | None) -> None:
        """Note ``entry_id`` as the last entry a REVOKE accepts from ``signing_key`` at ``seq``
        (a DEVICE_REVOKE's is kept per (user, device) pair in the registry)."""
        name_cut_entry(self._cut_ids.setdefault(signing_key, {}), seq, entry_id)

    def _announce(self, entry: Entry, record: KeyAnnouncement) -> None:
        """Record an announcement (`_check_announcement` allowed it, so name, version and
        any commitment agree with what is known). The entries named are the smallest ids of
        those that announced the key and its commitment: the same in any arrival order."""
        known = self._keys.get(record.key_id)
        if known is None:
            known = AnnouncedKey(record.key_id, record.name, record.version, entry.id)
        known = dataclasses.replace(known, entry_id=min(known.entry_id, entry.id))
        if record.commitment is not None:
            first = known.commitment_entry
            known = dataclasses.replace(
                known,
                commitment=record.commitment,
                commitment_entry=entry.id if first is None else min(first, entry.id),
            )
        self._keys[record.key_id] = known

    def _revoke(self, entry: Entry, member_key: bytes, cuts: dict[bytes, int]) -> None:
        known = self._members[member_key]
        if known.revoked_entry is None:
            self._members[member_key] = dataclasses.replace(known, revoked_entry=entry.id)
        merged = self._cuts.setdefault(member_key, {})
        for key, last_seq in cuts.items():
            merged[key] = min(last_seq, merged.get(key, last_seq))
        self._cuts_revision += 1

    # -- ordinary entries ------------------------------------------------------------------
    def authorize_author(self, entry: Entry) -> str | None:
        """None if ``entry``'s author may write to this tenant now, else the reason
        (:meth:`check_author`'s message)."""
        refusal = self.check_author(entry)
        return None if refusal is None else refusal.message

    def check_author(self, entry: Entry) -> Rejected | None:
        """None if ``entry``'s author may write to this tenant now, else the refusal."""
        if entry.tenant_id != self._tenant_id:
            return _refuse(
                entry,
                RejectionKind.MISROUTED,
                (
                    f"entry {entry.id.hex()[:16]} belongs to tenant {entry.tenant_id.hex()},"
                    f" not {self._tenant_id.hex()}"
                ),
            )
        author = entry.author
        if author == self._admin_key:
            return None
        member = self._members.get(author)
        device = self._device(author)
        if device is not None:
            member = self._members.get(device.user_key)
        if member is None:
            return _refuse(
                entry,
                RejectionKind.NOT_A_MEMBER,
                f"author {fingerprint_of(author)} is not a member of tenant"
                f" {self._tenant_id.hex()}",
            )
        if member.role == ROLE_MIRROR:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                (
                    f"author {member.identity} is a mirror of tenant {self._tenant_id.hex()}:"
                    " mirrors may not write"
                ),
            )
        cut = self.cut_of(author)
        if cut is not None and entry.header.author_seq > cut:
            who = f"device {device.identity} of {member.identity}" if device else member.identity
            return _refuse(
                entry,
                RejectionKind.REVOKED_ABOVE_CUT,
                (
                    f"author {who} was revoked from tenant {self._tenant_id.hex()}"
                    f" after their entry #{cut}; this entry is #{entry.header.author_seq}"
                ),
            )
        return None

    # -- revocation ------------------------------------------------------------------------
    def cut_of(self, signing_key: bytes) -> int | None:
        """The last ``author_seq`` still accepted from ``signing_key``: None when no revocation
        limits it (it may write), an int when one does (every revocation of the member that
        holds the key counts; the smallest cut wins; a key a revocation does not name gets 0)."""
        member_cuts = self._cuts.get(signing_key)
        if member_cuts is not None:
            return member_cuts.get(signing_key, 0)
        device = self._device(signing_key)
        if device is None:
            return None
        limits = []
        device_cut = self._devices.cut(signing_key)
        if device_cut is not None:
            limits.append(device_cut)
        user_cuts = self._cuts.get(device.user_key)
        if user_cuts is not None:
            limits.append(user_cuts.get(signing_key, 0))
        return min(limits) if limits else None

    def cut_point(self, signing_key: bytes) -> CutPoint | None:
        """Where revocations cut ``signing_key`` (:meth:`cut_of`) with the entry ids they name
        as its last accepted entry there; None when no revocation limits it."""
        cut = self.cut_of(signing_key)
        if cut is None:
            return None
        named = self._cut_ids.get(signing_key, {}).get(cut, frozenset())
        if self._device(signing_key) is not None:
            named |= self._devices.cut_entry_ids(signing_key, cut)
        return CutPoint(cut, named)

    def cut_points(self) -> dict[bytes, CutPoint]:
        """:meth:`cuts` with the entry ids each cut names."""
        return {key: point for key in self.cuts() if (point := self.cut_point(key)) is not None}

    @property
    def cuts_revision(self) -> int:
        """Grows whenever :meth:`cuts` may have changed (a revocation, or a device enrolled
        for a revoked user): a cheap way to know whether to enforce them again."""
        return self._cuts_revision

    def cuts(self) -> dict[bytes, int]:
        """Every signing key a revocation limits -> the last ``author_seq`` accepted from it:
        what a node enforces on the entries it already stored."""
        found: dict[bytes, int] = {}
        for key in [*self._cuts, *self._devices.device_keys()]:
            cut = self.cut_of(key)
            if cut is not None:
                found[key] = cut
        return found

    def is_member(self, signing_key: bytes) -> bool:
        """True when ``signing_key`` was added and not revoked, or is an active device of such
        a member (the admin key counts only if it was added as a member;
        :meth:`authorize_author` accepts it regardless)."""
        device = self._device(signing_key)
        if device is not None:
            if device.revoked_entry is not None:
                return False
            signing_key = device.user_key
        member = self._members.get(signing_key)
        return member is not None and member.revoked_entry is None

    def _device(self, signing_key: bytes) -> Device | None:
        """The winning enrolment of ``signing_key``, unless the key is a member's (the
        admin's ADD always wins over an enrolment)."""
        if signing_key in self._members:
            return None
        return self._devices.device(signing_key)

    def device(self, signing_key: bytes) -> Device | None:
        """The device record of ``signing_key``, revoked or not; None if never enrolled, or
        if the key is a member's."""
        return self._device(signing_key)

    def devices(self, user_key: bytes | None = None) -> list[Device]:
        """Every device enrolled (of ``user_key`` only, when given), in order of enrolment."""
        found = (self._device(key) for key in self._devices.device_keys())
        return [d for d in found if d is not None and (user_key is None or d.user_key == user_key)]

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

    def key_grants(self, recipient: bytes) -> list[tuple[AnnouncedKey, bytes]]:
        """The membership key versions granted to ``recipient`` (a signing key) in the log,
        each with its sealed secret, by version."""
        found = [
            (self._keys[key_id], sealed)
            for (key_id, to), sealed in self._key_grants.items()
            if to == recipient and key_id in self._keys
        ]
        return sorted(found, key=lambda pair: pair[0].version)

    def newest_membership_key(self, held: set[bytes]) -> bytes | None:
        """Of the key ids in ``held``, the announced ``$membership`` version that is newest
        (None when none is announced): what tenant-log records are sealed under."""
        announced = [
            k for k in self._keys.values() if k.name == MEMBERSHIP_KEY and k.key_id in held
        ]
        return max(announced, key=lambda k: k.version).key_id if announced else None

    def announced_key(self, key_id: bytes) -> AnnouncedKey | None:
        """The announcement of ``key_id``, or None when the log never announced it."""
        return self._keys.get(key_id)


def _announcement_of(grant: MembershipKeyGrant) -> KeyAnnouncement:
    """A key grant also announces the key it grants."""
    return KeyAnnouncement(grant.key_id, MEMBERSHIP_KEY, grant.version, grant.commitment)


if RECORD_MAGIC != b"MDMR" or PROVEN_RECORD_VERSION != 5:  # membership_key_grant's copies
    raise AssertionError("membership_key_grant writes another record magic or version")


def _refuse(entry: Entry, kind: RejectionKind, message: str) -> Rejected:
    return Rejected(entry.id, kind, message)
