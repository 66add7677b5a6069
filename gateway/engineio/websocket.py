"""
Engine.IO over WebSocket (Autobahn): a session opened on a WebSocket, or
an upgrade of a polling session (C{sid} in the query).

The front door has already checked the handshake's query and Origin
(L{gateway.engineio.edge.EngineIOEdge.openWebSocket}); a new session's
Socket.IO server connection is opened while the handshake waits, so that a
client the gateway cannot serve gets an HTTP status, not an open socket
that closes.  Every refused handshake, whether this module refused it or
Autobahn did (a bad header), is answered as a refused poll is: the status,
the reference server's JSON body, C{Retry-After} on a 503
(L{EngineWebSocket.failHandshake}).
"""

from __future__ import annotations

from typing import NoReturn

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from ..errors import GatewayError, ProtocolError
from ..interfaces import IEngineTransport
from ..transports.lean import DirectMessages, sendCloseCode
from .engine import UNAVAILABLE_RETRY_AFTER, EngineRefusal, openRefusal
from .packets import BAD_REQUEST, Packet, decodeFrame, encodeFrame, errorResponse

__all__ = ["GOING_AWAY", "EngineWebSocket", "EngineWebSocketFactory"]

#: The close code of a client WebSocket closed because the gateway stops
#: (going away), so that the client reconnects at once.
GOING_AWAY = 1001


def _nothing() -> None:
    """
    What an C{onLost} is before the front door sets it, and after it ran.
    """


@implementer(IPushProducer)
class _Reading:
    """
    A client WebSocket's reading, as the push producer its Socket.IO
    server connection pauses while that connection's write buffer is full.
    """

    def __init__(self, websocket: EngineWebSocket) -> None:
        self.websocket = websocket

    def pauseProducing(self) -> None:
        """
        Stop reading the client.
        """
        self.websocket.pauseReading()

    def resumeProducing(self) -> None:
        """
        Read the client again.
        """
        self.websocket.resumeReading()

    def stopProducing(self) -> None:
        """
        Nothing: the session closes the client's connection itself.
        """


