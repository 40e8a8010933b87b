"""A database of a tenant: Automerge documents, their history and a durable change feed.

Every write is one Automerge change drafted into one entry (a `Draft` signed by the tenant's
identity, as `Tenant.draft` makes them) and handed to the tenant's writer, which seals it
(encrypted with the document's key, signed by this node's user key) inside the write
transaction that stores it. Reads materialize documents from their entries (see
`materializer`). Document ids are 32 lowercase hex characters; a new document's id is bound to
the key family it is created under, and its changes' Automerge actors to this node's key (see
`document_identity`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Literal, Protocol, overload

from .conflicts import ConflictFeed, DocumentView, FieldConflict, document_conflicts
from .crdt import AutomergeDocument, ListProxy, MapProxy, change_hash
from .crypto import SigningKeyPair
from .document_heads import HeadMismatch, head_mismatch
from .document_identity import KeyFamilies, membership_secrets, new_document_id
from .entry import Entry, EntryKind
from .errors import (
    DocumentDeletedError,
    InvalidNameError,
    InvalidPathError,
    MissingKeyError,
    NotFoundError,
)
from .identity import UserIdentity
from .index.query_index import DEFAULT_LIMIT as QUERY_LIMIT
from .index.query_index import QueryResult, SearchResult, Source
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from .materializer import DocumentMaterializer, MaterializedDocument
from .store import EntryStore
from .tenant_collaborators import DatabaseQueries, EntryWriter
from .writer import Dependency, Draft


class DatabaseTenant(Protocol):
    """What a database needs of its tenant (`Tenant` provides it; no import of it here)."""

    @property
    def id(self) -> bytes: ...

    @property
    def id_hex(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def keyring(self) -> KeyRing: ...

    @property
    def store(self) -> EntryStore: ...

    @property
    def writer(self) -> EntryWriter: ...

    @property
    def identity(self) -> UserIdentity: ...

    def key_label(self, key_id: bytes) -> str: ...

    def key_names(self) -> list[str]: ...

    def key_name_for(self, key_id: bytes) -> str | None: ...

    def key_for_writing(self, key_id: bytes | None, name: str = DEFAULT_KEY) -> TenantKey: ...

    def require_database(self, name: str) -> None: ...

    def member_name(self, signing_key: bytes) -> str | None: ...

    def database_queries(self) -> DatabaseQueries: ...

    def draft(
        self,
        *,
        kind: EntryKind,
        database: str,
        document_id: bytes,
        deps: Sequence[Dependency],
        key: TenantKey,
        payload: bytes,
        author: SigningKeyPair | None = None,
        change_hash: bytes | None = None,
        on_sealed: Callable[[Entry], None] | None = None,
    ) -> Draft: ...


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One entry in a document's history."""

    entry_id: str
    kind: str
    author: str
    author_name: str | None
    timestamp_ms: int
    deps: tuple[str, ...]
    head: bool = False
    """No other entry of the document builds on it (a current head)."""
    concurrent: bool = False
    """A head while the document has several: changes made without seeing each other,
    not merged by a later change yet."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "kind": self.kind,
            "author": self.author,
            "author_name": self.author_name,
            "timestamp_ms": self.timestamp_ms,
            "deps": list(self.deps),
            "head": self.head,
            "concurrent": self.concurrent,
        }


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One item of a database's change feed, in local arrival order."""

    cursor: int
    entry_id: str
    document_id: str
    kind: str
    author: str
    timestamp_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "entry_id": self.entry_id,
            "document_id": self.document_id,
            "kind": self.kind,
            "author": self.author,
            "timestamp_ms": self.timestamp_ms,
        }


def parse_document_id(document_id: str | bytes) -> bytes:
    if isinstance(document_id, bytes) and len(document_id) == 16:
        return document_id
    if isinstance(document_id, str) and len(document_id) == 32:
        try:
            return bytes.fromhex(document_id)
        except ValueError:
            pass
    raise InvalidNameError(f"invalid document id {document_id!r}: expected 32 hex characters")


def _to_ms(value: datetime | int | float) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


SEARCH_LIMIT = 20
"""`Database.search`'s default number of hits (`QueryIndex.search`'s)."""


