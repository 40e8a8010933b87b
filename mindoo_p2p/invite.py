"""Out-of-band invitations: everything an invitee needs to join a tenant, sealed to them.

An admin invites a person by the :class:`~mindoo_p2p.identity.PublicIdentity` from their
identity file; a user enrolls another device of theirs the same way (an *enrolment*). The
invite file is sealed (libsodium sealed box) to the invitee's X25519 key. File format,
version 2 (integers big-endian, varint = minimal LEB128)::

    magic              4 bytes  b"MDIV"
    version            u8       2
    invitee            8 bytes fingerprint (first 8 bytes of SHA-256 of the signing key),
                       then name (varint length <= 512 + UTF-8): in the clear, so that someone
                       else who opens the file learns whom it is for
    sealed             varint length + sealed box of the payload

    payload:
      kind             u8: 1 = invite (signed by the tenant's admin key), 2 = enrolment
                       (signed by the enrolling user's key, the inviter)
      tenant_id        16 bytes
      tenant_name      varint length <= 512 + UTF-8 (1-128 printable characters)
      admin_key        32 bytes
      keys             varint count (1-1024), each: key_id 16, name (varint length <= 64 +
                       ASCII), version varint (1 .. 2**32-1), secret 32, created_ms u64
      entries          varint count (<= 100,000), each varint length (<= 64 KiB) + sealed entry
      inviter, invitee name (varint length + UTF-8), Ed25519 key 32, X25519 key 32 (each)
      created_ms       u64
      signature        64 bytes: Ed25519 over the statement below, by the admin key (invite)
                       or the inviter's key (enrolment)

    statement: "mindoo/invite/v2" 0x00, kind, tenant_id, admin_key, tenant_name, invitee and
      inviter (as above), created_ms, then per key in the payload's order: key_id, name,
      version, commitment (`TenantKey.commitment`, never the secret)

The clear part is not authenticated: it only serves the "not for you" message, and
:func:`open_invite` checks it against the sealed copy. A sealed box does not say who sealed it
(anyone who reads the tenant log, a mirror for one, could seal one), so :func:`verify_invite`
checks that the invite is signed by the admin key (an enrolment: by the user whose DEVICE_ADD
in the log enrolls the invitee), that the tenant log entries in it are signed by the admin
key and, replayed through a :class:`~mindoo_p2p.membership.MembershipLog`, make the invitee a
member, and that every key it carries is the one the admin announced in that log (id, name,
version and commitment; every version is announced, the first ones too). A second key of one
name and version is refused. What remains for the invitee is to trust that admin key (compare
its fingerprint with the inviter out of band).

Version 1 invites (unsigned, written before these checks existed) are refused with
:class:`OutdatedInviteError`: nothing in them tells a genuine one from a forgery.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from . import admission
from .admission import VerifiedEntry
from .codec import Reader, Writer
from .crypto.signing import SIGNATURE_SIZE, SigningKeyPair, verify_signature
from .entry import TENANT_ID_SIZE, TENANT_LOG, Entry, EntryKind
from .errors import DecodeError, MissingKeyError, VerificationError
from .identity import (
    FINGERPRINT_SIZE,
    MAX_NAME_BYTES,
    PUBLIC_KEY_SIZE,
    PublicIdentity,
    UserIdentity,
    check_signing_key,
    read_addressed,
    read_public_identity,
    validate_display_name,
    write_addressed,
    write_public_identity,
)
from .keyring import (
    DEFAULT_KEY,
    KEY_COMMITMENT_SIZE,
    MEMBERSHIP_KEY,
    KeyRing,
    TenantKey,
    validate_key_name,
)
from .membership import MembershipLog
from .membership_records import ROLE_MIRROR, decode_tenant_log_record
from .rejection import Rejected

INVITE_MAGIC = b"MDIV"
INVITE_VERSION = 2
UNSIGNED_INVITE_VERSION = 1
"""The unsigned invites of earlier releases: refused (`OutdatedInviteError`)."""
_STATEMENT_DOMAIN = b"mindoo/invite/v2\x00"
MAX_INVITE_SIZE = 32 * 1024 * 1024
MAX_KEYS = 1024
MAX_KEY_NAME_SIZE = 64
MAX_KEY_VERSION = (1 << 32) - 1
MAX_MEMBERSHIP_ENTRIES = 100_000
MAX_MEMBERSHIP_ENTRY_SIZE = 64 * 1024
KEY_ID_SIZE = 16
SECRET_SIZE = 32


class InviteNotForYouError(VerificationError):
    """The invite is sealed to someone else's key."""


