"""Answering one message: the rules of Negentropy V1 that both roles obey.

For each range of the incoming message, in order, we look at our own items in the same range:
- Skip: nothing to do.
- Fingerprint: equal to ours, nothing to do; otherwise we describe our items in the range
  (:func:`._split.describe_range`: an IdList, or fingerprints of sub-ranges).
- IdList: the one place where the roles differ (:data:`_ID_LIST_RULES`). The initiator settles
  the range: ids only we have are "have", ids only the peer listed are "need". The responder
  answers with its own IdList, so that the initiator can settle it.

Ranges with nothing to say become Skips, written lazily (merged, and dropped at the end). The
reply never exceeds the frame limit. When an answer does not fit (a responder's IdList is first
cut at the last id that fits), that range and every later one we cannot settle get just our
fingerprint, which the peer splits again next round. When even that does not fit, our fingerprint
of everything from the current range to the end of the message's last range that is not a Skip
closes the reply (room for it, and for a pending Skip, is always kept). The first answer of a
message always fits in the smallest allowed frame, so every round makes progress.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._item import ID_SIZE
from ._messages import (
    INFINITE_BOUND,
    Bound,
    FingerprintRange,
    IdListRange,
    Message,
    Range,
    SkipRange,
)
from ._split import SplitPolicy, describe_range, minimal_bound
from ._storage import ReconStorage
from ._varint import MAX_VARINT_SIZE
from ._writer import MessageWriter, encode_ranges

MIN_FRAME_SIZE_LIMIT = 4096

_MAX_BOUND_SIZE = MAX_VARINT_SIZE + 1 + ID_SIZE
_MAX_SKIP_SIZE = _MAX_BOUND_SIZE + 1
_REMAINDER_SIZE = _MAX_BOUND_SIZE + 1 + 16
_RESERVE = _MAX_SKIP_SIZE + _REMAINDER_SIZE
_MAX_ID_LIST_HEADER = _MAX_BOUND_SIZE + 1 + MAX_VARINT_SIZE


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


@dataclass(slots=True)
class Outcome:
    """What one incoming message produced: our reply (just the version byte when we have
    nothing more to say), and, for the initiator, the ids settled in this message."""

    reply: bytes
    have: list[bytes] = field(default_factory=list)
    need: list[bytes] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return len(self.reply) == 1


class _Reply:
    """The reply under construction, within a byte budget."""

    __slots__ = ("_limit", "_pending_skip", "_writer")

    def __init__(self, limit: int) -> None:
        self._writer = MessageWriter()
        self._limit = limit
        self._pending_skip: Bound | None = None

    def settle(self, upper: Bound) -> None:
        """Nothing to say about the ranges up to ``upper``."""
        self._pending_skip = upper

    def _with_skip(self, ranges: Sequence[Range]) -> list[Range]:
        if self._pending_skip is None:
            return list(ranges)
        return [SkipRange(self._pending_skip), *ranges]

    def add(self, ranges: Sequence[Range]) -> bool:
        """Append ``ranges`` if they fit with the reserve kept free; report whether they did."""
        chunk, last = encode_ranges(self._with_skip(ranges), self._writer.last_timestamp)
        if len(self._writer) + len(chunk) + _RESERVE > self._limit:
            return False
        self._writer.commit(chunk, last)
        self._pending_skip = None
        return True

    def id_capacity(self) -> int:
        """How many ids an IdList added now can surely hold."""
        room = self._limit - _RESERVE - len(self._writer) - _MAX_ID_LIST_HEADER
        if self._pending_skip is not None:
            room -= _MAX_SKIP_SIZE
        return max(0, room // ID_SIZE)

    def close_with_remainder(self, upper_bound: Bound, fingerprint: bytes) -> None:
        """End the reply with our fingerprint of everything from the last range written up to
        ``upper_bound``."""
        self._writer.append(self._with_skip([FingerprintRange(upper_bound, fingerprint)]))
        self._pending_skip = None

    def getvalue(self) -> bytes:
        value = self._writer.getvalue()
        assert len(value) <= self._limit
        return value


@dataclass(slots=True)
class _Pass:
    """One pass over an incoming message. ``compact`` is set once an answer did not fit: from
    then on every range we cannot settle is answered with just our fingerprint of it."""

    storage: ReconStorage
    policy: SplitPolicy
    reply: _Reply
    size: int
    open_end: Bound
    """The upper bound of the message's last range that is not a Skip: nothing after it needs
    an answer, so a reply closed early need not reopen it."""
    compact: bool = False
    have: list[bytes] = field(default_factory=list)
    need: list[bytes] = field(default_factory=list)

    def send(self, upper_bound: Bound, lower: int, upper: int, answer: list[Range]) -> bool:
        """Add ``answer`` for our items [lower, upper) ending at ``upper_bound``, or our
        fingerprint of them, or close the reply. Return False once the reply is closed."""
        if answer and self.reply.add(answer):
            return True
        self.compact = True
        fingerprint = self.storage.fingerprint(lower, upper)
        if self.reply.add([FingerprintRange(upper_bound, fingerprint)]):
            return True
        end = self.storage.lower_bound(lower, self.size, self.open_end.as_item())
        self.reply.close_with_remainder(self.open_end, self.storage.fingerprint(lower, end))
        return False

    def describe(self, upper_bound: Bound, lower: int, upper: int) -> list[Range]:
        """Our full answer for a mismatching range, or none in compact mode."""
        if self.compact:
            return []
        return describe_range(self.storage, lower, upper, upper_bound, self.policy)


def _settle_id_list(run: _Pass, current: IdListRange, lower: int, upper: int) -> bool:
    """Initiator: compare the peer's ids with ours in the range; nothing to send back."""
    theirs = set(current.ids)
    for item in run.storage.items(lower, upper):
        if item.id in theirs:
            theirs.discard(item.id)
        else:
            run.have.append(item.id)
    run.need.extend(item_id for item_id in current.ids if item_id in theirs)
    run.reply.settle(current.upper)
    return True


