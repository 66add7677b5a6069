"""
The session client: one logical C{txgateway.v1} session over WebSocket
connections that come and go (docs/protocol.md).

L{SessionClient} numbers what the application sends (L{Outbox}), keeps it
until the gateway acknowledges it, and sends it again after a reconnect;
it counts what it receives (L{Inbox}), drops duplicates and acknowledges.
All encoding and sequence arithmetic is L{gateway.protocol}'s; this module
decides when to connect, what to send, and what to tell the application.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import ProtocolError
from ..protocol import (
    CLOSE_ENDED,
    CLOSE_EXPIRED,
    CLOSE_UNKNOWN_SESSION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_BIG,
    CLOSE_UNAVAILABLE,
    RESTART_CODES,
    SUBPROTOCOL,
    Ack,
    Close,
    Data,
    Hello,
    Inbox,
    Outbox,
    Welcome,
    decodeMessage,
    encodeControl,
    encodeData,
)
from ._state import (
    Backoff,
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClosed,
    SessionLost,
    StateDetail,
    shortId,
)
from ._websocket import PACKET_OVERHEAD, ClientFactory, ClientProtocol, endpointForURL, parseURL

__all__ = [
    "SessionClient",
    "ClientState",
    "StateDetail",
    "SessionClosed",
    "SessionLost",
    "SendBufferFull",
    "MessageTooLarge",
]

MiB = 1024 * 1024

#: HTTP answers to the opening handshake that retrying cannot fix: the
#: first session fails at once.  (408 and 429 are worth retrying.)
_RETRYABLE_HTTP = frozenset({408, 429})


_MessageCallback = Callable[[Any, bool], object]
_StateCallback = Callable[[ClientState, StateDetail], object]


class SessionClient:
    """
    A client of the gateway's session protocol.  See L{gateway.client} for
    the behaviour; the names of the public methods are shared with the
    JavaScript client.

    @ivar url: the C{ws://} or C{wss://} URL of the gateway's route.
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        *,
        reactor: Any = None,
        maxBufferMessages: int = 1000,
        maxBufferBytes: int = 4 * MiB,
        maxMessageBytes: int = 1 * MiB,
        initialDelay: float = 0.1,
        maxDelay: float = 10.0,
        connectTimeout: float = 10.0,
        headers: dict[str, str] | None = None,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        """
        @param reactor: provides C{IReactorTime} and C{IReactorTCP} (and the
            name resolver); the global reactor by default.
        @param maxBufferMessages: bound on unacknowledged messages.
        @param maxBufferBytes: bound on unacknowledged payload bytes.
        @param maxMessageBytes: bound on a data packet as sent (payload,
            sequence number and colon), and (plus 20 bytes) on a received
            one.
        @param initialDelay: bound of the first reconnect delay (seconds).
        @param maxDelay: bound of every reconnect delay (seconds).
        @param connectTimeout: bound on each connect, opening handshake and
            wait for C{welcome}, on each closing handshake, and on the wait
            for the gateway to end the session after the client's C{close}.
        @param headers: extra HTTP headers for the opening handshake.
        @param uniform: C{random.uniform}-like jitter, for tests.
        @raise ValueError: for a URL that is not C{ws://} or C{wss://}, or a
            bound that is not positive.
        """
        parseURL(url)
        if min(maxBufferMessages, maxBufferBytes) < 1:
            raise ValueError("maxBufferMessages and maxBufferBytes must be positive")
        if maxMessageBytes <= PACKET_OVERHEAD:
            raise ValueError(f"maxMessageBytes must be more than {PACKET_OVERHEAD}")
        if not 0 < initialDelay <= maxDelay:
            raise ValueError("0 < initialDelay <= maxDelay is required")
        if connectTimeout <= 0:
            raise ValueError("connectTimeout must be positive")
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.url = url
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self._maxBufferMessages = maxBufferMessages
        self._maxBufferBytes = maxBufferBytes
        self._maxMessageBytes = maxMessageBytes
        self._connectTimeout = connectTimeout
        self._backoff = Backoff(initialDelay, maxDelay, uniform or random.uniform)
        self._factory = ClientFactory(
            self,
            url,
            reactor=reactor,
            headers=headers,
            maxIncomingBytes=maxMessageBytes + PACKET_OVERHEAD,
        )
        self._endpoint: IStreamClientEndpoint | None = None

        self._state = ClientState.connecting
        self._detail = StateDetail()
        self._started = False
        self._everOpened = False
        self._closing = False

        # The session.
        self._sid: str | None = None
        self._secret: str | None = None
        self._inbox = Inbox()
        self._outbox = Outbox(maxBufferMessages, maxBufferBytes)
        self._heartbeat = 0.0
        self._pendingReset: StateDetail | None = None
        self._remoteClose: Close | None = None

        # The current connection attempt and connection.
        self._attempt = 0
        self._connecting: Deferred | None = None
        self._proto: ClientProtocol | None = None
        self._welcomed = False
        self._closeSent = False
        # A close packet went out on some connection: the session may be over
        # even if that connection died before the gateway's 4000 arrived.
        self._closePacketSent = False
        self._lastSent = 0.0
        self._lastReceived = 0.0
        self._reconnectCall: IDelayedCall | None = None
        self._attemptCall: IDelayedCall | None = None
        self._ackCall: IDelayedCall | None = None
        self._idleCall: IDelayedCall | None = None
        self._deadCall: IDelayedCall | None = None
        self._closeCall: IDelayedCall | None = None

        # The application.
        self._messageCallbacks: list[_MessageCallback] = []
        self._stateCallbacks: list[_StateCallback] = []
        self._connectWaiters: list[Deferred] = []
        self._ackWaiters: list[tuple[int, Deferred]] = []
        self._stateWaiters: list[tuple[ClientState | None, Deferred]] = []
        self._closeWaiters: list[Deferred] = []

    # ------------------------------------------------------------------
    # The public API.

    @property
    def state(self) -> ClientState:
        """
        The current L{ClientState}.
        """
        return self._state

    @property
    def sessionId(self) -> str | None:
        """
        The id of the current session; None before the first C{welcome} and
        while a lost session is being replaced.
        """
        return self._sid

    @property
    def bufferedAmount(self) -> int:
        """
        Payload bytes sent but not yet acknowledged.
        """
        return self._outbox.pendingBytes

    def on_message(self, callback: _MessageCallback) -> _MessageCallback:
        """
        Call C{callback(payload, isBinary)} for every message from the
        backend, in order and exactly once: C{payload} is a C{str} for a
        text message, C{bytes} for a binary one.  Several callbacks may be
        registered; an exception in one is logged and changes nothing else.

        @return: C{callback} (so this works as a decorator).
        """
        self._messageCallbacks.append(callback)
        return callback

    def on_state(self, callback: _StateCallback) -> _StateCallback:
        """
        Call C{callback(state, detail)} (a L{ClientState} and a
        L{StateDetail}) at every state change, and again, with state
        C{reconnecting}, each time a connection attempt fails.  A session
        that could not be resumed is reported twice: C{reconnecting} with
        C{detail.reset} when it is lost, C{open} with C{detail.reset} when
        its replacement is open; C{detail.dropped} counts the messages lost
        with it.

        @return: C{callback}.
        """
        self._stateCallbacks.append(callback)
        return callback

    def connect(self) -> Deferred[None]:
        """
        Start connecting (the first call does; later calls only wait).

        @return: a L{Deferred} that fires once the first session is open, or
            fails with L{SessionClosed} if the client is closed first.
            Failures to connect do not fail it: the client keeps trying
            (state C{reconnecting}).  Cancelling it only stops the waiting.
        """
        if self._state is ClientState.closed:
            return _failed(SessionClosed("the client is closed", self._detail))
        if self._everOpened:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: _remove(self._connectWaiters, d))
        self._connectWaiters.append(d)
        if not self._started:
            self._started = True
            self._connectNow()
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
        if isinstance(payload, str):
            data, isBinary = payload.encode("utf-8"), False
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            data, isBinary = bytes(payload), True
        else:
            raise TypeError(f"send() takes str or bytes, not {type(payload).__name__}")
        if self._closing or self._remoteClose is not None or self._state is ClientState.closed:
            raise SessionClosed("the session is closed or closing", self._detail)
        size = len(data) + len(str(self._outbox.sent + 1)) + 1
        if size > self._maxMessageBytes:
            raise MessageTooLarge(
                f"a data packet of {size} bytes exceeds maxMessageBytes ({self._maxMessageBytes})"
            )
        if not self._outbox.room(len(data)):
            raise SendBufferFull(
                f"more than {self._maxBufferMessages} messages or "
                f"{self._maxBufferBytes} bytes would be unacknowledged"
            )
        message = self._outbox.add(data, isBinary)
        if self._welcomed:
            self._write(encodeData(message.seq, data), isBinary)

    def whenAcknowledged(self) -> Deferred[None]:
        """
        @return: a L{Deferred} that fires when everything sent so far is
            acknowledged by the gateway; it fails with L{SessionLost} if
            those messages are lost with their session, or L{SessionClosed}
            if the client closes first.
        """
        target = self._outbox.sent
        if self._outbox.acked >= target:
            return succeed(None)
        if self._state is ClientState.closed:
            return _failed(SessionClosed("the client closed before acknowledgement", self._detail))
        d: Deferred[None] = Deferred(lambda d: _removeWaiter(self._ackWaiters, d))
        self._ackWaiters.append((target, d))
        return d

    def close(self) -> Deferred[StateDetail]:
        """
        End the session: wait until everything sent is acknowledged
        (reconnecting as needed), send C{close}, and wait for the gateway to
        close the WebSocket.

        @return: a L{Deferred} that fires with the L{StateDetail} of the
            C{closed} state.  Cancelling it closes at once (L{abort}).
        """
        if self._state is ClientState.closed:
            return succeed(self._detail)
        d: Deferred[StateDetail] = Deferred(lambda d: self.abort())
        self._closeWaiters.append(d)
        if not self._closing:
            self._closing = True
            self.log.info("closing session {sid}", sid=shortId(self._sid))
            if not self._started and len(self._outbox):
                # Messages wait for a session: open one to deliver them.
                self._started = True
                self._connectNow()
            self._maybeFinishClose()
        return d

    def abort(self) -> None:
        """
        Close at once, without waiting for acknowledgements or the gateway:
        state C{closed}, unacknowledged messages dropped.  The gateway keeps
        the session for its grace period.
        """
        if self._state is not ClientState.closed:
            self._finish(
                StateDetail(dropped=len(self._outbox), error="aborted by the application")
            )

    def nextState(self, state: ClientState | None = None) -> Deferred[tuple[ClientState, StateDetail]]:
        """
        @return: a L{Deferred} that fires with C{(state, detail)} at the next
            change to C{state} (any state when None), or with the C{closed}
            state when the client closes first (at once if it is closed).
        """
        if self._state is ClientState.closed:
            return succeed((self._state, self._detail))
        d: Deferred[tuple[ClientState, StateDetail]] = Deferred(
            lambda d: _removeWaiter(self._stateWaiters, d)
        )
        self._stateWaiters.append((state, d))
        return d

    # ------------------------------------------------------------------
    # Connecting.

    def _connectNow(self) -> None:
        self._reconnectCall = None
        self._attempt += 1
        attempt = self._attempt
        if self._endpoint is None:
            self._endpoint = endpointForURL(self._reactor, self.url, self._connectTimeout)
        self.log.debug("connecting to {url}", url=self.url)
        self._attemptCall = self._clock.callLater(
            self._connectTimeout, self._attemptTimedOut, attempt
        )
        d = self._connecting = self._endpoint.connect(self._factory)
        d.addCallbacks(
            self._tcpConnected, self._tcpFailed, callbackArgs=(attempt,), errbackArgs=(attempt,)
        )
        d.addErrback(self._logFailure, "while connecting")

    def _tcpConnected(self, proto: ClientProtocol, attempt: int) -> None:
        if attempt == self._attempt:
            self._connecting = None

    def _tcpFailed(self, failure: Failure, attempt: int) -> None:
        if attempt != self._attempt:
            return  # given up already (timed out, or closed)
        self._connecting = None
        self._detach()
        self._lost(None, None, _oneLine(failure.getErrorMessage()))

    def _attemptTimedOut(self, attempt: int) -> None:
        self._attemptCall = None
        if attempt == self._attempt:
            self._dropConnection(f"no welcome within {self._connectTimeout:g} s")

    def _wsConnected(self, proto: ClientProtocol) -> None:
        if proto.attempt != self._attempt or self._state is ClientState.closed:
            proto.transport.abortConnection()
            return
        self._proto = proto

    def _wsOpen(self, proto: ClientProtocol) -> None:
        if proto is not self._proto:
            proto.closeWith(1000)
            return
        if proto.selected != SUBPROTOCOL:
            error = f"the gateway did not select the {SUBPROTOCOL} subprotocol"
            if not self._everOpened:
                proto.closeWith(1000, error)
                self._detach()
                self._finish(StateDetail(dropped=len(self._outbox), error=error))
            else:
                self._dropConnection(error, closeCode=1000)
            return
        self._lastReceived = self._clock.seconds()
        if self._sid is None:
            hello = Hello()
            self.log.debug("asking for a new session")
        else:
            hello = Hello(self._sid, self._secret, self._inbox.accepted)
            self.log.debug(
                "resuming session {sid} at {received}",
                sid=shortId(self._sid),
                received=self._inbox.accepted,
            )
        self._write(encodeControl(hello), False)

    # ------------------------------------------------------------------
    # Packets.

    def _wsActivity(self, proto: ClientProtocol) -> None:
        if proto is self._proto:
            self._lastReceived = self._clock.seconds()

    def _wsMessage(self, proto: ClientProtocol, payload: bytes, isBinary: bool) -> None:
        if proto is not self._proto:
            return
        self._lastReceived = self._clock.seconds()
        try:
            packet = decodeMessage(payload, isBinary)
            if isinstance(packet, Data):
                self._dataReceived(packet)
            elif isinstance(packet, Ack):
                self._ackReceived(packet)
            elif isinstance(packet, Welcome):
                self._welcomeReceived(packet)
            elif isinstance(packet, Close):
                self._closeReceived(packet)
            else:
                raise ProtocolError("the gateway sent a hello")
        except ProtocolError as e:
            self.log.warn(
                "protocol error from the gateway on session {sid}: {error}",
                sid=shortId(self._sid),
                error=str(e),
            )
            self._dropConnection(f"protocol error: {e}", closeCode=CLOSE_PROTOCOL_ERROR)

    def _dataReceived(self, message: Data) -> None:
        if not self._welcomed:
            raise ProtocolError("data packet before welcome")
        if self._remoteClose is not None:
            raise ProtocolError("data packet after close")
        fresh = self._inbox.receive(message)
        self._scheduleAck()  # duplicates are acknowledged too
        if not fresh:
            return
        self._inbox.accept()
        payload: Any = message.payload if message.isBinary else message.payload.decode("utf-8")
        for callback in list(self._messageCallbacks):
            try:
                callback(payload, message.isBinary)
            except Exception:
                self.log.failure("on_message callback {callback!r} failed", callback=callback)

    def _ackReceived(self, ack: Ack) -> None:
        if not self._welcomed:
            raise ProtocolError("ack before welcome")
        self._outbox.ack(ack.count)
        self._fireAckWaiters()
        self._maybeFinishClose()

    def _welcomeReceived(self, welcome: Welcome) -> None:
        if self._welcomed:
            raise ProtocolError("second welcome")
        resumed = False
        if self._sid is not None:
            if welcome.resumed and welcome.sid == self._sid:
                resumed = True
            else:
                # A new session instead of the one asked for.
                self._sessionLost(None, "the gateway started a new session")
        self._outbox.ack(welcome.received)
        self._sid, self._secret = welcome.sid, welcome.secret
        self._heartbeat = welcome.heartbeat
        self._welcomed = True
        self._everOpened = True
        self._backoff.reset()
        self._cancelTimer("_attemptCall")
        self.log.info(
            "session {sid} {how} (heartbeat {heartbeat:g} s)",
            sid=shortId(self._sid),
            how="resumed" if resumed else "opened",
            heartbeat=welcome.heartbeat,
        )
        for message in list(self._outbox.unacknowledged()):
            self._write(encodeData(message.seq, message.payload), message.isBinary)
        now = self._clock.seconds()
        self._lastSent = now
        if self._heartbeat > 0:
            self._idleCall = self._clock.callLater(self._heartbeat, self._idleCheck)
            self._deadCall = self._clock.callLater(self._deadTimeout(), self._deadCheck)
        reset, self._pendingReset = self._pendingReset, None
        if reset is not None:
            detail = StateDetail(
                reset=True, dropped=reset.dropped, code=reset.code, reason=reset.reason
            )
        else:
            detail = StateDetail(resumed=resumed)
        self._fireAckWaiters()
        self._setState(ClientState.open, detail)
        if self._state is ClientState.open:
            waiters, self._connectWaiters = self._connectWaiters, []
            for d in waiters:
                d.callback(None)
            self._maybeFinishClose()

    def _closeReceived(self, close: Close) -> None:
        if not self._welcomed:
            raise ProtocolError("close before welcome")
        self.log.info(
            "session {sid} ended by the backend ({code})", sid=shortId(self._sid), code=close.code
        )
        self._remoteClose = close
        self._sendAck()
        if self._proto is not None:
            self._proto.closeWith(1000, "session ended")

    # ------------------------------------------------------------------
    # Sending, acknowledging, heartbeats.

    def _write(self, packet: bytes, isBinary: bool) -> None:
        proto = self._proto
        if proto is not None and proto.state == proto.STATE_OPEN:
            proto.sendMessage(packet, isBinary)
            self._lastSent = self._clock.seconds()

    def _scheduleAck(self) -> None:
        if self._ackCall is None:
            self._ackCall = self._clock.callLater(0, self._ackDue)

    def _ackDue(self) -> None:
        self._ackCall = None
        self._sendAck()

    def _sendAck(self) -> None:
        self._cancelTimer("_ackCall")
        if self._welcomed:
            self._write(encodeControl(Ack(self._inbox.accepted)), False)

    def _deadTimeout(self) -> float:
        return 2 * self._heartbeat + 1

    def _idleCheck(self) -> None:
        now = self._clock.seconds()
        remaining = self._lastSent + self._heartbeat - now
        if remaining <= 0:
            self._sendAck()
            remaining = self._heartbeat
        self._idleCall = self._clock.callLater(remaining, self._idleCheck)

    def _deadCheck(self) -> None:
        timeout = self._deadTimeout()
        remaining = self._lastReceived + timeout - self._clock.seconds()
        if remaining > 0:
            self._deadCall = self._clock.callLater(remaining, self._deadCheck)
            return
        self._deadCall = None
        self.log.warn(
            "nothing from the gateway for {timeout:g} s on session {sid}: reconnecting",
            timeout=timeout,
            sid=shortId(self._sid),
        )
        self._dropConnection(f"nothing received for {timeout:g} s")

    def _fireAckWaiters(self) -> None:
        acked = self._outbox.acked
        ready = [d for target, d in self._ackWaiters if target <= acked]
        if ready:
            self._ackWaiters = [(t, d) for t, d in self._ackWaiters if t > acked]
            for d in ready:
                d.callback(None)

    # ------------------------------------------------------------------
    # Losing connections and sessions.

    def _detach(self) -> ClientProtocol | None:
        """
        Forget the current attempt and connection: their events are ignored
        from now on.
        """
        proto, self._proto = self._proto, None
        self._attempt += 1
        self._welcomed = False
        self._closeSent = False
        for name in ("_attemptCall", "_ackCall", "_idleCall", "_deadCall", "_closeCall"):
            self._cancelTimer(name)
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        return proto

    def _dropConnection(self, error: str, closeCode: int | None = None) -> None:
        """
        Give up the current connection (closing it with C{closeCode}, or
        dropping it) and resume on a new one.
        """
        proto = self._detach()
        if proto is not None:
            if closeCode is None:
                proto.transport.abortConnection()
            else:
                proto.closeWith(closeCode, error)
        self._lost(None, None, error)

    def _wsClosed(self, proto: ClientProtocol, code: int | None, reason: str | None) -> None:
        if proto is not self._proto:
            return
        self._detach()
        localCode = getattr(proto, "localCloseCode", None)
        status = proto.handshakeStatus()
        if not proto.opened and status is not None and status != 101:
            error = f"the gateway answered HTTP {status}"
            if not self._everOpened and 400 <= status < 500 and status not in _RETRYABLE_HTTP:
                self._finish(StateDetail(dropped=len(self._outbox), error=error))
            else:
                self._lost(None, None, error)
            return
        error = None
        if not proto.opened:
            why = getattr(proto, "wasNotCleanReason", None)
            error = "the opening handshake failed" + (f": {_oneLine(why)}" if why else "")
        elif code == 1006:
            error = "connection lost"
        self._lost(code, reason, error, localCode=localCode)

    def _lost(
        self,
        code: int | None,
        reason: str | None,
        error: str | None,
        localCode: int | None = None,
    ) -> None:
        """
        The connection is gone (already detached): decide, from how it
        ended, whether to resume, start a new session, or stop.
        """
        if self._state is ClientState.closed:
            return
        dropped = len(self._outbox)
        if self._remoteClose is not None:
            close = self._remoteClose
            self._finish(StateDetail(dropped=dropped, code=close.code, reason=close.reason))
        elif code == CLOSE_ENDED:
            self._finish(StateDetail(dropped=dropped, code=code, reason=reason))
        elif code == CLOSE_TOO_BIG or localCode == CLOSE_TOO_BIG:
            who = "the gateway" if localCode == CLOSE_TOO_BIG else "this client"
            self._finish(
                StateDetail(
                    dropped=dropped,
                    code=CLOSE_TOO_BIG,
                    reason=reason,
                    error=f"a message was larger than {who} accepts (1009)",
                )
            )
        elif code == CLOSE_SUPERSEDED:
            self._finish(
                StateDetail(
                    dropped=dropped,
                    code=code,
                    reason=reason,
                    error="the session was taken over by another connection (4001)",
                )
            )
        elif code in RESTART_CODES or code == CLOSE_PROTOCOL_ERROR:
            if self._sid is None:
                self._retry(StateDetail(code=code, reason=reason, error=_closeError(code, reason)))
            elif self._closing:
                # After our close packet, "unknown" or "expired" means the
                # gateway did end the session as asked: no error.
                ended = self._closePacketSent and code in (CLOSE_UNKNOWN_SESSION, CLOSE_EXPIRED)
                self._finish(
                    StateDetail(
                        dropped=dropped, code=code, reason=reason,
                        error=None if ended else _closeError(code, reason),
                    )
                )
            else:
                self._sessionLost(code, reason)
                self._retry(self._pendingReset)
        else:
            if error is None:
                error = _closeError(code, reason) if code is not None else "connection closed"
            if code == CLOSE_UNAVAILABLE:
                self.log.info("no backend available: trying again")
            self._retry(StateDetail(code=code, reason=reason, error=error))

    def _sessionLost(self, code: int | None, reason: str | None) -> None:
        """
        The session cannot be resumed: drop what it did not acknowledge and
        start afresh (the next C{welcome} opens a new session).
        """
        dropped = len(self._outbox)
        self.log.info(
            "session {sid} lost ({code}): {dropped} unacknowledged messages dropped",
            sid=shortId(self._sid),
            code=code,
            dropped=dropped,
        )
        previous = self._pendingReset.dropped if self._pendingReset is not None else 0
        self._pendingReset = StateDetail(
            reset=True,
            dropped=previous + dropped,
            code=code,
            reason=reason,
            error=_closeError(code, reason) if code is not None else reason,
        )
        self._sid = self._secret = None
        self._inbox = Inbox()
        self._outbox = Outbox(self._maxBufferMessages, self._maxBufferBytes)
        waiters, self._ackWaiters = self._ackWaiters, []
        for _target, d in waiters:
            d.errback(SessionLost(f"the session was lost: {dropped} messages dropped", dropped))

    def _retry(self, detail: StateDetail | None) -> None:
        delay = self._backoff.next()
        self._reconnectCall = self._clock.callLater(delay, self._connectNow)
        self.log.info(
            "session {sid}: {why}; reconnecting in {delay:.3f} s",
            sid=shortId(self._sid),
            why=(detail.error if detail is not None and detail.error else "connection lost"),
            delay=delay,
        )
        self._setState(ClientState.reconnecting, replace(detail or StateDetail(), delay=delay))

    # ------------------------------------------------------------------
    # Closing.

    def _maybeFinishClose(self) -> None:
        if not self._closing or self._closeSent or self._remoteClose is not None:
            return
        if self._state is ClientState.closed or len(self._outbox):
            return
        if self._sid is None:
            # No session to end (none yet, or a lost one not replaced yet).
            self._finish(StateDetail())
            return
        if self._welcomed:
            self._write(encodeControl(Close(1000, "")), False)
            self._closeSent = self._closePacketSent = True
            self._closeCall = self._clock.callLater(self._connectTimeout, self._closeTimedOut)

    def _closeTimedOut(self) -> None:
        self._closeCall = None
        self._dropConnection(f"the gateway did not end the session within {self._connectTimeout:g} s")

    def _finish(self, detail: StateDetail) -> None:
        """
        Stop for good: state C{closed} with C{detail}.
        """
        if self._state is ClientState.closed:
            return
        self._closing = True
        proto = self._detach()
        if proto is not None:
            proto.closeWith(1000, "client closed")
        self._cancelTimer("_reconnectCall")
        if detail.error:
            self.log.warn(
                "session {sid} closed: {error}", sid=shortId(self._sid), error=detail.error
            )
        else:
            self.log.info("session {sid} closed", sid=shortId(self._sid))
        self._setState(ClientState.closed, detail)
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

    # ------------------------------------------------------------------
    # Helpers.

    def _setState(self, state: ClientState, detail: StateDetail) -> None:
        self._state = state
        self._detail = detail
        for callback in list(self._stateCallbacks):
            try:
                callback(state, detail)
            except Exception:
                self.log.failure("on_state callback {callback!r} failed", callback=callback)
        # Once closed, nothing else will come: every waiter fires.
        final = state is ClientState.closed
        ready = [d for w, d in self._stateWaiters if final or w is None or w is state]
        if ready:
            self._stateWaiters = [
                (w, d) for w, d in self._stateWaiters if not (final or w is None or w is state)
            ]
            for d in ready:
                d.callback((state, detail))

    def _cancelTimer(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    def _logFailure(self, failure: Failure, what: str) -> None:
        self.log.failure("unexpected error {what}", failure, what=what)


def _closeError(code: int | None, reason: str | None) -> str:
    return f"closed by the gateway with {code}" + (f" ({reason})" if reason else "")


def _oneLine(text: str) -> str:
    return " ".join(text.split())


def _failed(error: Exception) -> Deferred:
    d: Deferred = Deferred()
    d.errback(error)
    return d


def _remove(waiters: list[Deferred], d: Deferred) -> None:
    if d in waiters:
        waiters.remove(d)


def _removeWaiter(waiters: list[tuple[Any, Deferred]], d: Deferred) -> None:
    waiters[:] = [(key, w) for key, w in waiters if w is not d]
