"""Encoding of Negentropy V1 messages.

Wire format (varint = :mod:`._varint`)::

    message := 0x61 range*
    range   := bound mode(varint) payload
    bound   := timestamp(varint: 0 = infinity, else 1 + delta to the previous bound's timestamp
               in this message, starting from 0) prefix_length(varint, 0..32) prefix
    payload := ""  (Skip) | fingerprint(16 bytes) | count(varint) id(32 bytes)*

Encoding is incremental because a bound's timestamp is a delta to the previous one: the session
engine asks for the size of a few ranges before committing them, to stay within a frame limit.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._item import MAX_TIMESTAMP
from ._messages import PROTOCOL_VERSION, Bound, FingerprintRange, IdListRange, Message, Range
from ._varint import encode_varint

_VERSION = bytes((PROTOCOL_VERSION,))
_MODE_SKIP = encode_varint(0)
_MODE_FINGERPRINT = encode_varint(1)
_MODE_ID_LIST = encode_varint(2)


def _encode_bound(bound: Bound, last_timestamp: int, out: bytearray) -> int:
    """Append ``bound`` to ``out``; return the timestamp the next bound's delta starts from."""
    timestamp = bound.timestamp
    if timestamp == MAX_TIMESTAMP:
        out += b"\x00"
    else:
        out += encode_varint(timestamp - last_timestamp + 1)
    prefix = bound.id_prefix
    out += encode_varint(len(prefix))
    out += prefix
    return timestamp


def encode_ranges(ranges: Iterable[Range], last_timestamp: int) -> tuple[bytes, int]:
    """Encode ``ranges`` as they follow a bound with ``last_timestamp`` in a message.

    Returns the bytes and the timestamp of the last bound written (``last_timestamp`` if none).
    The caller guarantees increasing bounds (see :func:`encode_message` for a checked version).
    """
    out = bytearray()
    for current in ranges:
        last_timestamp = _encode_bound(current.upper, last_timestamp, out)
        if isinstance(current, FingerprintRange):
            out += _MODE_FINGERPRINT
            out += current.fingerprint
        elif isinstance(current, IdListRange):
            out += _MODE_ID_LIST
            out += encode_varint(len(current.ids))
            out += b"".join(current.ids)
        else:
            out += _MODE_SKIP
    return bytes(out), last_timestamp


class MessageWriter:
    """A message under construction: the version byte, then committed range bytes."""

    __slots__ = ("_buf", "_last_timestamp")

    def __init__(self) -> None:
        self._buf = bytearray(_VERSION)
        self._last_timestamp = 0

    @property
    def last_timestamp(self) -> int:
        """Where the next bound's timestamp delta starts."""
        return self._last_timestamp

    def __len__(self) -> int:
        return len(self._buf)

    def commit(self, chunk: bytes, last_timestamp: int) -> None:
        """Append the output of :func:`encode_ranges` (called with :attr:`last_timestamp`)."""
        self._buf += chunk
        self._last_timestamp = last_timestamp

    def append(self, ranges: Iterable[Range]) -> None:
        """Encode and append ``ranges``."""
        self.commit(*encode_ranges(ranges, self._last_timestamp))

    def getvalue(self) -> bytes:
        return bytes(self._buf)


def encode_message(message: Message) -> bytes:
    """The wire bytes of ``message``; ``ValueError`` if its bounds do not strictly increase."""
    previous = Bound(0).sort_key()
    for current in message.ranges:
        key = current.upper.sort_key()
        if key <= previous:
            raise ValueError("range bounds must strictly increase")
        previous = key
    writer = MessageWriter()
    writer.append(message.ranges)
    return writer.getvalue()