def _answer_id_list(run: _Pass, current: IdListRange, lower: int, upper: int) -> bool:
    """Responder: send our ids of the range, cut where the frame is full."""
    if run.compact:
        return run.send(current.upper, lower, upper, [])
    capacity = run.reply.id_capacity()
    if upper - lower <= capacity:
        ids = tuple(item.id for item in run.storage.items(lower, upper))
        return run.send(current.upper, lower, upper, [IdListRange(current.upper, ids)])
    if capacity > 0:
        cut = lower + capacity
        items = list(run.storage.items(lower, cut + 1))
        cut_bound = minimal_bound(items[-2], items[-1])
        added = run.reply.add([IdListRange(cut_bound, tuple(item.id for item in items[:-1]))])
        assert added
        lower = cut
    return run.send(current.upper, lower, upper, [])


_ID_LIST_RULES: dict[Role, Callable[[_Pass, IdListRange, int, int], bool]] = {
    Role.INITIATOR: _settle_id_list,
    Role.RESPONDER: _answer_id_list,
}


def answer_message(
    message: Message,
    storage: ReconStorage,
    role: Role,
    frame_size_limit: int,
    policy: SplitPolicy,
) -> Outcome:
    """Process ``message`` against ``storage`` and build our reply (see the module docstring)."""
    reply = _Reply(frame_size_limit)
    size = storage.size()
    open_end = next(
        (each.upper for each in reversed(message.ranges) if not isinstance(each, SkipRange)),
        INFINITE_BOUND,
    )
    run = _Pass(storage, policy, reply, size, open_end)
    on_id_list = _ID_LIST_RULES[role]
    lower = 0
    for current in message.ranges:
        upper = storage.lower_bound(lower, size, current.upper.as_item())
        if isinstance(current, FingerprintRange):
            if storage.fingerprint(lower, upper) == current.fingerprint:
                reply.settle(current.upper)
            elif not run.send(
                current.upper, lower, upper, run.describe(current.upper, lower, upper)
            ):
                break
        elif isinstance(current, IdListRange):
            if not on_id_list(run, current, lower, upper):
                break
        else:
            reply.settle(current.upper)
        lower = upper
    return Outcome(reply.getvalue(), run.have, run.need)