class OutdatedInviteError(VerificationError):
    """An unsigned invite (format 1): it cannot be told apart from a forgery."""


class InviteKind(enum.IntEnum):
    INVITE = 1
    """A member (or mirror) invited by the admin: signed by the tenant's admin key."""
    ENROLMENT = 2
    """A device enrolled by its user: signed by the user's key (the inviter)."""


@dataclass(frozen=True)
class Invite:
    """What an invitee needs to join a tenant. Validated on construction (ValueError)."""

    tenant_id: bytes
    tenant_name: str
    admin_key: bytes
    """The tenant admin's Ed25519 public key."""
    keys: list[TenantKey]
    """The tenant keys the invitee receives (the default and membership keys at least)."""
    membership_entries: list[bytes] = field(repr=False)
    """The sealed raw entries of the tenant log so far, in log order, incl. the invitee's ADD."""
    inviter: PublicIdentity
    invitee: PublicIdentity
    created_ms: int
    kind: InviteKind = InviteKind.INVITE
    signature: bytes = field(default=bytes(SIGNATURE_SIZE), repr=False)
    """By the admin key (an invite) or the inviter's key (an enrolment), over
    :meth:`statement`; see :meth:`signed`."""

    def __post_init__(self) -> None:
        if not isinstance(self.tenant_id, bytes) or len(self.tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        validate_display_name(self.tenant_name, "tenant name")
        check_signing_key(self.admin_key)
        if not 1 <= len(self.keys) <= MAX_KEYS:
            raise ValueError(f"an invite carries 1-{MAX_KEYS} keys, not {len(self.keys)}")
        if not all(isinstance(key, TenantKey) for key in self.keys):
            raise ValueError("keys must be TenantKey objects")
        if any(key.version > MAX_KEY_VERSION for key in self.keys):
            raise ValueError(f"key versions must be at most {MAX_KEY_VERSION}")
        if len(self.membership_entries) > MAX_MEMBERSHIP_ENTRIES:
            raise ValueError(f"an invite carries at most {MAX_MEMBERSHIP_ENTRIES} entries")
        for raw in self.membership_entries:
            if not isinstance(raw, bytes) or len(raw) > MAX_MEMBERSHIP_ENTRY_SIZE:
                raise ValueError(
                    f"membership entries must be bytes of at most {MAX_MEMBERSHIP_ENTRY_SIZE}"
                )
        if not isinstance(self.inviter, PublicIdentity) or not isinstance(
            self.invitee, PublicIdentity
        ):
            raise ValueError("inviter and invitee must be PublicIdentity objects")
        if not 0 <= self.created_ms < 1 << 64:
            raise ValueError("created_ms must fit in 64 bits")
        if not isinstance(self.kind, InviteKind):
            raise ValueError("kind must be an InviteKind")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise ValueError(f"an invite's signature is {SIGNATURE_SIZE} bytes")

    def keyring(self) -> KeyRing:
        return KeyRing(list(self.keys))

    @property
    def signer_key(self) -> bytes:
        """Who must have signed it: the admin key, or for an enrolment the inviter."""
        return self.admin_key if self.kind is InviteKind.INVITE else self.inviter.signing_key

    def statement(self) -> bytes:
        """What the signature covers (see the module docstring): everything but the secrets
        (bound through their commitments) and the tenant log (signed entry by entry)."""
        w = Writer().raw(_STATEMENT_DOMAIN).u8(int(self.kind))
        w.fixed(self.tenant_id, TENANT_ID_SIZE).fixed(self.admin_key, PUBLIC_KEY_SIZE)
        w.text(self.tenant_name)
        write_public_identity(w, self.invitee)
        write_public_identity(w, self.inviter)
        w.u64(self.created_ms).varint(len(self.keys))
        for key in self.keys:
            w.fixed(key.key_id, KEY_ID_SIZE).text(key.name).varint(key.version)
            w.fixed(key.commitment(), KEY_COMMITMENT_SIZE)
        return w.getvalue()

    def signed(self, signer: SigningKeyPair) -> Invite:
        """This invite signed by ``signer`` (the admin key, or the inviter's for an
        enrolment; ValueError for any other key)."""
        if signer.public_key != self.signer_key:
            raise ValueError(f"an {self.kind.name.lower()} is signed by its signer_key")
        return dataclasses.replace(self, signature=signer.sign(self.statement()))

    def signature_valid(self) -> bool:
        return verify_signature(self.signer_key, self.statement(), self.signature)


def seal_invite(invite: Invite) -> bytes:
    """The invite file: magic, version, the invitee in the clear, the sealed payload."""
    w = Writer().raw(INVITE_MAGIC).u8(INVITE_VERSION)
    write_addressed(w, invite.invitee, _encode_payload(invite))
    data = w.getvalue()
    if len(data) > MAX_INVITE_SIZE:
        raise ValueError(f"the invite is {len(data)} bytes, over the limit {MAX_INVITE_SIZE}")
    return data


def invite_recipient_fingerprint(data: bytes) -> str | None:
    """The recipient fingerprint an invite file names in the clear (hex), or None when
    ``data`` does not start like an invite; nothing is checked (`open_checked_invite` does)."""
    head = bytes(data[: len(INVITE_MAGIC) + 1 + FINGERPRINT_SIZE])
    if len(head) < len(INVITE_MAGIC) + 1 + FINGERPRINT_SIZE or not head.startswith(INVITE_MAGIC):
        return None
    return head[len(INVITE_MAGIC) + 1 :].hex()


def open_invite(data: bytes, identity: UserIdentity) -> Invite:
    """Open and check an invite file with the invitee's identity (see `open_checked_invite`)."""
    return open_checked_invite(data, identity)[0]


def open_checked_invite(data: bytes, identity: UserIdentity) -> tuple[Invite, list[VerifiedEntry]]:
    """Open and check an invite file with the invitee's identity; return it with its tenant
    log's entries, verified once here (`Node.join` stores them without verifying again).

    Raises :class:`DecodeError` for anything that is not a well-formed invite ("not a mindoo
    invite", truncated, garbage), :class:`InviteNotForYouError` ("this invite is for NAME
    FINGERPRINT, not for you") when it is sealed to another key, and
    :class:`VerificationError` when it was altered or its tenant log does not make the
    invitee a member (see :func:`verify_invite`).
    """
    what = "invite"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_INVITE_SIZE:
        raise DecodeError(f"{what}: {len(data)} bytes, over the limit {MAX_INVITE_SIZE}")
    r = Reader(data, what)
    if r.fixed(len(INVITE_MAGIC), "magic") != INVITE_MAGIC:
        raise DecodeError("not a mindoo invite (bad magic)")
    version = r.u8("version")
    if version == UNSIGNED_INVITE_VERSION:
        raise OutdatedInviteError(
            "this invite was made by an earlier mindoo (invite format 1): it is not signed by"
            " the tenant's admin, so nothing tells it apart from a forgery; ask for a new invite"
        )
    if version != INVITE_VERSION:
        raise DecodeError(f"{what}: unsupported invite version {version}")
    opened = read_addressed(
        r, identity, what="invite", max_size=MAX_INVITE_SIZE, not_for_you=InviteNotForYouError
    )
    payload = opened.payload
    clear_fingerprint, clear_name = opened.fingerprint, opened.name

    invite = _decode_payload(payload)
    if invite.invitee != identity.public():
        raise VerificationError(
            f"this invite was sealed to your key but names {invite.invitee} as the invitee"
        )
    if clear_fingerprint != invite.invitee.fingerprint or clear_name != invite.invitee.name:
        raise VerificationError("the invite's clear header does not match its sealed content")
    return invite, verify_invite(invite)


def verify_invite(invite: Invite) -> list[VerifiedEntry]:
    """Raise unless the invite's tenant log, replayed, makes the invitee a current member;
    return its entries, verified (to be stored without verifying them again).

    Checks: the invite is signed by its signer (the admin key; an enrolment by the inviter);
    no two keys share a name and version; the default and membership keys are present; every
    entry decodes, belongs to the invite's tenant log and carries a valid signature; every
    MEMBERSHIP entry decrypts with a key of the invite and is accepted by a
    :class:`MembershipLog` rooted at the admin key; the log makes the invitee a member (an
    invite) or a device of the inviter (an enrolment); every key matches its announcement in
    the log (id, name, version, commitment), the first versions too.
    Raises :class:`VerificationError` (or :class:`DecodeError` for an undecodable entry).
    """
    if not invite.signature_valid():
        who = "the tenant's admin key" if invite.kind is InviteKind.INVITE else "its inviter"
        raise VerificationError(
            f"this {invite.kind.name.lower()} is not signed by {who}: it may be forged"
        )
    ring = invite.keyring()
    seen: dict[tuple[str, int], bytes] = {}
    for key in invite.keys:
        other = seen.setdefault((key.name, key.version), key.key_id)
        if other != key.key_id or len(ring) != len(invite.keys):
            raise VerificationError(
                f"the invite carries a second key {key.name!r} version {key.version}"
            )
    names = set(ring.names())
    if MEMBERSHIP_KEY not in names:
        raise VerificationError(f"the invite lacks the tenant's {MEMBERSHIP_KEY!r} key")
    log = MembershipLog(invite.tenant_id, invite.admin_key)
    verified: list[VerifiedEntry] = []
    for index, raw in enumerate(invite.membership_entries):
        entry = Entry.decode(raw, f"invite tenant log entry {index}")
        if entry.tenant_id != invite.tenant_id or entry.database != TENANT_LOG:
            raise VerificationError(
                f"invite tenant log entry {index} is not from the log of tenant"
                f" {invite.tenant_id.hex()}"
            )
        checked = admission.verify_one(entry)
        if isinstance(checked, Rejected):
            raise VerificationError(f"invite tenant log entry {index}: {checked.message}")
        verified.append(checked)
        if entry.kind != EntryKind.MEMBERSHIP:
            continue
        try:
            key = ring.by_id(entry.header.key_id)
        except MissingKeyError:
            raise VerificationError(
                f"invite tenant log entry {index} is encrypted with a key the invite lacks"
            ) from None
        record = decode_tenant_log_record(entry.decrypt(key.secret))
        reason = log.authorize_record(entry, record)
        if reason is not None:
            raise VerificationError(f"invite tenant log entry {index}: {reason}")
        log.apply(entry, record)
    if not log.is_member(invite.invitee.signing_key):
        raise VerificationError(
            f"the invite's tenant log does not make {invite.invitee} a member of the tenant"
        )
    if invite.kind is InviteKind.ENROLMENT:
        device = log.device(invite.invitee.signing_key)
        if device is None or device.user_key != invite.inviter.signing_key:
            raise VerificationError(
                f"the enrolment's tenant log does not make {invite.invitee} a device of its"
                f" inviter {invite.inviter}"
            )
    elif log.member(invite.invitee.signing_key) is None:
        raise VerificationError(f"the invite's tenant log does not add {invite.invitee}")
    for key in invite.keys:
        announced = log.announced_key(key.key_id)
        if announced is None or not announced.matches(key):
            why = (
                "never announced"
                if announced is None
                else "announced without its commitment"
                if announced.commitment is None
                else "not the one announced"
            )
            raise VerificationError(
                f"the invite's key {key.name!r} version {key.version} ({key.key_id.hex()}) is"
                f" {why} in the tenant log by the admin: it may be forged"
            )
    invitee = log.member(invite.invitee.signing_key)
    if DEFAULT_KEY not in names and (invitee is None or invitee.role != ROLE_MIRROR):
        # Only a mirror joins without the document key.
        raise VerificationError(f"the invite lacks the tenant's {DEFAULT_KEY!r} key")
    return verified


def _encode_payload(invite: Invite) -> bytes:
    w = Writer().u8(int(invite.kind))
    w.fixed(invite.tenant_id, TENANT_ID_SIZE)
    w.text(invite.tenant_name)
    w.fixed(invite.admin_key, PUBLIC_KEY_SIZE)
    w.varint(len(invite.keys))
    for key in invite.keys:
        w.fixed(key.key_id, KEY_ID_SIZE)
        w.text(key.name)
        w.varint(key.version)
        w.fixed(key.secret, SECRET_SIZE)
        w.u64(key.created_ms)
    w.varint(len(invite.membership_entries))
    for raw in invite.membership_entries:
        w.blob(raw)
    write_public_identity(w, invite.inviter)
    write_public_identity(w, invite.invitee)
    w.u64(invite.created_ms)
    w.fixed(invite.signature, SIGNATURE_SIZE)
    return w.getvalue()


def _decode_payload(payload: bytes) -> Invite:
    """Strictly decode the sealed payload; DecodeError only."""
    r = Reader(payload, "invite payload")
    kind_value = r.u8("kind")
    try:
        kind = InviteKind(kind_value)
    except ValueError:
        raise DecodeError(f"{r.what}: unknown kind {kind_value}") from None
    tenant_id = r.fixed(TENANT_ID_SIZE, "tenant_id")
    tenant_name = r.text("tenant name", MAX_NAME_BYTES)
    admin_key = r.fixed(PUBLIC_KEY_SIZE, "admin key")
    key_count = r.varint("key count", max_value=MAX_KEYS)
    keys: list[TenantKey] = []
    for index in range(key_count):
        key_id = r.fixed(KEY_ID_SIZE, f"key {index} id")
        name = r.text(f"key {index} name", MAX_KEY_NAME_SIZE)
        version = r.varint(f"key {index} version", max_value=MAX_KEY_VERSION)
        secret = r.fixed(SECRET_SIZE, f"key {index} secret")
        created_ms = r.u64(f"key {index} created_ms")
        try:
            keys.append(
                TenantKey(
                    key_id=key_id,
                    name=validate_key_name(name),
                    version=version,
                    secret=secret,
                    created_ms=created_ms,
                )
            )
        except ValueError as exc:  # InvalidNameError is a ValueError
            raise DecodeError(f"{r.what}: invalid key {index}: {exc}") from None
    entry_count = r.varint("entry count", max_value=MAX_MEMBERSHIP_ENTRIES)
    entries = [r.blob(f"entry {index}", MAX_MEMBERSHIP_ENTRY_SIZE) for index in range(entry_count)]
    inviter = read_public_identity(r, "inviter")
    invitee = read_public_identity(r, "invitee")
    created_ms = r.u64("created_ms")
    signature = r.fixed(SIGNATURE_SIZE, "signature")
    r.end()
    try:
        return Invite(
            tenant_id=tenant_id,
            tenant_name=tenant_name,
            admin_key=admin_key,
            keys=keys,
            membership_entries=entries,
            inviter=inviter,
            invitee=invitee,
            created_ms=created_ms,
            kind=kind,
            signature=signature,
        )
    except ValueError as exc:
        raise DecodeError(f"{r.what}: {exc}") from None
