"""
The session client: one logical C{txgateway.v1} session over connections
that come and go, WebSocket or long-polling (docs/protocol.md).

L{SessionClient} numbers what the application sends (L{Outbox}), keeps it
until the gateway acknowledges it, and sends it again after a reconnect;
it counts what it receives (L{Inbox}), drops duplicates and acknowledges.
All encoding and sequence arithmetic is L{gateway.wire.protocol}'s; the
adapters (L{gateway.client._websocket}, L{gateway.client._polling}) only
translate; this module decides when to connect and over which transport,
what to send, and what to tell the application.  The Inbox and Outbox
belong to the session, not to a connection, so a move from one transport
to the other changes nothing of what is delivered.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from ..errors import ProtocolError
from ..tcp import NoDelayEndpoint
from ..wire.protocol import (
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
    Failover,
    Data,
    Hello,
    Inbox,
    Outbox,
    Packet,
    Welcome,
    decodeMessage,
    encodeControl,
    encodeData,
)
from ._polling import Closed, PollingLink, Refused, pollingURL
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
from ._upgrade import Upgrade
from ._websocket import PACKET_OVERHEAD, ClientFactory, ClientProtocol, endpointForURL, parseURL

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
]

MiB = 1024 * 1024

#: The transports, as C{SessionClient.transport} and C{StateDetail.transport}
#: name them.
WEBSOCKET = "websocket"
POLLING = "polling"
#: The values of the C{transport} keyword: C{auto} starts on WebSocket,
#: falls back to long-polling, and upgrades again when it can.
TRANSPORTS = ("auto", WEBSOCKET, POLLING)

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
        if connectTimeout <= 0 or upgradeTimeout <= 0:
            raise ValueError("connectTimeout and upgradeTimeout must be positive")
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.url = url
        self._wsURL = wsURL
        self._pollURL = pollingURL(wsURL)
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self._mode = transport
        self._maxBufferMessages = maxBufferMessages
        self._maxBufferBytes = maxBufferBytes
        self._maxMessageBytes = maxMessageBytes
        self._maxBatchMessages = maxBatchMessages
        self._maxBodyBytes = maxBodyBytes
        self._maxAnswerBytes = maxAnswerBytes
        self._connectTimeout = connectTimeout
        self._upgradeTimeout = upgradeTimeout
        self._headers = headers
        jitter = uniform or random.uniform
        self._backoff = Backoff(initialDelay, maxDelay, jitter)
        self._upgradeBackoff = Backoff(initialDelay, maxDelay, jitter)
        self._factory = ClientFactory(
            self,
            wsURL,
            reactor=reactor,
            headers=headers,
            maxIncomingBytes=maxMessageBytes + PACKET_OVERHEAD,
        )
        self._endpoint: IStreamClientEndpoint | None = None
        # The long-polling HTTP client, made on first use.
        self._agent: Any = None
        self._pool: Any = None

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

        # The transport of the current (or last) connection, and of the next
        # attempt; whether long-polling ever opened a session.
        self._transport = POLLING if transport == POLLING else WEBSOCKET
        self._nextTransport = self._transport
        self._pollingWorked = False

        # The current connection attempt and connection: a WebSocket
        # (_proto) or a long-polling link (_poller), never both.
        self._attempt = 0
        self._connecting: Deferred | None = None
        self._proto: ClientProtocol | None = None
        self._poller: PollingLink | None = None
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

        # An upgrade from long-polling to WebSocket: the next one's timer,
        # the one under way, and the bound on the wait for the poll after
        # its probe.
        self._upgradeCall: IDelayedCall | None = None
        self._upgrade: Upgrade | None = None
        self._switchCall: IDelayedCall | None = None
        # The current WebSocket came from an upgrade, and waits for welcome.
        self._upgrading = False

        # The application.
        self._messageCallbacks: list[_MessageCallback] = []
        self._stateCallbacks: list[_StateCallback] = []
        self._failoverCallbacks: list[Callable[[int, int], object]] = []
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
    def transport(self) -> str:
        """
        The transport of the current connection, or of the last one while
        reconnecting: C{"websocket"} or C{"polling"}.
        """
        return self._transport

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
        with it.  A session that moves from long-polling to WebSocket (an
        upgrade, with no connection dropped) is reported C{open} again,
        neither resumed nor reset; C{detail.transport} names the transport
        of the connection that opened, of the next attempt (reconnecting),
        or of the last connection (closed).

        @return: C{callback}.
        """
        self._stateCallbacks.append(callback)
        return callback

    def on_failover(self, callback: Callable[[int, int], object]) -> Callable[[int, int], object]:
        """
        Call C{callback(first, last)} when the gateway reports that the
        session's backend connection dropped and the session went on with
        another backend without sending again this client's messages
        C{first} to C{last} (a pool with C{failover = "notify"}): they may
        not have reached the application.  Under the default policy
        (C{replay}) they are sent again and nothing is reported.

        @return: C{callback}.
        """
        self._failoverCallbacks.append(callback)
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
            self._sendPacket(message)

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
        close the connection.

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
            self._cancelUpgrade()
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
        self._transport = self._nextTransport
        self._attemptCall = self._clock.callLater(
            self._connectTimeout, self._attemptTimedOut, attempt
        )
        if self._transport == POLLING:
            self.log.debug("long-polling {url}", url=self._pollURL)
            self._poller = self._newPollingLink()
            self._poller.open(self._hello())
            return
        if self._endpoint is None:
            self._endpoint = endpointForURL(self._reactor, self._wsURL, self._connectTimeout)
        self.log.debug("connecting to {url}", url=self._wsURL)
        d = self._connecting = self._endpoint.connect(self._factory)
        d.addCallbacks(
            self._tcpConnected, self._tcpFailed, callbackArgs=(attempt,), errbackArgs=(attempt,)
        )
        d.addErrback(self._logFailure, "while connecting")

    def _hello(self, probe: bool = False) -> Hello:
        """
        @return: the hello that opens a new session, or resumes (or, with
            C{probe}, probes) the current one.
        """
        if self._sid is None:
            self.log.debug("asking for a new session")
            return Hello()
        if not probe:
            self.log.debug(
                "resuming session {sid} at {received}",
                sid=shortId(self._sid),
                received=self._inbox.accepted,
            )
        return Hello(self._sid, self._secret, self._inbox.accepted, probe)

    def _newPollingLink(self) -> PollingLink:
        if self._agent is None:
            # One held poll and one send: two persistent connections.
            self._pool = HTTPConnectionPool(self._reactor, persistent=True)
            self._pool.maxPersistentPerHost = 2
            self._pool.retryAutomatically = False
            self._agent = Agent.usingEndpointFactory(
                self._reactor, _NoDelayEndpoints(self._reactor, self._connectTimeout), pool=self._pool
            )
        return PollingLink(
            self,
            self._agent,
            self._pollURL,
            self._clock,
            headers=self._headers,
            ackCount=lambda: self._inbox.accepted,
            requestTimeout=self._requestTimeout,
            maxBatchMessages=self._maxBatchMessages,
            maxBodyBytes=self._maxBodyBytes,
            maxAnswerBytes=self._maxAnswerBytes,
        )

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
        self._sendPacket(self._hello())

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
            self._packetReceived(decodeMessage(payload, isBinary))
        except ProtocolError as e:
            self._protocolError(e)

    def _packetReceived(self, packet: Packet) -> None:
        """
        Act on one packet from the gateway, whatever its transport.

        @raise ProtocolError: for a packet the gateway should not have sent.
        """
        if isinstance(packet, Data):
            self._dataReceived(packet)
        elif isinstance(packet, Ack):
            self._ackReceived(packet)
        elif isinstance(packet, Welcome):
            self._welcomeReceived(packet)
        elif isinstance(packet, Close):
            self._closeReceived(packet)
        elif isinstance(packet, Failover):
            for callback in list(self._failoverCallbacks):
                try:
                    callback(packet.first, packet.last)
                except Exception:
                    self.log.failure("on_failover callback {callback!r} failed", callback=callback)
        else:
            raise ProtocolError(f"the gateway sent a {type(packet).__name__.lower()} packet")

    def _protocolError(self, error: ProtocolError) -> None:
        self.log.warn(
            "protocol error from the gateway on session {sid}: {error}",
            sid=shortId(self._sid),
            error=str(error),
        )
        self._dropConnection(f"protocol error: {error}", closeCode=CLOSE_PROTOCOL_ERROR)

    # The long-polling link's events (see PollingLink).

    def _pollPackets(
        self, link: PollingLink, packets: list[Packet | Closed], opening: bool = False
    ) -> None:
        """
        The packets of one answer, in order.  An answer, even an empty one,
        shows that the gateway is alive.
        """
        if link is not self._poller:
            return
        self._lastReceived = self._clock.seconds()
        limit = self._maxMessageBytes + PACKET_OVERHEAD
        try:
            first = packets[0] if packets else None
            if opening and not isinstance(first, (Welcome, Closed)):
                raise ProtocolError("the answer to open does not start with welcome")
            for packet in packets:
                if link is not self._poller:
                    return  # the link ended (a close code, an error, the application)
                if isinstance(packet, Closed):
                    self._pollLost(link, packet.code, packet.reason, None)
                    return
                if isinstance(packet, Data) and len(packet.payload) > limit:
                    self._pollLost(
                        link, CLOSE_TOO_BIG, None,
                        f"a message larger than this client accepts ({limit} bytes) (1009)",
                    )
                    return
                self._packetReceived(packet)
        except ProtocolError as e:
            self._protocolError(e)
            return
        if opening and link is self._poller and self._welcomed:
            assert self._sid is not None and self._secret is not None
            link.start(self._sid, self._secret)
            self._scheduleUpgrade()

    def _pollRefused(self, link: PollingLink, refusal: Refused) -> None:
        """
        The gateway answered an HTTP error: its session code counts as a
        WebSocket close code would; without one, the HTTP status counts as
        an answer to a WebSocket handshake would.
        """
        if link is not self._poller:
            return
        if refusal.code is not None:
            if refusal.code == CLOSE_TOO_BIG:
                error = "a message was larger than the gateway accepts (HTTP 413, 1009)"
                self._pollLost(link, refusal.code, refusal.reason, error)
            else:
                self._pollLost(link, refusal.code, refusal.reason, None)
            return
        self._detach()
        error = f"the gateway answered HTTP {refusal.status}"
        status = refusal.status
        if not self._everOpened and 400 <= status < 500 and status not in _RETRYABLE_HTTP:
            self._finish(StateDetail(dropped=len(self._outbox), error=error))
        else:
            self._lost(None, None, error)

    def _pollLost(
        self, link: PollingLink, code: int | None, reason: str | None, error: str | None
    ) -> None:
        """
        The link is gone: closed by the gateway with C{code}, failed
        (C{error}), or drained after the gateway's C{close}.
        """
        if link is not self._poller:
            return
        self._detach()
        if code is None and error is None:
            error = "connection closed"
        self._lost(code, reason, error)

    def _pollIdle(self, link: PollingLink) -> None:
        """
        The paused link has nothing outstanding: the upgrade may switch.
        """
        if link is self._poller and self._upgrade is not None and self._upgrade.probed:
            self._switchNow()

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
        if self._poller is not None:
            self._pollingWorked = True
        else:
            self._upgradeBackoff.reset()
        for message in list(self._outbox.unacknowledged()):
            self._sendPacket(message)
        now = self._clock.seconds()
        self._lastSent = now
        if self._heartbeat > 0 and self._proto is not None:
            # (Long-polling bounds each request instead: the outstanding poll
            # is the client's heartbeat.)
            self._idleCall = self._clock.callLater(self._heartbeat, self._idleCheck)
            self._deadCall = self._clock.callLater(self._deadTimeout(), self._deadCheck)
        reset, self._pendingReset = self._pendingReset, None
        if reset is not None:
            detail = StateDetail(
                reset=True, dropped=reset.dropped, code=reset.code, reason=reset.reason
            )
        else:
            # An upgrade is no dropped connection: not "resumed", only a new
            # transport.
            detail = StateDetail(resumed=resumed and not self._upgrading)
        self._upgrading = False
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
        self._cancelUpgrade()
        self._sendAck()
        if self._proto is not None:
            self._proto.closeWith(1000, "session ended")
        elif self._poller is not None:
            # Acknowledge everything, then end the link.
            self._poller.drain()

    # ------------------------------------------------------------------
    # Sending, acknowledging, heartbeats.

    def _sendPacket(self, packet: Data | Ack | Close | Hello) -> None:
        """
        Send a packet on the current connection: a WebSocket message, or
        the long-polling link's next send.
        """
        proto = self._proto
        if proto is not None:
            if proto.state == proto.STATE_OPEN:
                if isinstance(packet, Data):
                    proto.sendMessage(encodeData(packet.seq, packet.payload), packet.isBinary)
                else:
                    proto.sendMessage(encodeControl(packet), False)
                self._lastSent = self._clock.seconds()
        elif self._poller is not None and not isinstance(packet, Hello):
            self._poller.write(packet)

    def _scheduleAck(self) -> None:
        # On long-polling the next poll carries the ack.
        if self._ackCall is None and self._poller is None:
            self._ackCall = self._clock.callLater(0, self._ackDue)

    def _ackDue(self) -> None:
        self._ackCall = None
        self._sendAck()

    def _sendAck(self) -> None:
        self._cancelTimer("_ackCall")
        if self._welcomed:
            self._sendPacket(Ack(self._inbox.accepted))

    def _deadTimeout(self) -> float:
        return 2 * self._heartbeat + 1

    def _requestTimeout(self) -> float | None:
        """
        @return: the bound on a poll or a send: twice the heartbeat plus a
            round trip's allowance (C{connectTimeout}), as a poll may be
            held for the gateway's poll timeout (less than its heartbeat
            timeout); None when the gateway announced no heartbeat.
        """
        if self._heartbeat <= 0:
            return None
        return 2 * self._heartbeat + self._connectTimeout

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
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop()
        self._cancelUpgrade()
        self._attempt += 1
        self._welcomed = False
        self._upgrading = False
        self._closeSent = False
        for name in ("_attemptCall", "_ackCall", "_idleCall", "_deadCall", "_closeCall",
                     "_upgradeCall"):
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
            fatal = not self._everOpened and 400 <= status < 500 and status not in _RETRYABLE_HTTP
            if fatal and self._mode != "auto":
                self._finish(StateDetail(dropped=len(self._outbox), error=error))
            else:
                # (In auto mode, a proxy that refuses WebSockets may answer
                # so: long-polling has the last word.)
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
        self._chooseTransport()
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
                    error=error or f"a message was larger than {who} accepts (1009)",
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

    def _chooseTransport(self) -> None:
        """
        In auto mode, after a lost connection: a WebSocket that broke or
        never opened makes the next attempt use long-polling; a
        long-polling attempt that failed before long-polling ever worked
        makes it try WebSocket again (the gateway may not offer polling, or
        the network is down and either will do).
        """
        if self._mode != "auto":
            return
        if self._transport == WEBSOCKET:
            self._nextTransport = POLLING
        elif not self._pollingWorked:
            self._nextTransport = WEBSOCKET

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
        self._setState(
            ClientState.reconnecting,
            replace(detail or StateDetail(), delay=delay, transport=self._nextTransport),
        )

    # ------------------------------------------------------------------
    # Upgrading from long-polling to WebSocket.

    def _scheduleUpgrade(self) -> None:
        """
        In auto mode, on an open long-polling session: try a WebSocket
        after the upgrade backoff's next delay.
        """
        if (
            self._mode != "auto"
            or self._poller is None
            or not self._welcomed
            or self._closing
            or self._remoteClose is not None
            or self._upgrade is not None
            or self._upgradeCall is not None
        ):
            return
        delay = self._upgradeBackoff.next()
        self._upgradeCall = self._clock.callLater(delay, self._startUpgrade)

    def _startUpgrade(self) -> None:
        self._upgradeCall = None
        if self._poller is None or not self._welcomed or self._closing:
            return
        if self._endpoint is None:
            self._endpoint = endpointForURL(self._reactor, self._wsURL, self._connectTimeout)
        self.log.debug("session {sid}: probing a WebSocket", sid=shortId(self._sid))
        upgrade = self._upgrade = Upgrade(
            self,
            self._endpoint,
            lambda owner: ClientFactory(
                owner,
                self._wsURL,
                reactor=self._reactor,
                headers=self._headers,
                maxIncomingBytes=self._maxMessageBytes + PACKET_OVERHEAD,
            ),
            self._clock,
            self._upgradeTimeout,
            self._hello(probe=True),
        )
        upgrade.start()

    def _upgradeProbed(self, upgrade: Upgrade) -> None:
        """
        The probe came back: poll no more, and switch once the outstanding
        poll and send have ended (the poll within C{upgradeTimeout}).
        """
        if upgrade is not self._upgrade or self._poller is None:
            return
        self.log.debug("session {sid}: probe answered", sid=shortId(self._sid))
        self._switchCall = self._clock.callLater(self._upgradeTimeout, self._switchOverdue)
        self._poller.pause()

    def _switchOverdue(self) -> None:
        """
        The outstanding poll did not end within C{upgradeTimeout} (the
        gateway holds a poll with nothing to send for its poll timeout):
        abort it, as an aborted poll loses nothing.  A send still in flight
        is never aborted (it might reach the gateway after the WebSocket's
        resume and take the session back): the upgrade is given up.
        """
        self._switchCall = None
        poller, upgrade = self._poller, self._upgrade
        if poller is None or upgrade is None:
            return
        if poller.sending:
            self._upgradeFailed(upgrade, "a long-polling send did not finish in time")
        else:
            poller.abortPoll()

    def _switchNow(self) -> None:
        """
        Long-polling is quiet: leave it, and resume on the probed WebSocket.
        """
        upgrade, self._upgrade = self._upgrade, None
        assert upgrade is not None
        self._cancelTimer("_switchCall")
        proto = upgrade.handOver()
        self._detach()
        self._closePool()
        self._transport = self._nextTransport = WEBSOCKET
        self._upgrading = True
        self._upgradeBackoff.reset()
        if proto.state != proto.STATE_OPEN:
            proto.closeWith(1000)
            self._lost(None, None, "the WebSocket closed during the upgrade")
            return
        proto.session = self
        proto.attempt = self._attempt
        self._proto = proto
        self.log.info("session {sid}: moving to WebSocket", sid=shortId(self._sid))
        self._attemptCall = self._clock.callLater(
            self._connectTimeout, self._attemptTimedOut, self._attempt
        )
        self._lastReceived = self._clock.seconds()
        self._sendPacket(self._hello())

    def _upgradeFailed(self, upgrade: Upgrade, why: str) -> None:
        """
        The upgrade did not work: stay on long-polling, try again later.
        """
        if upgrade is not self._upgrade:
            return
        self.log.info(
            "session {sid}: no WebSocket ({why}); staying on long-polling",
            sid=shortId(self._sid),
            why=why,
        )
        self._cancelUpgrade()
        self._scheduleUpgrade()

    def _cancelUpgrade(self) -> None:
        """
        Abandon the upgrade under way, if any; long-polling carries on.
        """
        self._cancelTimer("_switchCall")
        upgrade, self._upgrade = self._upgrade, None
        if upgrade is not None:
            upgrade.cancel()
            if self._poller is not None and self._poller.paused:
                self._poller.resume()

    def _closePool(self) -> None:
        """
        Close the long-polling connections kept for reuse.
        """
        if self._pool is not None:
            self._pool.closeCachedConnections().addErrback(
                self._logFailure, "closing long-polling connections"
            )

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
            self._sendPacket(Close(1000, ""))
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
        self._closePool()
        if detail.transport is None:
            detail = replace(detail, transport=self._transport)
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
        if detail.transport is None:
            detail = replace(detail, transport=self._transport)
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


def websocketURL(url: str) -> str:
    """
    @return: the C{ws://} or C{wss://} URL of the same route as C{url}
        (C{http://} and C{https://} become C{ws://} and C{wss://}).
    """
    scheme, sep, rest = url.partition("://")
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme)
    return scheme + sep + rest


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


@implementer(IAgentEndpointFactory)
class _NoDelayEndpoints:
    """
    Endpoints for long-polling requests, with Nagle's algorithm off (a
    request's head and body are separate small writes).
    """

    def __init__(self, reactor: Any, timeout: float) -> None:
        self._reactor = reactor
        self._timeout = timeout

    def endpointForURI(self, uri: Any) -> NoDelayEndpoint:
        """
        @return: an endpoint for C{uri}'s host (TLS for https).
        """
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(uri.host.decode("idna")), endpoint)
        return NoDelayEndpoint(endpoint)
