"""Request bodies, bounded: at most `MAX_BODY` bytes are read, whatever the client announces."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ..errors import MindooError

MAX_BODY = 4 * 1024 * 1024


class BodyTooLarge(MindooError):
    """A request body over `MAX_BODY` bytes (HTTP 413)."""


class BadBody(MindooError, ValueError):
    """A request body that is not the JSON it should be (HTTP 400)."""


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request's body; `BodyTooLarge` as soon as it passes ``limit`` bytes (or announces
    it will, by Content-Length)."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise BodyTooLarge(f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the request body is larger than {limit} bytes")
    return bytes(body)


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    """The request's body as JSON; `BadBody` naming the problem when it is not."""
    raw = await read_body(request, limit)
    if not raw:
        raise BadBody("the request needs a JSON body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"the request body is not valid JSON: {exc}") from None
