"""The value types a `MembershipLog` hands out: where revocations cut a signing key
(`CutPoint`), a key the tenant log announced (`AnnouncedKey`) and an admitted signing key
(`Member`). Importable from ``membership`` too."""

from __future__ import annotations

from dataclasses import dataclass

from .identity import PublicIdentity
from .keyring import TenantKey
from .membership_records import KeyAnnouncement

__all__ = ["AnnouncedKey", "CutPoint", "Member"]


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
