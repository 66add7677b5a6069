"""
An Engine.IO session's side facing its Socket.IO server
(L{SocketIOUpstream}): one WebSocket per session, a
L{gateway.backends.link.BackendLink} opened through the session opener (the
pool's balancer, limits, health and retries, as for every session), speaking
Engine.IO v4 to the server as a client would.

The gateway answers the server's pings and drops its open packet; message
packets pass through unchanged and in order, so a Socket.IO BINARY_EVENT
header is still followed by its attachments.  When the server closes, or
the connection drops, the client's session is closed: Socket.IO's client
then reconnects, as it would after losing its own server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import ProtocolError
from ..interfaces import IEngineUpstream
from ..metrics import Traffic
from .packets import PacketType, decodeFrame

if TYPE_CHECKING:
    from .engine import EngineSession

__all__ = ["SocketIOUpstream", "backendTarget"]

#: The query parameters of the client's request that are the edge's own
#: (its session, its transport), not the application's.
_EDGE_PARAMETERS = frozenset({b"EIO", b"transport", b"sid", b"t", b"j", b"b64"})


def backendTarget(path: str, query: bytes) -> bytes:
    """
    @param path: the Socket.IO server's path (C{backend_path}).
    @param query: the client's query string.
    @return: the request target of the session's WebSocket to the server:
        C{path} with the client's own query parameters (its Engine.IO ones
        left out), then C{EIO=4&transport=websocket}.
    """
    kept = [part for part in query.split(b"&") if part and part.split(b"=", 1)[0] not in _EDGE_PARAMETERS]
    kept += [b"EIO=4", b"transport=websocket"]
    return path.encode("ascii") + b"?" + b"&".join(kept)


@implementer(IEngineUpstream, IPushProducer)
class SocketIOUpstream:
    """
    The server side of one L{EngineSession}, over a backend link (it is the
    link's session: the link hands it what the server sends).

    It is also the push producer a client's WebSocket registers (flow
    control): while that connection's write buffer is full, the server is
    not read.

    It counts the messages it passes each way, and their bytes (characters
    of text), on the node's L{Traffic} (C{txgateway_messages_total} with
    C{mode="socketio"}).
    """

    log = Logger()

    def __init__(self, engine: EngineSession, link, traffic: Traffic | None = None) -> None:
        self.engine = engine
        self.link = link
        self.traffic = Traffic() if traffic is None else traffic
        self.closed = False

    # IEngineUpstream
    def messageFromClient(self, data: str | bytes) -> None:
        """
        A client message, to the server as a message packet.
        """
        traffic = self.traffic
        traffic.socketioUpMessages += 1
        traffic.socketioUpBytes += len(data)
        if isinstance(data, bytes):
            self.link.sendMessage(data, True)
        else:
            self.link.sendMessage(b"4" + data.encode("utf-8"), False)

    def closeUpstream(self, reason: str) -> None:
        """
        Close the server WebSocket (normal closure), releasing its slot.
        """
        if not self.closed:
            self.closed = True
            self.link.closeLink(1000, reason[:100])

    def pauseReading(self) -> None:
        """
        Stop reading the server (the client is behind).
        """
        self.link.pauseReading()

    def resumeReading(self) -> None:
        """
        Read the server again.
        """
        self.link.resumeReading()

    def registerFlow(self, producer) -> None:
        """
        Have C{producer} (the client's reading) paused while the server
        connection's write buffer is full.
        """
        self.link.registerFlow(producer)

    # IPushProducer, for the client's WebSocket.
    def pauseProducing(self) -> None:
        """
        The client's WebSocket is full: stop reading the server.
        """
        self.link.pauseReading()

    def resumeProducing(self) -> None:
        """
        The client's WebSocket drained: read the server again.
        """
        self.link.resumeReading()

    def stopProducing(self) -> None:
        """
        Nothing: the session closes the server connection itself.
        """

    # What the backend link tells its session.
    def messageFromBackend(self, payload: bytes, isBinary: bool) -> None:
        """
        A packet from the server: messages to the client, pings answered.
        """
        try:
            packet = decodeFrame(payload, isBinary)
        except (ProtocolError, UnicodeDecodeError) as e:
            self.log.warn("the Socket.IO server sent a packet that is not Engine.IO: {error}", error=e)
            self.engine.close("the Socket.IO server broke the protocol")
            return
        kind = packet.type
        if kind is PacketType.MESSAGE:
            traffic = self.traffic
            traffic.socketioDownMessages += 1
            traffic.socketioDownBytes += len(packet.data)
            self.engine.send(packet.data)
        elif kind is PacketType.PING:
            self.link.sendMessage(b"3" + payload[1:], False)
        elif kind is PacketType.CLOSE:
            self.engine.close("the Socket.IO server closed the session")
        # Its open packet (the server's own session), noops and pongs stay here.

    def linkBound(self, link) -> None:
        """
        The link is bound: nothing to do.
        """

    def backendClosed(self, code, reason, link, clean: bool) -> None:
        """
        The server connection ended: so does the client's session.
        """
        self.closed = True
        self.engine.close("the Socket.IO server connection closed")

    def backendReceipt(self, link, seq: int) -> None:
        """
        Never asked for (Engine.IO has no receipts here).
        """
