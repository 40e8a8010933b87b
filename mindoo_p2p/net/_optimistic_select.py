"""Opening a stream without waiting for protocol negotiation (multistream-select, optimistic).

py-libp2p's ``new_stream`` negotiates the protocol of a new stream in lock step:
multistream-select 1.0 sends its header, waits for the listener's, sends the protocol id,
waits for the listener's echo, and only then hands the stream over: two round trips before
the first frame, a third of an idle sync session between two daemons (perf-idle).

The listener's side of multistream-select reads our messages one by one from the stream's
buffer, so they may all leave at once, with the first frame behind them (go-libp2p's "lazy"
negotiation does the same): `OptimisticSelect` wraps the raw byte stream of a new, not yet
negotiated stream, sends ``header, protocol`` in front of the first bytes written (one
write), and before the first bytes are read checks that the listener answered exactly
``header, protocol`` (the same two messages: a listener echoes the protocol it accepts). Any
other answer (``na``: the listener does not serve the protocol; anything malformed) raises
`StreamOpenError` as soon as the first differing byte arrives, and so does a stream that ends
or is reset before the answer; bytes after the answer are the protocol's own. What the
listener reads before it accepts is bounded by its own negotiation; what we read here is
bounded by the answer's fixed length.

The cost of optimism is where a refusal shows: at the first read instead of in
``open_stream``, and the listener of a protocol it does not serve gets our first bytes as a
(malformed) second proposal and resets the stream. Use it only for a protocol the peer is
expected to serve (the sync protocol, which every version of this node serves).
"""

from __future__ import annotations

from libp2p.utils.varint import encode_delim

from .framing import ByteStream, StreamClosed
from .host_errors import StreamOpenError

MULTISTREAM_HEADER = "/multistream/1.0.0"
"""The multistream-select version both sides announce first."""


def proposal(protocol: str) -> bytes:
    """The multistream-select messages that propose ``protocol``: the header, then the id
    (each a varint-prefixed, newline-terminated string). A listener that accepts answers with
    the same bytes."""
    if not protocol or "\n" in protocol:
        raise ValueError(f"not a protocol id: {protocol!r}")
    return encode_delim(MULTISTREAM_HEADER.encode()) + encode_delim(protocol.encode())


class OptimisticSelect:
    """A `ByteStream` that negotiates ``protocol`` on ``inner`` (a new stream) without a
    round trip of its own; see the module docstring."""

    def __init__(self, inner: ByteStream, protocol: str) -> None:
        self._inner = inner
        self._protocol = protocol
        self._unsent = proposal(protocol)
        self._answer = proposal(protocol)
        self._answered = 0
        """How many bytes of the expected answer arrived (and matched) so far."""

    @property
    def negotiated(self) -> bool:
        """Whether the listener's acceptance has been read."""
        return self._answered == len(self._answer)

    async def send_all(self, data: bytes) -> None:
        if self._unsent:
            data, self._unsent = self._unsent + data, b""
        await self._inner.send_all(data)

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._unsent:  # a reader first: the proposal must still go out
            await self.send_all(b"")
        while not self.negotiated:
            await self._read_answer()
        return await self._inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        if self._unsent:
            await self.send_all(b"")
        await self._inner.send_eof()

    async def reset(self) -> None:
        await self._inner.reset()

    async def _read_answer(self) -> None:
        expected = self._answer[self._answered :]
        try:
            chunk = await self._inner.receive_some(len(expected))
        except StreamClosed as exc:
            # A listener that refuses resets the stream right after its ``na``; when the
            # reset is processed first, the buffered refusal is dropped with it.
            raise StreamOpenError(
                f"the peer reset the stream before accepting protocol {self._protocol}: {exc}"
            ) from exc
        if not chunk:
            raise StreamOpenError(
                f"the peer closed the stream before accepting protocol {self._protocol}"
            )
        if chunk != expected[: len(chunk)]:
            raise StreamOpenError(
                f"the peer did not accept protocol {self._protocol}"
                f" (it answered {chunk[:32]!r}; b'\\x03na\\n' means it does not serve it)"
            )
        self._answered += len(chunk)


__all__ = ["MULTISTREAM_HEADER", "OptimisticSelect", "proposal"]
