"""What happens to a gossip message before delivery or forwarding: the pure rules. No I/O.

In order, for a message a peer forwarded (our own publishes are neither screened by
``validate`` nor delivered back):
1. `screen_message`: exactly one topic, one we subscribe to, and a frame that decodes strictly
   within its bounds. A message on another topic is dropped without blaming the forwarder (we
   may have just unsubscribed); a malformed frame blames it.
2. For an inline entry only, the caller's ``validate(raw_entry, topic)`` (hash, signature,
   membership), judged by `judge_verdict`: True accepts; False is invalid (the forwarder is
   scored); None is "not accepted here, nobody's fault" (e.g. an entry by an author revoked
   after the forwarder stored it: dropped, nobody scored); any other value accepts and is the
   value delivery hands to ``on_entry`` in place of the raw bytes (the daemon's verified entry,
   so the entry is not decoded or verified again). Announcements need no ``validate``.
3. `ValidatedValues` keeps those values by message id, bounded, until delivery takes them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from ..errors import DecodeError
from .gossip_codec import FrameKind, GossipFrame, decode_frame

VALIDATED_KEEP = 4096
"""Validated values kept for delivery at most (older ones are dropped: ``on_entry`` then gets
the raw bytes)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is neither delivered nor forwarded."""

    reason: str
    blames_forwarder: bool
    """True: the forwarder sent something malformed or invalid (``on_invalid`` hears of it);
    False: dropped, nobody scored."""


WRONG_TOPIC = Refusal("not on exactly one topic this node subscribes to", False)
NOT_ACCEPTED_HERE = Refusal("entry not accepted here (not the forwarder's fault)", False)
FAILED_VALIDATION = Refusal("entry failed validation", True)


def screen_message(
    topic_ids: Sequence[str], data: bytes, subscribed: AbstractSet[str]
) -> GossipFrame | Refusal:
    """The frame of a message that may be accepted, or why it may not (step 1)."""
    if len(topic_ids) != 1 or topic_ids[0] not in subscribed:
        return WRONG_TOPIC
    try:
        return decode_frame(data)
    except DecodeError as exc:
        return Refusal(str(exc), True)


def needs_validation(frame: GossipFrame, *, from_self: bool) -> bool:
    """Whether ``validate`` must see this frame: inline entries that another peer forwarded."""
    return frame.kind is FrameKind.ENTRY and not from_self


def judge_verdict(verdict: object) -> Refusal | None:
    """What ``validate`` returning ``verdict`` means: a refusal, or None to accept (step 2)."""
    if verdict is None:
        return NOT_ACCEPTED_HERE
    if verdict is False:
        return FAILED_VALIDATION
    return None


class ValidatedValues:
    """Message id -> the value ``validate`` returned, until delivery takes it (step 3).

    Bounded: beyond ``keep`` values the oldest is dropped (its delivery then gets the raw
    bytes). A verdict of plain True keeps nothing.
    """

    def __init__(self, keep: int = VALIDATED_KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._keep = keep
        self._values: OrderedDict[bytes, object] = OrderedDict()

    def remember(self, message_id: bytes, verdict: object) -> None:
        """Keep ``verdict`` for the message when it is a value of its own (not True)."""
        if verdict is True or verdict is None or verdict is False:
            return
        self._values[message_id] = verdict
        while len(self._values) > self._keep:
            self._values.popitem(last=False)

    def take(self, message_id: bytes) -> object | None:
        """The value kept for the message, removed (None when nothing is kept)."""
        if not self._values:
            return None
        return self._values.pop(message_id, None)

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


__all__ = [
    "FAILED_VALIDATION",
    "NOT_ACCEPTED_HERE",
    "VALIDATED_KEEP",
    "WRONG_TOPIC",
    "Refusal",
    "ValidatedValues",
    "judge_verdict",
    "needs_validation",
    "screen_message",
]
