"""
The application's side of a L{SessionClient
<gateway.client.SessionClient>}: the callbacks it registered (C{onMessage},
C{onState}, C{onFailover}, C{onUpgradeScheduled}) and the L{Deferred}s it waits on (C{connect},
C{whenAcknowledged}, C{nextState}, C{close}).

L{Listeners} only keeps and fires them: an exception in a callback is
logged and changes nothing else.  When to fire is the session driver's
decision (L{gateway.client._driver}).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ._state import ClientState, SessionClosed, SessionLost, StateDetail

__all__ = ["Listeners", "MessageCallback", "StateCallback", "FailoverCallback", "UpgradeCallback"]

MessageCallback = Callable[[Any, bool], object]
StateCallback = Callable[[ClientState, StateDetail], object]
FailoverCallback = Callable[[int, int], object]
UpgradeCallback = Callable[[float, "str | None"], object]


def _remove(waiters: list[Deferred], d: Deferred) -> None:
    if d in waiters:
        waiters.remove(d)


def _removeWaiter(waiters: list[tuple[Any, Deferred]], d: Deferred) -> None:
    waiters[:] = [(key, w) for key, w in waiters if w is not d]


class Listeners:
    """
    See the module docstring.
    """

    log = Logger()

    def __init__(self) -> None:
        self.messageCallbacks: list[MessageCallback] = []
        self.stateCallbacks: list[StateCallback] = []
        self.failoverCallbacks: list[FailoverCallback] = []
        self.upgradeCallbacks: list[UpgradeCallback] = []
        self._connectWaiters: list[Deferred] = []
        self._ackWaiters: list[tuple[int, Deferred]] = []
        self._stateWaiters: list[tuple[ClientState | None, Deferred]] = []
        self._closeWaiters: list[Deferred] = []

    # ------------------------------------------------------------------
    # Callbacks.

    def message(self, payload: Any, isBinary: bool) -> None:
        """
        Give one message to every C{onMessage} callback.
        """
        for callback in list(self.messageCallbacks):
            try:
                callback(payload, isBinary)
            except Exception:
                self.log.failure("on_message callback {callback!r} failed", callback=callback)

    def failover(self, first: int, last: int) -> None:
        """
        Tell every C{onFailover} callback that messages C{first} to C{last}
        may not have reached the application.
        """
        for callback in list(self.failoverCallbacks):
            try:
                callback(first, last)
            except Exception:
                self.log.failure("on_failover callback {callback!r} failed", callback=callback)

    def upgradeScheduled(self, delay: float, why: str | None) -> None:
        """
        Tell every C{onUpgradeScheduled} callback that the next try to move
        to a WebSocket comes in C{delay} seconds, and why the WebSocket is
        unavailable.
        """
        for callback in list(self.upgradeCallbacks):
            try:
                callback(delay, why)
            except Exception:
                self.log.failure("onUpgradeScheduled callback {callback!r} failed", callback=callback)

    def stateChanged(self, state: ClientState, detail: StateDetail) -> None:
        """
        Tell every C{onState} callback, then fire the L{waitState} waiters
        for C{state} (once closed, nothing else will come: every waiter
        fires).
        """
        for callback in list(self.stateCallbacks):
            try:
                callback(state, detail)
            except Exception:
                self.log.failure("on_state callback {callback!r} failed", callback=callback)
        final = state is ClientState.closed
        ready = [d for w, d in self._stateWaiters if final or w is None or w is state]
        if ready:
            self._stateWaiters = [
                (w, d) for w, d in self._stateWaiters if not (final or w is None or w is state)
            ]
            for d in ready:
                d.callback((state, detail))

    # ------------------------------------------------------------------
    # Waiters.

    def waitConnected(self) -> Deferred[None]:
        """
        @return: a L{Deferred} fired by L{connected}; cancelling it only
            stops the waiting.
        """
        d: Deferred[None] = Deferred(lambda d: _remove(self._connectWaiters, d))
        self._connectWaiters.append(d)
        return d

    def connected(self) -> None:
        """
        A session is open: fire the L{waitConnected} waiters.
        """
        waiters, self._connectWaiters = self._connectWaiters, []
        for d in waiters:
            d.callback(None)

    def waitAcknowledged(self, target: int) -> Deferred[None]:
        """
        @return: a L{Deferred} fired once C{target} messages are
            acknowledged.
        """
        d: Deferred[None] = Deferred(lambda d: _removeWaiter(self._ackWaiters, d))
        self._ackWaiters.append((target, d))
        return d

    def acknowledged(self, acked: int) -> None:
        """
        C{acked} messages are acknowledged: fire the waiters that wanted no
        more.
        """
        ready = [d for target, d in self._ackWaiters if target <= acked]
        if ready:
            self._ackWaiters = [(t, d) for t, d in self._ackWaiters if t > acked]
            for d in ready:
                d.callback(None)

    def sessionLost(self, dropped: int) -> None:
        """
        The session was lost with C{dropped} messages: every acknowledgement
        waiter fails with L{SessionLost}.
        """
        waiters, self._ackWaiters = self._ackWaiters, []
        for _target, d in waiters:
            d.errback(SessionLost(f"the session was lost: {dropped} messages dropped", dropped))

    def waitState(self, state: ClientState | None) -> Deferred[tuple[ClientState, StateDetail]]:
        """
        @return: a L{Deferred} fired at the next change to C{state} (any
            state when None), or to C{closed}.
        """
        d: Deferred[tuple[ClientState, StateDetail]] = Deferred(
            lambda d: _removeWaiter(self._stateWaiters, d)
        )
        self._stateWaiters.append((state, d))
        return d

    def waitClosed(self, d: Deferred[StateDetail]) -> None:
        """
        Fire C{d} with the detail of the C{closed} state (L{closed}).
        """
        self._closeWaiters.append(d)

    def closed(self, detail: StateDetail) -> None:
        """
        The client is closed: connect and acknowledgement waiters fail with
        L{SessionClosed}, close waiters fire with C{detail}.
        """
        error = SessionClosed(detail.error or "the session is closed", detail)
        connecting, self._connectWaiters = self._connectWaiters, []
        for d in connecting:
            d.errback(error)
        acks, self._ackWaiters = self._ackWaiters, []
        for _target, d in acks:
            d.errback(error)
        closing, self._closeWaiters = self._closeWaiters, []
        for d in closing:
            d.callback(detail)
