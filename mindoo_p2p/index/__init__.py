"""The query index: views, queries and full-text search over the documents this node reads.

A per-node SQLCipher database derived from the log (`index_store`), kept up to date by the
follower (`follower`), queried through `QueryIndex` (`query_index`) with the JSON expression
language of `expressions`; views (`views`) are declarative definitions read over it.
"""

from .expressions import QueryError
from .index_store import index_path
from .query_index import Coverage, QueryIndex, QueryResult, Row, SearchHit, SearchResult, Source

__all__ = [
    "Coverage",
    "QueryError",
    "QueryIndex",
    "QueryResult",
    "Row",
    "SearchHit",
    "SearchResult",
    "Source",
    "index_path",
]
