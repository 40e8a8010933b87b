"""How the sync protocol sees a node: one tenant's store and membership.

`TenantSyncStore` adapts a `Node` to the protocol's `SyncStore` (reads from the LMDB store and
its reconciliation index, writes through `Node.ingest`, which verifies everything), and
`TenantSyncAuthority` adapts a `Tenant` to the handshake's `TenantAuthority` (membership is
asked anew on every session).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from .. import admission
from ..crypto import SigningKeyPair
from ..entry import TENANT_LOG, Entry
from ..entry_fields import tenant_id_of_raw
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
        tenant_id = self._tenant.id
        return [
            raw
            for raw in self._node.store.get_raws(ids)
            if raw is not None and tenant_id_of_raw(raw) == tenant_id
        ]

    def ingest(self, raws: Sequence[bytes]) -> IngestOutcome:
        """`check` then `commit`: see there."""
        return self.commit(self.check(raws))

    def check(self, raws: Sequence[bytes]) -> CheckedIngest:
        """The checks that need no lock on the Node (store reads only, so any thread may run
        them beside a writer): decode each entry once (another tenant's entry is MISROUTED),
        set aside those stored already, verify the signatures of the others (all cores)."""
        tenant_id = self._tenant.id

        def screen(entry: Entry) -> Rejected | None:
            if entry.tenant_id == tenant_id:
                return None
            return Rejected(entry.id, RejectionKind.MISROUTED, "entry of another tenant")

        store = self._node.store
        checked = admission.check_entries(
            raws, lambda ids: set(ids).difference(store.missing(ids)), screen=screen
        )
        return CheckedIngest(tuple(checked.verified), tuple(checked.rejected))

    def commit(self, checked: CheckedIngest) -> IngestOutcome:
        """`Node.ingest` the verified entries (admitted and stored without being decoded or
        verified again). A rejection whose kind blames the sender is `rejected` (the peer is
        penalised), any other is `refused` (`RejectionKind.sender_at_fault`)."""
        problems = list(checked.problems)
        result = self._node.ingest(checked.verified) if checked.verified else None
        if result is not None:
            problems += result.rejected
        return IngestOutcome(
            added=tuple(result.added) if result else (),
            rejected=tuple(r for r in problems if r.sender_at_fault),
            refused=tuple(r for r in problems if not r.sender_at_fault),
        )


@dataclass(frozen=True, slots=True)
class CheckedIngest:
    """A received batch after `TenantSyncStore.check`: what `TenantSyncStore.commit` stores."""

    verified: tuple[admission.VerifiedEntry, ...]
    """New entries of this tenant whose signatures verified (not stored when checked)."""
    problems: tuple[Rejected, ...]
    """What failed the checks (malformed, another tenant's, bad signature)."""
