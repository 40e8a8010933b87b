"""The HTTP API's operations: what each one does with the running daemon, and the table
(`OPERATIONS`) that both the routes and the OpenAPI document are made from.

Every use of the Node goes through the daemon's `NodeAccess` (``access.run``: a worker thread
holding the Node), as the control socket's forwarded commands do, so a large document or a
long listing never holds up the event loop that serves peers. Status reads only LMDB
snapshots and the peer table (``status_off_loop``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..commands import node_status
from ..database import Database
from ..errors import MindooError
from ..net.framing import TransportError
from ..node import Node
from .events import sse_stream
from .json_patch import apply_json_patch
from .openapi import OBJECT, Operation, Query, ref
from .request_body import read_json

if TYPE_CHECKING:
    from ..daemon.node_daemon import NodeDaemon

T = TypeVar("T")

MAX_LIST = 10_000
"""Items one listing returns at most (``limit``)."""
JSON_PATCH = "application/json-patch+json"


class BadRequest(MindooError, ValueError):
    """A request the API cannot serve as asked (the message says why)."""


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be from {low} to {high}")
    return value


class HttpApi:
    """The operations' handlers for one daemon; see the module docstring."""

    def __init__(self, daemon: NodeDaemon) -> None:
        self._daemon = daemon

    async def _with_node(self, fn: Callable[[Node], T]) -> T:
        return await self._daemon.access.run(fn)

    def _db(self, node: Node, request: Request) -> Database:
        tenant = node.tenant(request.path_params["tenant"])
        return tenant.find_database(request.path_params["database"])

    # -- node ----------------------------------------------------------------------------------
    async def status(self, request: Request) -> Response:
        return JSONResponse(await self._daemon.status_off_loop())

    async def peers(self, request: Request) -> Response:
        status = await self._daemon.status_off_loop()
        return JSONResponse({"peers": status["peers"]})

    async def add_peer(self, request: Request) -> Response:
        body = await read_json(request)
        addr = body.get("addr") if isinstance(body, dict) else None
        if not isinstance(addr, str) or not addr:
            raise BadRequest("the body must be an object with an 'addr' string (a multiaddr)")
        try:
            peer_id = await self._daemon.add_peer(addr)
        except TransportError as exc:
            return JSONResponse({"peer_id": None, "connected": False, "error": str(exc)})
        return JSONResponse({"peer_id": peer_id, "connected": True})

    async def sync_now(self, request: Request) -> Response:
        self._daemon.wake_peers()
        return JSONResponse({"woken": len(self._daemon.peer_table.connected_peers())})

    # -- tenants and databases -----------------------------------------------------------------
    async def tenants(self, request: Request) -> Response:
        status = await self._with_node(lambda node: node_status(node, with_durability=False))
        return JSONResponse({"tenants": status["tenants"]})

    async def databases(self, request: Request) -> Response:
        def read(node: Node) -> list[dict[str, Any]]:
            tenant = node.tenant(request.path_params["tenant"])
            return [{"name": n, **tenant.find_database(n).stats()} for n in tenant.databases()]

        return JSONResponse({"databases": await self._with_node(read)})

    async def create_database(self, request: Request) -> Response:
        body = await read_json(request)
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str):
            raise BadRequest("the body must be an object with a 'name' string")

        def create(node: Node) -> dict[str, Any]:
            db = node.tenant(request.path_params["tenant"]).create_db(name)
            return {"name": db.name, **db.stats()}

        return JSONResponse(await self._with_node(create), status_code=201)

    async def forget_database(self, request: Request) -> Response:
        """`Tenant.forget_db`: stop holding the database here (its entries stay stored)."""
        name = request.path_params["database"]

        def forget(node: Node) -> dict[str, Any]:
            node.tenant(request.path_params["tenant"]).forget_db(name)
            return {"name": name, "forgotten": True}

        return JSONResponse(await self._with_node(forget))

    async def conflicts(self, request: Request) -> Response:
        """`Database.conflicted_documents`: documents holding unresolved conflicts."""

        def read(node: Node) -> dict[str, Any]:
            found = self._db(node, request).conflicted_documents()
            return {"documents": [{"document_id": d, "fields": list(f)} for d, f in found]}

        return JSONResponse(await self._with_node(read))

    async def document_conflicts(self, request: Request) -> Response:
        """``Database.get(doc, conflicts=True)``: the content and every competing value."""
        document_id = request.path_params["document"]

        def read(node: Node) -> dict[str, Any]:
            view = self._db(node, request).get(document_id, conflicts=True)
            return {"id": document_id, **view.to_dict()}

        return JSONResponse(await self._with_node(read))

    # -- documents -----------------------------------------------------------------------------
    async def documents(self, request: Request) -> Response:
        offset = _int_query(request, "offset", 0, 0, 2**62)
        limit = _int_query(request, "limit", 1000, 1, MAX_LIST)

        def read(node: Node) -> dict[str, Any]:
            ids = self._db(node, request).list_documents()
            return {"documents": ids[offset : offset + limit], "total": len(ids)}

        return JSONResponse(await self._with_node(read))

    async def create_document(self, request: Request) -> Response:
        body = await read_json(request)
        content = body.get("content", {}) if isinstance(body, dict) else None
        if not isinstance(content, dict):
            raise BadRequest("the body must be an object with a 'content' object")

        def create(node: Node) -> dict[str, Any]:
            db = self._db(node, request)
            document_id = db.create_document(content)
            return {"id": document_id, "content": db.get(document_id)}

        return JSONResponse(await self._with_node(create), status_code=201)

    async def document(self, request: Request) -> Response:
        document_id = request.path_params["document"]

        def read(node: Node) -> dict[str, Any]:
            return {"id": document_id, "content": self._db(node, request).get(document_id)}

        return JSONResponse(await self._with_node(read))

    async def change_document(self, request: Request) -> Response:
        """A JSON Patch (``application/json-patch+json``) or ``{"path": [...], "value": v}``
        (``application/json``), applied as one change."""
        document_id = request.path_params["document"]
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await read_json(request)
        if kind == JSON_PATCH:

            def change(node: Node) -> dict[str, Any]:
                content = apply_json_patch(self._db(node, request), document_id, body)
                return {"id": document_id, "content": content}

        else:
            if not isinstance(body, dict) or "path" not in body or "value" not in body:
                raise BadRequest(
                    "send a JSON Patch as application/json-patch+json, or an object with"
                    " 'path' (a list of keys and indexes) and 'value' as application/json"
                )
            path = body["path"]
            if (
                not isinstance(path, list)
                or not path
                or not all(isinstance(p, str | int) and not isinstance(p, bool) for p in path)
            ):
                raise BadRequest("'path' must be a non-empty list of keys and list indexes")

            def change(node: Node) -> dict[str, Any]:
                db = self._db(node, request)
                db.set_path(document_id, path, body["value"])
                return {"id": document_id, "content": db.get(document_id)}

        return JSONResponse(await self._with_node(change))

    async def delete_document(self, request: Request) -> Response:
        document_id = request.path_params["document"]

        def delete(node: Node) -> dict[str, Any]:
            self._db(node, request).delete(document_id)
            return {"id": document_id, "deleted": True}

        return JSONResponse(await self._with_node(delete))

    async def changes(self, request: Request) -> Response:
        since = _int_query(request, "since", 0, 0, 2**62)
        limit = _int_query(request, "limit", 1000, 1, MAX_LIST)

        def read(node: Node) -> dict[str, Any]:
            items, next_cursor = self._db(node, request).changes_since(since, limit)
            return {"changes": [i.to_dict() for i in items], "next_cursor": next_cursor}

        return JSONResponse(await self._with_node(read))

    # -- events ----------------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        stream = sse_stream(
            self._daemon.events,
            tenant=request.query_params.get("tenant"),
            database=request.query_params.get("database"),
        )
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def recent_events(self, request: Request) -> Response:
        return JSONResponse({"events": self._daemon.events.recent()})


