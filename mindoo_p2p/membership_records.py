"""Membership records: what the tenant log's MEMBERSHIP entries carry, and their bytes. Pure.

A membership record is the payload of an entry of kind ``EntryKind.MEMBERSHIP`` in the tenant
log (database ``TENANT_LOG``), signed by the tenant's admin key (device records: by the user's
key or the admin's) and encrypted (by the caller) with the tenant's ``MEMBERSHIP_KEY``. What
the records mean, which are accepted and what each changes is the business of
:class:`~mindoo_p2p.membership.MembershipLog` (`membership.py`, rules in its docstring); this
module only says what each record is and how its bytes read.

Every record has one canonical encoding: a (version, action) pair has one body, and each record
value has one version. Older versions stay readable and are still written for the records they
describe, so records written before a later feature are byte-identical to what older nodes
write. The versions (byte 5) and the actions (byte 6, :class:`MembershipAction`) each encodes::

    version  ADD  REVOKE               KEY_ANNOUNCE       DEVICE_ADD     DEVICE_REVOKE  KEY_GRANT
    1        yes  yes (a cut at 0)     -                  -              -              -
    2        -    -                    yes                -              -              -
    3        -    yes (cuts)           -                  yes            yes            -
    4        -    yes (cuts + ids)     -                  -              yes (+ id)     -
    5        -    -                    yes (+ commitment) yes (+ proof)  -              yes

Any other pair is a :class:`DecodeError`; the version a record is written in follows from its
value (a cut naming an entry id makes a version-4 revocation, a commitment a version-5
announcement, a proof a version-5 enrolment). The layout::

    magic     4 bytes  b"MDMR"
    version   u8       1 .. 5 (the table above)
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

    version 5 body (KEY_GRANT, a MembershipKeyGrant): see `membership_key_grant`

At most ``MAX_RECORD_SIZE`` bytes; the decoder (:func:`decode_tenant_log_record`) raises
:class:`DecodeError` and nothing else on any other input.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import ClassVar

from .codec import Reader, Writer
from .crypto.signing import SIGNATURE_SIZE
from .device_request import DeviceRequest, device_proof_valid
from .errors import DecodeError, InvalidNameError
from .identity import (
    PUBLIC_KEY_SIZE,
    PublicIdentity,
    read_public_identity,
    write_public_identity,
)
from .keyring import KEY_COMMITMENT_SIZE, TenantKey, validate_key_name
from .membership_key_grant import KEY_GRANT_ACTION, MembershipKeyGrant, read_key_grant

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


if RECORD_MAGIC != b"MDMR" or PROVEN_RECORD_VERSION != 5:  # membership_key_grant's copies
    raise AssertionError("membership_key_grant writes another record magic or version")
