"""Streams of a `PeerHost`: inbound handlers served over `FramedStream`, and the ping exchange."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetStream
from libp2p.host.ping import PING_LENGTH as PING_SIZE

from .framing import FramedStream, TransportError

logger = logging.getLogger(__name__)

StreamHandler = Callable[[FramedStream], Awaitable[None]]
"""Serves one inbound stream. The host closes the stream when the handler returns (and resets
it when the handler raises), so a handler needs no cleanup of its own."""


def framed_handler(
    protocol: str, handler: StreamHandler, *, max_frame_size: int, timeout: float
) -> Callable[[INetStream], Awaitable[None]]:
    """The libp2p stream handler that serves ``handler`` one `FramedStream` per inbound stream:
    closed when the handler returns, reset when it raises or is cancelled. A transport error
    ends the stream quietly (logged at debug); any other exception is logged."""

    async def serve(net_stream: INetStream) -> None:
        stream = FramedStream.over_libp2p(
            net_stream, max_frame_size=max_frame_size, timeout=timeout
        )
        try:
            await handler(stream)
        except TransportError as exc:
            logger.debug("stream %s from %s ended: %s", protocol, stream.remote_peer_id, exc)
            await stream.reset()
        except Exception:
            logger.exception("handler for %s from %s failed", protocol, stream.remote_peer_id)
            await stream.reset()
        else:
            with trio.CancelScope(shield=True):
                await stream.close()
        finally:
            if not stream.is_closed:  # cancelled
                await stream.reset()

    return serve


async def ping_exchange(net_stream: INetStream) -> bool:
    """One libp2p ping on an open ``/ipfs/ping/1.0.0`` stream: send 32 random bytes, read the
    echo, reset the stream. Whether the echo matched. Stream errors propagate; unbounded in
    time (the caller bounds it)."""
    payload = secrets.token_bytes(PING_SIZE)
    try:
        await net_stream.write(payload)
        answer = b""
        while len(answer) < PING_SIZE:
            answer += await net_stream.read(PING_SIZE - len(answer))
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await net_stream.reset()
    return answer == payload


__all__ = ["StreamHandler", "framed_handler", "ping_exchange"]