_TENANT_DB = "/api/tenants/{tenant}/databases/{database}"
_LIMIT = Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST}, "Items at most.")

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/api/status", "status", "The daemon's status.", "node", ref("Status")),
    Operation(
        "GET",
        "/api/peers",
        "peers",
        "Known peers with their state and last sessions.",
        "peers",
        {"type": "object", "properties": {"peers": {"type": "array", "items": ref("Peer")}}},
    ),
    Operation(
        "POST",
        "/api/peers",
        "add_peer",
        "Remember a peer's address and connect to it now.",
        "peers",
        OBJECT,
        body={
            "application/json": {
                "type": "object",
                "required": ["addr"],
                "properties": {"addr": {"type": "string", "description": "/ip4/.../p2p/ID"}},
            }
        },
    ),
    Operation(
        "POST",
        "/api/sync",
        "sync_now",
        "Run a session with every connected peer now.",
        "peers",
        {"type": "object", "properties": {"woken": {"type": "integer"}}},
    ),
    Operation(
        "GET",
        "/api/tenants",
        "tenants",
        "Tenants held here with their databases.",
        "tenants",
        {"type": "object", "properties": {"tenants": {"type": "array", "items": ref("Tenant")}}},
    ),
    Operation(
        "GET",
        "/api/tenants/{tenant}/databases",
        "databases",
        "A tenant's databases (tenant: name or id).",
        "tenants",
        {
            "type": "object",
            "properties": {"databases": {"type": "array", "items": ref("Database")}},
        },
    ),
    Operation(
        "POST",
        "/api/tenants/{tenant}/databases",
        "create_database",
        "Create a database.",
        "tenants",
        ref("Database"),
        status=201,
        body={
            "application/json": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}},
            }
        },
    ),
    Operation(
        "DELETE",
        _TENANT_DB,
        "forget_database",
        "Forget a database here: no longer listed, written, offered or fetched; arriving"
        " entries are refused (not replicated); stored entries stay. Creating it again"
        " brings it back.",
        "tenants",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "forgotten": {"type": "boolean"}},
        },
    ),
    Operation(
        "GET",
        f"{_TENANT_DB}/conflicts",
        "conflicts",
        "Documents with unresolved conflicts (fields set concurrently), in order of first"
        " arrival; a write of the field resolves one.",
        "documents",
        {
            "type": "object",
            "properties": {"documents": {"type": "array", "items": ref("ConflictedDocument")}},
        },
    ),
    Operation(
        "GET",
        f"{_TENANT_DB}/documents/{{document}}/conflicts",
        "document_conflicts",
        "A document's content with each conflicting field's competing values (entry, author,"
        " time; the shown value first).",
        "documents",
        ref("DocumentConflicts"),
    ),
    Operation(
        "GET",
        f"{_TENANT_DB}/documents",
        "documents",
        "Ids of the database's documents, in order of first arrival.",
        "documents",
        {
            "type": "object",
            "properties": {
                "documents": {"type": "array", "items": {"type": "string"}},
                "total": {"type": "integer"},
            },
        },
        query=(Query("offset", {"type": "integer", "minimum": 0}, "Ids to skip."), _LIMIT),
    ),
    Operation(
        "POST",
        f"{_TENANT_DB}/documents",
        "create_document",
        "Create a document with initial content.",
        "documents",
        ref("Document"),
        status=201,
        body={"application/json": {"type": "object", "properties": {"content": OBJECT}}},
    ),
    Operation(
        "GET",
        f"{_TENANT_DB}/documents/{{document}}",
        "document",
        "A document's current content.",
        "documents",
        ref("Document"),
    ),
    Operation(
        "PATCH",
        f"{_TENANT_DB}/documents/{{document}}",
        "change_document",
        "Change a document in one change: a JSON Patch, or a path and a value.",
        "documents",
        ref("Document"),
        body={JSON_PATCH: ref("JsonPatch"), "application/json": ref("SetPath")},
    ),
    Operation(
        "DELETE",
        f"{_TENANT_DB}/documents/{{document}}",
        "delete_document",
        "Delete a document (its history stays).",
        "documents",
        {"type": "object", "properties": {"id": {"type": "string"}, "deleted": {}}},
    ),
    Operation(
        "GET",
        f"{_TENANT_DB}/changes",
        "changes",
        "The change feed: entries that arrived after a cursor, oldest first.",
        "documents",
        ref("ChangeFeed"),
        query=(
            Query("since", {"type": "integer", "minimum": 0}, "Cursor to continue from."),
            _LIMIT,
        ),
    ),
    Operation(
        "GET",
        "/api/events",
        "events",
        "Server-sent events: entries, peers, sync progress, rejections.",
        "events",
        {"type": "string", "description": "text/event-stream; each data line is an Event"},
        media_type="text/event-stream",
        query=(
            Query("tenant", {"type": "string"}, "Only this tenant's events (name or id)."),
            Query("database", {"type": "string"}, "Only this database's events."),
        ),
    ),
    Operation(
        "GET",
        "/api/events/recent",
        "recent_events",
        "The last events published, oldest first.",
        "events",
        {"type": "object", "properties": {"events": {"type": "array", "items": ref("Event")}}},
    ),
)

SITE: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/",
        "page",
        "The web page (tenants, databases, peers, events); it reads the API with the cookie"
        " that /login sets.",
        "site",
        {"type": "string"},
        media_type="text/html",
        public=True,
    ),
    Operation(
        "GET",
        "/login",
        "login",
        "Redeem a one-time login token ('mindoo http url'): sets the page's cookie and"
        " redirects to /.",
        "site",
        {"type": "string"},
        status=303,
        media_type="text/html",
        query=(Query("token", {"type": "string"}, "The one-time token.", required=True),),
        public=True,
    ),
    Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "This document.",
        "site",
        OBJECT,
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics (text exposition format).",
        "site",
        {"type": "string"},
        media_type="text/plain",
    ),
)
"""The routes around the API (served by `app.build_app`), described in the same document."""
