"""The Ed25519 acceptance rule, its frames, and the verifier worker process that applies it.

Run by path (``python -P .../verify_worker_process.py``, see `verify_workers`): this file
imports only the standard library and PyNaCl's libsodium binding, never the ``mindoo_p2p``
package, so a worker starts in a few tens of milliseconds and holds nothing but what it is
sent. It reads request frames on stdin and answers each on stdout until its input ends.

**The rule** (`check_signature`) is the one the whole node uses (`crypto.signing` re-exports
it as `verify_signature`): libsodium's ``crypto_sign_open``, which refuses non-canonical S,
small-order public keys and R, and non-canonical encodings. A worker applies exactly this
function, so a verdict never depends on where it was computed.

**Frames** (both directions: a 4-byte big-endian body length, then the body; u32 is 4 bytes
big-endian):

| frame | body |
|---|---|
| request | ``count`` (u32), then ``count`` items, each: message length (u32), public key |
| | (32 bytes), signature (64 bytes), message |
| answer | ``count`` (u32), then ``count`` bytes, each 1 (valid) or 0 (refused) |

A body is at most `MAX_FRAME` bytes and a request at most `MAX_ITEMS` items; a message at most
`MAX_MESSAGE` bytes. Every length is checked before it is used, on both sides: the worker exits
(status 2) on a malformed request, and the parent treats a malformed answer as a dead worker.
"""

from __future__ import annotations

import signal
import struct
import sys
import threading
from collections.abc import Sequence
from typing import IO

from nacl._sodium import ffi, lib

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

MAX_FRAME = 64 * 1024 * 1024
"""Largest frame body either side sends or accepts."""
MAX_ITEMS = 65_536
"""Most signatures one request may carry."""
MAX_MESSAGE = 32 * 1024 * 1024
"""Largest signed message in a request (an entry is at most 16 MiB plus its domain prefix)."""

Triple = tuple[bytes, bytes, bytes]
"""``(public_key, message, signature)``."""

_U32 = struct.Struct(">I")
_ITEM_HEAD = 4 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE
_VALID = b"\x01"
_REFUSED = b"\x00"

_tls = threading.local()


class FrameError(ValueError):
    """A frame breaks the layout or the bounds above."""


def check_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``,
    by libsodium's rules (``crypto_sign_open`` through a reused per-thread output buffer)."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    signed = signature + message
    size = len(signed)
    buf = getattr(_tls, "buf", None)
    if buf is None or len(buf) < size:
        buf = ffi.new("unsigned char[]", max(size, 4096))
        _tls.buf = buf
        _tls.out_len = ffi.new("unsigned long long *")
    return bool(lib.crypto_sign_open(buf, _tls.out_len, signed, size, public_key) == 0)


def framable(item: Triple) -> bool:
    """True when ``item`` can travel in a request (key and signature of the right sizes, a
    message within `MAX_MESSAGE`); any other item is checked without a worker, by the caller
    (`VerifyWorkers.submit`)."""
    public_key, message, signature = item
    return (
        len(public_key) == PUBLIC_KEY_SIZE
        and len(signature) == SIGNATURE_SIZE
        and len(message) <= MAX_MESSAGE
    )


def encode_request(items: Sequence[Triple]) -> bytes:
    """The request frame for ``items`` (each `framable`). FrameError when over the bounds."""
    if len(items) > MAX_ITEMS:
        raise FrameError(f"{len(items)} signatures in one request, over {MAX_ITEMS}")
    parts = [b"", _U32.pack(len(items))]
    pack = _U32.pack
    for public_key, message, signature in items:
        parts += (pack(len(message)), public_key, signature, message)
    size = sum(map(len, parts))
    if size > MAX_FRAME:
        raise FrameError(f"a request of {size} bytes, over {MAX_FRAME}")
    parts[0] = _U32.pack(size)
    return b"".join(parts)


