"""The query index: views, queries and full-text search over the documents this node reads.

A per-node SQLCipher database derived from the log (`index_store`), kept up to date by the
follower (`follower`), queried through `QueryIndex` (`query_index`) with the JSON expression
language of `expressions`; views (`views`) are declarative definitions read over it.
"""

from .catalog import ViewCatalog
from .expressions import QueryError
from .health import index_health
from .index_store import index_path
from .query_index import (
    SHARED_VIEWS_DB,
    Coverage,
    QueryIndex,
    QueryResult,
    Row,
    SearchHit,
    SearchResult,
    Source,
)
from .views import ViewDefinition, ViewReader
from .watch import ViewChange, ViewWatch, watch_view, watch_view_through

__all__ = [
    "SHARED_VIEWS_DB",
    "Coverage",
    "QueryError",
    "QueryIndex",
    "QueryResult",
    "Row",
    "SearchHit",
    "SearchResult",
    "Source",
    "ViewCatalog",
    "ViewChange",
    "ViewDefinition",
    "ViewReader",
    "ViewWatch",
    "index_health",
    "index_path",
    "watch_view",
    "watch_view_through",
]