class Database:
    """Obtain through `Tenant.open_db(name)`."""

    def __init__(self, tenant: DatabaseTenant, name: str) -> None:
        self.tenant = tenant
        self.name = name
        self._store = tenant.store
        self._conflict_feed = ConflictFeed()
        self._tenant_id = tenant.id
        self._signer = tenant.identity.signing
        """Who signs this database's changes (`Tenant.draft`'s default author)."""
        writer = self._writer = tenant.writer
        self._docs = DocumentMaterializer(
            self._store,
            tenant.id,
            name,
            tenant.keyring,
            current_batch=lambda: writer.current_batch,
            key_label=tenant.key_label,
            families=KeyFamilies(
                tenant.id,
                tenant.key_names,
                tenant.key_name_for,
                lambda: membership_secrets(tenant.keyring),
            ),
            author=tenant.identity.signing.public_key,
        )

    def __repr__(self) -> str:
        return f"Database(tenant={self.tenant.name!r}, name={self.name!r})"

    # -- queries (the node's query index, through `DatabaseTenant.database_queries`) -----------
    def query(
        self,
        *,
        where: object = None,
        sort: object = None,
        limit: int = QUERY_LIMIT,
        fields: object = None,
        cursor: str | None = None,
    ) -> QueryResult:
        """Documents of this database matching ``where``, ordered by ``sort``, at most
        ``limit``, with ``fields`` (default: the whole document); ``cursor`` is the previous
        page's ``next_cursor``. The node's query index answers (`QueryIndex.query`: its
        expressions, errors and coverage)."""
        return self.tenant.database_queries().query(
            self._source(), where=where, sort=sort, limit=limit, fields=fields, cursor=cursor
        )

    def count(self, where: object = None) -> int:
        """How many documents of this database match ``where`` (`QueryIndex.count`)."""
        return self.tenant.database_queries().count(self._source(), where)

    def search(self, terms: str, *, limit: int = SEARCH_LIMIT) -> SearchResult:
        """Documents of this database holding every term, best first, with snippets
        (`QueryIndex.search`)."""
        return self.tenant.database_queries().search([self._source()], terms, limit=limit)

    def _source(self) -> Source:
        return Source(self.tenant.id, self.tenant.name, self.name)

    # -- writing -----------------------------------------------------------------------------
    def create_document(
        self, initial: Mapping[str, Any] | None = None, *, key: str = DEFAULT_KEY
    ) -> str:
        """Create a document (optionally with initial content) encrypted with key ``key``.

        The document's id is bound to ``key``'s family: every change of it is sealed under a
        version of that key, and entries under another key are skipped by every reader."""
        write_key = self.tenant.key_for_writing(None, key)
        membership = self.tenant.keyring.current(MEMBERSHIP_KEY).secret
        document_id = new_document_id(self.tenant.id, write_key.name, membership)
        md = self._docs.create(document_id, write_key.name)
        with md.doc.change() as root:
            if initial:
                for field, value in initial.items():
                    root[field] = value
            else:
                # A document exists once it has an entry: an empty document's first change puts
                # and removes a placeholder, which leaves its content empty.
                root["_"] = None
                del root["_"]
        self._commit_change(md)
        return document_id.hex()

    def change(self, document_id: str | bytes) -> AbstractContextManager[MapProxy]:
        """Edit a document: ``with db.change(doc_id) as doc:``; the block's edits become one
        change (none if the block raises)."""
        return _DocumentChange(self, document_id)

    def update(self, document_id: str | bytes, values: Mapping[str, Any]) -> None:
        """Set several top-level fields in one change."""
        with self.change(document_id) as root:
            for field, value in values.items():
                root[field] = value

    def set_path(self, document_id: str | bytes, path: Sequence[str | int], value: Any) -> None:
        """Set the value at ``path`` (map keys and list indexes) in one change.

        Missing maps along the path are created; an index equal to a list's length appends.
        """
        if not path:
            raise InvalidPathError("the path must name at least one field")
        with self.change(document_id) as root:
            target: Any = root
            for depth, step in enumerate(path[:-1]):
                target = _step_into(target, step, path[: depth + 1])
            last = path[-1]
            if isinstance(target, MapProxy):
                target[str(last)] = value
            else:
                index = _list_index(target, last, path, allow_end=True)
                if index == len(target):
                    target.append(value)
                else:
                    target[index] = value

    def delete(self, document_id: str | bytes) -> None:
        """Delete a document: a tombstone entry; its history stays readable (`get_at`)."""
        md = self._load_writable(parse_document_id(document_id))
        draft = self.tenant.draft(
            kind=EntryKind.DELETE,
            database=self.name,
            document_id=md.document_id,
            deps=md.head_dependencies(),
            key=self.tenant.key_for_writing(None, self._docs.family_for_writing(md)),
            payload=b"",
            on_sealed=partial(self._docs.note_local_delete, md),
        )
        self._docs.note_local_delete_draft(md)
        self._write(draft, md.document_id)

    def _load_writable(self, document_id: bytes) -> MaterializedDocument:
        md = self._docs.load(document_id)
        if md.deleted:
            raise DocumentDeletedError(f"document {document_id.hex()} was deleted")
        return md

    def _commit_change(self, md: MaterializedDocument) -> None:
        info = md.doc.last_change
        if info is None:
            return
        docs = self._docs
        change_hash = info.hash
        try:
            family = docs.family_for_writing(md)
            deps = docs.dependencies(md, info.deps)
            # What `Tenant.draft` makes, built here in one positional call (a draft per change:
            # the keyword calls through the tenant cost a tenth of the drafting).
            draft = Draft(
                EntryKind.CHANGE,
                self._tenant_id,
                self.name,
                md.document_id,
                self._signer,
                self.tenant.key_for_writing(None, family),
                info.bytes,
                deps,
                change_hash,
                partial(docs.note_local_sealed, md, change_hash, family),
            )
        except BaseException:
            docs.forget(md.document_id)
            raise
        docs.note_local_draft(md, change_hash)
        self._write(draft, md.document_id)

    def _write(self, draft: Draft, document_id: bytes) -> None:
        """Seal and store ``draft`` now, or when the open batch commits."""
        try:
            self.tenant.require_database(self.name)  # forgotten since it was opened?
            self._writer.write([draft])
        except BaseException:
            self._docs.forget(document_id)
            raise

    def forget_document(self, document_id: bytes) -> None:
        self._docs.forget(document_id)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group every write in the block into one durable store transaction."""
        with self.tenant.writer.batch():
            yield

    # -- reading -----------------------------------------------------------------------------
    @overload
    def get(
        self, document_id: str | bytes, *, conflicts: Literal[False] = False
    ) -> dict[str, Any]: ...

    @overload
    def get(self, document_id: str | bytes, *, conflicts: Literal[True]) -> DocumentView: ...

    def get(
        self, document_id: str | bytes, *, conflicts: bool = False
    ) -> dict[str, Any] | DocumentView:
        """The document's current content as plain Python values; with ``conflicts``, a
        `DocumentView` of the content and every field's competing values (`conflicts`)."""
        md = self._docs.load(parse_document_id(document_id))
        if md.deleted:
            raise DocumentDeletedError(f"document {md.document_id.hex()} was deleted")
        if md.plain is None:
            md.plain = md.doc.to_py()
        copied: dict[str, Any] = _copy(md.plain)
        if conflicts:
            return DocumentView(copied, self._conflicts_of(md))
        return copied

    def conflicts(self, document_id: str | bytes) -> tuple[FieldConflict, ...]:
        """The document's fields (of nested maps too: `FieldConflict.path`) that concurrent
        changes set to competing values: each value with the entry, author (and device) and
        time that wrote it, the value the document shows first. Empty when there is none; a
        plain write of a field resolves its conflict."""
        md = self._docs.load(parse_document_id(document_id))
        return self._conflicts_of(md)

    def _conflicts_of(self, md: MaterializedDocument) -> tuple[FieldConflict, ...]:
        entries = self._store.document_entries(self.tenant.id, self.name, md.document_id)
        return document_conflicts(
            md, (e for _, e in reversed(entries)), self._docs.decrypt, self.tenant.member_name
        )

    def conflicted_documents(self) -> list[tuple[str, tuple[str, ...]]]:
        """The conflict feed: (document id, conflicting fields) of every document of this
        database (deleted ones left out) holding unresolved conflicts, in order of first
        arrival. Remembered per document heads, so a re-read costs little where nothing
        changed (a document is materialized the first time)."""
        found = []
        for doc_id in self.list_documents():
            fields = self.conflicting_fields(doc_id)
            if fields:
                found.append((doc_id, fields))
        return found

    def conflicting_fields(self, document_id: str | bytes) -> tuple[str, ...]:
        """The names of the document's fields in conflict (`conflicts` without the values;
        remembered per document heads)."""
        md = self._docs.load(parse_document_id(document_id))
        return self._conflict_feed.fields(
            md.document_id, md.doc.heads(), partial(_conflicting_field_names, md.doc)
        )

    def exists(self, document_id: str | bytes) -> bool:
        try:
            md = self._docs.load(parse_document_id(document_id))
        except NotFoundError:
            return False
        return not md.deleted

    def list_documents(self, *, include_deleted: bool = False) -> list[str]:
        """Ids of the documents in this database, in order of first arrival."""
        ids = self._store.documents(self.tenant.id, self.name)
        if include_deleted:
            return [d.hex() for d in ids]
        deleted = self._deleted_documents()
        return [d.hex() for d in ids if d not in deleted]

    def _deleted_documents(self) -> set[bytes]:
        deleted: set[bytes] = set()
        cursor = 0
        while True:
            items, cursor_next = self._store.changes_since(self.tenant.id, self.name, cursor, 10000)
            deleted.update(i.document_id for i in items if i.kind is EntryKind.DELETE)
            if cursor_next == cursor:
                return deleted
            cursor = cursor_next

    def history(self, document_id: str | bytes) -> list[HistoryItem]:
        """Every entry of the document, in causal-then-time order."""
        doc_id = parse_document_id(document_id)
        entries = [e for _, e in self._store.document_entries(self.tenant.id, self.name, doc_id)]
        if not entries:
            raise NotFoundError(f"no document {doc_id.hex()} in database {self.name!r}")
        built_on = {d for e in entries for d in e.deps}
        heads = {e.id for e in entries if e.id not in built_on}
        return [
            HistoryItem(
                entry_id=e.id.hex(),
                kind=e.kind.name.lower(),
                author=e.author.hex(),
                author_name=self.tenant.member_name(e.author),
                timestamp_ms=e.timestamp_ms,
                deps=tuple(d.hex() for d in e.deps),
                head=e.id in heads,
                concurrent=e.id in heads and len(heads) > 1,
            )
            for e in _causal_order(entries)
        ]

    def get_at(
        self,
        document_id: str | bytes,
        *,
        heads: Sequence[str | bytes] | None = None,
        time: datetime | int | float | None = None,
    ) -> dict[str, Any]:
        """Time travel: the document as of the given entry ids (heads) or author time (ms)."""
        if (heads is None) == (time is None):
            raise ValueError("give exactly one of heads= or time=")
        doc_id = parse_document_id(document_id)
        md = self._docs.load(doc_id)
        stored = [e for _, e in self._store.document_entries(self.tenant.id, self.name, doc_id)]
        if heads is not None:
            wanted = {parse_entry_id(h) for h in heads}
            hashes = []
            chosen = [e for e in stored if e.id in wanted]
            for entry, payload in self._docs.readable_changes(md, chosen):
                hashes.append(change_hash(payload))
                wanted.discard(entry.id)
            if wanted:
                missing = ", ".join(sorted(w.hex() for w in wanted))
                raise NotFoundError(f"no change entry {missing} in document {doc_id.hex()}")
            return md.doc.to_py(heads=hashes)
        cutoff = _to_ms(time)  # type: ignore[arg-type]
        before = [e for e in stored if e.timestamp_ms <= cutoff]
        if any(e.kind is EntryKind.DELETE for e in before):
            raise DocumentDeletedError(
                f"document {doc_id.hex()} was deleted at or before that time"
            )
        payloads = [payload for _, payload in self._docs.readable_changes(md, before)]
        if not payloads:
            raise NotFoundError(f"document {doc_id.hex()} did not exist yet at that time")
        past = AutomergeDocument()
        past.apply_changes(payloads)
        return past.to_py()

    def skipped_entries(self, document_id: str | bytes) -> dict[str, str]:
        """Entries of the document that are not applied, and why (entry id hex -> reason):
        under another key family than the document's, not decrypting, written as an
        Automerge actor that is not their author's, refused by Automerge, or under a key this
        node does not hold. The document's other changes are read all the same."""
        md = self._docs.load(parse_document_id(document_id))
        return {k.hex(): v for k, v in sorted(self._docs.skipped_entries(md).items())}

    def head_mismatches(self) -> list[HeadMismatch]:
        """The documents whose materialized heads disagree with their entries
        (`document_heads`), lines prefixed with the database name; documents this node
        cannot read are not checked."""
        found: list[HeadMismatch] = []
        for doc_id in self._store.documents(self.tenant.id, self.name):
            try:
                md = self._docs.load(doc_id, must_exist=False)
            except MissingKeyError:
                continue
            entries = [
                e for _, e in self._store.document_entries(self.tenant.id, self.name, doc_id)
            ]
            mismatch = head_mismatch(
                doc_id,
                entries,
                md.heads_to_entries.values(),
                self._docs.skipped_entries(md),
                waiting=bool(md.doc.missing_deps()),
            )
            if mismatch is not None:
                found.append(HeadMismatch(f"{self.name}: {mismatch.line}", mismatch.explained))
        return found

    def changes_since(self, cursor: int = 0, limit: int = 1000) -> tuple[list[ChangeEvent], int]:
        """Entries that arrived after ``cursor``, oldest first, and the cursor to continue from.

        Cursors are local arrival sequence numbers: durable across restarts, never reused.
        """
        if cursor < 0 or limit < 1:
            raise ValueError("cursor must be >= 0 and limit >= 1")
        items, next_cursor = self._store.changes_since(self.tenant.id, self.name, cursor, limit)
        return [
            ChangeEvent(
                cursor=i.seq,
                entry_id=i.entry_id.hex(),
                document_id=i.document_id.hex(),
                kind=i.kind.name.lower(),
                author=i.author.hex(),
                timestamp_ms=i.timestamp_ms,
            )
            for i in items
        ], next_cursor

    def stats(self) -> dict[str, int]:
        return self._store.stats(self.tenant.id, self.name)


