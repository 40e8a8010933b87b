"""The ASGI app of the local HTTP API: routes made from `OPERATIONS`, the guard in front of
them, errors as JSON, the web page, ``/openapi.json`` and ``/metrics``.

Every response to a failed request is ``{"error": {"type", "message"}}`` with its status:

=====  ===================================================================================
400    malformed request (bad JSON, a bad name or id, a patch that does not apply: 422)
401    no API key or a wrong one (``WWW-Authenticate: Bearer``)
403    a Host header that is not loopback (DNS rebinding), a cross-site Origin on a change,
       or an operation this node's role forbids (a mirror holds no document keys)
404    no such tenant, database, document or path; 410: the document was deleted
413    body over `MAX_BODY`
=====  ===================================================================================

Public (no key): the web page and its own files, and ``/login`` (which needs a one-time
token). Every route but the page's script and style is an `Operation` (`api.OPERATIONS`, the
API; `api.SITE`, the page, login, OpenAPI and metrics), described in ``/openapi.json``.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import (
    DocumentDeletedError,
    InvalidNameError,
    InvalidPathError,
    MindooError,
    MissingKeyError,
    NotFoundError,
)
from ..restore_guard import ChainHeadUnknownError
from .api import OPERATIONS, SITE, HttpApi
from .auth import (
    API_KEY_FILE,
    COOKIE,
    LoginTokens,
    bearer_token,
    host_is_loopback,
    key_matches,
    origin_allowed,
)
from .json_patch import JsonPatchError
from .metrics import CONTENT_TYPE
from .openapi import openapi_document
from .request_body import BodyTooLarge

if TYPE_CHECKING:
    from ..daemon.node_daemon import NodeDaemon

logger = logging.getLogger(__name__)

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
PAGE_ASSETS = ("/app.js", "/style.css")
"""The page's own script and style: public, and not API operations."""
PUBLIC_PATHS = frozenset(PAGE_ASSETS) | {op.path for op in (*OPERATIONS, *SITE) if op.public}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


class Guard:
    """ASGI middleware: loopback Host, the API key (bearer or cookie), same-origin changes;
    see `mindoo_p2p.http.auth`."""

    def __init__(self, app: ASGIApp, api_key: str, key_file: str) -> None:
        self._app = app
        self._key = api_key
        self._key_file = key_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host")
        if not host_is_loopback(host):
            return error(
                403,
                "forbidden_host",
                f"this API answers only requests to 127.0.0.1 or localhost, not {host!r}",
            )
        if not origin_allowed(request.method, request.headers.get("origin"), host):
            return error(403, "forbidden_origin", "cross-site requests may not change anything")
        if request.url.path in PUBLIC_PATHS:
            return None
        given = bearer_token(request.headers) or request.cookies.get(COOKIE)
        challenge = {"WWW-Authenticate": "Bearer"}
        if given is None:
            return error(
                401,
                "unauthorized",
                "this API needs the node's API key: send 'Authorization: Bearer KEY' (the key"
                f" is in {self._key_file}), or open the link 'mindoo http url' prints",
                challenge,
            )
        if not key_matches(given, self._key):
            return error(401, "unauthorized", "wrong API key", challenge)
        return None


def _error_of(exc: Exception) -> Response:
    """The JSON error response of an exception raised by a handler."""
    message = str(exc)
    if isinstance(exc, HTTPException):
        return error(exc.status_code, "http", exc.detail or "request failed")
    if isinstance(exc, BodyTooLarge):
        return error(413, "too_large", message)
    if isinstance(exc, DocumentDeletedError):
        return error(410, "deleted", message)
    if isinstance(exc, NotFoundError):
        return error(404, "not_found", message)
    if isinstance(exc, MissingKeyError):
        return error(403, "missing_key", message)
    if isinstance(exc, JsonPatchError):
        return error(422, "patch_failed", message)
    if isinstance(exc, ChainHeadUnknownError):
        return error(409, "restored_not_synced", message)
    if isinstance(exc, InvalidNameError | InvalidPathError | MindooError | ValueError):
        return error(400, "bad_request", message)
    logger.exception("HTTP API request failed")
    return error(500, "internal", f"{type(exc).__name__}: {message}")


def build_app(daemon: NodeDaemon, api_key: str, logins: LoginTokens) -> ASGIApp:
    """The daemon's ASGI app (see the module docstring)."""
    api = HttpApi(daemon)
    spec = openapi_document((*OPERATIONS, *SITE))

    async def page_file(request: Request) -> Response:
        name, media_type = STATIC_FILES[request.url.path]
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    async def login(request: Request) -> Response:
        if not logins.redeem(request.query_params.get("token")):
            return error(
                401,
                "login_expired",
                "this login link was used already or has expired: run 'mindoo http url' for a"
                " new one",
            )
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, api_key, httponly=True, samesite="strict", path="/")
        return response

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def metrics(request: Request) -> Response:
        return Response(daemon.metrics.exposition(), media_type=CONTENT_TYPE)

    site = {"page": page_file, "login": login, "openapi": openapi, "metrics": metrics}
    routes = [Route(path, page_file, methods=["GET"]) for path in PAGE_ASSETS]
    routes += [
        Route(op.path, site[op.handler], methods=[op.method], name=op.operation_id) for op in SITE
    ]
    routes += [
        Route(op.path, getattr(api, op.handler), methods=[op.method], name=op.operation_id)
        for op in OPERATIONS
    ]

    async def on_error(request: Request, exc: Exception) -> Response:
        return _error_of(exc)

    handlers: dict[Any, Any] = {HTTPException: on_error, MindooError: on_error}
    handlers[ValueError] = on_error
    handlers[Exception] = on_error  # a 500 with a JSON body (the error is logged)
    app = Starlette(routes=routes, exception_handlers=handlers)
    return Guard(app, api_key, str(daemon.node.home / API_KEY_FILE))
