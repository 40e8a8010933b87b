"""The local control API of a running daemon: JSON lines over a Unix socket in the node home.

Only the node's owner can reach it: the socket is created with mode 0600 inside the 0700 home
directory, so file permissions are the authentication (no token to leak). Protocol: the client
writes one JSON object per line, ``{"id": N, "method": "...", "params": {...}}``; the daemon
answers each with ``{"id": N, "result": ...}`` or ``{"id": N, "error": {"type", "message"}}``.
``subscribe`` (optional params ``tenant``, a name or id, and ``database``) turns the
connection into an event stream: the daemon then writes one ``{"event": {...}}`` line per
event until the client disconnects (a client that falls behind by more than the queue size is
told ``{"event": {"type": "lagged"}}`` and disconnected).

Other streaming methods (``streams``: ``view.watch``) answer ``{"id": N, "result": ...}`` once
the stream is open (or an error, as any method), then write one ``{"event": {...}}`` line per
item until the stream ends, the daemon stops or the client disconnects (noticed at once: the
connection is read while the stream waits). An item whose line would exceed `MAX_LINE` is
replaced by ``{"event": {"type": "resync"}}`` (read the whole again).

Every line is bounded (`MAX_LINE`), the number of clients is bounded, and a client that sends
garbage gets an error line and is disconnected.

Failure containment: a method or a stream that fails unexpectedly (any `Exception` that is not a
`MindooError` or a bad parameter: a raw database error, a RecursionError, a bug) never reaches
the daemon's nursery. It is logged at error level with its traceback, and its client gets
``{"id": N, "error": {"type": "internal_error", "message": "METHOD failed: TYPE: TEXT"}}``
(one line), or, once a stream is answered, an ``{"event": {"type": "error", ...}}`` item and
the stream's end. Other clients and the daemon go on. Cancellation and other BaseExceptions
(KeyboardInterrupt, SystemExit) pass through.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import trio

from .errors import MindooError

logger = logging.getLogger(__name__)

CONTROL_SOCKET = "control.sock"
MAX_SOCKET_PATH = 100
MAX_LINE = 16 * 1024 * 1024
MAX_CLIENTS = 64
EVENT_QUEUE = 1024
RECENT_EVENTS = 200
"""Events kept for late readers (the web page's "recent events"), newest last."""

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
StreamOpener = Callable[
    [dict[str, Any]], AbstractAsyncContextManager[tuple[Any, AsyncIterator[dict[str, Any]]]]
]
"""Opens a streaming method for its params: (the result to answer, the items to stream).
Raising while opening answers an error, as a `Handler` does."""


class ControlError(MindooError):
    """The daemon answered a control request with an error, or could not be reached."""


class EventHub:
    """Fan-out of daemon events to subscribers, each with a bounded queue."""

    def __init__(self, queue_size: int = EVENT_QUEUE, recent: int = RECENT_EVENTS) -> None:
        self._queue_size = queue_size
        self._subscribers: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)

    def recent(self) -> list[dict[str, Any]]:
        """The last events published (at most `RECENT_EVENTS`), oldest first."""
        return list(self._recent)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every subscriber; never blocks. Laggards are dropped."""
        self._recent.append(event)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self._subscribers.discard(channel)
                channel.close()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._subscribers.discard(channel)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](self._queue_size)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()


def event_matches(event: dict[str, Any], tenant: object, database: object) -> bool:
    """Whether ``event`` passes a subscriber's filter: ``tenant`` (a name or id) and
    ``database``; events about no tenant or database (peers, ...) always pass."""
    event_tenant = event.get("tenant")
    if (
        tenant
        and event_tenant is not None
        and tenant not in (event_tenant, event.get("tenant_name"))
    ):
        return False
    return not (database and event.get("database") not in (database, None))


class _LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> bytes | None:
        """The next line without its newline; None at EOF. ControlError when too long."""
        while True:
            index = self._buffer.find(b"\n")
            if index >= 0:
                line = bytes(self._buffer[:index])
                del self._buffer[: index + 1]
                return line
            if len(self._buffer) > MAX_LINE:
                raise ControlError(f"control request longer than {MAX_LINE} bytes")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=_json_default).encode() + b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class ControlServer:
    """Serves the control socket; `handlers` map method names to async callables."""

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        events: EventHub,
        streams: dict[str, StreamOpener] | None = None,
    ) -> None:
        self.path = path
        self._handlers = handlers
        self._events = events
        self._streams = streams or {}
        self._clients = trio.CapacityLimiter(MAX_CLIENTS)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with suppress(FileNotFoundError):
            self.path.unlink()  # the daemon lock guarantees no live daemon owns it
        bind_path = self.path
        short_dir: Path | None = None
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            # Unix socket paths are limited to ~107 bytes: bind in a private short directory
            # and leave a symlink in the home (clients resolve it).
            short_dir = Path(tempfile.mkdtemp(prefix="mindoo-"))
            bind_path = short_dir / "control.sock"
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(bind_path))
        finally:
            os.umask(old_umask)
        os.chmod(bind_path, 0o600)
        if short_dir is not None:
            os.symlink(bind_path, self.path)
        sock.listen(MAX_CLIENTS)
        listener = trio.SocketListener(sock)
        try:
            await trio.serve_listeners(self._serve_client, [listener], task_status=task_status)
        finally:
            with suppress(FileNotFoundError):
                self.path.unlink()
            if short_dir is not None:
                with suppress(OSError):
                    bind_path.unlink()
                    short_dir.rmdir()

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        if self._clients.available_tokens == 0:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(
                    _encode({"error": {"type": "busy", "message": "too many clients"}})
                )
            await stream.aclose()
            return
        async with self._clients, stream:
            reader = _LineReader(stream)
            try:
                while True:
                    line = await reader.readline()
                    if line is None:
                        return
                    if not await self._answer(stream, line, reader):
                        return
            except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except Exception as exc:  # e.g. a result that is not JSON: this client only
                if not _client_gone(exc):
                    logger.error("control client dropped after an error", exc_info=exc)

    async def _answer(self, stream: trio.SocketStream, line: bytes, reader: _LineReader) -> bool:
        """Answer one request; False to close the connection."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                raise ValueError("a request is an object with a string 'method'")
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError("'params' must be an object")
        except (ValueError, UnicodeDecodeError) as exc:
            await stream.send_all(_encode({"error": {"type": "bad_request", "message": str(exc)}}))
            return False
        request_id = request.get("id")
        method = request["method"]
        if method == "subscribe":
            await self._stream_events(stream, params)
            return False
        opener = self._streams.get(method)
        if opener is not None:
            await self._stream_items(stream, reader, request_id, method, opener, params)
            return False
        handler = self._handlers.get(method)
        if handler is None:
            reply = {"id": request_id, "error": {"type": "unknown_method", "message": method}}
        else:
            try:
                reply = {"id": request_id, "result": await handler(params)}
            except MindooError as exc:
                reply = {
                    "id": request_id,
                    "error": {"type": type(exc).__name__, "message": str(exc)},
                }
            except (ValueError, TypeError, KeyError) as exc:
                reply = _bad_request(request_id, exc)
            except Exception as exc:  # contained: see the module docstring
                reply = {"id": request_id, "error": _internal_error(method, exc)}
        await stream.send_all(_encode(reply))
        return True

    async def _stream_items(
        self,
        stream: trio.SocketStream,
        reader: _LineReader,
        request_id: Any,
        method: str,
        opener: StreamOpener,
        params: dict[str, Any],
    ) -> None:
        """Answer a streaming method, then write its items until it ends or the client goes
        (anything the client sends meanwhile is read and ignored; its end stops the stream)."""
        try:
            async with opener(params) as (result, items):
                await stream.send_all(_encode({"id": request_id, "result": result}))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_until_client_leaves, reader, nursery.cancel_scope)
                    await _send_items(stream, items, method)
                    nursery.cancel_scope.cancel()
        except MindooError as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            await stream.send_all(_encode({"id": request_id, "error": error}))
        except (ValueError, TypeError, KeyError) as exc:
            await stream.send_all(_encode(_bad_request(request_id, exc)))
        except Exception as exc:  # contained: see the module docstring
            if _client_gone(exc):
                return
            reply = {"id": request_id, "error": _internal_error(method, exc)}
            await stream.send_all(_encode(reply))

    async def _stream_events(self, stream: trio.SocketStream, params: dict[str, Any]) -> None:
        tenant = params.get("tenant")
        database = params.get("database")
        async with self._events.subscribe() as events:
            await stream.send_all(_encode({"event": {"type": "subscribed"}}))
            async for event in events:
                if event_matches(event, tenant, database):
                    await stream.send_all(_encode({"event": event}))
            # The hub closed our queue: we fell behind.
            await stream.send_all(_encode({"event": {"type": "lagged"}}))


