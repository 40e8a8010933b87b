"""The initiator's session states and the only transitions allowed between them.

Everything that moves a session from one state to another is in :data:`_TRANSITIONS`; a call that
is not allowed in the current state raises :class:`ReconStateError` and changes nothing. The
responder has no state: it answers each message on its own.

    IDLE --initiate--> AWAITING_REPLY --reply, more to say--> AWAITING_REPLY
                                      --reply, nothing left--> DONE
                                      --malformed reply--> FAILED
"""

from __future__ import annotations

import enum

from ..errors import MindooError


class ReconStateError(MindooError, RuntimeError):
    """A session method called in a state that does not allow it (a bug in the caller)."""


class SessionState(enum.Enum):
    IDLE = "idle"
    """Created; ``initiate()`` not called yet."""
    AWAITING_REPLY = "awaiting reply"
    """A message was sent; the peer's reply goes to ``reconcile()``."""
    DONE = "done"
    """Every range is settled: the have/need lists returned so far are complete."""
    FAILED = "failed"
    """The peer sent a malformed message; the session is over."""


class SessionEvent(enum.Enum):
    INITIATE = "initiate"
    CONTINUE = "reply with more to say"
    FINISH = "reply with nothing left"
    FAIL = "malformed reply"


_TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (SessionState.IDLE, SessionEvent.INITIATE): SessionState.AWAITING_REPLY,
    (SessionState.AWAITING_REPLY, SessionEvent.CONTINUE): SessionState.AWAITING_REPLY,
    (SessionState.AWAITING_REPLY, SessionEvent.FINISH): SessionState.DONE,
    (SessionState.AWAITING_REPLY, SessionEvent.FAIL): SessionState.FAILED,
}

_ACCEPTS: dict[SessionEvent, frozenset[SessionState]] = {
    event: frozenset(state for state, each in _TRANSITIONS if each is event)
    for event in SessionEvent
}


def require(state: SessionState, event: SessionEvent) -> None:
    """Raise ReconStateError unless ``event`` may happen in ``state``."""
    if state not in _ACCEPTS[event]:
        raise ReconStateError(
            f"reconciliation session is {state.value}: '{event.value}' is not allowed"
        )


def transition(state: SessionState, event: SessionEvent) -> SessionState:
    """The state after ``event`` (ReconStateError if not allowed)."""
    require(state, event)
    return _TRANSITIONS[(state, event)]
