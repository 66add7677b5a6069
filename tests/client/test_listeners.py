"""
Tests for the application's callbacks and waiters
(L{gateway.client._listeners}), through a SessionClient.
"""

from __future__ import annotations

from typing import Any

from gateway.client import ClientState
from gateway.wire.protocol import Ack, Failover, encodeControl
from tests.client.fakes import Harness, hasNotFired, result


def test_callbackErrorsAreLogged(h: Harness, logged: list[str]) -> None:
    """
    An exception in an onMessage callback is logged; the other callbacks
    and the session carry on.
    """
    seen: list[Any] = []

    def broken(payload: Any, isBinary: bool) -> None:
        raise RuntimeError("application bug")

    h.client.onMessage(broken)
    h.client.onMessage(lambda payload, isBinary: seen.append(payload))
    gateway = h.open()
    gateway.dataPacket(1, b"a")
    gateway.dataPacket(2, b"b")
    h.flush()
    assert seen == ["a", "b"]
    assert gateway.of(Ack) == [Ack(2)]
    assert any("application bug" in line for line in logged)



def test_stateCallbackMayAbort(h: Harness) -> None:
    """
    An onState callback may abort the client while it reconnects: no
    further attempt is made.
    """
    gateway = h.open()
    h.client.onState(
        lambda state, detail: h.client.abort() if state is ClientState.reconnecting else None
    )
    h.drop(gateway)
    assert h.client.state is ClientState.closed
    h.reactor.advance(100)
    assert h.attempts == 1



def test_nextState(h: Harness) -> None:
    """
    nextState() fires at the next change (to the given state, when one
    is given), or with the closed state when the client closes first; once
    closed it fires at once.
    """
    anything = h.client.nextState()
    reconnecting = h.client.nextState(ClientState.reconnecting)
    gateway = h.open()
    assert result(anything)[0] is ClientState.open
    assert hasNotFired(reconnecting)
    h.drop(gateway)
    assert result(reconnecting)[0] is ClientState.reconnecting
    reopened = h.client.nextState(ClientState.open)
    h.client.abort()
    assert result(reopened)[0] is ClientState.closed
    assert result(h.client.nextState())[0] is ClientState.closed



def test_callbackNamesAndTheirOldAliases(h: Harness) -> None:
    """
    onMessage, onState and onFailover register callbacks, and so do their
    old names on_message, on_state and on_failover (kept for
    compatibility): each returns the callback (a decorator), and every
    callback is called, whichever name registered it.
    """
    seen: dict[str, list[Any]] = {name: [] for name in (
        "onMessage", "on_message", "onState", "on_state", "onFailover", "on_failover")}
    for name in ("onMessage", "on_message"):
        callback = lambda payload, isBinary, name=name: seen[name].append(payload)  # noqa: E731
        assert getattr(h.client, name)(callback) is callback
    for name in ("onState", "on_state"):
        callback = lambda state, detail, name=name: seen[name].append(state)  # noqa: E731
        assert getattr(h.client, name)(callback) is callback
    for name in ("onFailover", "on_failover"):
        callback = lambda first, last, name=name: seen[name].append((first, last))  # noqa: E731
        assert getattr(h.client, name)(callback) is callback
    gateway = h.open()
    gateway.dataPacket(1, b"one")
    gateway.sendMessage(encodeControl(Failover(3, 5)))
    h.flush()
    assert seen == {
        "onMessage": ["one"], "on_message": ["one"],
        "onState": [ClientState.open], "on_state": [ClientState.open],
        "onFailover": [(3, 5)], "on_failover": [(3, 5)],
    }
