"""``view.watch`` on the control socket: a view's changes, streamed (issue 11, "live").

`open_view_watch` is a `control.StreamOpener`: for ``{"tenant": NAME_OR_ID, "view": NAME}`` it
answers ``{"tenant", "view"}`` once the watch is set up (an unknown tenant or view answers an
error instead), then yields one ``view_change`` item per change of the view (`ViewChange`:
``added``, ``removed``, ``changed`` rows and changed category ``totals``, with ``tenant`` and
``view``). Every reading of the view runs in a worker thread holding the node (`NodeAccess.run`),
so a large catch-up of the index never stalls the event loop and never overlaps another use of
the node. The stream ends when the client disconnects or the daemon stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ..control import StreamOpener
from ..index import ViewWatch, watch_view_through
from ..index.watch import Snapshot
from .node_access import NodeAccess

VIEW_CHANGE = "view_change"


@asynccontextmanager
async def open_view_watch(
    access: NodeAccess, params: dict[str, Any]
) -> AsyncIterator[tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]]:
    """Set up the watch of ``params``' view; (the answer, its changes). ValueError for missing
    or malformed params; the library's error for an unknown tenant or view."""
    tenant, view = params.get("tenant"), params.get("view")
    if not isinstance(tenant, str) or not isinstance(view, str):
        raise ValueError("view.watch needs 'tenant' (a name or id) and 'view' strings")
    reader = await access.run(lambda node: node.views.reader(node.tenant(tenant), view))

    async def read_through(read: Callable[[], Snapshot]) -> Snapshot:
        return await access.run(lambda _node: read())

    watch = await watch_view_through(access.node, reader, read_through)
    async with watch:
        yield {"tenant": tenant, "view": view}, _changes(watch, tenant, view)


async def _changes(watch: ViewWatch, tenant: str, view: str) -> AsyncIterator[dict[str, Any]]:
    async for change in watch:
        yield {"type": VIEW_CHANGE, "tenant": tenant, "view": view, **change.to_dict()}


def view_streams(access: NodeAccess) -> dict[str, StreamOpener]:
    """The control socket's streaming methods backed by views."""

    def view_watch(
        params: dict[str, Any],
    ) -> AbstractAsyncContextManager[tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]]:
        return open_view_watch(access, params)

    return {"view.watch": view_watch}
