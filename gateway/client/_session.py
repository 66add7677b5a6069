"""
The session client: one logical C{txgateway.v1} session over connections
that come and go, WebSocket or long-polling (docs/protocol.md).

L{SessionClient} is the public face (its names are shared with the
JavaScript client) and only puts parts together: the sans-IO
L{SessionEngine <gateway.client._engine.SessionEngine>} decides (what is
numbered, buffered, acknowledged and sent again, what a lost connection
means, when to reconnect); the L{SessionDriver
<gateway.client._driver.SessionDriver>} runs the engine over real
connections and timers on the given reactor; the L{Dialer
<gateway.client._dialer.Dialer>} makes those connections; the
L{Listeners <gateway.client._listeners.Listeners>} keep the application's
callbacks and waiters.  The Inbox and Outbox belong to the session, not to
a connection, so a move from one transport to the other changes nothing of
what is delivered.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed

from ._dialer import Dialer
from ._driver import SessionDriver
from ._engine import POLLING, TRANSPORTS, WEBSOCKET, SessionEngine
from ._listeners import FailoverCallback, Listeners, MessageCallback, StateCallback, UpgradeCallback
from ._polling import pollingURL
from ._state import (
    MAX_UPGRADE_DELAY,
    UPGRADE_DELAY,
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClosed,
    SessionLost,
    StateDetail,
)
from ._websocket import PACKET_OVERHEAD, parseURL

__all__ = [
    "SessionClient",
    "ClientState",
    "StateDetail",
    "SessionClosed",
    "SessionLost",
    "SendBufferFull",
    "MessageTooLarge",
    "TRANSPORTS",
    "WEBSOCKET",
    "POLLING",
    "websocketURL",
]

MiB = 1024 * 1024


class SessionClient:
    """
    A client of the gateway's session protocol.  See L{gateway.client} for
    the behaviour; the names of the public methods are shared with the
    JavaScript client.

    @ivar url: the C{ws://} or C{wss://} URL of the gateway's route.
    """

    def __init__(
        self,
        url: str,
        *,
        reactor: Any = None,
        transport: str = "auto",
        maxBufferMessages: int = 1000,
        maxBufferBytes: int = 4 * MiB,
        maxMessageBytes: int = 1 * MiB,
        maxBatchMessages: int = 1000,
        maxBodyBytes: int = 4 * MiB,
        maxAnswerBytes: int = 64 * MiB,
        initialDelay: float = 0.1,
        maxDelay: float = 10.0,
        connectTimeout: float = 10.0,
        upgradeTimeout: float = 5.0,
        upgradeDelay: float = UPGRADE_DELAY,
        maxUpgradeDelay: float = MAX_UPGRADE_DELAY,
        headers: dict[str, str] | None = None,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        """
        @param url: the route's URL: C{ws://} or C{wss://} (C{http://} and
            C{https://} name the same route); long-polling uses its
            C{http(s)://} form.
        @param reactor: provides C{IReactorTime} and C{IReactorTCP} (and the
            name resolver); the global reactor by default.
        @param transport: C{"auto"} (WebSocket first, long-polling when the
            WebSocket fails, and upgrades back to WebSocket while polling),
            C{"websocket"} or C{"polling"} (that transport only).
        @param maxBufferMessages: bound on unacknowledged messages.
        @param maxBufferBytes: bound on unacknowledged payload bytes.
        @param maxMessageBytes: bound on a data packet as sent (payload,
            sequence number and colon), and (plus 20 bytes) on a received
            one.
        @param maxBatchMessages: bound on the packets of one long-polling
            send (the gateway's C{session.max_batch_messages}).
        @param maxBodyBytes: bound on a long-polling send's body, unless a
            single packet is larger (the gateway's
            C{session.max_body_bytes}).
        @param maxAnswerBytes: bound on a long-polling answer's body; a
            larger one ends the client, as a 1009 close does.
        @param initialDelay: bound of the first reconnect delay (seconds).
        @param maxDelay: bound of every reconnect delay (seconds).
        @param connectTimeout: bound on each connect, opening handshake and
            wait for C{welcome}, on each closing handshake, and on the wait
            for the gateway to end the session after the client's C{close}.
        @param upgradeTimeout: bound on an upgrade's probe (connect,
            handshake and the probe's round trip), and on the wait for the
            outstanding poll after it.
        @param upgradeDelay: in auto mode on long-polling, the bound of the
            delay before the first try to move to a WebSocket (seconds); it
            doubles with each failed try, each delay drawn between half its
            bound and its bound, and starts again once a WebSocket works.
        @param maxUpgradeDelay: the cap of that bound (seconds).
        @param headers: extra HTTP headers for the opening handshake and
            every long-polling request.
        @param uniform: C{random.uniform}-like jitter, for tests.
        @raise ValueError: for a URL that is not C{ws://}, C{wss://},
            C{http://} or C{https://}, an unknown transport, or a bound that
            is not positive.
        """
        wsURL = websocketURL(url)
        parseURL(wsURL)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if min(maxBufferMessages, maxBufferBytes, maxBatchMessages, maxBodyBytes,
               maxAnswerBytes) < 1:
            raise ValueError(
                "maxBufferMessages, maxBufferBytes, maxBatchMessages, maxBodyBytes and "
                "maxAnswerBytes must be positive"
            )
        if maxMessageBytes <= PACKET_OVERHEAD:
            raise ValueError(f"maxMessageBytes must be more than {PACKET_OVERHEAD}")
        if not 0 < initialDelay <= maxDelay:
            raise ValueError("0 < initialDelay <= maxDelay is required")
        if not 0 < upgradeDelay <= maxUpgradeDelay:
            raise ValueError("0 < upgradeDelay <= maxUpgradeDelay is required")
        if connectTimeout <= 0 or upgradeTimeout <= 0:
            raise ValueError("connectTimeout and upgradeTimeout must be positive")
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.url = url
        self._engine = SessionEngine(
            transport,
            maxBufferMessages=maxBufferMessages,
            maxBufferBytes=maxBufferBytes,
            maxMessageBytes=maxMessageBytes,
            connectTimeout=connectTimeout,
            initialDelay=initialDelay,
            maxDelay=maxDelay,
            uniform=uniform or random.uniform,
            upgradeDelay=upgradeDelay,
            maxUpgradeDelay=maxUpgradeDelay,
        )
        self._listeners = Listeners()
        self._dialer = Dialer(
            reactor,
            wsURL,
            pollingURL(wsURL),
            headers=headers,
            connectTimeout=connectTimeout,
            upgradeTimeout=upgradeTimeout,
            maxMessageBytes=maxMessageBytes,
            maxBatchMessages=maxBatchMessages,
            maxBodyBytes=maxBodyBytes,
            maxAnswerBytes=maxAnswerBytes,
        )
        self._driver = SessionDriver(
            self._engine,
            self._listeners,
            self._dialer,
            reactor,
            connectTimeout=connectTimeout,
            upgradeTimeout=upgradeTimeout,
        )

    # ------------------------------------------------------------------
    # What the client shows.

    @property
    def state(self) -> ClientState:
        """
        The current L{ClientState}.
        """
        return self._engine.state

    @property
    def sessionId(self) -> str | None:
        """
        The id of the current session; None before the first C{welcome} and
        while a lost session is being replaced.
        """
        return self._engine.sid

    @property
    def transport(self) -> str:
        """
        C{"websocket"} or C{"polling"}: the transport of the last state
        reported (C{detail.transport}): the one the session is open on, the
        one the next attempt uses while connecting or reconnecting, the last
        one once closed.  So the transport shown with a state is never one
        just given up, and a move from long-polling to WebSocket shows once
        the session is open on the WebSocket.
        """
        engine = self._engine
        return engine.detail.transport or engine.nextTransport

    @property
    def bufferedAmount(self) -> int:
        """
        Payload bytes sent but not yet acknowledged.
        """
        return self._engine.outbox.pendingBytes

    @property
    def maxMessageBytes(self) -> int:
        """
        The bound on a data packet as sent (the C{maxMessageBytes} given):
        a payload of up to C{maxMessageBytes - 20} bytes always fits.
        """
        return self._engine.maxMessageBytes

    # ------------------------------------------------------------------
    # The application's callbacks.

    def onMessage(self, callback: MessageCallback) -> MessageCallback:
        """
        Call C{callback(payload, isBinary)} for every message from the
        backend, in order and exactly once: C{payload} is a C{str} for a
        text message, C{bytes} for a binary one.  Several callbacks may be
        registered; an exception in one is logged and changes nothing else.

        @return: C{callback} (so this works as a decorator).
        """
        self._listeners.messageCallbacks.append(callback)
        return callback

    def onState(self, callback: StateCallback) -> StateCallback:
        """
        Call C{callback(state, detail)} (a L{ClientState} and a
        L{StateDetail}) at every state change, and again, with state
        C{reconnecting}, each time a connection attempt fails.  A session
        that could not be resumed is reported twice: C{reconnecting} with
        C{detail.reset} when it is lost, C{open} with C{detail.reset} when
        its replacement is open; C{detail.dropped} counts the messages lost
        with it.  A session that moves from long-polling to WebSocket (an
        upgrade, with no connection dropped) is reported C{open} again,
        neither resumed nor reset; C{detail.transport} names the transport
        of the connection that opened, of the next attempt (reconnecting),
        or of the last connection (closed).

        @return: C{callback}.
        """
        self._listeners.stateCallbacks.append(callback)
        return callback

    def onFailover(self, callback: FailoverCallback) -> FailoverCallback:
        """
        Call C{callback(first, last)} when the gateway reports that the
        session's backend connection dropped and the session went on with
        another backend without sending again this client's messages
        C{first} to C{last} (a pool with C{failover = "notify"}): they may
        not have reached the application.  Under the default policy
        (C{replay}) they are sent again and nothing is reported.

        @return: C{callback}.
        """
        self._listeners.failoverCallbacks.append(callback)
        return callback

    def onUpgradeScheduled(self, callback: UpgradeCallback) -> UpgradeCallback:
        """
        In auto mode, while the session is on long-polling: call
        C{callback(delay, why)} each time the client schedules its next try
        to move the session to a WebSocket, C{delay} seconds from now;
        C{why} says why the WebSocket is unavailable (the failure that made
        the client fall back, then that of the last try; None if there was
        none).  The delays grow from C{upgradeDelay} to C{maxUpgradeDelay}
        (docs/protocol.md, "Switching transports").  A try that works is
        reported as C{onState(open)} with C{detail.transport} "websocket".

        @return: C{callback}.
        """
        self._listeners.upgradeCallbacks.append(callback)
        return callback

    def on_message(self, callback: MessageCallback) -> MessageCallback:
        """
        The old name of L{onMessage}, kept for compatibility.
        """
        return self.onMessage(callback)

    def on_state(self, callback: StateCallback) -> StateCallback:
        """
        The old name of L{onState}, kept for compatibility.
        """
        return self.onState(callback)

    def on_failover(self, callback: FailoverCallback) -> FailoverCallback:
        """
        The old name of L{onFailover}, kept for compatibility.
        """
        return self.onFailover(callback)

    # ------------------------------------------------------------------
    # What the application does.

    def connect(self) -> Deferred[None]:
        """
        Start connecting (the first call does; later calls only wait).

        @return: a L{Deferred} that fires once the first session is open, or
            fails with L{SessionClosed} if the client is closed first.
            Failures to connect do not fail it: the client keeps trying
            (state C{reconnecting}).  Cancelling it only stops the waiting.
        """
        engine = self._engine
        if engine.state is ClientState.closed:
            return _failed(SessionClosed("the client is closed", engine.detail))
        if engine.everOpened:
            return succeed(None)
        d = self._listeners.waitConnected()
        if not engine.started:
            engine.started = True
            self._driver.connectNow()
        return d

    def send(self, payload: str | bytes) -> None:
        """
        Send a message: a C{str} as a text message, C{bytes} as a binary
        one.  It is delivered exactly once, even across dropped
        connections; while reconnecting it waits in the send buffer.

        @raise SendBufferFull: the unacknowledged messages would exceed a
            bound of the send buffer.
        @raise MessageTooLarge: the data packet would exceed
            C{maxMessageBytes} (so a payload of up to C{maxMessageBytes -
            20} bytes always fits).
        @raise SessionClosed: C{close} was called, or the session ended.
        """
        self._driver.send(self._engine.message(payload))

    def whenAcknowledged(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that fires when everything sent so far is
            acknowledged by the gateway; it fails with L{SessionLost} if
            those messages are lost with their session, or L{SessionClosed}
            if the client closes first.
        """
        engine = self._engine
        target = engine.outbox.sent
        if engine.outbox.acked >= target:
            return succeed(None)
        if engine.state is ClientState.closed:
            return _failed(SessionClosed("the client closed before acknowledgement", engine.detail))
        return self._listeners.waitAcknowledged(target)

    def close(self) -> Deferred[StateDetail]:
        """
        End the session: wait until everything sent is acknowledged
        (reconnecting as needed), send C{close}, and wait for the gateway to
        close the connection.

        @return: a L{Deferred} that fires with the L{StateDetail} of the
            C{closed} state.  Cancelling it closes at once (L{abort}).
        """
        engine = self._engine
        if engine.state is ClientState.closed:
            return succeed(engine.detail)
        d: Deferred[StateDetail] = Deferred(lambda d: self.abort())
        self._listeners.waitClosed(d)
        if not engine.closing:
            engine.closing = True
            self._driver.close()
        return d

    def abort(self) -> None:
        """
        Close at once, without waiting for acknowledgements or the gateway:
        state C{closed}, unacknowledged messages dropped.  The gateway keeps
        the session for its grace period.
        """
        if self._engine.state is not ClientState.closed:
            self._driver.finish(self._engine.closedDetail(error="aborted by the application"))

    def nextState(self, state: ClientState | None = None) -> Deferred[tuple[ClientState, StateDetail]]:
        """
        @return: a L{Deferred} that fires with C{(state, detail)} at the next
            change to C{state} (any state when None), or with the C{closed}
            state when the client closes first (at once if it is closed).
        """
        engine = self._engine
        if engine.state is ClientState.closed:
            return succeed((engine.state, engine.detail))
        return self._listeners.waitState(state)


def websocketURL(url: str) -> str:
    """
    @return: the C{ws://} or C{wss://} URL of the same route as C{url}
        (C{http://} and C{https://} become C{ws://} and C{wss://}).
    """
    scheme, sep, rest = url.partition("://")
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme)
    return scheme + sep + rest


def _failed(error: Exception) -> Deferred:
    d: Deferred = Deferred()
    d.errback(error)
    return d
