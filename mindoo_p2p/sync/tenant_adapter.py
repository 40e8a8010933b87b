"""How the sync protocol sees a node: one tenant's store and membership.

`TenantSyncStore` adapts a `Node` to the protocol's `SyncStore` (reads from the LMDB store and
its reconciliation index, writes through `Node.ingest`, which verifies everything), and
`TenantSyncAuthority` adapts a `Tenant` to the handshake's `TenantAuthority` (membership is
asked anew on every session).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

from .. import admission
from ..crypto import SigningKeyPair
from ..entry import TENANT_LOG, Entry, tenant_id_of_raw
from ..node import Node
from ..recon import ReconStorage
from ..rejection import Rejected, RejectionKind
from ..tenant import Tenant
from .protocol import IngestOutcome


class TenantSyncAuthority:
    """A tenant's membership, as the peer handshake asks about it."""

    def __init__(self, tenant: Tenant) -> None:
        self._tenant = tenant

    @property
    def tenant_id(self) -> bytes:
        return self._tenant.id

    @property
    def member_key(self) -> SigningKeyPair:
        return self._tenant.identity.signing

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

    def replicates(self, database: str) -> bool:
        return self._tenant.replicates(database)

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
        """Decode each entry once (another tenant's entry is MISROUTED), then `Node.ingest`
        the decoded entries (which verifies and admits them, without decoding them again).
        A rejection whose kind blames the sender is `rejected` (the peer is penalised), any
        other is `refused` (`RejectionKind.sender_at_fault`)."""
        problems: list[Rejected] = []
        ours: list[Entry] = []
        for raw in raws:
            decoded = admission.decode(raw)
            if isinstance(decoded, Rejected):
                problems.append(decoded)
            elif decoded.tenant_id != self._tenant.id:
                problems.append(
                    Rejected(decoded.id, RejectionKind.MISROUTED, "entry of another tenant")
                )
            else:
                ours.append(decoded)
        result = self._node.ingest(ours) if ours else None
        if result is not None:
            problems += result.rejected
        return IngestOutcome(
            added=tuple(result.added) if result else (),
            rejected=tuple(r for r in problems if r.sender_at_fault),
            refused=tuple(r for r in problems if not r.sender_at_fault),
        )
