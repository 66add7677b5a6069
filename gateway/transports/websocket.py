"""
The session protocol over WebSocket (Autobahn): one client connection
carrying C{txgateway.v1} packets to and from a L{Session}.

The protocol is handed its connection by the front door, which has already
routed the request; it decodes packets and drives the session, and knows
nothing of backends beyond asking the service to open a session.
"""

from __future__ import annotations

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from zope.interface import implementer

from .lean import DirectMessages, sendCloseCode, withOptions
from ..wire.forwarded import clientAddress
from ..errors import BackendRefused, GatewayError, LimitExceeded, NoBackendAvailable, ProtocolError, ResumeRefused, SessionLimit
from ..wire.protocol import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_REFUSED,
    CLOSE_UNAVAILABLE,
    SUBPROTOCOL,
    Data,
    Hello,
    Probe,
    decodeMessage,
    encodeControl,
    encodeData,
    shortId,
)
from ..interfaces import ISessionTransport

__all__ = ["SessionWebSocket", "SessionWebSocketFactory"]


def _nothing() -> None:
    """
    What an C{onLost} is before the front door sets it, and after it ran.
    """


@implementer(ISessionTransport)
class SessionWebSocket(DirectMessages, WebSocketServerProtocol):
    """
    A client's WebSocket carrying the session protocol.

    Set by the front door before any byte is fed: C{route} (what
    L{gateway.sessions.registry.SessionRegistry.open} needs to open a
    session; let go of at the first hello), and C{onLost}, called once
    when the connection ends (it releases the connection's place among the
    gateway's client connections).

    Its factory's options are class attributes (L{withOptions}), and what
    Autobahn kept of the handshake is let go of once open
    (L{DirectMessages.forgetHandshake}): a gateway holds one of these per
    attached session.
    """

    kind = "ws"

    #: txaio's logger, as Autobahn's own classes have, not a plain
    #: L{Logger}: Autobahn logs at debug level twice per frame through this
    #: attribute, and txaio drops those events where they are emitted
    #: instead of formatting and writing each one.
    log = txaio.make_logger()

    def __init__(self) -> None:
        super().__init__()
        self.session = None
        self.route = None
        self.onLost = _nothing
        self._opening: Deferred | None = None
        self._helloTimer = None
        self._done = False
        self._started = 0.0

    def connectionMade(self) -> None:
        """
        Count the connection, and start its handshake's clock.
        """
        gateway = self.factory.gateway
        gateway.metrics.accepted("session", "websocket")
        self._started = gateway.reactor.seconds()
        super().connectionMade()

    def onConnect(self, request):
        """
        Accept the handshake with the session subprotocol.
        """
        if SUBPROTOCOL not in request.protocols:
            self.factory.gateway.metrics.refused(400, "no_subprotocol")
            raise ConnectionDeny(400, f"the {SUBPROTOCOL} subprotocol is required")
        return SUBPROTOCOL

    def onOpen(self) -> None:
        """
        Wait (bounded) for the client's hello.
        """
        self.forgetHandshake()
        gateway = self.factory.gateway
        self._helloTimer = gateway.reactor.callLater(
            gateway.config.timeouts.handshake, self._noHello
        )

    def _noHello(self) -> None:
        self._helloTimer = None
        self.closeTransport(CLOSE_PROTOCOL_ERROR, "no hello received in time")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        Decode a packet and hand it to the session.
        """
        if self._done:
            return  # the session is over on this connection: late packets are moot
        try:
            packet = decodeMessage(payload, isBinary)
            session = self.session
            if session is None:
                opening = self._opening is not None and not self._opening.called
                if opening or not isinstance(packet, Hello):
                    raise ProtocolError(f"expected hello, not {type(packet).__name__.lower()}")
                self._cancelHelloTimer()
                # Only a new session's opening needs the route (and the
                # request head it holds): let go of it at the first hello.
                route, self.route = self.route, None
                self._opening = opening = Deferred.fromCoroutine(self._open(packet, route))
                opening.addErrback(self._openFailed)
                opening.addBoth(self._opened)
                return
            session.lastReceived = self.factory.gateway.reactor.seconds()
            session.packetReceived(packet)
        except LimitExceeded as e:  # before ProtocolError, its base
            self.closeTransport(CLOSE_TOO_BIG, str(e)[:120])
        except ProtocolError as e:
            self.factory.gateway.clientErrors += 1
            self.log.debug("session protocol error: {error}", error=e)
            self.closeTransport(CLOSE_PROTOCOL_ERROR, str(e)[:120])

    def _opened(self, _) -> None:
        self._opening = None

    async def _open(self, hello: Hello, route) -> None:
        gateway = self.factory.gateway
        if hello.sid is None:
            session = await gateway.sessions.open(
                route, clientAddress(route.head, route.peer, gateway.trustedProxies))
            if self.state != self.STATE_OPEN:
                # The client left while the backend was being connected.
                session.orphaned()
                return
            self.session = session
            session.attach(self, resumed=False)
            self._handshakeDone()
            self.log.debug("session {sid} opened on {backend}", sid=shortId(session.sid),
                           backend=session.backend.name)
        elif hello.probe:
            # An upgrade's round trip: answer without moving the session;
            # the client follows with a real resume on this connection.
            sessions = gateway.sessions
            session = await sessions.probed(hello)
            if self.state != self.STATE_OPEN:
                return
            self.sendMessage(encodeControl(Probe()), False)
            # The real resume must follow in time, like a first hello.
            self._helloTimer = gateway.reactor.callLater(
                gateway.config.timeouts.handshake, self._noHello
            )
            sessions.releasePoll(session)  # the client waits for its held poll to end
        else:
            session = await gateway.sessions.resume(hello, "ws")
            if self.state != self.STATE_OPEN:
                session.abandon()
                return
            self.session = session
            session.attach(self, resumed=True)
            self._handshakeDone()

    def _handshakeDone(self) -> None:
        gateway = self.factory.gateway
        gateway.metrics.handshake("session", "websocket", gateway.reactor.seconds() - self._started)

    def _openFailed(self, failure) -> None:
        self._opening = None
        if failure.check(ResumeRefused):
            error = failure.value
            self.closeTransport(error.code, error.reason)
        elif failure.check(BackendRefused):
            self.closeTransport(CLOSE_REFUSED, str(failure.value)[:120])
        elif failure.check(SessionLimit):
            # A session bound (max_sessions, per address): come back later.
            self.closeTransport(CLOSE_UNAVAILABLE,
                                f"{str(failure.value)[:90]}; retry after {failure.value.retryAfter}s")
        elif failure.check(NoBackendAvailable, LimitExceeded):
            self.closeTransport(CLOSE_UNAVAILABLE, str(failure.value)[:120])
        elif failure.check(GatewayError):
            self.closeTransport(CLOSE_UNAVAILABLE, str(failure.value)[:120])
        else:
            self.log.failure("opening a session failed", failure)
            self.closeTransport(CLOSE_UNAVAILABLE, "the session could not be opened")

    def _cancelHelloTimer(self) -> None:
        if self._helloTimer is not None:
            if self._helloTimer.active():
                self._helloTimer.cancel()
            self._helloTimer = None

    def onClose(self, wasClean: bool, code, reason) -> None:
        """
        Detach from the session (which waits for a resume).  A close
        Autobahn sent by itself (a message over the size bound, a frame that
        breaks RFC 6455) is counted here, those of L{closeTransport} there.
        """
        if self.failedByMe and not self._done and self.localCloseCode is not None:
            self.factory.gateway.metrics.closed("session", self.localCloseCode)
        self._cancelHelloTimer()
        session, self.session = self.session, None
        if session is not None:
            session.detach(self, reason or f"closed with {code}")

    def connectionLost(self, reason) -> None:
        """
        Release the client connection's place (C{onLost}).
        """
        super().connectionLost(reason)
        onLost, self.onLost = self.onLost, _nothing
        onLost()

    # ISessionTransport
    def pushData(self, message: Data) -> None:
        """
        Send a data packet.
        """
        if self.state == self.STATE_OPEN:
            self.sendMessage(encodeData(message.seq, message.payload), message.isBinary)

    def pushControl(self, packet) -> None:
        """
        Send a control packet.
        """
        if self.state == self.STATE_OPEN:
            self.sendMessage(encodeControl(packet), False)

    def closeTransport(self, code: int, reason: str) -> None:
        """
        Close the WebSocket with C{code}; the session is not told (it
        detaches when the close completes).
        """
        self._done = True
        self.factory.gateway.metrics.closed("session", code)
        session, self.session = self.session, None
        if session is not None:
            session.detach(self, reason)
        if self.state == self.STATE_OPEN:
            sendCloseCode(self, code, reason)
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    def abortTransport(self) -> None:
        """
        Drop the connection at once.
        """
        self.dropConnection(abort=True)

    def letGo(self) -> None:
        """
        The session was attached through another node: close with 4503.
        Not 4001 (which ends a client): with several nodes, a resume through
        a connection that has since died may come last; the live client
        resumes again.
        """
        self.closeTransport(CLOSE_UNAVAILABLE, "the session moved to another gateway node")

    def release(self) -> None:
        """
        Nothing: a WebSocket holds no poll.
        """


class SessionWebSocketFactory(WebSocketServerFactory):
    """
    Builds L{SessionWebSocket}s for a gateway (its L{GatewayFactory} is
    C{gateway}); the front door feeds them their connections.
    """

    protocol = SessionWebSocket
    noisy = False

    def __init__(self, gateway) -> None:
        super().__init__(server="txgateway")
        self.gateway = gateway
        session = gateway.config.session
        limit = session.maxMessageBytes + 21  # the sequence number and colon
        self.setProtocolOptions(
            maxMessagePayloadSize=limit,
            maxFramePayloadSize=limit,
            autoPingInterval=0,
            failByDrop=False,
            openHandshakeTimeout=gateway.config.timeouts.handshake,
            closeHandshakeTimeout=gateway.config.timeouts.shutdown,
        )
        withOptions(self)
