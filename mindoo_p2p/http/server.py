"""The HTTP server of a running daemon: hypercorn's trio worker serving the ASGI app on
127.0.0.1, as one task of the daemon's nursery (cancelled with it).

The port comes from the node config. A default port that is taken (a second node on this
machine) falls back to any free port with a warning (``mindoo http url`` tells which); a port
named in config.toml or on the command line that is taken is a `DaemonError`.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ..errors import MindooError
from .app import build_app
from .auth import LoginTokens, load_or_create_api_key
from .endpoint import HttpEndpoint

if TYPE_CHECKING:
    from ..daemon.node_daemon import NodeDaemon

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_INCOMPLETE_SIZE = 64 * 1024
"""Bytes of request line and headers hypercorn buffers, at most."""
LISTEN_BACKLOG = 100
"""The listen backlog (hypercorn's default; it calls ``listen`` again with its own)."""


class HttpServerError(MindooError):
    """The HTTP API cannot start (its port is taken, ...)."""


def _config(fd: int) -> Config:
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("mindoo_p2p.http.server")
    config.h11_max_incomplete_size = MAX_INCOMPLETE_SIZE
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 30.0
    return config


def bind_socket(port: int, *, explicit: bool) -> socket.socket:
    """A TCP socket listening on 127.0.0.1:``port``; see the module docstring for a taken port.

    It listens before it is returned: with SO_REUSEADDR two sockets can *bind* one port while
    neither listens, so a port another process has bound but not yet listened on is only found
    taken by ``listen`` (two daemons starting at once would otherwise both keep the default
    port, and the second's server fail later inside hypercorn instead of falling back).
    """
    try:
        return _listening_socket(port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or explicit or port == 0:
            raise HttpServerError(
                f"cannot serve the HTTP API on {HOST}:{port}: {exc.strerror} (set another"
                " http.port in config.toml, or http.enabled = false)"
            ) from None
        logger.warning("HTTP port %d is taken: serving the HTTP API on a free port", port)
        return _listening_socket(0)


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_http(daemon: NodeDaemon, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the daemon's HTTP API until cancelled; ``task_status.started()`` once listening,
    with ``daemon.http`` set."""
    port = daemon.config.http_port
    assert port is not None
    api_key = load_or_create_api_key(daemon.node.home)
    logins = LoginTokens()
    app = build_app(daemon, api_key, logins)
    sock = bind_socket(port, explicit=daemon.config.http_port_explicit)
    bound = sock.getsockname()[1]
    config = _config(sock.detach())  # hypercorn owns the socket from here on
    daemon.http = HttpEndpoint(f"http://{HOST}:{bound}", daemon.node.home, logins)
    logger.info("HTTP API and web page on %s ('mindoo http url' opens it)", daemon.http.base_url)
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
