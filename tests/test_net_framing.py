"""FramedStream over in-memory streams: framing, limits, deadlines, end of stream, misuse."""

from __future__ import annotations

import random
import struct

import pytest
import trio
import trio.testing

from mindoo_p2p.errors import MindooError
from mindoo_p2p.net.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FramedStream,
    FrameTooLarge,
    StreamClosed,
    StreamTimeout,
    TransportError,
    TrioByteStream,
    memory_framed_stream_pair,
)


class ChoppyByteStream:
    """A ByteStream that hands out what was queued in random small pieces (1..7 bytes)."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = bytearray(data)
        self._rng = random.Random(seed)
        self.sent = bytearray()
        self.was_reset = False

    async def receive_some(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        take = min(max_bytes, self._rng.randint(1, 7), len(self._data))
        chunk = bytes(self._data[:take])
        del self._data[:take]
        return chunk

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        self.was_reset = True


class GreedyByteStream(ChoppyByteStream):
    """A broken ByteStream that returns more bytes than asked for."""

    async def receive_some(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return b"\x00" * (max_bytes + 1)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_errors_share_one_base() -> None:
    for error in (StreamClosed, StreamTimeout, FrameTooLarge):
        assert issubclass(error, TransportError)
    assert issubclass(TransportError, MindooError)


def test_constructor_validates_limits() -> None:
    with pytest.raises(ValueError):
        FramedStream(ChoppyByteStream(b"", 0), "peer", max_frame_size=0)
    with pytest.raises(ValueError):
        FramedStream(ChoppyByteStream(b"", 0), "peer", timeout=0)


async def test_frames_round_trip_both_ways() -> None:
    left, right = memory_framed_stream_pair("L", "R", protocol="/test/1")
    assert left.remote_peer_id == "R" and right.remote_peer_id == "L"
    assert left.protocol == "/test/1"
    with trio.fail_after(5):
        payloads = [b"", b"a", b"hello" * 100, bytes(range(256)) * 40]
        for payload in payloads:
            await left.send_frame(payload)
        for payload in payloads:
            assert await right.receive_frame() == payload
        await right.send_frame(b"answer")
        assert await left.receive_frame() == b"answer"


async def test_largest_allowed_frame_passes_and_one_more_byte_is_refused_unsent() -> None:
    left, right = memory_framed_stream_pair()
    big = random.Random(1).randbytes(DEFAULT_MAX_FRAME_SIZE)
    with trio.fail_after(5):
        await left.send_frame(big)
        assert await right.receive_frame() == big
        with pytest.raises(FrameTooLarge) as refused:
            await left.send_frame(big + b"x")
        assert not refused.value.incoming  # ours: no reason to blame (or ban) the peer
        with pytest.raises(FrameTooLarge) as refused:
            await left.send_frames([b"fine", big + b"x"])
        assert not refused.value.incoming
        # Nothing was sent and the stream still works.
        await left.send_frame(b"after")
        assert await right.receive_frame() == b"after"


async def test_oversized_incoming_header_resets_the_stream() -> None:
    raw_left, raw_right = trio.testing.memory_stream_pair()
    receiver = FramedStream(TrioByteStream(raw_right), "sender", max_frame_size=1024)
    with trio.fail_after(5):
        await raw_left.send_all(struct.pack(">I", 1025))  # the header alone; no payload follows
        with pytest.raises(FrameTooLarge) as oversized:
            await receiver.receive_frame()
        assert oversized.value.incoming  # the peer's: the daemon bans for it
        assert receiver.is_closed
        with pytest.raises(StreamClosed):
            await receiver.receive_frame()
        with pytest.raises(StreamClosed):
            await receiver.send_frame(b"x")
        # The reset reached the sender: its stream is closed for receiving.
        assert await raw_left.receive_some(10) == b""


async def test_frames_reassemble_from_arbitrary_small_reads() -> None:
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randint(0, 3000)) for _ in range(50)]
    choppy = ChoppyByteStream(b"".join(frame(p) for p in payloads), seed=3)
    stream = FramedStream(choppy, "peer")
    with trio.fail_after(10):
        for payload in payloads:
            assert await stream.receive_frame() == payload
        with pytest.raises(StreamClosed, match="closed the stream"):
            await stream.receive_frame()


async def test_end_of_stream_inside_a_frame_is_stream_closed() -> None:
    stream = FramedStream(ChoppyByteStream(frame(b"complete") + frame(b"cut off")[:-2], 5), "p")
    with trio.fail_after(5):
        assert await stream.receive_frame() == b"complete"
        with pytest.raises(StreamClosed, match="inside a frame"):
            await stream.receive_frame()


async def test_byte_stream_returning_too_much_is_refused() -> None:
    greedy = GreedyByteStream(b"", 0)
    stream = FramedStream(greedy, "p")
    with trio.fail_after(5), pytest.raises(StreamClosed):
        await stream.receive_frame()
    assert greedy.was_reset


async def test_close_delivers_pending_frames_then_end_of_stream() -> None:
    left, right = memory_framed_stream_pair()
    with trio.fail_after(5):
        await left.send_frame(b"one")
        await left.send_frame(b"two")
        await left.close()
        await left.close()  # idempotent
        assert left.is_closed
        with pytest.raises(StreamClosed):
            await left.send_frame(b"three")
        assert await right.receive_frame() == b"one"
        assert await right.receive_frame() == b"two"
        with pytest.raises(StreamClosed):
            await right.receive_frame()
        # Half-closed: the other direction still works until the right side closes too.
        await right.send_frame(b"reply")
        await right.close()


async def test_reset_makes_both_sides_fail() -> None:
    left, right = memory_framed_stream_pair()
    with trio.fail_after(5):
        await left.reset()
        await left.reset()  # never raises
        with pytest.raises(StreamClosed):
            await left.send_frame(b"x")
        with pytest.raises(StreamClosed):
            await right.receive_frame()


async def test_silent_peer_times_out_and_the_stream_is_reset() -> None:
    left, right = memory_framed_stream_pair(timeout=0.2)
    with trio.fail_after(5):
        started = trio.current_time()
        with pytest.raises(StreamTimeout):
            await left.receive_frame()
        elapsed = trio.current_time() - started
        assert 0.2 <= elapsed < 1.0
        assert left.is_closed
        with pytest.raises(StreamClosed):
            await right.receive_frame()


async def test_timeout_can_be_changed_per_stream() -> None:
    left, _right = memory_framed_stream_pair(timeout=10.0)
    left.timeout = 0.1
    assert left.timeout == 0.1
    with pytest.raises(ValueError):
        left.timeout = 0
    with trio.fail_after(5), pytest.raises(StreamTimeout):
        await left.receive_frame()


async def test_blocked_send_times_out_and_resets() -> None:
    raw_left, raw_right = trio.testing.lockstep_stream_pair()  # no buffering: sends block
    sender = FramedStream(TrioByteStream(raw_left), "receiver", timeout=0.2)
    with trio.fail_after(5):
        with pytest.raises(StreamTimeout):
            await sender.send_frame(b"nobody reads this")
        assert sender.is_closed
        # The receiver sees the end of the stream (after whatever part of the frame got out).
        chunks = [await raw_right.receive_some(100) for _ in range(3)]
        assert b"" in chunks


async def test_cancelled_receive_resets_the_stream() -> None:
    left, right = memory_framed_stream_pair()
    with trio.fail_after(5):
        with trio.move_on_after(0.1):
            await left.receive_frame()
        assert left.is_closed
        with pytest.raises(StreamClosed):
            await right.receive_frame()


async def test_concurrent_senders_never_interleave_frames() -> None:
    left, right = memory_framed_stream_pair()
    received: list[bytes] = []

    async def sender(tag: int) -> None:
        for index in range(100):
            await left.send_frame(bytes([tag]) * (1000 + index))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for tag in range(8):
                nursery.start_soon(sender, tag)
            for _ in range(800):
                received.append(await right.receive_frame())
    assert all(len(set(payload)) == 1 for payload in received)
    for tag in range(8):
        sizes = [len(p) for p in received if p[0] == tag]
        assert sizes == [1000 + index for index in range(100)]


async def test_async_with_closes_or_resets() -> None:
    left, right = memory_framed_stream_pair()
    with trio.fail_after(5):
        async with left:
            await left.send_frame(b"inside")
        assert left.is_closed
        assert await right.receive_frame() == b"inside"
        with pytest.raises(StreamClosed):
            await right.receive_frame()

        with pytest.raises(RuntimeError):
            async with right:
                raise RuntimeError("boom")
        assert right.is_closed


async def test_a_peers_oversized_frame_is_found_behind_the_send_failure_it_caused() -> None:
    """The driver raises one failure of its two tasks. When the peer's oversized frame resets
    the stream, a send under way may fail first (StreamClosed): the daemon still finds the
    peer's fault in the group it came from, and never blames the peer for a frame we were
    refused to send."""
    from mindoo_p2p.daemon.sync_sessions import peer_sent_oversized
    from mindoo_p2p.sync.driver import _first_error

    def raised(*leaves: Exception) -> BaseException:
        try:
            try:
                raise ExceptionGroup("session", list(leaves))
            except BaseExceptionGroup as group:
                raise _first_error(group) from None  # as the driver does
        except Exception as exc:
            return exc

    theirs = FrameTooLarge("frame of 2000000000 bytes exceeds the limit 1024")
    ours = FrameTooLarge("frame of 5000 bytes exceeds the limit 1024", incoming=False)
    hidden = raised(StreamClosed("stream failed while writing: reset"), theirs)
    assert isinstance(hidden, StreamClosed) and peer_sent_oversized(hidden)
    assert peer_sent_oversized(raised(theirs))
    assert not peer_sent_oversized(raised(ours))
    assert not peer_sent_oversized(raised(StreamClosed("x"), ours))
    assert not peer_sent_oversized(raised(StreamClosed("the peer went away")))
