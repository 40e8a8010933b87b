"""The two sides of a reconciliation, sans I/O: bytes in, bytes out.

The initiator (client) drives: ``initiate()`` gives the first message; each reply of the peer
goes to ``reconcile()``, which returns the next message (``None`` once every range is settled)
and the ids settled by that reply. The responder (server) answers each message on its own, so
one responder object can serve any number of concurrent sessions. Moving the bytes, and capping
rounds or time, is the caller's job.
"""

from __future__ import annotations

from ..errors import DecodeError
from ._engine import MIN_FRAME_SIZE_LIMIT, Outcome, Role, answer_message
from ._messages import INFINITE_BOUND, PROTOCOL_VERSION
from ._reader import DEFAULT_MAX_MESSAGE_SIZE, decode_message
from ._split import DEFAULT_SPLIT, SplitPolicy, describe_range
from ._state import SessionEvent, SessionState, require, transition
from ._storage import ReconStorage
from ._writer import MessageWriter

DEFAULT_FRAME_SIZE_LIMIT = 256 * 1024

_DOWNGRADE_REPLY = bytes((PROTOCOL_VERSION,))
_VERSION_RANGE = range(0x60, 0x70)
"""Version bytes Negentropy reserves for protocol versions (0x61 = V1, 0x62 = V2, ...)."""


def _check_limits(frame_size_limit: int, max_message_size: int) -> None:
    if type(frame_size_limit) is not int or frame_size_limit < MIN_FRAME_SIZE_LIMIT:
        raise ValueError(f"frame_size_limit must be an int >= {MIN_FRAME_SIZE_LIMIT}")
    if type(max_message_size) is not int or max_message_size < MIN_FRAME_SIZE_LIMIT:
        raise ValueError(f"max_message_size must be an int >= {MIN_FRAME_SIZE_LIMIT}")


class ReconInitiator:
    """The side that starts a session and learns the differences.

    ``frame_size_limit`` (>= 4096) caps every message we produce; ``max_message_size`` caps the
    peer's messages we accept. ``split`` sets how ranges are divided. ``storage`` must not change
    during the session.
    """

    __slots__ = (
        "_frame_size_limit",
        "_max_message_size",
        "_reported",
        "_rounds",
        "_split",
        "_state",
        "_storage",
    )

    def __init__(
        self,
        storage: ReconStorage,
        frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
        *,
        split: SplitPolicy = DEFAULT_SPLIT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        _check_limits(frame_size_limit, max_message_size)
        self._storage = storage
        self._frame_size_limit = frame_size_limit
        self._max_message_size = max_message_size
        self._split = split
        self._state = SessionState.IDLE
        self._rounds = 0
        self._reported: set[bytes] = set()

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def rounds(self) -> int:
        """Replies processed so far (round trips completed)."""
        return self._rounds

    def initiate(self) -> bytes:
        """The first message: our whole set, split into ranges. Allowed once."""
        self._state = transition(self._state, SessionEvent.INITIATE)
        writer = MessageWriter()
        writer.append(
            describe_range(self._storage, 0, self._storage.size(), INFINITE_BOUND, self._split)
        )
        return writer.getvalue()

    def reconcile(self, message: bytes) -> tuple[bytes | None, list[bytes], list[bytes]]:
        """Process the peer's reply.

        Returns (our next message, or ``None`` when the session is done; the ids we have that the
        peer lacks; the ids the peer has that we lack), the lists covering the ranges this reply
        settled. Over a session each id is reported once. A malformed reply raises DecodeError
        and fails the session.
        """
        require(self._state, SessionEvent.CONTINUE)
        try:
            parsed = decode_message(message, max_size=self._max_message_size)
        except DecodeError:
            self._state = transition(self._state, SessionEvent.FAIL)
            raise
        outcome = answer_message(
            parsed, self._storage, Role.INITIATOR, self._frame_size_limit, self._split
        )
        self._rounds += 1
        have = self._first_reports(outcome.have)
        need = self._first_reports(outcome.need)
        if outcome.finished:
            self._state = transition(self._state, SessionEvent.FINISH)
            return None, have, need
        self._state = transition(self._state, SessionEvent.CONTINUE)
        return outcome.reply, have, need

    def _first_reports(self, ids: list[bytes]) -> list[bytes]:
        """``ids`` not reported before in this session. A range settled in one round can be
        settled again in a later one when a full frame made the peer send the rest as one
        fingerprint; each id is still reported once."""
        fresh = [item_id for item_id in ids if item_id not in self._reported]
        self._reported.update(fresh)
        return fresh


class ReconResponder:
    """The side that answers: stateless per message, so safe to share between sessions.

    Limits and ``split`` as for :class:`ReconInitiator`. A message in another protocol version
    (version byte 0x60-0x6f other than 0x61) gets the one-byte reply ``0x61`` the specification
    asks for, telling the peer to retry in V1; anything else malformed raises DecodeError.
    """

    __slots__ = ("_frame_size_limit", "_max_message_size", "_split", "_storage")

    def __init__(
        self,
        storage: ReconStorage,
        frame_size_limit: int = DEFAULT_FRAME_SIZE_LIMIT,
        *,
        split: SplitPolicy = DEFAULT_SPLIT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        _check_limits(frame_size_limit, max_message_size)
        self._storage = storage
        self._frame_size_limit = frame_size_limit
        self._max_message_size = max_message_size
        self._split = split

    def reconcile(self, message: bytes) -> bytes:
        """Our reply to the initiator's ``message`` (never larger than the frame limit)."""
        if (
            isinstance(message, bytes | bytearray | memoryview)
            and 0 < len(message) <= self._max_message_size
            and message[0] in _VERSION_RANGE
            and message[0] != PROTOCOL_VERSION
        ):
            return _DOWNGRADE_REPLY
        parsed = decode_message(message, max_size=self._max_message_size)
        outcome: Outcome = answer_message(
            parsed, self._storage, Role.RESPONDER, self._frame_size_limit, self._split
        )
        return outcome.reply
