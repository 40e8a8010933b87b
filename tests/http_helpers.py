"""Helpers for the HTTP API tests: a daemon serving HTTP on a free loopback port, and an
httpx client that carries its API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
from helpers import LOOPBACK, running_daemon

from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.http.auth import load_or_create_api_key
from mindoo_p2p.node import Node

HTTP_LOOPBACK = replace(LOOPBACK, http_port=0)
"""`LOOPBACK` with the HTTP API on any free port."""


def api_client(daemon: NodeDaemon, *, key: str | None = None, **options: Any) -> httpx.AsyncClient:
    """A client of ``daemon``'s HTTP API with its key (``key`` overrides it; "" sends none)."""
    assert daemon.http_url is not None
    key = load_or_create_api_key(daemon.node.home) if key is None else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=daemon.http_url, headers=headers, timeout=20, **options)


@asynccontextmanager
async def http_daemon(node: Node, **options: Any) -> AsyncIterator[NodeDaemon]:
    """``node``'s daemon with its HTTP API on a free loopback port."""
    async with running_daemon(node, HTTP_LOOPBACK, **options) as daemon:
        yield daemon