def _conflicting_field_names(doc: AutomergeDocument) -> list[str]:
    return [w.field for w in doc.conflicts()]


def parse_entry_id(entry_id: str | bytes) -> bytes:
    if isinstance(entry_id, bytes) and len(entry_id) == 32:
        return entry_id
    if isinstance(entry_id, str) and len(entry_id) == 64:
        try:
            return bytes.fromhex(entry_id)
        except ValueError:
            pass
    raise InvalidNameError(f"invalid entry id {entry_id!r}: expected 64 hex characters")


def _causal_order(entries: list[Entry]) -> list[Entry]:
    """Parents before children; among concurrent entries, earlier author time first."""
    by_id = {e.id: e for e in entries}
    done: set[bytes] = set()
    out: list[Entry] = []
    for start in sorted(entries, key=lambda e: (e.timestamp_ms, e.id)):
        stack = [(start, False)]
        while stack:
            entry, expanded = stack.pop()
            if entry.id in done:
                continue
            if expanded:
                done.add(entry.id)
                out.append(entry)
                continue
            stack.append((entry, True))
            parents = [by_id[d] for d in entry.deps if d in by_id and d not in done]
            for parent in sorted(parents, key=lambda e: (e.timestamp_ms, e.id), reverse=True):
                stack.append((parent, False))
    return out


