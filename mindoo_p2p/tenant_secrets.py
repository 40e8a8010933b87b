"""What identifies a tenant and what the keystore holds for it: plain values, no I/O.

A tenant is identified by 16 bytes derived from its admin public key
(``SHA-256("mindoo/tenant/v1" + admin_key)[:16]``): the admin key is random, so the id is too,
and an invite or a peer cannot pair a tenant id with a different admin key.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from .entry import validate_database_name
from .errors import InvalidNameError
from .identity import UserIdentity
from .keyring import KeyRing

TENANT_NAME_MAX = 128


def tenant_id_for(admin_key: bytes) -> bytes:
    return hashlib.sha256(b"mindoo/tenant/v1" + admin_key).digest()[:16]


def validate_tenant_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= TENANT_NAME_MAX
        or not name.isprintable()
        or name != name.strip()
    ):
        raise InvalidNameError(
            f"invalid tenant name {name!r}: 1-{TENANT_NAME_MAX} printable characters,"
            " no leading or trailing spaces"
        )
    return name


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class TenantSecrets:
    """What the keystore holds for one tenant."""

    tenant_id: bytes
    name: str
    admin_key: bytes
    admin_seed: bytes | None
    keyring: KeyRing
    databases: list[str] = field(default_factory=list)
    """Databases created on this node (they are listed even while empty)."""
    forgotten: list[str] = field(default_factory=list)
    """Databases forgotten on this node (`Tenant.forget_db`): not listed, read, written or
    replicated here until created again. Absent from keystores written before it existed."""
    identity: UserIdentity | None = None
    """The member identity this node's user has in this tenant: its signing key signs this
    node's entries, tenant-log records and sync proofs here, and no other tenant's, so two
    tenants cannot be linked by key. None for a tenant created or joined before per-tenant
    identities (or joined by an invite to the node's own identity): the node's identity is
    used there, as before. Never changes once set."""

    def merge_databases(
        self,
        on_disk: TenantSecrets | None,
        *,
        created: str | None = None,
        forgotten: str | None = None,
    ) -> None:
        """Make the database lists those of the keystore (``on_disk``, saved by any process
        that has this home open) plus this save's own step: ``created`` or ``forgotten``.

        Forgetting is the keystore's word (a stale list here never brings a database back),
        creating adds; a database is never both created and forgotten."""
        gone = set(on_disk.forgotten) if on_disk is not None else set(self.forgotten)
        names = set(self.databases) | (set(on_disk.databases) if on_disk is not None else set())
        if created is not None:
            gone.discard(created)
            names.add(created)
        if forgotten is not None:
            gone.add(forgotten)
        self.databases[:] = sorted(names - gone)
        self.forgotten[:] = sorted(gone)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "admin_key": self.admin_key.hex(),
            "keys": self.keyring.to_list(),
            "databases": sorted(self.databases),
        }
        if self.forgotten:
            data["forgotten"] = sorted(self.forgotten)
        if self.admin_seed is not None:
            data["admin_seed"] = self.admin_seed.hex()
        if self.identity is not None:
            data["identity"] = self.identity.to_secret_dict()
        return data

    @classmethod
    def from_dict(cls, tenant_id_hex: str, data: dict[str, Any]) -> TenantSecrets:
        seed = data.get("admin_seed")
        identity = data.get("identity")
        return cls(
            tenant_id=bytes.fromhex(tenant_id_hex),
            name=data["name"],
            admin_key=bytes.fromhex(data["admin_key"]),
            admin_seed=bytes.fromhex(seed) if seed else None,
            keyring=KeyRing.from_list(data["keys"]),
            databases=[validate_database_name(d) for d in data.get("databases", [])],
            forgotten=[validate_database_name(d) for d in data.get("forgotten", [])],
            identity=UserIdentity.from_secret_dict(identity) if identity is not None else None,
        )


__all__ = ["TENANT_NAME_MAX", "TenantSecrets", "now_ms", "tenant_id_for", "validate_tenant_name"]
