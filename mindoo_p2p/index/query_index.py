"""`QueryIndex`: queries, full-text search, coverage and upkeep over the node's query index.

Every read first brings the index up to date with the log (`IndexFollower.catch_up`: cheap when
nothing changed), so a query sees the caller's own writes and whatever another process stored.

Sources are named as (tenant, database) pairs; a `Source` resolves names to ids. Results carry
the *coverage* of their sources: how many documents are indexed and how many were skipped, by
reason (``no_key``: sealed under a key this node lacks; ``missing_dependency``: waits for
changes not held; ``unreadable``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .build_workers import default_workers
from .computed import Computed
from .content import pick, searchable_text
from .expressions import (
    JsonPath,
    QueryError,
    SortKey,
    compile_where,
    index_paths,
    keyset_after,
    parse_fields,
    parse_path,
    parse_sort,
)
from .follower import (
    FollowReport,
    IndexedNode,
    IndexedTenant,
    IndexFollower,
    Progress,
)
from .index_store import IndexStore, index_path

SHARED_VIEWS_DB = "mindoo.views"
"""The tenant database that holds shared view definitions (`catalog`)."""

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100
MAX_SEARCH_TERMS = 32
MAX_CURSOR_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Source:
    """One database of one tenant, as the index names it."""

    tenant_id: bytes
    tenant_name: str
    database: str

    @property
    def label(self) -> str:
        return f"{self.tenant_name}/{self.database}"


class DatabaseLike(Protocol):
    """A `Database` (its tenant and name) used as a source."""

    @property
    def tenant(self) -> Any: ...

    @property
    def name(self) -> str: ...


Sources = Source | DatabaseLike | Sequence[Source | DatabaseLike]
"""What a query runs over: one or several `Source`s or `Database`s
(``node.index.query(db, where=...)``)."""


def as_sources(sources: Sources) -> list[Source]:
    items = [sources] if isinstance(sources, Source) or hasattr(sources, "tenant") else sources
    out: list[Source] = []
    for item in items:  # type: ignore[union-attr]
        if isinstance(item, Source):
            out.append(item)
        elif hasattr(item, "tenant") and hasattr(item, "name"):
            out.append(Source(item.tenant.id, item.tenant.name, item.name))
        else:
            raise QueryError(f"sources: {item!r} is neither a Source nor a Database")
    return list(dict.fromkeys(out))


@dataclass
class Coverage:
    """How much of the sources the answer covers."""

    indexed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "skipped": dict(sorted(self.skipped.items()))}


@dataclass(frozen=True, slots=True)
class Row:
    tenant: str
    database: str
    document_id: str
    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "db": self.database,
            "id": self.document_id,
            "values": self.values,
        }


@dataclass
class QueryResult:
    rows: list[Row]
    next_cursor: str | None
    coverage: Coverage

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.to_dict() for r in self.rows],
            "next_cursor": self.next_cursor,
            "coverage": self.coverage.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    tenant: str
    database: str
    document_id: str
    rank: float
    snippet: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "db": self.database,
            "id": self.document_id,
            "rank": self.rank,
            "snippet": self.snippet,
        }


@dataclass
class SearchResult:
    hits: list[SearchHit]
    coverage: Coverage

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [h.to_dict() for h in self.hits], "coverage": self.coverage.to_dict()}


_TERM = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"\w+\*?\Z", re.UNICODE)


def fts_query(terms: str) -> str:
    """User search text -> an FTS5 query: words (all must occur), ``word*`` prefixes and
    ``"quoted phrases"``. Every token is quoted, so FTS5 operators in the text are words."""
    if not isinstance(terms, str) or not terms.strip():
        raise QueryError("search: give at least one term")
    parts: list[str] = []
    for match in _TERM.finditer(terms):
        phrase, word = match.group(1), match.group(2)
        if phrase is not None:
            words = re.findall(r"\w+", phrase)
            if not words:
                raise QueryError(f"search: the phrase {phrase!r} holds no word")
            parts.append('"' + " ".join(words) + '"')
        else:
            assert word is not None
            if not _WORD.match(word):
                raise QueryError(
                    f"search: term {word!r} is not a word (letters and digits, optionally"
                    " ending in * for a prefix; put phrases in double quotes)"
                )
            prefix = word.endswith("*")
            parts.append(f'"{word.rstrip("*")}"' + ("*" if prefix else ""))
    if len(parts) > MAX_SEARCH_TERMS:
        raise QueryError(f"search: more than {MAX_SEARCH_TERMS} terms")
    return " ".join(parts)


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """The values of a cursor made by `encode_cursor` for ``size`` sort keys (+ the uid)."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise QueryError(f"cursor: not a cursor of this query ({exc})") from None
    if (
        not isinstance(values, list)
        or len(values) != size + 1
        or not isinstance(values[-1], str)
        or any(isinstance(v, dict | list) for v in values)
    ):
        raise QueryError("cursor: not a cursor of this query")
    return values


