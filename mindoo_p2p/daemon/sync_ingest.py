"""How the daemon stores what its sync sessions receive: the sessions' `IngestStages`.

A session's `IngestPipeline` hands batches of received entries (several frames, up to a few
MB) to two stages that overlap across batches:

- **check** (`TenantSyncStore.check`: decode, tenant, duplicates, signatures on every core)
  needs no lock on the Node: it reads the store only (an LMDB read transaction beside any
  writer), so a large batch runs in a worker thread without waiting for the Node access, while
  the previous batch commits;
- **commit** (`TenantSyncStore.commit`: admission and one write transaction) takes its turn
  with the Node (`NodeAccess`, tagged `Origin.SYNC`): in a worker thread for a large batch, so
  the event loop keeps serving peers and ``status``; on the loop for a small one (a gossip gap,
  a live edit), where a thread would cost more than the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from ..store.results import Rejected
from ..sync.ingest_pipeline import IngestStages
from ..sync.protocol import IngestOutcome, SyncStore
from ..sync.tenant_adapter import CheckedIngest, TenantSyncStore
from .entry_events import Origin
from .node_access import NodeAccess

INLINE_INGEST = 16
"""A received batch of at most this many entries is checked and stored on the event loop
(holding the Node); a larger one in worker threads."""


class SessionIngest:
    """The daemon's ingest stages for its sync sessions (see the module docstring)."""

    def __init__(
        self,
        access: NodeAccess,
        on_refused: Callable[[bytes, tuple[Rejected, ...]], None] | None = None,
        *,
        peer_id: str | None = None,
    ) -> None:
        """``on_refused(tenant_id, rejections)`` hears of every committed batch's entries that
        were not stored (invalid, or not accepted here), for events and metrics; ``peer_id``
        is the session's peer, named on the stored entries' events (it holds them already)."""
        self._access = access
        self._on_refused = on_refused
        self._peer = peer_id

    def stages(self) -> IngestStages:
        return IngestStages(self.check, self.commit)

    async def check(self, store: SyncStore, raws: Sequence[bytes]) -> object:
        if not isinstance(store, TenantSyncStore):
            return list(raws)  # another store: it checks inside ingest
        if len(raws) <= INLINE_INGEST:
            return store.check(raws)
        return await trio.to_thread.run_sync(store.check, raws)

    async def commit(self, store: SyncStore, checked: object) -> IngestOutcome:
        outcome = await self._commit(store, checked)
        if self._on_refused is not None and (outcome.rejected or outcome.refused):
            self._on_refused(store.tenant_id, tuple(outcome.rejected) + tuple(outcome.refused))
        return outcome

    async def _commit(self, store: SyncStore, checked: object) -> IngestOutcome:
        if isinstance(checked, CheckedIngest):
            assert isinstance(store, TenantSyncStore)
            tenant_store = store
            size = len(checked.verified)
            if size <= INLINE_INGEST:
                async with self._access.hold(Origin.SYNC, peer=self._peer):
                    return tenant_store.commit(checked)
            return await self._access.run(
                lambda _node: tenant_store.commit(checked), Origin.SYNC, peer=self._peer
            )
        assert isinstance(checked, list)
        raws: list[bytes] = checked
        if len(raws) <= INLINE_INGEST:
            async with self._access.hold(Origin.SYNC, peer=self._peer):
                return store.ingest(raws)
        return await self._access.run(
            lambda _node: store.ingest(raws), Origin.SYNC, peer=self._peer
        )