async def _until_client_leaves(reader: _LineReader, scope: trio.CancelScope) -> None:
    """Read (and ignore) what a streaming client sends; cancel ``scope`` when it goes."""
    with suppress(ControlError, trio.BrokenResourceError, trio.ClosedResourceError):
        while await reader.readline() is not None:
            pass
    scope.cancel()


async def _send_items(
    stream: trio.SocketStream, items: AsyncIterator[dict[str, Any]], method: str
) -> None:
    """Write each item as an event line until ``items`` ends (or fails: an ``error`` event,
    logged when unexpected) or the client is gone."""
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        try:
            async for item in items:
                line = _encode({"event": item})
                if len(line) > MAX_LINE:
                    line = _encode({"event": {"type": "resync"}})
                await stream.send_all(line)
        except MindooError as exc:
            error = {"type": "error", "error": type(exc).__name__, "message": str(exc)}
            await stream.send_all(_encode({"event": error}))
        except Exception as exc:  # contained: see the module docstring
            if _client_gone(exc):
                return
            internal = _internal_error(method, exc)
            error = {"type": "error", "error": internal["type"], "message": internal["message"]}
            await stream.send_all(_encode({"event": error}))


def _client_gone(exc: BaseException) -> bool:
    """Whether ``exc`` only says the client went away (nothing to log or answer)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_client_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError))


def _internal_error(method: str, exc: Exception) -> dict[str, str]:
    """Log an unexpected failure of ``method`` with its traceback; its one-line error."""
    logger.error("control method %s failed unexpectedly", method, exc_info=exc)
    text = " ".join(str(exc).split())[:500]
    message = f"{method} failed: {type(exc).__name__}" + (f": {text}" if text else "")
    return {"type": "internal_error", "message": message}


def _bad_request(request_id: Any, exc: Exception) -> dict[str, Any]:
    return {"id": request_id, "error": {"type": "bad_request", "message": str(exc)}}


class ControlClient:
    """A blocking client for the CLI and scripts."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.path.realpath(self.path))
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot reach the daemon at {self.path}: {exc.strerror}") from None
        return sock

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self._connect() as sock:
            sock.sendall(_encode({"id": 1, "method": method, "params": params or {}}))
            reply = _read_json_line(sock)
        if reply is None:
            raise ControlError("the daemon closed the connection without answering")
        if "error" in reply:
            error = reply["error"]
            raise ControlError(f"{error.get('message')}")
        return reply.get("result")

    def events(self, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield daemon events until the daemon closes the stream."""
        with self._connect() as sock:
            sock.settimeout(None)
            sock.sendall(_encode({"id": 1, "method": "subscribe", "params": params or {}}))
            buffer = bytearray()
            while True:
                line = _read_line(sock, buffer)
                if line is None:
                    return
                message = json.loads(line)
                if "event" in message:
                    yield message["event"]

    def stream(self, method: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Call a streaming method (``view.watch``): yields its result first, then each item,
        until the daemon ends the stream. `ControlError` when it answers an error."""
        with self._connect() as sock:
            sock.settimeout(None)
            sock.sendall(_encode({"id": 1, "method": method, "params": params or {}}))
            buffer = bytearray()
            line = _read_line(sock, buffer)
            if line is None:
                raise ControlError("the daemon closed the connection without answering")
            reply = _decode_reply(line)
            if "error" in reply:
                raise ControlError(f"{reply['error'].get('message')}")
            yield reply.get("result")
            while (line := _read_line(sock, buffer)) is not None:
                message = _decode_reply(line)
                if "event" in message:
                    yield message["event"]


def _decode_reply(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"the daemon sent invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ControlError("the daemon sent an unexpected reply")
    return value


def _read_line(sock: socket.socket, buffer: bytearray) -> bytes | None:
    while True:
        index = buffer.find(b"\n")
        if index >= 0:
            line = bytes(buffer[:index])
            del buffer[: index + 1]
            return line
        if len(buffer) > MAX_LINE:
            raise ControlError("daemon reply too long")
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk


def _read_json_line(sock: socket.socket) -> dict[str, Any] | None:
    line = _read_line(sock, bytearray())
    return None if line is None else _decode_reply(line)


def control_socket(home: Path) -> Path:
    return home / CONTROL_SOCKET


def daemon_running(home: Path) -> bool:
    """True when a daemon answers on the home's control socket."""
    path = control_socket(home)
    if not path.exists():
        return False
    try:
        ControlClient(path, timeout=5).call("ping")
    except (ControlError, OSError):
        return False
    return True
