"""Yamux with go-yamux's receive-window release: one WINDOW_UPDATE per half window read.

py-libp2p 0.8.1's `YamuxStream` sends a WINDOW_UPDATE after nearly every read of a stream,
however small: once its window has been used at all, every read that leaves less than half
of it to release takes a "partial slack" branch that releases what was read (its
``PY_YAMUX_RELEASE_ON_READ`` switch does not reach that branch). Each update is a Yamux frame,
a Noise message and a socket send at the reader, and a frame to parse and a wake-up at the
writer. An idle sync session reads a handful of small frames, and py-libp2p's multistream
listener reads the optimistic proposal in four pieces (a varint byte by byte, then the
message), so an update followed nearly every read on both daemons (perf-idle4: about a
seventh of an idle session's CPU in py-spy samples).

`BatchedYamuxStream` keeps py-libp2p's window bookkeeping (the target window, its auto-tuned
growth, what is buffered) and only the release rule of go-yamux's ``sendWindowUpdate``:
release when what the window lacks of its target, counting what is still buffered, reaches
half the target (py-libp2p's ``_grow_threshold``); otherwise say nothing, unless the writer
has no credit left (``recv_window`` 0: it is waiting): then whatever the reader has freed is
released at once. That exception matters here and not in Go: py-libp2p's writer gives up
after 5 s without credit and the stream is reset, so a reader that keeps reading, but slower
than half a window in 5 s behind a backlog (a sync session whose ingest lags on a slow
device), would otherwise lose its stream; with it, each of its reads lets the writer go on.
The receive buffer stays bounded by the target window as before (nothing is released for
bytes still buffered). `BatchedYamux` is py-libp2p's `Yamux` whose streams, outbound
and inbound, are `BatchedYamuxStream` (each re-classed before its first read). py-libp2p's
muxer negotiation builds a plain `Yamux` whatever class it is given, so `batch_windows`
re-classes the new connection before it starts (`MindooUpgrader.upgrade_connection`); neither
subclass adds state. Re-check on every py-libp2p upgrade (`_libp2p_pin`).
"""

from __future__ import annotations

from libp2p.abc import IMuxedConn, IMuxedStream
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from . import _libp2p_pin  # noqa: F401  (refuses a py-libp2p release these patches do not fit)


class BatchedYamuxStream(YamuxStream):
    """A `YamuxStream` that releases its receive window in half-window batches."""

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        increment = 0
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            lacking = self.target_recv_window - (self.recv_window + buffered)
            if lacking > 0 and (lacking >= self._grow_threshold() or self.recv_window <= 0):
                increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
                self._pending_recv_release = 0
        if increment > 0:
            await self.send_window_update(increment, skip_lock=True)


def batched(stream: YamuxStream) -> YamuxStream:
    """``stream`` (a new stream, not read yet) as a `BatchedYamuxStream` when it is
    py-libp2p's own `YamuxStream`; any other class unchanged."""
    if type(stream) is YamuxStream:
        stream.__class__ = BatchedYamuxStream
    return stream


class BatchedYamux(Yamux):
    """py-libp2p's `Yamux` whose streams are `BatchedYamuxStream`."""

    async def open_stream(self) -> YamuxStream:
        return batched(await super().open_stream())

    async def accept_stream(self) -> IMuxedStream:
        stream = await super().accept_stream()
        return batched(stream) if isinstance(stream, YamuxStream) else stream


def batch_windows(conn: IMuxedConn) -> IMuxedConn:
    """``conn`` (a new muxed connection, not started yet) as a `BatchedYamux` when it is
    py-libp2p's `Yamux`; any other muxer unchanged."""
    if type(conn) is Yamux:
        conn.__class__ = BatchedYamux
    return conn


__all__ = ["BatchedYamux", "BatchedYamuxStream", "batch_windows", "batched"]
