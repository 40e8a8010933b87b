"""Where entries enter a node: arrivals from elsewhere, and the hooks of its own writes.

`EntryIntake` glues the admission pipeline (`admission`), the entry store and the tenants:

- `ingest` takes entries from elsewhere (another node, a bundle, an invite, a key file): every
  entry goes through steps 1-3 once (decode, id, signature; skipped for a `VerifiedEntry`),
  entries of databases forgotten here are refused (NOT_REPLICATED), the membership of the
  tenants involved is brought up to date with the stored tenant log (another process may have
  changed it), step 4 checks them against each tenant's membership snapshot, the accepted ones
  are stored in one write transaction, and only then do the tenants publish the membership the
  batch built. Repeats within the batch count once; refusals keep the order of the input.
  `ingest_batches` does the same for a stream of batches, batch k+1's steps 1-3 started
  (signatures on the verifier workers) before batch k's step 4 and commit.
- the `LocalWriter`'s hooks for this node's own entries: `check_own_writes` (before the write:
  a tenant restored from a recovery kit refuses own writes; membership brought up to date),
  `admit_own` (step 4, pure, inside the write transaction), `own_entries_stored` (after the
  commit) and `own_drafts_discarded` (a failed write: cached documents that hold its drafts go).
- after entries land either way: retract what newly applied revocations no longer accept,
  record the forks an entry at a revocation cut reveals, drop cached documents of entries a fork
  withdrew; then tell the listeners (``listener(entries, local)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from . import admission
from .admission import VerifiedEntry
from .entry import TENANT_LOG, Entry
from .membership import MembershipLog
from .rejection import Rejected, RejectionKind
from .restore_guard import RestoreGuard
from .store import AppendResult, EntryStore
from .tenant_registry import TenantRegistry
from .writer import Draft

EntryListener = Callable[[list[Entry], bool], None]
"""``listener(entries, local)``, called after entries are stored (``local``: written here)."""


class EntryIntake:
    """Arrivals and own-write hooks of one node; see the module docstring."""

    def __init__(
        self, store: EntryStore, tenants: TenantRegistry, restore_guard: RestoreGuard
    ) -> None:
        self._store = store
        self._tenants = tenants
        self._restore_guard = restore_guard
        self._listeners: list[EntryListener] = []

    def add_listener(self, listener: EntryListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: EntryListener) -> None:
        self._listeners.remove(listener)

    # -- own writes (the LocalWriter's hooks) ------------------------------------------------
    def check_own_writes(self, drafts: Sequence[Draft]) -> None:
        """Refuse a write in a tenant restored from a recovery kit and not synced yet
        (`restore_guard`); bring the snapshots up to date with the stored tenant log."""
        tenant_ids = list(dict.fromkeys(d.tenant_id for d in drafts))
        self._restore_guard.check_writes((t, self._tenants.label(t)) for t in tenant_ids)
        self._tenants.refresh_membership(tenant_ids)

    def admit_own(self, verified: Sequence[VerifiedEntry]) -> admission.Admission:
        """Step 4 for a write's own entries (inside the write transaction; the entries come
        marked by `admission.trust_own_seal`). Pure: nothing is published before the commit."""
        return admission.admit(self._tenants.views({v.tenant_id for v in verified}), verified)

    def own_entries_stored(
        self, entries: list[Entry], memberships: Mapping[bytes, MembershipLog]
    ) -> None:
        """After an own write committed: publish the membership its records built, enforce
        revocations, tell the listeners."""
        self._publish_committed(memberships, entries)
        self._enforce_revocations(entries)
        for listener in list(self._listeners):
            listener(entries, True)

    def own_drafts_discarded(self, drafts: Sequence[Draft]) -> None:
        """Drafts that were never stored, or stored without their cache being told (an
        ``on_sealed`` raised): drop cached documents that hold them."""
        for draft in drafts:
            tenant = self._tenants.get(draft.tenant_id)
            if tenant is not None:
                tenant.forget_document(draft.database, draft.document_id)

    # -- from elsewhere ----------------------------------------------------------------------
    def ingest(self, entries: Sequence[Entry | bytes | VerifiedEntry]) -> AppendResult:
        """Verify, admit and store entries from elsewhere; see the module docstring."""
        return self._admit_and_store(entries, admission.check_entries(entries, self._stored_ids))

    def ingest_batches(
        self, batches: Iterable[Sequence[Entry | bytes | VerifiedEntry]]
    ) -> Iterator[AppendResult]:
        """`ingest` each of ``batches`` in turn (one write transaction each, results yielded in
        order as each commits), with batch k+1 decoded and its signatures on the verifier
        workers before batch k is admitted and committed: the commit runs beside the next
        batch's verification. Admission of a batch always sees what the batches before it
        stored (a membership record authorizes entries of a later batch). An entry also in
        the next batch is verified there again and reported a duplicate by the write."""
        pending: tuple[Sequence[Entry | bytes | VerifiedEntry], admission.PendingChecks] | None
        pending = None
        for batch in batches:
            started = (batch, admission.start_checks(batch, self._stored_ids))
            if pending is not None:
                yield self._admit_and_store(pending[0], pending[1].result())
            pending = started
        if pending is not None:
            yield self._admit_and_store(pending[0], pending[1].result())

    def _admit_and_store(
        self, entries: Sequence[Entry | bytes | VerifiedEntry], checked: admission.CheckedBatch
    ) -> AppendResult:
        """Steps 4 and 5 of `ingest` for a batch whose steps 1-3 gave ``checked``."""
        checked.verified = self._drop_forgotten(checked.verified, checked.rejected)
        tenant_ids = {v.tenant_id for v in checked.verified}
        self._tenants.refresh_membership(tenant_ids)  # another process may have changed it
        admitted = admission.admit(self._tenants.views(tenant_ids), checked.verified)
        stored = self._store.append(admitted.accepted) if admitted.accepted else None
        added = stored.added if stored is not None else []
        accepted = {v.id: v.entry for v in admitted.accepted}
        stored_entries = [accepted[i] for i in added]
        self._publish_committed(admitted.memberships, stored_entries)
        duplicates = checked.duplicates + (stored.duplicates if stored is not None else [])
        rejected = [
            *checked.rejected,
            *admitted.rejected,
            *(stored.rejected if stored is not None else []),
        ]
        refusals = {r.entry_id: r for r in rejected}
        for entry_id in checked.repeats:
            refusal = refusals.get(entry_id)
            if refusal is None:
                duplicates.append(entry_id)
            else:
                rejected.append(refusal)
        rejected.sort(key=lambda r: checked.order.get(r.entry_id, len(entries)))
        result = AppendResult(added, duplicates, rejected)
        self._enforce_revocations(stored_entries)
        if self._listeners and result.added:
            for listener in list(self._listeners):
                listener(stored_entries, False)
        return result

    def _drop_forgotten(
        self, verified: list[VerifiedEntry], rejected: list[Rejected]
    ) -> list[VerifiedEntry]:
        """``verified`` without the entries of databases forgotten here (`Tenant.forget_db`),
        each refused into ``rejected`` as NOT_REPLICATED."""
        kept: list[VerifiedEntry] = []
        replicated: dict[tuple[bytes, str], bool] = {}  # asked once per database of the batch
        for v in verified:
            header = v.entry.header
            scope = (header.tenant_id, header.database)
            replicates = replicated.get(scope)
            if replicates is None:
                tenant = self._tenants.get(header.tenant_id)
                replicates = replicated[scope] = tenant is None or tenant.replicates(
                    header.database
                )
            if not replicates:
                rejected.append(
                    Rejected(
                        v.id,
                        RejectionKind.NOT_REPLICATED,
                        f"database {header.database!r} is forgotten on this node",
                    )
                )
            else:
                kept.append(v)
        return kept

    def _stored_ids(self, ids: list[bytes]) -> set[bytes]:
        return set(ids).difference(self._store.missing(ids))

    # -- after entries land ------------------------------------------------------------------
    def _publish_committed(
        self, memberships: Mapping[bytes, MembershipLog], stored: Sequence[Entry]
    ) -> None:
        """Publish the membership snapshots a commit built (only after the commit)."""
        for tenant_id, membership in memberships.items():
            log_entries = sum(
                1 for e in stored if e.tenant_id == tenant_id and e.database == TENANT_LOG
            )
            tenant = self._tenants.get(tenant_id)
            assert tenant is not None  # admitted against its view: it is held
            tenant.publish_committed(membership, log_entries)

    def _enforce_revocations(self, added: Sequence[Entry]) -> None:
        if added:
            tenant_ids = {entry.tenant_id for entry in added}
            for tenant in self._tenants:
                tenant.enforce_new_revocations()
                if tenant.id in tenant_ids:
                    access = tenant.access
                    access.check_cut_entries([e for e in added if e.tenant_id == tenant.id])
                    access.forget_forked()


__all__ = ["EntryIntake", "EntryListener"]
