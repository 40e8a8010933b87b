"""The daemon's events as a server-sent event stream (``GET /api/events``).

Every event the daemon publishes on its `EventHub` (the same ones the control socket's
``subscribe`` carries; docs/control-protocol.md lists them) becomes one SSE message: ``event:``
is the event's ``type``, ``data:`` its JSON object, ``id:`` a counter of this stream. The first
message is ``subscribed``; a comment line every `KEEPALIVE_SECONDS` keeps proxies and browsers
from timing out an idle stream. A client that falls behind by more than the hub's queue gets a
``lagged`` message and the stream ends (it reconnects and reads what it needs again:
``/api/status``, the change feed).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import trio

from ..control import EventHub, event_matches

KEEPALIVE_SECONDS = 15.0


def sse_message(event: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE message for ``event`` (its JSON holds no newline, so one ``data:`` line)."""
    kind = str(event.get("type", "message")).replace("\n", " ")
    data = json.dumps(event, separators=(",", ":"), default=str)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


async def sse_stream(
    hub: EventHub,
    *,
    tenant: str | None = None,
    database: str | None = None,
    keepalive: float = KEEPALIVE_SECONDS,
    limit: int | None = None,
) -> AsyncIterator[bytes]:
    """The SSE bytes of the hub's events that match the filter, until the client goes away
    (the server cancels us) or lags. ``limit``: end after that many events (tests, scripts
    that want one event)."""
    async with hub.subscribe() as events:
        yield sse_message({"type": "subscribed"}, 0)
        sent = 0
        while limit is None or sent < limit:
            event: dict[str, Any] | None = None
            with trio.move_on_after(keepalive if keepalive > 0 else math.inf):
                try:
                    event = await events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    yield sse_message({"type": "lagged"})
                    return
            if event is None:
                yield b": keepalive\n\n"
                continue
            if event_matches(event, tenant, database):
                sent += 1
                yield sse_message(event, sent)
