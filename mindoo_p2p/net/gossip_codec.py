"""The gossip message codec: frames (the pubsub ``Message.data``) and message ids. Pure.

Wire format of a gossip message, version 1::

    version  u8   1
    kind     u8   1 = inline entry, 2 = announcement
    payload       inline entry: the sealed entry, 1 .. MAX_INLINE_ENTRY bytes
                  announcement: the 32-byte entry id of an entry too large to inline

Message id (gossipsub's seen-cache and validation-cache key), from `message_id`: the SHA-256 of
the sealed entry (= the entry id) for an inline entry, SHA-256(ANNOUNCE_DOMAIN + entry id) for
an announcement, and SHA-256(INVALID_DOMAIN + data) for bytes that do not decode. So every copy
of an entry, from any forwarder, is one message, and garbage never takes a real entry's id.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from ..entry import ID_SIZE
from ..errors import DecodeError

FRAME_VERSION = 1
MAX_INLINE_ENTRY = 256 * 1024
"""The largest inline entry this node accepts (and the largest `inline_limit` it may use)."""
DEFAULT_INLINE_LIMIT = 64 * 1024
ANNOUNCE_DOMAIN = b"mindoo/gossip-announce/v1\x00"
INVALID_DOMAIN = b"mindoo/gossip-invalid/v1\x00"

_HEADER_SIZE = 2


class FrameKind(enum.IntEnum):
    ENTRY = 1
    """The payload is a whole sealed entry."""
    ANNOUNCEMENT = 2
    """The payload is the 32-byte id of an entry too large to inline."""


@dataclass(frozen=True, slots=True)
class GossipFrame:
    """One decoded gossip message."""

    kind: FrameKind
    payload: bytes

    @property
    def entry_id(self) -> bytes:
        """The id of the entry this frame carries or announces."""
        if self.kind is FrameKind.ENTRY:
            return hashlib.sha256(self.payload).digest()
        return self.payload


def encode_frame(kind: FrameKind, payload: bytes) -> bytes:
    """The wire bytes of a frame; ValueError if ``payload`` does not fit ``kind``."""
    if kind is FrameKind.ENTRY and not 0 < len(payload) <= MAX_INLINE_ENTRY:
        raise ValueError(f"an inline entry must be 1..{MAX_INLINE_ENTRY} bytes")
    if kind is FrameKind.ANNOUNCEMENT and len(payload) != ID_SIZE:
        raise ValueError(f"an announcement carries a {ID_SIZE}-byte entry id")
    return bytes((FRAME_VERSION, int(kind))) + payload


def _split_frame(data: bytes) -> tuple[FrameKind, memoryview] | str:
    """(kind, payload view) of a well-formed frame, else the reason it is malformed."""
    if len(data) < _HEADER_SIZE:
        return f"{len(data)} bytes is shorter than a frame header"
    if data[0] != FRAME_VERSION:
        return f"unsupported frame version {data[0]}"
    size = len(data) - _HEADER_SIZE
    if data[1] == FrameKind.ENTRY:
        if not 0 < size <= MAX_INLINE_ENTRY:
            return f"inline entry of {size} bytes (allowed 1..{MAX_INLINE_ENTRY})"
        return FrameKind.ENTRY, memoryview(data)[_HEADER_SIZE:]
    if data[1] == FrameKind.ANNOUNCEMENT:
        if size != ID_SIZE:
            return f"announcement of {size} bytes (expected {ID_SIZE})"
        return FrameKind.ANNOUNCEMENT, memoryview(data)[_HEADER_SIZE:]
    return f"unknown frame kind {data[1]}"


def decode_frame(data: bytes) -> GossipFrame:
    """Strictly decode a gossip message. Raises DecodeError, and only DecodeError."""
    if not isinstance(data, bytes):
        raise DecodeError(f"gossip frame: expected bytes, got {type(data).__name__}")
    split = _split_frame(data)
    if isinstance(split, str):
        raise DecodeError(f"gossip frame: {split}")
    kind, payload = split
    return GossipFrame(kind, bytes(payload))


def message_id(data: bytes) -> bytes:
    """The gossipsub message id of ``data`` (see the module docstring). Never raises."""
    split = _split_frame(data)
    if isinstance(split, str):
        return hashlib.sha256(INVALID_DOMAIN + data).digest()
    kind, payload = split
    if kind is FrameKind.ENTRY:
        return hashlib.sha256(payload).digest()
    return hashlib.sha256(ANNOUNCE_DOMAIN + payload).digest()


__all__ = [
    "ANNOUNCE_DOMAIN",
    "DEFAULT_INLINE_LIMIT",
    "FRAME_VERSION",
    "INVALID_DOMAIN",
    "MAX_INLINE_ENTRY",
    "FrameKind",
    "GossipFrame",
    "decode_frame",
    "encode_frame",
    "message_id",
]
