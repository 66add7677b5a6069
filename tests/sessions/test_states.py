"""
L{gateway.sessions.states}: the one table of a session's states and the
moves between them.
"""

from __future__ import annotations

import json

import pytest

from gateway.errors import GatewayError, InvalidTransition
from gateway.sessions.states import SessionState

ATTACHED, DETACHED, ENDING, ENDED = (SessionState.ATTACHED, SessionState.DETACHED,
                                     SessionState.ENDING, SessionState.ENDED)


@pytest.mark.parametrize("old,new", [
    (DETACHED, ATTACHED), (DETACHED, ENDING), (DETACHED, ENDED),
    (ATTACHED, DETACHED), (ATTACHED, ENDING), (ATTACHED, ENDED),
    (ENDING, ENDED),
])
def test_allowedMoves(old, new):
    """
    A live session may attach, detach, start ending or end; an ending one
    may only end.  C{to} returns the new state.
    """
    assert old.to(new) is new


@pytest.mark.parametrize("state", list(SessionState))
def test_stayingPutIsAllowed(state):
    """
    Moving to the state a session is already in is no move, and always
    allowed (an attach that replaces a connection stays attached).
    """
    assert state.to(state) is state


@pytest.mark.parametrize("old,new", [
    (ENDING, ATTACHED), (ENDING, DETACHED),
    (ENDED, ATTACHED), (ENDED, DETACHED), (ENDED, ENDING),
])
def test_illegalMovesRefused(old, new):
    """
    Nothing brings an ending session back to life, and nothing moves an
    ended one: C{to} raises L{InvalidTransition}, a L{GatewayError}, naming
    both states.
    """
    with pytest.raises(InvalidTransition) as caught:
        old.to(new)
    assert isinstance(caught.value, GatewayError)
    assert str(caught.value) == f"a session cannot go from {old.value} to {new.value}"


def test_liveStates():
    """
    Only attached and detached sessions are live (a move or an attach may
    take them); ending and ended ones are not.
    """
    assert [s for s in SessionState if s.live] == [ATTACHED, DETACHED]


def test_valuesAreTheRecordedStrings():
    """
    The values are the strings the session map records and the admin API
    counts, and they compare and serialise as those strings.
    """
    assert [s.value for s in SessionState] == ["attached", "detached", "ending", "ended"]
    assert ATTACHED == "attached" and json.dumps({"state": DETACHED}) == '{"state": "detached"}'
