"""
The states of a session and the moves between them, in one place (the idea
of h11's C{_state.py}): every module that changes a session's state does it
through L{SessionState.to}, which refuses a move this table does not allow.

A L{gateway.sessions.session.Session} and a
L{gateway.cluster.relay.RelaySession} share these states.  They are string
enum members: their values are what the session map records and what the
admin API counts.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import InvalidTransition

__all__ = ["SessionState"]


class SessionState(StrEnum):
    """
    Where a session is in its life.

      - C{ATTACHED}: a client connection carries it (here, or on another
        node that relays it).
      - C{DETACHED}: no client connection; it waits up to the grace period
        for a resume.
      - C{ENDING}: the backend closed; what it sent is still being
        delivered, and the session ends once the client acknowledged it.
      - C{ENDED}: over; nothing moves it again.
    """

    ATTACHED = "attached"
    DETACHED = "detached"
    ENDING = "ending"
    ENDED = "ended"

    @property
    def live(self) -> bool:
        """
        Whether the session is neither ending nor ended (a move may take
        it to another backend, a client may attach).
        """
        return self in _LIVE

    def to(self, new: SessionState) -> SessionState:
        """
        The move from this state to C{new}; staying put is always allowed.

        @return: C{new}.
        @raise InvalidTransition: when the table does not allow the move.
        """
        if new is not self and new not in _MOVES[self]:
            raise InvalidTransition(f"a session cannot go from {self.value} to {new.value}")
        return new


_LIVE = frozenset({SessionState.ATTACHED, SessionState.DETACHED})

#: The moves each state allows (besides staying put).
_MOVES: dict[SessionState, frozenset[SessionState]] = {
    SessionState.DETACHED: frozenset({SessionState.ATTACHED, SessionState.ENDING, SessionState.ENDED}),
    SessionState.ATTACHED: frozenset({SessionState.DETACHED, SessionState.ENDING, SessionState.ENDED}),
    SessionState.ENDING: frozenset({SessionState.ENDED}),
    SessionState.ENDED: frozenset(),
}