def decode_request(body: bytes) -> list[Triple]:
    """The items of a request body. FrameError for anything off the layout."""
    if len(body) < 4:
        raise FrameError("a request shorter than its count")
    (count,) = _U32.unpack_from(body, 0)
    if count > MAX_ITEMS:
        raise FrameError(f"a request of {count} signatures, over {MAX_ITEMS}")
    items: list[Triple] = []
    pos = 4
    end = len(body)
    for _ in range(count):
        if end - pos < _ITEM_HEAD:
            raise FrameError("a request item cut short")
        (size,) = _U32.unpack_from(body, pos)
        start = pos + _ITEM_HEAD
        if size > MAX_MESSAGE or end - start < size:
            raise FrameError("a request message runs past its frame")
        public_key = body[pos + 4 : pos + 4 + PUBLIC_KEY_SIZE]
        signature = body[pos + 4 + PUBLIC_KEY_SIZE : start]
        items.append((public_key, body[start : start + size], signature))
        pos = start + size
    if pos != end:
        raise FrameError("bytes after the last request item")
    return items


def encode_answer(verdicts: Sequence[bool]) -> bytes:
    body = _U32.pack(len(verdicts)) + b"".join(_VALID if ok else _REFUSED for ok in verdicts)
    return _U32.pack(len(body)) + body


def decode_answer(body: bytes, expected: int) -> list[bool]:
    """The verdicts of an answer to a request of ``expected`` items. FrameError unless it
    holds exactly ``expected`` verdicts, each byte 0 or 1."""
    if len(body) != 4 + expected or _U32.unpack_from(body, 0)[0] != expected:
        raise FrameError(f"an answer that is not {expected} verdicts")
    verdicts = body[4:]
    if verdicts.strip(b"\x00\x01"):
        raise FrameError("an answer byte that is neither 0 nor 1")
    return [byte == 1 for byte in verdicts]


def read_body(stream: IO[bytes]) -> bytes | None:
    """The next frame's body; None at the end of the stream (before a frame starts).
    FrameError for a frame over `MAX_FRAME` or cut short."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) != 4:
        raise FrameError("a frame length cut short")
    (size,) = _U32.unpack(head)
    if size > MAX_FRAME:
        raise FrameError(f"a frame of {size} bytes, over {MAX_FRAME}")
    body = stream.read(size)
    if len(body) != size:
        raise FrameError("a frame cut short")
    return body


def check_request(body: bytes) -> list[bool]:
    """The verdict on each item of a request body, by `check_signature`'s rule, checked where
    the item lies in ``body``: an item's signature and message are contiguous there, which is
    what ``crypto_sign_open`` takes, so nothing is sliced or copied. Same bounds as
    `decode_request` (FrameError), each checked before the bytes it guards are read."""
    end = len(body)
    if end < 4:
        raise FrameError("a request shorter than its count")
    (count,) = _U32.unpack_from(body, 0)
    if count > MAX_ITEMS:
        raise FrameError(f"a request of {count} signatures, over {MAX_ITEMS}")
    frame = ffi.from_buffer("unsigned char[]", body)
    out = ffi.new("unsigned char[]", max(end, 1))  # no opened message is longer than its frame
    out_len = ffi.new("unsigned long long *")
    sign_open = lib.crypto_sign_open
    unpack = _U32.unpack_from
    verdicts: list[bool] = []
    pos = 4
    for _ in range(count):
        if end - pos < _ITEM_HEAD:
            raise FrameError("a request item cut short")
        (size,) = unpack(body, pos)
        signed_at = pos + 4 + PUBLIC_KEY_SIZE
        if size > MAX_MESSAGE or end - signed_at - SIGNATURE_SIZE < size:
            raise FrameError("a request message runs past its frame")
        signed_size = SIGNATURE_SIZE + size
        verdicts.append(
            sign_open(out, out_len, frame + signed_at, signed_size, frame + (pos + 4)) == 0
        )
        pos = signed_at + signed_size
    if pos != end:
        raise FrameError("bytes after the last request item")
    return verdicts


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer every request of ``requests`` on ``answers`` until the input ends."""
    while True:
        body = read_body(requests)
        if body is None:
            return
        answers.write(encode_answer(check_request(body)))
        answers.flush()


def main() -> int:
    # Ctrl-C in a terminal reaches the whole process group: the node decides when its workers
    # stop (it closes their input), so an interrupt does not fail the chunks in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Answers go to the original stdout alone: anything else printed goes to stderr.
    answers = open(sys.stdout.fileno(), "wb", closefd=False)  # noqa: SIM115
    sys.stdout = sys.stderr
    try:
        serve(sys.stdin.buffer, answers)
    except FrameError as exc:
        print(f"verifier worker: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