class Settings(Protocol):
    """The keystore, as the index keeps its chosen settings there."""

    def read(self) -> dict[str, Any]: ...

    def update(self, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]: ...


class QueryIndex:
    """The node's query index. `Node.index` opens it (the key comes from the keystore)."""

    def __init__(
        self,
        home: Path,
        key: bytes,
        node: IndexedNode,
        save_key: Callable[[bytes], None] | None = None,
        settings: Settings | None = None,
        workers: int | None = None,
    ) -> None:
        """``save_key(key)`` records a new index key (the keystore): after a shred the index
        moves to a new key and the old one is destroyed (`IndexStore.reencrypt`).
        ``settings`` keeps what is chosen, not derived (the full-text fields per database),
        so a rebuild keeps it: the keystore. ``workers``: processes a large catch-up uses
        (`build_workers`; default: one per core, none on a single core)."""
        self._home = home
        self._key = key
        self._node = node
        self._save_key = save_key
        self._settings = settings
        self._fields: dict[str, dict[str, list[str]]] = (
            dict(settings.read().get("search_fields", {})) if settings is not None else {}
        )
        self._lock = threading.RLock()
        self._workers = default_workers() if workers is None else workers
        self.store = IndexStore(index_path(home), key)
        self.follower = self._new_follower()
        self._listeners: list[Callable[[FollowReport], None]] = []

    def _new_follower(self) -> IndexFollower:
        return IndexFollower(self.store, self._node, self._search_fields, workers=self._workers)

    def close(self) -> None:
        self.store.close()

    # -- full-text fields --------------------------------------------------------------------
    def _search_fields(self, tenant_id: bytes, database: str) -> list[JsonPath] | None:
        chosen = self._fields.get(tenant_id.hex(), {}).get(database)
        return None if chosen is None else [parse_path(p) for p in chosen]

    def search_fields(self, source: Source | DatabaseLike) -> list[str] | None:
        """The fields of a database the full-text index holds (None: every string)."""
        (s,) = as_sources(source)
        return self._fields.get(s.tenant_id.hex(), {}).get(s.database)

    def set_search_fields(self, sources: Sources, fields: object) -> int:
        """Choose the fields (paths, or None for every string value) whose text the full-text
        index holds for these databases; kept in the keystore (a rebuild keeps the choice).
        Their documents' full-text rows are rewritten from the indexed content at once (no
        decryption). Returns how many documents were rewritten."""
        parsed = parse_fields(fields, "fields")
        chosen = None if parsed is None else [p.text for p in parsed]
        if self._settings is None:
            raise QueryError("this index has nowhere to keep settings")
        listed = as_sources(sources)

        def mutate(contents: dict[str, Any]) -> None:
            table = contents.setdefault("search_fields", {})
            for s in listed:
                per_tenant = table.setdefault(s.tenant_id.hex(), {})
                if chosen is None:
                    per_tenant.pop(s.database, None)
                else:
                    per_tenant[s.database] = chosen
            self._fields = json.loads(json.dumps(table))

        self.refresh()
        with self._lock:
            self._settings.update(mutate)
            rewritten = 0
            with self.store.transaction() as tx:
                for s in listed:
                    sid = self.store.find_source(s.tenant_id, s.database)
                    if sid is None:
                        continue
                    for rid, body in tx.execute(
                        "SELECT id, body FROM docs WHERE source = ?", (sid,)
                    ).fetchall():
                        text = searchable_text(json.loads(body), parsed)
                        tx.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
                        tx.execute("INSERT INTO fts (rowid, text) VALUES (?, ?)", (rid, text))
                        rewritten += 1
        return rewritten

    def add_listener(self, listener: Callable[[FollowReport], None]) -> None:
        """``listener(report)`` after a catch-up changed something (views watch with it)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[FollowReport], None]) -> None:
        self._listeners.remove(listener)

    # -- upkeep ------------------------------------------------------------------------------
    def refresh(self, progress: Progress | None = None) -> FollowReport:
        """Bring the index up to date with the log (and the keys held)."""
        with self._lock:
            report = self.follower.catch_up(progress)
        if report.changed:
            for listener in list(self._listeners):
                listener(report)
        return report

    def purge_unreadable(self, tenant: IndexedTenant) -> None:
        """Remove at once what the tenant's keys no longer read (after a shred), then move
        the index to a new key so that nothing of it survives in freed pages."""
        with self._lock:
            report = self.follower.purge_unreadable(tenant)
            if report.removed and self._save_key is not None:
                self.store.reencrypt(os.urandom(32), self._remember_key)
        if report.changed:
            for listener in list(self._listeners):
                listener(report)

    def _remember_key(self, key: bytes) -> None:
        assert self._save_key is not None
        self._save_key(key)
        self._key = key

    def rebuild(self, progress: Progress | None = None) -> dict[str, Any]:
        """Delete the index and build it again from the log."""
        started = time.monotonic()
        with self._lock:
            self.store.delete_all()
            self.store = IndexStore(index_path(self._home), self._key)
            self.follower = self._new_follower()
            report = self.refresh(progress)
        return {
            "indexed": report.indexed,
            "skipped": report.skipped,
            "seconds": round(time.monotonic() - started, 3),
        }

    def status(self) -> dict[str, Any]:
        """Per source: cursor against the log (stale when behind), documents, skipped."""
        store = self._node.store
        names = {t.id: t.name for t in self._node.tenants()}
        sources: list[dict[str, Any]] = []
        stale = False
        for sid, tenant_id, database, cursor in self.store.sources():
            last = store.last_seq(tenant_id, database)
            coverage = self._coverage([sid])
            behind = max(0, last - cursor)
            stale = stale or behind > 0
            sources.append(
                {
                    "tenant": names.get(tenant_id, tenant_id.hex()),
                    "db": database,
                    "cursor": cursor,
                    "log_seq": last,
                    "behind": behind,
                    **coverage.to_dict(),
                }
            )
        return {
            "path": str(self.store.path),
            "bytes": self.store.size_bytes(),
            "rebuilt_because": self.store.rebuilt_because,
            "stale": stale,
            "sources": sources,
        }

    # -- sources -----------------------------------------------------------------------------
    def source(self, tenant: IndexedTenant, database: str) -> Source:
        return Source(tenant.id, tenant.name, database)

    def all_sources(self, tenant: IndexedTenant) -> list[Source]:
        """Every database of the tenant but the one holding shared view definitions."""
        return [
            Source(tenant.id, tenant.name, d) for d in tenant.databases() if d != SHARED_VIEWS_DB
        ]

    def _source_ids(self, sources: Sources) -> tuple[list[int], dict[int, Source]]:
        listed = as_sources(sources)
        if not listed:
            raise QueryError("sources: name at least one database")
        ids: dict[int, Source] = {}
        for s in listed:
            sid = self.store.find_source(s.tenant_id, s.database)
            if sid is not None:
                ids[sid] = s
        return list(ids), ids

    def _coverage(self, sids: Sequence[int]) -> Coverage:
        coverage = Coverage()
        if not sids:
            return coverage
        marks = ",".join("?" * len(sids))
        coverage.indexed = int(
            self.store.read(f"SELECT sum(docs) FROM sources WHERE id IN ({marks})", sids)[0][0]
        )
        for reason, count in self.store.read(
            f"SELECT reason, count(*) FROM skipped WHERE source IN ({marks}) GROUP BY reason",
            sids,
        ):
            coverage.skipped[str(reason)] = int(count)
        return coverage

    def coverage(self, sources: Sources) -> Coverage:
        self.refresh()
        sids, _ = self._source_ids(sources)
        return self._coverage(sids)

    def skipped(self, sources: Sources) -> list[dict[str, Any]]:
        """The skipped documents themselves, with reason and detail."""
        self.refresh()
        sids, by_id = self._source_ids(sources)
        if not sids:
            return []
        marks = ",".join("?" * len(sids))
        return [
            {
                "tenant": by_id[int(sid)].tenant_name,
                "db": by_id[int(sid)].database,
                "id": bytes(doc).hex(),
                "reason": str(reason),
                "detail": str(detail),
            }
            for sid, doc, reason, detail in self.store.read(
                f"SELECT source, doc, reason, detail FROM skipped WHERE source IN ({marks})"
                " ORDER BY source, doc",
                sids,
            )
        ]

    # -- queries -----------------------------------------------------------------------------
    def query(
        self,
        sources: Sources,
        *,
        where: object = None,
        sort: object = None,
        limit: int = DEFAULT_LIMIT,
        fields: object = None,
        cursor: str | None = None,
        computed: Mapping[str, Computed] | None = None,
    ) -> QueryResult:
        """Documents of ``sources`` matching ``where`` (see `expressions`), ordered by ``sort``
        (then by tenant, database and document id), at most ``limit``, with the values of
        ``fields`` (default: the whole document) and of the ``computed`` values by name (see
        `computed`). ``cursor``: the ``next_cursor`` of the previous page (keyset pagination:
        stable while documents change)."""
        computed = computed or {}
        compiled = compile_where(where)
        keys = parse_sort(sort)
        projection = parse_fields(fields)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit: expected a number from 1 to {MAX_LIMIT}, not {limit!r}")
        self.refresh()
        sids, by_id = self._source_ids(sources)
        coverage = self._coverage(sids)
        if not sids:
            return QueryResult([], None, coverage)
        lead = [*compiled.equality, *index_paths(keys)] if keys else []
        if lead:
            # equality paths, then the sort keys: the matches are walked in order
            self.store.ensure_index(list(dict.fromkeys(lead)))
        for path in compiled.paths:
            self.store.ensure_path_index(path)
        rows, next_cursor = self._select(
            sids, compiled.sql, list(compiled.params), keys, limit, cursor, list(computed.values())
        )
        out = [
            Row(
                by_id[sid].tenant_name,
                by_id[sid].database,
                doc.hex(),
                body if projection is None else {p.text: pick(body, p) for p in projection},
            )
            for sid, doc, body, _values in rows
        ]
        if computed:
            for row, (_sid, _doc, _body, values) in zip(out, rows, strict=True):
                row.values.update(zip(computed, values, strict=True))
        return QueryResult(out, next_cursor, coverage)

    def _select(
        self,
        sids: list[int],
        where_sql: str,
        params: list[Any],
        keys: Sequence[SortKey],
        limit: int,
        cursor: str | None,
        computed: Sequence[Computed] = (),
    ) -> tuple[list[tuple[int, bytes, dict[str, Any], Sequence[Any]]], str | None]:
        key_sql = [k.sql() for k in keys]
        value_sql = [c.sql() for c in computed]
        marks = ",".join("?" * len(sids))
        conditions = [f"source IN ({marks})", where_sql]
        all_params: list[Any] = [*sids, *params]
        table, extra = "docs", []
        sort_sql = [(text, k.descending) for (text, _p), k in zip(key_sql, keys, strict=True)]
        if value_sql or any(p for _t, p in key_sql):
            # computed keys or values: each computed once per row, in a derived table whose
            # columns the order, the cursor and the answer name
            columns = [f"{t} AS _k{i}" for i, (t, _p) in enumerate(key_sql)]
            columns += [f"{v.text} AS _c{i}" for i, v in enumerate(value_sql)]
            head = [p for _t, ps in key_sql for p in ps] + [p for v in value_sql for p in v.params]
            table = (
                f"(SELECT source, doc, body, uid, {', '.join(columns)} FROM docs"
                f" WHERE {' AND '.join(conditions)})"
            )
            conditions, all_params = ["1"], [*head, *all_params]
            sort_sql = [(f"_k{i}", k.descending) for i, k in enumerate(keys)]
            extra = [f"_c{i}" for i in range(len(value_sql))]
        if cursor is not None:
            values = decode_cursor(cursor, len(keys))
            after, after_params = keyset_after(sort_sql, values[:-1], "uid", values[-1])
            conditions.append(after)
            all_params.extend(after_params)
        order = ", ".join([*(f"{s}{' DESC' if d else ''}" for s, d in sort_sql), "uid"])
        selected = ", ".join(["source", "doc", "body", "uid", *extra, *(s for s, _ in sort_sql)])
        sql = (
            f"SELECT {selected} FROM {table} WHERE {' AND '.join(conditions)}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = self.store.read(sql, [*all_params, limit + 1])
        more = len(found) > limit
        found = found[:limit]
        if extra:
            end = 4 + len(extra)
            rows = [(int(r[0]), bytes(r[1]), json.loads(r[2]), r[4:end]) for r in found]
        else:  # no computed values: the rows as they were
            rows = [(int(r[0]), bytes(r[1]), json.loads(r[2]), ()) for r in found]
        next_cursor = None
        if more and found:
            last = found[-1]
            next_cursor = encode_cursor([*last[4 + len(extra) :], str(last[3])])
        return rows, next_cursor

    def count(self, sources: Sources, where: object = None) -> int:
        compiled = compile_where(where)
        self.refresh()
        sids, _ = self._source_ids(sources)
        if not sids:
            return 0
        marks = ",".join("?" * len(sids))
        return int(
            self.store.read(
                f"SELECT count(*) FROM docs WHERE source IN ({marks}) AND {compiled.sql}",
                [*sids, *compiled.params],
            )[0][0]
        )

    # -- full-text search --------------------------------------------------------------------
    def search(self, sources: Sequence[Source], terms: str, *, limit: int = 20) -> SearchResult:
        """Documents of ``sources`` holding every term (`fts_query`), best first (BM25), each
        with a snippet around the matches (``[`` ``]`` mark them)."""
        match = fts_query(terms)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit: expected a number from 1 to {MAX_LIMIT}")
        self.refresh()
        sids, by_id = self._source_ids(sources)
        coverage = self._coverage(sids)
        if not sids:
            return SearchResult([], coverage)
        marks = ",".join("?" * len(sids))
        found = self.store.read(
            "SELECT d.source, d.doc, fts.rank, snippet(fts, 0, '[', ']', '…', 12)"
            f" FROM fts JOIN docs d ON d.id = fts.rowid WHERE fts MATCH ? AND d.source IN"
            f" ({marks}) ORDER BY fts.rank LIMIT ?",
            [match, *sids, limit],
        )
        hits = [
            SearchHit(
                by_id[int(sid)].tenant_name,
                by_id[int(sid)].database,
                bytes(doc).hex(),
                float(rank),
                str(snippet),
            )
            for sid, doc, rank, snippet in found
        ]
        return SearchResult(hits, coverage)
