"""The tenants a node holds, by id, and how a user names one.

`TenantRegistry` is the node's one table of its `Tenant` objects: the node composes a tenant
(its collaborators) and `add`s it; everything else reads it. A tenant is named by its name, its
id (bytes or hex) or a unique hex prefix of at least 8 characters (`find`); two tenants of one
name are told apart by id. It also answers, for a set of tenant ids, the questions the entry
intake asks of every tenant involved: their membership snapshots (`views`) and bringing them
up to date with the stored tenant log (`refresh_membership`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import admission
from .errors import NotFoundError
from .identity import UserIdentity
from .tenant import Tenant

MIN_ID_PREFIX = 8
"""Hex characters of a tenant id that name it, at least."""


class TenantRegistry:
    """The tenants held, by id; see the module docstring."""

    def __init__(self) -> None:
        self._by_id: dict[bytes, Tenant] = {}

    def __contains__(self, tenant_id: bytes) -> bool:
        return tenant_id in self._by_id

    def __iter__(self) -> Iterator[Tenant]:
        """The tenants in the order they were added."""
        return iter(list(self._by_id.values()))

    def add(self, tenant: Tenant) -> None:
        self._by_id[tenant.id] = tenant

    def get(self, tenant_id: bytes) -> Tenant | None:
        return self._by_id.get(tenant_id)

    def sorted(self) -> list[Tenant]:
        """By name, then id."""
        return sorted(self._by_id.values(), key=lambda t: (t.name, t.id))

    def has_name(self, name: str) -> bool:
        return any(t.name == name for t in self._by_id.values())

    def label(self, tenant_id: bytes) -> str:
        """The tenant's name, or its id in hex when it is not held."""
        tenant = self._by_id.get(tenant_id)
        return tenant.name if tenant is not None else tenant_id.hex()

    def find(self, name_or_id: str | bytes) -> Tenant:
        """A tenant by name or by id (bytes or hex, or a unique hex prefix of 8+ chars);
        NotFoundError naming what was asked when none or several fit."""
        if isinstance(name_or_id, bytes):
            found = self._by_id.get(name_or_id)
            if found:
                return found
            raise NotFoundError(f"no tenant {name_or_id.hex()} on this node")
        by_name = [t for t in self._by_id.values() if t.name == name_or_id]
        if len(by_name) == 1:
            return by_name[0]
        key = name_or_id.lower()
        by_id = [
            t
            for t in self._by_id.values()
            if len(key) >= MIN_ID_PREFIX and t.id_hex.startswith(key)
        ]
        if len(by_id) == 1:
            return by_id[0]
        if len(by_name) > 1 or len(by_id) > 1:
            raise NotFoundError(f"{name_or_id!r} names several tenants: use the tenant id")
        raise NotFoundError(f"no tenant {name_or_id!r} on this node")

    def member_identities(self) -> list[UserIdentity]:
        """The tenants' own member identities (older tenants use the node's: none here)."""
        return [t.secrets.identity for t in self._by_id.values() if t.secrets.identity]

    def views(self, tenant_ids: Iterable[bytes]) -> dict[bytes, admission.TenantView]:
        """The membership snapshot of each held tenant among ``tenant_ids``."""
        return {
            tenant_id: tenant.view()
            for tenant_id in tenant_ids
            if (tenant := self._by_id.get(tenant_id)) is not None
        }

    def refresh_membership(self, tenant_ids: Iterable[bytes]) -> None:
        """Bring the membership of these tenants up to date with the stored tenant log, which
        another process that has this home open (the CLI, a script) may have changed."""
        for tenant_id in dict.fromkeys(tenant_ids):
            tenant = self._by_id.get(tenant_id)
            if tenant is not None:
                tenant.refresh_membership()


__all__ = ["MIN_ID_PREFIX", "TenantRegistry"]
