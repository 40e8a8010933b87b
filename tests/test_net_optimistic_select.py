"""Optimistic multistream-select (`net/_optimistic_select.py`): the proposal rides the first
write, the listener's acceptance is checked before the first read, and a refusal is a clear
`StreamOpenError`. Pure tests over a recording byte stream, then real hosts on loopback."""

from __future__ import annotations

import pytest
import trio
from libp2p.protocol_muxer.multiselect_client import MULTISELECT_PROTOCOL_ID
from libp2p.utils.varint import encode_delim
from test_net_host import ECHO, running

from mindoo_p2p.net._optimistic_select import OptimisticSelect, proposal
from mindoo_p2p.net.framing import FramedStream, StreamClosed
from mindoo_p2p.net.host import StreamOpenError

PROTOCOL = "/mindoo/sync/1.0.0"


class RecordingStream:
    """A `ByteStream` that records every write and serves scripted reads."""

    def __init__(self, reads: list[bytes]) -> None:
        self.writes: list[bytes] = []
        self.reads = list(reads)
        self.eof_sent = False

    async def receive_some(self, max_bytes: int) -> bytes:
        if not self.reads:
            return b""
        chunk = self.reads[0][:max_bytes]
        rest = self.reads[0][max_bytes:]
        if rest:
            self.reads[0] = rest
        else:
            self.reads.pop(0)
        return chunk

    async def send_all(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def send_eof(self) -> None:
        self.eof_sent = True

    async def reset(self) -> None:
        pass


class ResettingStream(RecordingStream):
    """A `RecordingStream` whose peer resets it once the scripted reads are used up (what
    py-libp2p's listener does after refusing: the reset may even overtake its ``na``)."""

    async def receive_some(self, max_bytes: int) -> bytes:
        if not self.reads:
            raise StreamClosed("stream failed while reading: StreamReset()")
        return await super().receive_some(max_bytes)


def test_the_proposal_is_what_py_libp2p_sends_and_what_a_listener_echoes() -> None:
    assert proposal(PROTOCOL) == encode_delim(MULTISELECT_PROTOCOL_ID.encode()) + encode_delim(
        PROTOCOL.encode()
    )
    for bad in ("", "two\nlines"):
        with pytest.raises(ValueError):
            proposal(bad)


async def test_the_proposal_and_the_first_frame_leave_in_one_write() -> None:
    raw = RecordingStream([proposal(PROTOCOL) + b"\x00\x00\x00\x02ok"])
    stream = FramedStream(OptimisticSelect(raw, PROTOCOL), "peer")
    await stream.send_frame(b"hello")
    assert raw.writes == [proposal(PROTOCOL) + b"\x00\x00\x00\x05hello"]
    await stream.send_frame(b"again")  # later frames carry nothing else
    assert raw.writes[1] == b"\x00\x00\x00\x05again"
    assert await stream.receive_frame() == b"ok"


async def test_an_acceptance_split_across_reads_is_checked_byte_for_byte() -> None:
    answer = proposal(PROTOCOL)
    raw = RecordingStream([answer[:1], answer[1:5], answer[5:] + b"\x00\x00\x00\x01x"])
    selected = OptimisticSelect(raw, PROTOCOL)
    await selected.send_all(b"")
    assert not selected.negotiated
    assert await FramedStream(selected, "peer").receive_frame() == b"x"
    assert selected.negotiated


async def test_a_reader_first_still_sends_the_proposal() -> None:
    raw = RecordingStream([proposal(PROTOCOL) + b"data"])
    selected = OptimisticSelect(raw, PROTOCOL)
    assert await selected.receive_some(100) == b"data"
    assert raw.writes == [proposal(PROTOCOL)]


async def test_a_refusal_or_an_early_end_is_a_stream_open_error() -> None:
    header = encode_delim(MULTISELECT_PROTOCOL_ID.encode())
    refused = RecordingStream([header + encode_delim(b"na")])
    with pytest.raises(StreamOpenError, match="did not accept protocol"):
        await FramedStream(OptimisticSelect(refused, PROTOCOL), "peer").receive_frame()
    ended = RecordingStream([header])
    with pytest.raises(StreamOpenError, match="closed the stream before accepting"):
        await OptimisticSelect(ended, PROTOCOL).receive_some(10)
    reset = ResettingStream([header])
    with pytest.raises(StreamOpenError, match="reset the stream before accepting"):
        await OptimisticSelect(reset, PROTOCOL).receive_some(10)
    garbage = RecordingStream([b"\xff" * 64])
    with pytest.raises(StreamOpenError, match="did not accept"):
        await OptimisticSelect(garbage, PROTOCOL).receive_some(10)
    # nothing past the acceptance's length is read from the peer
    assert garbage.reads == [b"\xff" * (64 - len(proposal(PROTOCOL)))]


async def test_an_eof_before_any_frame_sends_the_proposal_first() -> None:
    raw = RecordingStream([])
    selected = OptimisticSelect(raw, PROTOCOL)
    await selected.send_eof()
    assert raw.writes == [proposal(PROTOCOL)] and raw.eof_sent


async def test_optimistic_streams_between_real_hosts() -> None:
    """The listener (py-libp2p's own negotiation) serves an optimistic stream like any other;
    an unknown protocol shows at the first receive, and the connection stays usable."""
    with trio.fail_after(30):
        async with running() as server, running() as client:
            await client.connect(server.listen_addrs()[0])
            stream = await client.open_stream(server.peer_id, ECHO, optimistic=True)
            assert stream.protocol == ECHO and stream.remote_peer_id == server.peer_id
            for payload in (b"first", b"second" * 1000):
                await stream.send_frame(payload)
                assert await stream.receive_frame() == payload
            await stream.close()

            unknown = await client.open_stream(
                server.peer_id, "/mindoo-test/unknown/1", optimistic=True
            )
            await unknown.send_frame(b"anyone?")
            # the listener answers ``na`` and resets; whichever is seen first, it is a refusal
            with pytest.raises(StreamOpenError, match=r"did not accept|reset the stream before"):
                await unknown.receive_frame()
            await unknown.reset()

            again = await client.open_stream(server.peer_id, ECHO, optimistic=True)
            await again.send_frame(b"still fine")
            assert await again.receive_frame() == b"still fine"