@implementer(IEngineTransport)
class EngineWebSocket(DirectMessages, WebSocketServerProtocol):
    """
    A client's WebSocket carrying Engine.IO.

    Set by the edge before any byte is fed: C{route} (the gateway's route,
    for a new session's server connection), C{engine} (the session it
    upgrades, or L{None} for a new one) and C{onLost} (releases the
    connection's place among the gateway's client connections).
    """

    kind = "websocket"
    log = txaio.make_logger()

    def __init__(self) -> None:
        super().__init__()
        self.engine = None
        self.route = None
        self.onLost = _nothing
        self._early: list[Packet] = []
        self._new = False
        #: The session this WebSocket upgrades, when another node holds it.
        self.relayedSid: str | None = None
        #: Its session already has a WebSocket: close this one once open.
        self.superfluous = False
        #: Why the handshake is refused (for L{failHandshake}).
        self._refusal: EngineRefusal | None = None
        self._lost: list[Deferred] | None = []

    async def onConnect(self, request):
        """
        Accept the handshake; for a new session, once its Socket.IO server
        connection is open.
        """
        if self.engine is not None or self.superfluous:
            return None
        edge = self.factory.edge
        if self.relayedSid is not None:
            try:
                self.engine = await edge.relayUpgrade(self.relayedSid, self)
                self.superfluous = self.engine is None
            except EngineRefusal as e:
                self._deny(e)
            except GatewayError:
                self._deny(EngineRefusal(BAD_REQUEST, "the session's node could not be asked", 503,
                                         retryAfter=UNAVAILABLE_RETRY_AFTER, reason="no_backend"))
            self._leftMeanwhile()
            return None
        gateway = edge.gateway
        started = gateway.reactor.seconds()
        gateway.metrics.accepted("socketio", "websocket")
        try:
            self.engine = await edge.open(self.factory.routeConfig, self.route, self)
        except GatewayError as e:
            self._deny(openRefusal(e))
        except Exception:
            self.log.failure("opening a Socket.IO session failed")
            self._deny(EngineRefusal(BAD_REQUEST, "the session could not be opened", 503,
                                     retryAfter=UNAVAILABLE_RETRY_AFTER))
        gateway.metrics.handshake("socketio", "websocket", gateway.reactor.seconds() - started)
        self._new = True
        self._leftMeanwhile()
        return None

    def _deny(self, refusal: EngineRefusal) -> NoReturn:
        """
        Refuse the handshake with C{refusal} (L{failHandshake} answers it).

        @raise ConnectionDeny: always.
        """
        self._refusal = refusal
        raise ConnectionDeny(refusal.status, str(refusal))

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:
        """
        Answer a refused handshake as a refused poll is answered: its
        status, C{Content-Type: application/json} and the reference
        server's body (C{{"code":3,"message":...}} for one Autobahn refused
        by itself), C{Retry-After} on a 503; never Autobahn's bare status
        line.  The connection is closed once it is written.
        """
        refusal, self._refusal = self._refusal, None
        if self.state == self.STATE_CLOSED:
            return  # dropped meanwhile (the gateway stopped, or the client left)
        if refusal is None:
            refusal = EngineRefusal(BAD_REQUEST, reason, code)
        gateway = self.factory.edge.gateway
        if refusal.status < 500:
            gateway.clientErrors += 1
        gateway.metrics.refused(refusal.status, refusal.reason)
        self.wasNotCleanReason = reason
        self.sendData(errorResponse(refusal.status, refusal.code, str(refusal), refusal.headers))
        self.dropConnection(abort=False)

    def _leftMeanwhile(self) -> None:
        """
        The client may have left while its handshake waited: then its
        session is told now (it would otherwise wait for a ping to go
        unanswered).
        """
        if self.state == self.STATE_CLOSED and self.engine is not None:
            engine, self.engine = self.engine, None
            engine.transportClosed(self)

    def onOpen(self) -> None:
        """
        A new session: send its open packet, then what waited for it.
        """
        if self.superfluous:
            self.closeTransport()
        elif self._new:
            early, self._early = self._early, []
            self.deliver([self.factory.edge.openPacket(self.engine, []), *early])
            self._carry()

    def _carry(self) -> None:
        """
        This WebSocket carries its session from now on: while its write
        buffer is full, the Socket.IO server is not read.
        """
        engine = self.engine
        if engine is not None and engine.upstream is not None:
            self.registerFlow(engine.upstream)
            engine.upstream.registerFlow(_Reading(self))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        A packet: to the session, or to its upgrade.
        """
        engine = self.engine
        if engine is None:
            return
        try:
            packet = decodeFrame(payload, isBinary)
        except ProtocolError:
            self.factory.edge.gateway.clientErrors += 1
            engine.brokenWebSocket(self)
            return
        upgrading = engine.transport is not self
        engine.fromWebSocket(self, packet)
        if upgrading and engine.transport is self:
            self._carry()  # upgraded

    def onClose(self, wasClean: bool, code, reason) -> None:
        """
        The WebSocket closed: the session ends if it carried it.
        """
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.transportClosed(self)

    def connectionMade(self) -> None:
        """
        Count the WebSocket among its route's open ones (the gateway waits
        for them when it stops).
        """
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason) -> None:
        """
        Release the client connection's place (C{onLost}), and tell those
        waiting for it to end.
        """
        super().connectionLost(reason)
        self.factory.open.discard(self)
        onLost, self.onLost = self.onLost, _nothing
        onLost()
        waiting, self._lost = self._lost, None
        for d in waiting or ():
            d.callback(None)

    def whenLost(self) -> Deferred:
        """
        @return: L{Deferred} firing once the connection has ended.
        """
        if self._lost is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._lost.append(d)
        return d

    # IEngineTransport
    def deliver(self, packets: list[Packet]) -> None:
        """
        One frame per packet (held until the handshake is over).
        """
        if self.state == self.STATE_CONNECTING:
            self._early.extend(packets)
            return
        if self.state != self.STATE_OPEN:
            return
        for packet in packets:
            payload, isBinary = encodeFrame(packet)
            self.sendMessage(payload, isBinary)

    def closeTransport(self, code: int | None = None) -> None:
        """
        Close the WebSocket with C{code}: by default normal closure (1000),
        or going away (1001) once the gateway is stopping.  One still in its
        handshake is dropped; one already closing is left to finish.
        """
        engine, self.engine = self.engine, None
        if engine is not None and engine.transport is not self:
            engine.upgradeFailed(self)
        if self.state == self.STATE_OPEN:
            if code is None:
                code = GOING_AWAY if self.factory.edge.stopping else 1000
            sendCloseCode(self, code, "")
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)


class EngineWebSocketFactory(WebSocketServerFactory):
    """
    Builds the L{EngineWebSocket}s of one C{socket.io} route (its
    C{maxPayload} bounds each message), and knows those open.
    """

    protocol = EngineWebSocket
    noisy = False

    def __init__(self, edge, routeConfig, maxPayload: int) -> None:
        super().__init__(server="txgateway")
        self.edge = edge
        self.routeConfig = routeConfig
        #: The route's client WebSockets whose connection is open.
        self.open: set[EngineWebSocket] = set()
        timeouts = edge.gateway.config.timeouts
        self.setProtocolOptions(
            maxMessagePayloadSize=maxPayload,
            maxFramePayloadSize=maxPayload,
            autoPingInterval=0,
            failByDrop=False,
            openHandshakeTimeout=timeouts.handshake,
            closeHandshakeTimeout=timeouts.shutdown,
        )
