"""Yamux receive windows released in half-window batches (`net/_yamux_window.py`, perf-idle4):
the small reads of an idle session send no WINDOW_UPDATE, a transfer many windows long still
flows both ways, and a host's streams are all batched. Real hosts on loopback."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream
from test_net_host import ECHO, running

from mindoo_p2p.net._yamux_window import BatchedYamuxStream


async def test_small_reads_send_no_window_update_and_bulk_still_flows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    updates: list[int] = []
    send_window_update = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: int, *args: Any, **kwargs: Any) -> None:
        assert isinstance(self, BatchedYamuxStream)  # every stream, either side
        updates.append(increment)
        await send_window_update(self, increment, *args, **kwargs)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    with trio.fail_after(30):
        async with running() as server, running() as client:
            await client.connect(server.listen_addrs()[0])
            # An idle sync session's shape: the listener reads the optimistic proposal in
            # pieces, then a few small frames each way.
            stream = await client.open_stream(server.peer_id, ECHO, optimistic=True)
            for payload in (b"hello", b"proof" * 20, b"summary" * 30, b"finish"):
                await stream.send_frame(payload)
                assert await stream.receive_frame() == payload
            # py-libp2p's own stream sent one after nearly every read (4 in negotiation).
            assert updates == []

            # Seven windows' worth both ways: the writer stalls at the end of its first
            # window unless the reader's credit comes back, in half-window batches at least.
            chunk = bytes(range(256)) * 800  # 200 KiB
            for _ in range(9):
                await stream.send_frame(chunk)
                assert await stream.receive_frame() == chunk
            await stream.close()
    assert updates
    assert min(updates) >= DEFAULT_WINDOW_SIZE // 2


class _Conn:
    """What `BatchedYamuxStream`'s release rule reads of its connection: the stream buffers."""

    def __init__(self) -> None:
        self.stream_buffers: dict[int, bytearray] = {}


@pytest.mark.parametrize(
    ("credit_left", "buffered", "released"),
    [
        # The writer still holds credit: a read of 16 KiB behind a backlog waits for the batch.
        (16 * 1024, DEFAULT_WINDOW_SIZE - 32 * 1024, 0),
        # The writer has none left (it waits, and py-libp2p resets after 5 s): release at once
        # what the read freed (a slow reader behind a backlog).
        (0, DEFAULT_WINDOW_SIZE - 16 * 1024, 16 * 1024),
        # Nothing read, nothing freed: no credit beyond the window, however long it waits.
        (0, DEFAULT_WINDOW_SIZE, 0),
        # Half a window lacking: the batch, credit or not.
        (DEFAULT_WINDOW_SIZE // 4, DEFAULT_WINDOW_SIZE // 4, DEFAULT_WINDOW_SIZE // 2),
    ],
)
async def test_a_writer_out_of_credit_gets_what_each_read_freed_at_once(
    credit_left: int, buffered: int, released: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = _Conn()
    stream = BatchedYamuxStream(1, conn, is_initiator=True)  # type: ignore[arg-type]
    stream.recv_window = credit_left
    conn.stream_buffers[1] = bytearray(buffered)
    monkeypatch.setattr(stream, "_apply_autotune_epoch", lambda buffered: 0)  # no growth here
    sent: list[int] = []

    async def send_window_update(increment: int, skip_lock: bool = False) -> None:
        sent.append(increment)

    monkeypatch.setattr(stream, "send_window_update", send_window_update)
    await stream._auto_tune_and_send_window_update(bytes_read=16 * 1024)
    assert sent == ([released] if released else [])
    assert stream.recv_window + buffered == (
        DEFAULT_WINDOW_SIZE if released else credit_left + buffered
    )  # never more credit than the window holds unbuffered