def parse_path(text: str) -> list[str | int]:
    """``"a.b.0.c"`` -> ``["a", "b", 0, "c"]`` (all-digit parts are list indexes)."""
    if not text:
        raise InvalidPathError("empty path")
    parts: list[str | int] = []
    for part in text.split("."):
        if part == "":
            raise InvalidPathError(f"invalid path {text!r}: empty part")
        parts.append(int(part) if part.isdigit() else part)
    return parts


def _step_into(target: Any, step: str | int, where: Sequence[str | int]) -> Any:
    shown = ".".join(str(p) for p in where)
    if isinstance(target, MapProxy):
        key = str(step)
        if key not in target or target[key] is None:
            target[key] = {}
        child = target[key]
    elif isinstance(target, ListProxy):
        child = target[_list_index(target, step, where, allow_end=False)]
    else:
        raise InvalidPathError(f"cannot descend into {shown}: not a map or a list")
    if not isinstance(child, MapProxy | ListProxy):
        raise InvalidPathError(
            f"cannot descend into {shown}: it holds a value, not a map or a list"
        )
    return child


def _list_index(
    target: Any, step: str | int, where: Sequence[str | int], *, allow_end: bool
) -> int:
    shown = ".".join(str(p) for p in where)
    if not isinstance(target, ListProxy):
        raise InvalidPathError(f"cannot index {shown}: not a list")
    if not isinstance(step, int):
        raise InvalidPathError(f"{shown}: a list index must be a number")
    limit = len(target) + (1 if allow_end else 0)
    if not 0 <= step < limit:
        raise InvalidPathError(f"{shown}: index {step} out of range (list has {len(target)} items)")
    return step


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _DocumentChange:
    """The context manager of `Database.change` (a class: one is entered for every local
    change, and a generator-based one costs more)."""

    __slots__ = ("_block", "_database", "_document_id", "_md")

    def __init__(self, database: Database, document_id: str | bytes) -> None:
        self._database = database
        self._document_id = document_id
        self._md: MaterializedDocument | None = None
        self._block: AbstractContextManager[MapProxy] | None = None

    def __enter__(self) -> MapProxy:
        if self._md is not None:  # as the generator-based manager refused it
            raise RuntimeError("a change block is entered once: call change() again")
        md = self._md = self._database._load_writable(parse_document_id(self._document_id))
        block = self._block = md.doc.change()
        return block.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._block is not None and self._md is not None, "exited before entered"
        self._block.__exit__(exc_type, exc, traceback)
        if exc_type is None:
            self._database._commit_change(self._md)
