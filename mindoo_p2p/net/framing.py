"""Length-prefixed frames over a byte stream, with a deadline on every operation.

Wire format: each frame is a u32 big-endian payload length followed by the payload. A frame
longer than the stream's ``max_frame_size`` is a protocol error: the receiver resets the stream
and raises :class:`FrameTooLarge` without reading (or buffering) the payload.

`FramedStream` runs over anything that implements :class:`ByteStream`:
- :class:`Libp2pByteStream` adapts a py-libp2p stream. py-libp2p's ``read(n)`` returns only
  what is buffered (possibly fewer than ``n`` bytes) and signals EOF by raising, so framing keeps
  its own bounded receive buffer and reads until a whole frame is there.
- :class:`TrioByteStream` adapts any trio half-closeable stream;
  :func:`memory_framed_stream_pair` builds two connected in-memory `FramedStream` objects for
  tests that need no sockets.

Error contract (every error derives from :class:`TransportError`):
- :class:`StreamTimeout`: an operation did not finish within ``timeout`` seconds. An operation
  that times out (or is cancelled) after it started reading or writing resets the stream: part
  of a frame may be on the wire, and py-libp2p can lose bytes when a read is interrupted.
- :class:`StreamClosed`: end of stream, reset, or a closed or broken connection, or any use
  after `close()` / `reset()`.
- :class:`FrameTooLarge`: an incoming frame header announced more than ``max_frame_size``
  (the stream is reset), or the caller tried to send such a frame (nothing is sent).

Readers must keep reading: py-libp2p's Yamux resets a stream whose writer waits more than about
5 s for window credit. A reader that frees anything hands it back at once to a writer that has
none left (`_yamux_window`), so only a reader that stops reading for 5 s behind a full window
loses its stream.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import Protocol

import trio
import trio.testing
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF

from ..errors import MindooError

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_SIZE = 256 * 1024 + 1024
"""256 KiB of payload plus 1 KiB of headroom for message headers."""
DEFAULT_TIMEOUT = 30.0
"""Seconds any single stream operation may take."""
FRAME_HEADER_SIZE = 4
ABSOLUTE_MAX_FRAME_SIZE = 64 * 1024 * 1024
"""No configuration may raise the frame limit above this."""
_READ_CHUNK = 64 * 1024
_RESET_TIMEOUT = 5.0
_LIBP2P_STREAM_ERRORS = (
    BaseLibp2pError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)
_HEADER = struct.Struct(">I")


class TransportError(MindooError):
    """A stream or connection failed; the other side may be gone or misbehaving."""


class StreamClosed(TransportError):
    """The stream ended (EOF), was reset, or its connection broke."""


class StreamTimeout(TransportError):
    """A stream operation did not complete within its deadline."""


class FrameTooLarge(TransportError):
    """A frame exceeds the stream's maximum frame size: one the peer announced
    (``incoming``, the peer's fault) or one we were about to send (``incoming`` false: ours,
    e.g. a frame limit configured below what the protocol sends; nothing was sent)."""

    def __init__(self, message: str, *, incoming: bool = True) -> None:
        super().__init__(message)
        self.incoming = incoming


class ByteStream(Protocol):
    """The raw byte pipe under a `FramedStream`.

    Implementations translate their own failures into :class:`StreamClosed`; they never
    impose deadlines (`FramedStream` does).
    """

    async def receive_some(self, max_bytes: int) -> bytes:
        """Between 1 and ``max_bytes`` bytes; ``b""`` only at a clean end of stream."""
        ...

    async def send_all(self, data: bytes) -> None:
        """Send every byte of ``data`` or raise :class:`StreamClosed`."""
        ...

    async def send_eof(self) -> None:
        """Half-close: the peer reads to the end of what was sent, then sees EOF."""
        ...

    async def reset(self) -> None:
        """Abort both directions at once. Never raises."""
        ...


class Libp2pByteStream:
    """`ByteStream` over a py-libp2p stream (`INetStream`)."""

    def __init__(self, net_stream: INetStream) -> None:
        self._stream = net_stream

    @property
    def net_stream(self) -> INetStream:
        return self._stream

    async def receive_some(self, max_bytes: int) -> bytes:
        try:
            data = await self._stream.read(max_bytes)
        except StreamEOF:
            return b""
        except _LIBP2P_STREAM_ERRORS as exc:
            raise StreamClosed(f"stream failed while reading: {exc!r}") from exc
        return bytes(data)

    async def send_all(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except _LIBP2P_STREAM_ERRORS as exc:
            raise StreamClosed(f"stream failed while writing: {exc!r}") from exc

    async def send_eof(self) -> None:
        try:
            # NetStream.close() half-closes a Yamux stream (FIN) and keeps the read side open.
            await self._stream.close()
        except _LIBP2P_STREAM_ERRORS as exc:
            raise StreamClosed(f"stream failed while closing: {exc!r}") from exc

    async def reset(self) -> None:
        try:
            await self._stream.reset()
        except _LIBP2P_STREAM_ERRORS:
            logger.debug("reset of an already broken libp2p stream", exc_info=True)


class TrioByteStream:
    """`ByteStream` over a trio half-closeable stream (sockets, in-memory streams)."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self._stream = stream

    async def receive_some(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise StreamClosed(f"stream failed while reading: {exc!r}") from exc

    async def send_all(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise StreamClosed(f"stream failed while writing: {exc!r}") from exc

    async def send_eof(self) -> None:
        try:
            await self._stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise StreamClosed(f"stream failed while closing: {exc!r}") from exc

    async def reset(self) -> None:
        await trio.aclose_forcefully(self._stream)


class FramedStream:
    """Frames over one bidirectional stream; see the module docstring for the contract.

    One task may send while another receives. Concurrent senders are serialised (frames never
    interleave); concurrent receivers are served one frame at a time, in turn.
    """

    def __init__(
        self,
        stream: ByteStream,
        remote_peer_id: str,
        *,
        protocol: str = "",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not 0 < max_frame_size <= ABSOLUTE_MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size must be in 1..{ABSOLUTE_MAX_FRAME_SIZE}")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._stream = stream
        self._remote_peer_id = remote_peer_id
        self._protocol = protocol
        self._max_frame_size = max_frame_size
        self._timeout = timeout
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self._receive_lock = trio.Lock()
        self._eof_sent = False
        self._eof_received = False
        self._closed = False

    @classmethod
    def over_libp2p(
        cls,
        net_stream: INetStream,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> FramedStream:
        """Wrap a negotiated py-libp2p stream; the remote peer id comes from its connection."""
        remote = net_stream.muxed_conn.peer_id.to_base58()
        protocol = net_stream.get_protocol() or ""
        return cls(
            Libp2pByteStream(net_stream),
            remote,
            protocol=str(protocol),
            max_frame_size=max_frame_size,
            timeout=timeout,
        )

    @property
    def remote_peer_id(self) -> str:
        """The authenticated peer id (base58) at the other end of the stream."""
        return self._remote_peer_id

    @property
    def protocol(self) -> str:
        """The protocol id negotiated for this stream ("" when not negotiated)."""
        return self._protocol

    @property
    def max_frame_size(self) -> int:
        return self._max_frame_size

    @property
    def timeout(self) -> float:
        """Seconds each operation may take; settable (e.g. longer for an idle subscription)."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError("timeout must be positive")
        self._timeout = seconds

    @property
    def is_closed(self) -> bool:
        """True after `close()` or `reset()` (or an error that reset the stream)."""
        return self._closed

    async def send_frame(self, data: bytes) -> None:
        """Send one frame within the deadline.

        Raises :class:`FrameTooLarge` (nothing sent) if ``data`` exceeds the frame limit,
        :class:`StreamTimeout` or :class:`StreamClosed`. A send that times out or is cancelled
        after it started writing resets the stream (part of a frame may be on the wire).
        """
        size = len(data)
        if size > self._max_frame_size:
            raise FrameTooLarge(
                f"frame of {size} bytes exceeds the limit {self._max_frame_size}", incoming=False
            )
        await self._send_raw(_HEADER.pack(size) + bytes(data))

    async def _send_raw(self, frame: bytes) -> None:
        """Write ``frame`` (whole frames, headers included) within the deadline."""
        in_io = False
        try:
            with trio.move_on_after(self._timeout):
                async with self._send_lock:
                    self._check_can_send()
                    in_io = True
                    try:
                        await self._stream.send_all(frame)
                    except StreamClosed:
                        in_io = False
                        await self._abort()
                        raise
                    in_io = False
                    return
        except trio.Cancelled:
            if in_io:
                await self._abort()
            raise
        if in_io:
            await self._abort()
        raise StreamTimeout(f"sending {len(frame)} bytes took longer than {self._timeout} s")

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        """Send several frames in one write (one transport message instead of one per frame:
        the bytes on the wire are those of `send_frame` called for each in turn). Same
        errors and deadline as `send_frame`; a frame over the limit fails the whole call
        before anything is sent."""
        for data in frames:
            if len(data) > self._max_frame_size:
                raise FrameTooLarge(
                    f"frame of {len(data)} bytes exceeds the limit {self._max_frame_size}",
                    incoming=False,
                )
        await self._send_raw(b"".join(_HEADER.pack(len(data)) + bytes(data) for data in frames))

    async def receive_frame(self) -> bytes:
        """The next frame's payload, within the deadline.

        Raises :class:`StreamClosed` at the end of the stream (also when it ends inside a
        frame), :class:`FrameTooLarge` (stream reset) or :class:`StreamTimeout`. A receive that
        times out or is cancelled while reading resets the stream: py-libp2p may drop bytes it
        already took from its buffer when a read is interrupted, so framing cannot resume.
        """
        in_io = False
        try:
            with trio.move_on_after(self._timeout):
                async with self._receive_lock:
                    in_io = True
                    payload = await self._receive_frame_locked()
                    in_io = False
                    return payload
        except trio.Cancelled:
            if in_io:
                await self._abort()
            raise
        if in_io:
            await self._abort()
        raise StreamTimeout(f"no complete frame within {self._timeout} s")

    async def close(self) -> None:
        """Finish the stream gracefully: the peer receives every frame sent, then EOF.

        Idempotent. After `close()`, sending and receiving raise :class:`StreamClosed`. If the
        half-close cannot be delivered within the deadline the stream is reset instead.
        """
        if self._closed:
            return
        self._closed = True
        if self._eof_sent:
            return
        self._eof_sent = True
        with trio.move_on_after(self._timeout) as deadline:
            try:
                async with self._send_lock:  # let a frame being sent finish first
                    await self._stream.send_eof()
            except StreamClosed:
                return
        if deadline.cancelled_caught:
            await self._abort()

    async def reset(self) -> None:
        """Abort both directions now; the peer's pending operations raise. Never raises."""
        await self._abort()

    async def __aenter__(self) -> FramedStream:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.reset()

    def _check_can_send(self) -> None:
        if self._closed:
            raise StreamClosed("the stream is closed")
        if self._eof_sent:
            raise StreamClosed("the stream was half-closed for sending")

    async def _abort(self) -> None:
        self._closed = True
        self._buffer.clear()
        with trio.CancelScope(shield=True), trio.move_on_after(_RESET_TIMEOUT):
            await self._stream.reset()

    async def _receive_frame_locked(self) -> bytes:
        if self._closed:
            raise StreamClosed("the stream is closed")
        await self._fill(FRAME_HEADER_SIZE)
        (size,) = _HEADER.unpack_from(self._buffer)
        if size > self._max_frame_size:
            await self._abort()
            raise FrameTooLarge(
                f"peer announced a {size}-byte frame, over the limit {self._max_frame_size}"
            )
        total = FRAME_HEADER_SIZE + size
        await self._fill(total)
        payload = bytes(self._buffer[FRAME_HEADER_SIZE:total])
        del self._buffer[:total]
        return payload

    async def _fill(self, needed: int) -> None:
        """Read until at least ``needed`` bytes are buffered."""
        while len(self._buffer) < needed:
            if self._eof_received:
                raise StreamClosed(self._eof_message())
            # Read ahead up to one chunk: a small frame then costs one read, not two. The
            # buffer stays under needed + _READ_CHUNK bytes.
            want = max(needed - len(self._buffer), _READ_CHUNK)
            chunk = await self._stream.receive_some(want)
            if not chunk:
                self._eof_received = True
                raise StreamClosed(self._eof_message())
            if len(chunk) > want:
                await self._abort()
                raise StreamClosed(f"the byte stream returned {len(chunk)} bytes for {want}")
            self._buffer += chunk

    def _eof_message(self) -> str:
        if self._buffer:
            return f"the stream ended inside a frame ({len(self._buffer)} bytes buffered)"
        return "the peer closed the stream"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"FramedStream(remote={self._remote_peer_id}, protocol={self._protocol!r}, {state})"


def memory_framed_stream_pair(
    left_peer_id: str = "memory-left",
    right_peer_id: str = "memory-right",
    *,
    protocol: str = "",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[FramedStream, FramedStream]:
    """Two connected in-memory `FramedStream` objects (left, right), for tests.

    ``left.remote_peer_id`` is ``right_peer_id`` and the other way round. Built on
    `trio.testing.memory_stream_pair`, whose buffers are unbounded: test use only.
    """
    left_raw, right_raw = trio.testing.memory_stream_pair()
    left = FramedStream(
        TrioByteStream(left_raw),
        right_peer_id,
        protocol=protocol,
        max_frame_size=max_frame_size,
        timeout=timeout,
    )
    right = FramedStream(
        TrioByteStream(right_raw),
        left_peer_id,
        protocol=protocol,
        max_frame_size=max_frame_size,
        timeout=timeout,
    )
    return left, right
