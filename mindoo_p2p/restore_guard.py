"""A node restored from a recovery kit must not fork its user: the "chain head unknown" mark.

A recovery kit holds the user's keys and each tenant's log, not the user's entries. The lost
device may have written entries (documents, tenant-log records) that the kit knows nothing of;
a restored node that writes before it has them numbers its entries from what it holds, reuses
sequence numbers the lost device used, and forks its user: every node then withdraws the user's
entries from that point and refuses its writes for good (`chains`, the one fork rule).

So `Node.restore_kit` marks every restored tenant *restored, chain head unknown*, and while a
tenant is marked every own write in it (documents, tenant-log records, by the user's key or
the admin key) is refused before anything is sealed, with `ChainHeadUnknownError` naming the
problem and the ways out. The mark goes when:

- a sync session for the tenant completes with a peer (every database reconciled, nothing
  missing; the daemon calls `Node.settle_restored` then, before the session counts as done for
  ``mindoo sync wait``), and the user's chains held here have no gap (`own_chain_gaps`): a gap
  proves that entries of the user exist that neither this node nor that peer holds, so the
  mark stays until another sync fills it or the user confirms;
- or the user confirms that no other copy of this identity ever wrote in the tenant
  (`Node.confirm_chain_head`, ``mindoo recovery confirm-head TENANT``).

The marks live in the encrypted keystore, under the top-level key ``restored_chain_unknown``:
``{tenant_id_hex: {"restored_ms": int}}``. They are written with the new keystore (before any
process can open the home), only ever removed afterwards, and seen by every process that has
the home open: a process loads them at open, and re-reads the keystore before refusing (another
process may have cleared the mark since), so the check costs nothing once no tenant is marked.

Residual risk, documented in docs/security.md: one completed session is trusted to bring the
user's newest entries. A peer that lacks them (the lost device never pushed them to it, or
pushed them only to another peer) clears the mark too, and a later write forks if those entries
surface; so does a lost device that comes back online with unsynced writes (revoke it, or wipe
it before it reconnects), and two devices restored from one kit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import MindooError

RESTORED_KEY = "restored_chain_unknown"
"""The keystore's top-level key holding the marks."""


class MarkStore(Protocol):
    """Where the marks are kept: `crypto.keystore.Keystore` provides it."""

    def read(self) -> dict[str, Any]: ...

    def update(self, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]: ...


class ChainHeadUnknownError(MindooError):
    """An own write in a tenant restored from a recovery kit that has not synced yet: refused,
    nothing stored. ``tenant_id`` and ``tenant_name`` name the tenant."""

    def __init__(self, tenant_id: bytes, tenant_name: str) -> None:
        self.tenant_id = tenant_id
        self.tenant_name = tenant_name
        super().__init__(
            f"this node was restored from a recovery kit and has not synced tenant"
            f" {tenant_name!r} ({tenant_id.hex()}) yet: its author's last entries may be"
            " elsewhere, and writing now would fork them (every node would then withdraw your"
            " entries from that point); nothing was written. Sync with a peer or mirror first"
            " ('mindoo sync wait'), or, if no other copy of this identity ever wrote in this"
            f" tenant, run 'mindoo recovery confirm-head {tenant_name}'"
        )


def initial_marks(tenant_ids: Iterable[bytes], restored_ms: int) -> dict[str, Any]:
    """The keystore value marking ``tenant_ids`` restored at ``restored_ms``."""
    return {tenant_id.hex(): {"restored_ms": int(restored_ms)} for tenant_id in tenant_ids}


def _marked_ids(contents: dict[str, Any]) -> set[bytes]:
    marks = contents.get(RESTORED_KEY)
    if not isinstance(marks, dict):
        return set()
    found: set[bytes] = set()
    for key in marks:
        try:
            found.add(bytes.fromhex(key))
        except (TypeError, ValueError):
            continue  # a key this version cannot read marks nothing it could write
    return found


@dataclass(frozen=True, slots=True)
class ChainGap:
    """Entries of one of the user's authors that this node lacks: ``after`` is the end of the
    unbroken run from #1 it holds, ``highest`` the highest number it holds."""

    author: bytes
    after: int
    highest: int

    def describe(self) -> str:
        return (
            f"author {self.author.hex()[:16]} has entries up to #{self.highest} here but"
            f" lacks some after #{self.after}"
        )


def own_chain_gaps(chains: Iterable[tuple[bytes, int, int]]) -> list[ChainGap]:
    """The gaps in the user's chains: ``chains`` is (author, head, highest) per own author,
    ``head`` the end of the unbroken run from #1 held (`EntryStore.chain_head`) and ``highest``
    the highest number held. Pure."""
    return [ChainGap(author, head, highest) for author, head, highest in chains if head < highest]


@dataclass(frozen=True, slots=True)
class Settlement:
    """What `RestoreGuard.settle` did for one tenant."""

    was_marked: bool
    cleared: bool
    gaps: tuple[ChainGap, ...] = ()
    """Why a marked tenant stays marked after a completed session."""


class RestoreGuard:
    """The marks of one open node: which tenants refuse own writes until synced or confirmed.

    ``store`` is the keystore (read at construction; re-read before refusing a write)."""

    def __init__(self, store: MarkStore, contents: dict[str, Any] | None = None) -> None:
        self._store = store
        self._marked = _marked_ids(store.read() if contents is None else contents)

    def is_marked(self, tenant_id: bytes) -> bool:
        """Whether ``tenant_id`` is still marked (another process may have cleared it: the
        keystore is re-read when this process still holds the mark)."""
        if tenant_id not in self._marked:
            return False
        self._marked = _marked_ids(self._store.read())
        return tenant_id in self._marked

    def marked(self) -> set[bytes]:
        """The tenants marked as this process last read them (no I/O)."""
        return set(self._marked)

    def check_writes(self, tenants: Iterable[tuple[bytes, str]]) -> None:
        """Raise `ChainHeadUnknownError` for the first marked tenant of ``tenants`` ((id,
        name) of each tenant a write touches)."""
        for tenant_id, name in tenants:
            if self.is_marked(tenant_id):
                raise ChainHeadUnknownError(tenant_id, name)

    def clear(self, tenant_id: bytes) -> bool:
        """Remove the mark of ``tenant_id`` from the keystore; whether it was marked."""
        if tenant_id not in self._marked:
            return False
        removed: list[bool] = []

        def mutate(contents: dict[str, Any]) -> None:
            marks = contents.get(RESTORED_KEY)
            if isinstance(marks, dict) and tenant_id.hex() in marks:
                del marks[tenant_id.hex()]
                removed.append(True)
                if not marks:
                    del contents[RESTORED_KEY]

        self._marked = _marked_ids(self._store.update(mutate))
        return bool(removed)

    def settle(
        self, tenant_id: bytes, chains: Callable[[], list[tuple[bytes, int, int]]]
    ) -> Settlement:
        """A sync session for ``tenant_id`` completed: clear its mark unless ``chains()`` (the
        user's chains held now, see `own_chain_gaps`) shows a gap."""
        if not self.is_marked(tenant_id):
            return Settlement(was_marked=False, cleared=False)
        gaps = tuple(own_chain_gaps(chains()))
        if gaps:
            return Settlement(was_marked=True, cleared=False, gaps=gaps)
        self.clear(tenant_id)
        return Settlement(was_marked=True, cleared=True)


__all__ = [
    "RESTORED_KEY",
    "ChainGap",
    "ChainHeadUnknownError",
    "MarkStore",
    "RestoreGuard",
    "Settlement",
    "initial_marks",
    "own_chain_gaps",
]
