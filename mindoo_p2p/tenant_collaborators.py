"""The narrow collaborators a `Tenant` is given instead of the `Node` (no back-references).

- :class:`EntryWriter` numbers, seals and commits this node's own entries: the one seam through
  which a tenant (its key work, its access work) and its databases write. `Node` provides one
  (`node.NodeEntryWriter`); a writer that allocates author sequence numbers inside the write
  transaction plugs in here.
- `SaveSecrets` keeps a tenant's secrets (`TenantSecrets`) in the keystore.
- `Ingest` stores entries from elsewhere through the admission pipeline (`Node.ingest`), for
  the records a tenant receives itself (membership evidence, key-file announcements).

Only types here: no module of the tenant, database or node imports another one up the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from .admission import VerifiedEntry
from .crypto import SigningKeyPair
from .entry import Entry, EntryKind
from .keyring import TenantKey
from .store import AppendResult
from .tenant_secrets import TenantSecrets


class EntryWriter(Protocol):
    """Numbers, seals and commits this node's own entries."""

    def seal(
        self,
        *,
        tenant_id: bytes,
        kind: EntryKind,
        database: str,
        document_id: bytes,
        deps: Sequence[bytes],
        key: TenantKey,
        payload: bytes,
        author: SigningKeyPair | None = None,
    ) -> Entry:
        """A new entry signed by ``author`` (default: this node's identity) with its next
        author sequence number in the tenant, encrypted with ``key``. Not stored yet."""
        ...

    def commit(self, entries: Sequence[Entry]) -> None:
        """Store entries sealed here (now, or at the end of the open batch); raises
        VerificationError when the store refuses one."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group every write in the block into one durable transaction, all or nothing."""
        ...

    @property
    def current_batch(self) -> int | None:
        """The id of the open write batch, or None."""
        ...


SaveSecrets = Callable[[TenantSecrets], None]
"""Keeps a tenant's secrets in the (encrypted) keystore."""

Ingest = Callable[[Sequence[Entry | bytes | VerifiedEntry]], AppendResult]
"""Stores entries from elsewhere through the admission pipeline (`Node.ingest`)."""


__all__ = ["EntryWriter", "Ingest", "SaveSecrets"]
