"""The KEY_GRANT record: a new membership key version, sealed to each remaining holder. Pure.

When the admin revokes a member, the tenant's membership key (``$membership``, which opens the
tenant log) is rotated, so the revoked member cannot read the records written afterwards. The
new version reaches every remaining member, mirror and device inside the tenant log itself: a
KEY_GRANT record (action 6, record version 5), sealed like every record under the membership
key version the log used so far (every holder reads it), carries the new version's id, version
and commitment (so it also announces it) and, per recipient, the new secret in a sealed box to
the recipient's X25519 key. The revoked member can read the record but open none of the boxes.
A tenant with more recipients than one record holds gets several records of the same key::

    key_id      16 bytes
    version     varint 1 .. 2**32-1
    commitment  32 bytes (`TenantKey.commitment`)
    grants      varint count 1 .. 32, then per grant, in ascending recipient order, unique:
                recipient Ed25519 key 32 bytes, sealed secret 80 bytes (sealed box of 32)

Each node that finds a grant to its own signing key opens it, checks the secret against the
commitment and keeps the key (`TenantKeys.learn_granted_keys`); from then on it reads what
the new version seals. The admin writes later tenant-log records under the newest membership
key version that the log announces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .codec import Reader, Writer
from .errors import DecodeError
from .identity import PUBLIC_KEY_SIZE, PublicIdentity, seal_to
from .keyring import KEY_COMMITMENT_SIZE, MEMBERSHIP_KEY, TenantKey

KEY_GRANT_ACTION = 6
_RECORD_MAGIC = b"MDMR"
_RECORD_VERSION = 5
"""`membership_records.RECORD_MAGIC` and `.PROVEN_RECORD_VERSION` (checked there)."""
SEALED_SECRET_SIZE = 32 + 48
"""A sealed box of a 32-byte secret: ephemeral key, MAC, ciphertext."""
MAX_GRANTS = 32
KEY_ID_SIZE = 16
MAX_KEY_VERSION = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class MembershipKeyGrant:
    """A KEY_GRANT record: membership key ``key_id`` (version ``version``), sealed to each
    recipient. ``grants`` is sorted by recipient key, each once."""

    action_value: ClassVar[int] = KEY_GRANT_ACTION
    key_id: bytes
    version: int
    commitment: bytes
    grants: tuple[tuple[bytes, bytes], ...]

    name: ClassVar[str] = MEMBERSHIP_KEY

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_SIZE:
            raise ValueError(f"a key id is {KEY_ID_SIZE} bytes")
        if not isinstance(self.version, int) or not 1 <= self.version <= MAX_KEY_VERSION:
            raise ValueError(f"a key version is 1-{MAX_KEY_VERSION}")
        if not isinstance(self.commitment, bytes) or len(self.commitment) != KEY_COMMITMENT_SIZE:
            raise ValueError(f"a key commitment is {KEY_COMMITMENT_SIZE} bytes")
        if not isinstance(self.grants, tuple) or not 1 <= len(self.grants) <= MAX_GRANTS:
            raise ValueError(f"a key grant names 1-{MAX_GRANTS} recipients")
        for recipient, sealed in self.grants:
            if not isinstance(recipient, bytes) or len(recipient) != PUBLIC_KEY_SIZE:
                raise ValueError(f"a recipient is a {PUBLIC_KEY_SIZE}-byte signing key")
            if not isinstance(sealed, bytes) or len(sealed) != SEALED_SECRET_SIZE:
                raise ValueError(f"a sealed secret is {SEALED_SECRET_SIZE} bytes")
        recipients = [recipient for recipient, _ in self.grants]
        if recipients != sorted(set(recipients)):
            raise ValueError("a key grant's recipients are sorted, each once")

    @classmethod
    def seal(cls, key: TenantKey, recipients: list[PublicIdentity]) -> list[MembershipKeyGrant]:
        """Records granting ``key`` to ``recipients`` (at most `MAX_GRANTS` per record)."""
        if key.name != MEMBERSHIP_KEY:
            raise ValueError(f"only the {MEMBERSHIP_KEY!r} key is granted in the tenant log")
        unique = {r.signing_key: r for r in recipients}
        ordered = [unique[k] for k in sorted(unique)]
        records = []
        for start in range(0, len(ordered), MAX_GRANTS):
            chunk = ordered[start : start + MAX_GRANTS]
            grants = tuple((r.signing_key, seal_to(r.encryption_key, key.secret)) for r in chunk)
            records.append(cls(key.key_id, key.version, key.commitment(), grants))
        return records

    def sealed_for(self, recipient: bytes) -> bytes | None:
        for key, sealed in self.grants:
            if key == recipient:
                return sealed
        return None

    def encode(self) -> bytes:
        """The canonical binary form (record version 5, see the module docstring)."""
        w = Writer().raw(_RECORD_MAGIC).u8(_RECORD_VERSION).u8(KEY_GRANT_ACTION)
        self.encode_body(w)
        return w.getvalue()

    def encode_body(self, w: Writer) -> None:
        w.fixed(self.key_id, KEY_ID_SIZE).varint(self.version)
        w.fixed(self.commitment, KEY_COMMITMENT_SIZE).varint(len(self.grants))
        for recipient, sealed in self.grants:
            w.fixed(recipient, PUBLIC_KEY_SIZE).fixed(sealed, SEALED_SECRET_SIZE)


def read_key_grant(r: Reader, what: str) -> MembershipKeyGrant:
    """The body of a KEY_GRANT record (after magic, version and action); DecodeError only."""
    key_id = r.fixed(KEY_ID_SIZE, "key id")
    version = r.varint("key version", max_value=MAX_KEY_VERSION)
    commitment = r.fixed(KEY_COMMITMENT_SIZE, "key commitment")
    count = r.varint("grant count", max_value=MAX_GRANTS)
    grants = tuple(
        (r.fixed(PUBLIC_KEY_SIZE, "recipient"), r.fixed(SEALED_SECRET_SIZE, "sealed secret"))
        for _ in range(count)
    )
    r.end()
    try:
        return MembershipKeyGrant(key_id, version, commitment, grants)
    except ValueError as exc:
        raise DecodeError(f"{what}: {exc}") from None


__all__ = ["KEY_GRANT_ACTION", "MAX_GRANTS", "MembershipKeyGrant", "read_key_grant"]
