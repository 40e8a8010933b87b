"""The narrow collaborators a `Tenant` is given instead of the `Node` (no back-references).

- :class:`~mindoo_p2p.writer.EntryWriter` numbers, seals and commits this node's own entries:
  the one seam through which a tenant (its key work, its access work) and its databases write
  `Draft`s. `Node` provides a `writer.LocalWriter`, which seals inside the LMDB write
  transaction and checks membership with the admission pipeline.
- :class:`SaveSecrets` keeps a tenant's secrets (`TenantSecrets`) in the keystore, merged with
  what another process that has the home open saved.
- `LearnSavedKeys` adds to a tenant's secrets the key versions another process saved.
- `Ingest` stores entries from elsewhere through the admission pipeline (`Node.ingest`), for
  the records a tenant receives itself (membership evidence, key-file announcements).
- :class:`DatabaseQueries` answers queries, counts and full-text searches over databases (the
  node's `QueryIndex`), so that ``db.query(...)`` works without a reference to the node; a
  `QueriesOf` function hands it over on first use (the index opens lazily).

Only types here: no module of the tenant, database or node imports another one up the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from .admission import VerifiedEntry
from .entry import Entry
from .store import AppendResult
from .tenant_secrets import TenantSecrets
from .writer import EntryWriter

if TYPE_CHECKING:
    from .index.query_index import QueryResult, SearchResult, Source


class SaveSecrets(Protocol):
    """Keeps a tenant's secrets in the (encrypted) keystore (`Node.save_tenant`)."""

    def __call__(
        self,
        secrets: TenantSecrets,
        *,
        dropped_key_ids: Iterable[bytes] = (),
        created_database: str | None = None,
        forgotten_database: str | None = None,
    ) -> None:
        """Save ``secrets`` merged with what the keystore holds (key versions and databases
        another process saved are kept, and learnt by ``secrets``), except the key versions
        ``dropped_key_ids`` (shredded here); ``created_database`` / ``forgotten_database``:
        the database this save creates or forgets (`TenantSecrets.merge_databases`)."""
        ...


LearnSavedKeys = Callable[[TenantSecrets], None]
"""Adds to a tenant's secrets the key versions the keystore holds that they lack, and takes
its database lists (`Node.learn_saved_keys`)."""

Ingest = Callable[[Sequence[Entry | bytes | VerifiedEntry]], AppendResult]
"""Stores entries from elsewhere through the admission pipeline (`Node.ingest`)."""


class DatabaseQueries(Protocol):
    """Queries over databases (`mindoo_p2p.index.QueryIndex` provides them), as a `Database`
    asks for its own: ``sources`` is that database."""

    def query(
        self,
        sources: Source,
        *,
        where: object = None,
        sort: object = None,
        limit: int = ...,
        fields: object = None,
        cursor: str | None = None,
    ) -> QueryResult: ...

    def count(self, sources: Source, where: object = None) -> int: ...

    def search(
        self, sources: Sequence[Source], terms: str, *, limit: int = ...
    ) -> SearchResult: ...


QueriesOf = Callable[[], DatabaseQueries]
"""Hands over the node's `DatabaseQueries` (opening the query index on first use)."""


__all__ = [
    "DatabaseQueries",
    "EntryWriter",
    "Ingest",
    "LearnSavedKeys",
    "QueriesOf",
    "SaveSecrets",
]
