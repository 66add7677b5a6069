"""
Engine.IO over WebSocket (Autobahn): a session opened on a WebSocket, or
an upgrade of a polling session (C{sid} in the query).

The front door has already checked the handshake's query and Origin
(L{gateway.engineio.edge.EngineIOEdge.openWebSocket}); a new session's
Socket.IO server connection is opened while the handshake waits, so that a
client the gateway cannot serve gets an HTTP status, not an open socket
that closes.
"""

from __future__ import annotations

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from ..errors import BackendRefused, GatewayError, ProtocolError, SessionLimit
from ..interfaces import IEngineTransport
from ..transports.lean import DirectMessages, sendCloseCode
from .engine import EngineRefusal
from .packets import Packet, decodeFrame, encodeFrame

__all__ = ["EngineWebSocket", "EngineWebSocketFactory"]


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
                raise ConnectionDeny(e.status, str(e)) from None
            except GatewayError:
                raise ConnectionDeny(503, "Service Unavailable") from None
            self._leftMeanwhile()
            return None
        gateway = edge.gateway
        started = gateway.reactor.seconds()
        gateway.metrics.accepted("socketio", "websocket")
        try:
            self.engine = await edge.open(self.factory.routeConfig, self.route, self)
            gateway.metrics.handshake("socketio", "websocket", gateway.reactor.seconds() - started)
        except SessionLimit as e:
            raise ConnectionDeny(503, f"Service Unavailable (retry after {e.retryAfter}s)") from None
        except BackendRefused:
            raise ConnectionDeny(502, "Bad Gateway") from None
        except GatewayError:
            raise ConnectionDeny(503, "Service Unavailable") from None
        except Exception:
            self.log.failure("opening a Socket.IO session failed")
            raise ConnectionDeny(503, "Service Unavailable") from None
        self._new = True
        self._leftMeanwhile()
        return None

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

    def connectionLost(self, reason) -> None:
        """
        Release the client connection's place (C{onLost}).
        """
        super().connectionLost(reason)
        onLost, self.onLost = self.onLost, _nothing
        onLost()

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

    def closeTransport(self) -> None:
        """
        Close the WebSocket (normal closure).
        """
        engine, self.engine = self.engine, None
        if engine is not None and engine.transport is not self:
            engine.upgradeFailed(self)
        if self.state == self.STATE_OPEN:
            sendCloseCode(self, 1000, "")
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)


class EngineWebSocketFactory(WebSocketServerFactory):
    """
    Builds the L{EngineWebSocket}s of one C{socket.io} route (its
    C{maxPayload} bounds each message).
    """

    protocol = EngineWebSocket
    noisy = False

    def __init__(self, edge, routeConfig, maxPayload: int) -> None:
        super().__init__(server="txgateway")
        self.edge = edge
        self.routeConfig = routeConfig
        timeouts = edge.gateway.config.timeouts
        self.setProtocolOptions(
            maxMessagePayloadSize=maxPayload,
            maxFramePayloadSize=maxPayload,
            autoPingInterval=0,
            failByDrop=False,
            openHandshakeTimeout=timeouts.handshake,
            closeHandshakeTimeout=timeouts.shutdown,
        )
