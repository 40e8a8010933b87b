"""How the sync protocol sees a node: one tenant's store and membership.

`TenantSyncStore` adapts a `Node` to the protocol's `SyncStore` (reads from the LMDB store and
its reconciliation index, writes through `Node.ingest`, which verifies everything), and
`TenantSyncAuthority` adapts a `Tenant` to the handshake's `TenantAuthority` (membership is
asked anew on every session).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager

from ..crypto import SigningKeyPair
from ..entry import TENANT_LOG, Entry, tenant_id_of_raw
from ..errors import DecodeError
from ..node import Node
from ..recon import ReconStorage
from ..store import Rejected
from ..store._batch import BAD_SIGNATURE
from ..tenant import Tenant
from .protocol import IngestOutcome

_INVALID_PREFIXES = (BAD_SIGNATURE, "decode error", "entry id does not match")


class TenantSyncAuthority:
    """A tenant's membership, as the peer handshake asks about it."""

    def __init__(self, tenant: Tenant) -> None:
        self._tenant = tenant

    @property
    def tenant_id(self) -> bytes:
        return self._tenant.id

    @property
    def member_key(self) -> SigningKeyPair:
        return self._tenant.node.identity.signing

    def may_replicate(self, member_key: bytes) -> bool:
        return self._tenant.membership.is_member(member_key)

    def membership_evidence(self) -> bytes:
        entry = self._tenant.membership_entry_of(self.member_key.public_key)
        return entry.raw if entry is not None else b""

    def admit(self, member_key: bytes, evidence: bytes) -> bool:
        return self._tenant.admit(member_key, evidence)


class TenantSyncStore:
    """One tenant of a node as the sync protocol reads and writes it."""

    def __init__(self, node: Node, tenant: Tenant) -> None:
        self._node = node
        self._tenant = tenant

    @property
    def tenant_id(self) -> bytes:
        return self._tenant.id

    def databases(self) -> list[str]:
        return [TENANT_LOG, *self._tenant.databases()]

    def recon_storage(self, database: str) -> AbstractContextManager[ReconStorage]:
        return self._node.store.recon_snapshot(self._tenant.id, database)

    def missing(self, ids: Sequence[bytes]) -> list[bytes]:
        return self._node.store.missing(ids)

    def get_raw(self, ids: Sequence[bytes]) -> list[bytes]:
        # Stored entries were verified on arrival: serve their bytes without decoding them
        # again (fsck re-checks the store), only making sure they are of this tenant.
        found = []
        for entry_id in ids:
            raw = self._node.store.get_raw(entry_id)
            if raw is not None and tenant_id_of_raw(raw) == self._tenant.id:
                found.append(raw)
        return found

    def ingest(self, raws: Sequence[bytes]) -> IngestOutcome:
        rejected: list[Rejected] = []
        ours: list[Entry] = []
        for raw in raws:
            try:
                entry = Entry.decode(raw)
            except DecodeError as exc:
                rejected.append(Rejected(_id_of(raw), f"decode error: {exc}"))
                continue
            if entry.tenant_id != self._tenant.id:
                rejected.append(Rejected(entry.id, "entry of another tenant"))
                continue
            ours.append(entry)
        result = self._node.ingest(ours) if ours else None
        refused: list[Rejected] = []
        if result is not None:
            for item in result.rejected:
                if item.reason.startswith(_INVALID_PREFIXES):
                    rejected.append(item)
                else:
                    refused.append(item)
        return IngestOutcome(
            added=tuple(result.added) if result else (),
            rejected=tuple(rejected),
            refused=tuple(refused),
        )


def _id_of(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()
