"""The tenants' secrets in the node's keystore, shared by every process that opens the home.

Two processes may hold one home open (the daemon and the CLI, a script): each keeps its tenants'
`TenantSecrets` in memory and writes them back under the keystore's lock. A save that simply
overwrote would lose what the other process added since this one read (a key it created would
vanish from the keystore while its announcement stayed in the tenant log), so:

- `save_tenant_secrets` merges: the key versions either side holds are kept (except those this
  save shreds), the tenant's member identity on disk wins (it never changes), and the database
  lists merge by `TenantSecrets.merge_databases` with this save's created or forgotten
  database; ``secrets`` learns what the other process added.
- `learn_saved_keys` adds to ``secrets`` what the keystore holds that it lacks, never removing
  anything; when the keystore cannot be read (re-keyed by a password change elsewhere), the
  keys held stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .crypto.keystore import Keystore
from .errors import KeystoreError
from .tenant_secrets import TenantSecrets


def save_tenant_secrets(
    keystore: Keystore,
    secrets: TenantSecrets,
    *,
    dropped_key_ids: Iterable[bytes] = (),
    created_database: str | None = None,
    forgotten_database: str | None = None,
) -> None:
    """Write ``secrets`` to ``keystore``, merged with what is saved there; see the module
    docstring."""
    dropped = set(dropped_key_ids)

    def mutate(contents: dict[str, Any]) -> None:
        tenants = contents.setdefault("tenants", {})
        stored = tenants.get(secrets.tenant_id.hex())
        on_disk = None
        if stored is not None:
            on_disk = TenantSecrets.from_dict(secrets.tenant_id.hex(), stored)
            if on_disk.identity is not None:  # a tenant's identity never changes
                secrets.identity = on_disk.identity
            for key in on_disk.keyring:
                if key.key_id not in dropped:
                    secrets.keyring.add(key)
        secrets.merge_databases(on_disk, created=created_database, forgotten=forgotten_database)
        tenants[secrets.tenant_id.hex()] = secrets.to_dict()

    keystore.update(mutate)


def learn_saved_keys(keystore: Keystore, secrets: TenantSecrets) -> None:
    """Add to ``secrets`` the key versions and database lists saved in ``keystore`` that it
    lacks; best effort (see the module docstring)."""
    try:
        stored = keystore.read().get("tenants", {}).get(secrets.tenant_id.hex())
    except KeystoreError:
        return
    if stored is not None:
        on_disk = TenantSecrets.from_dict(secrets.tenant_id.hex(), stored)
        for key in on_disk.keyring:
            secrets.keyring.add(key)
        secrets.merge_databases(on_disk)


__all__ = ["learn_saved_keys", "save_tenant_secrets"]
