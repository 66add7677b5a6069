"""
The client's WebSocket adapter: an Autobahn protocol and factory that only
translate between WebSocket events and their owner, an
L{IWebSocketOwner <gateway.interfaces.IWebSocketOwner>} (the session's
L{SessionDriver <gateway.client._driver.SessionDriver>}, or an
L{Upgrade <gateway.client._upgrade.Upgrade>} probing a WebSocket), and the
endpoint a C{ws://} or C{wss://} URL names.

Autobahn's own timers run on the global reactor (txaio's loop), whatever
reactor the factory is given.  So every Autobahn timeout is switched off
here and replaced by one on the owner's clock: the driver bounds the
connect, the opening handshake and the wait for C{welcome}; the protocol
bounds the closing handshake (L{ClientProtocol.closeWith}).  Heartbeats are
the session protocol's acks, not WebSocket pings (docs/protocol.md), so
Autobahn's auto-ping is off as well.  This is the one client module that
reads Autobahn's attributes (the HTTP status line, the local close code,
why a connection was not clean).
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint

from .. import __version__
from ..interfaces import IWebSocketOwner
from ..tcp import noDelay
from ..wire.protocol import SUBPROTOCOL

__all__ = ["ClientProtocol", "ClientFactory", "endpointForURL", "parseURL", "PACKET_OVERHEAD"]

#: A data packet is its payload preceded by at most 19 digits and a colon.
PACKET_OVERHEAD = 20


def parseURL(url: str) -> tuple[bool, str, int]:
    """
    @return: whether C{url} uses TLS (C{wss://}), its host and its port.
    @raise ValueError: for anything but a C{ws://} or C{wss://} URL.
    """
    isSecure, host, port, _resource, _path, _params = parse_url(url)
    return isSecure, host, port


def endpointForURL(reactor: Any, url: str, timeout: float) -> IStreamClientEndpoint:
    """
    @return: the endpoint that reaches the host of C{url}: TCP through
        L{HostnameEndpoint} (every address of the name, with C{timeout}),
        wrapped in TLS checked against the host name for C{wss://}.
    """
    isSecure, host, port = parseURL(url)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if isSecure:
        # pyOpenSSL is imported on first use only.
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


def _truncate(reason: str, limit: int = 120) -> str:
    """
    @return: C{reason} cut to at most C{limit} UTF-8 bytes (a close reason
        may have at most 123).
    """
    return reason.encode("utf-8")[:limit].decode("utf-8", "ignore")


class ClientProtocol(WebSocketClientProtocol):
    """
    One WebSocket connection of a session.  Every event goes to the
    owner, tagged with this protocol so that the owner can ignore the
    events of connections it has given up.

    All handlers are synchronous: Autobahn awaits only C{onConnect}.

    @ivar owner: the L{IWebSocketOwner} this connection reports to: the
        session's driver; or, for a transport upgrade's probe, the L{Upgrade
        <gateway.client._upgrade.Upgrade>} until the driver takes the
        connection over (L{transferTo}).
    @ivar attempt: the number of the owner's connection attempt that made
        this connection.
    @ivar opened: the opening handshake completed.
    @ivar selected: the subprotocol the gateway selected (None for none).
    """

    owner: IWebSocketOwner
    attempt: int = 0
    opened = False
    selected: str | None = None
    _dropCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """
        Send the opening handshake, and tell the owner which connection
        its attempt made (Nagle's algorithm off: see L{gateway.tcp}).
        """
        noDelay(self.transport)
        super().connectionMade()
        self.owner.webSocketConnected(self)

    def onConnect(self, response: Any) -> None:
        """
        Remember the subprotocol the gateway selected; the owner decides
        in L{onOpen} what a missing one means.
        """
        self.selected = response.protocol

    def onOpen(self) -> None:
        """
        The opening handshake is complete.
        """
        self.opened = True
        self.owner.webSocketOpened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        One packet arrived.
        """
        self.owner.webSocketMessage(self, payload, isBinary)

    def onPing(self, payload: bytes) -> None:
        """
        A ping also shows the gateway is alive; answer it as usual.
        """
        self.owner.webSocketActivity(self)
        super().onPing(payload)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> Any:
        """
        The gateway's close frame arrived (or its answer to ours): the
        gateway must now drop the TCP connection, within the timeout.
        """
        result = super().onCloseFrame(code, reasonRaw)
        self._armDrop()
        return result

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """
        The connection is gone.
        """
        if self._dropCall is not None and self._dropCall.active():
            self._dropCall.cancel()
        self._dropCall = None
        self.owner.webSocketClosed(self, code, reason)

    def closeWith(self, code: int, reason: str = "") -> None:
        """
        Close this connection with C{code}: a closing handshake when the
        WebSocket is open (the TCP connection is dropped if it does not
        complete in time), at once otherwise.
        """
        if self.state == self.STATE_OPEN:
            self.sendClose(code, _truncate(reason) or None)
            self._armDrop()
        elif self.state == self.STATE_CLOSING:
            self._armDrop()
        elif self.state != self.STATE_CLOSED:
            self.transport.abortConnection()

    def transferTo(self, owner: IWebSocketOwner, attempt: int) -> None:
        """
        From now on, report to C{owner}, as the connection of its attempt
        C{attempt} (an upgrade's probe handed over to the driver).
        """
        self.owner = owner
        self.attempt = attempt

    def closeCodeSent(self) -> int | None:
        """
        @return: the close code this side sent, if it sent one (Autobahn
            sends 1009 itself for a message over the size limit).
        """
        return getattr(self, "localCloseCode", None)

    def failureReason(self) -> str | None:
        """
        @return: Autobahn's description of why the connection was not
            clean, if it has one.
        """
        return getattr(self, "wasNotCleanReason", None)

    def handshakeStatus(self) -> int | None:
        """
        @return: the HTTP status of the gateway's answer to the opening
            handshake, when one arrived.
        """
        line = getattr(self, "http_status_line", None)
        if not line:
            return None
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            return int(parts[1])
        return None

    def _armDrop(self) -> None:
        if self._dropCall is None and self.transport is not None:
            self._dropCall = self.owner.clock.callLater(self.owner.closeTimeout, self._dropNow)

    def _dropNow(self) -> None:
        self._dropCall = None
        self.transport.abortConnection()


class ClientFactory(WebSocketClientFactory):
    """
    Builds the connections of one owner: offers C{txgateway.v1},
    limits incoming messages, and turns off every Autobahn timer (see the
    module docstring).
    """

    protocol = ClientProtocol

    def __init__(
        self,
        owner: IWebSocketOwner,
        url: str,
        *,
        reactor: Any,
        headers: dict[str, str] | None,
        maxIncomingBytes: int,
    ) -> None:
        super().__init__(
            url,
            protocols=[SUBPROTOCOL],
            headers=headers,
            useragent=f"txgateway.client/{__version__}",
            reactor=reactor,
        )
        self.owner = owner
        self.setProtocolOptions(
            maxMessagePayloadSize=maxIncomingBytes,
            maxFramePayloadSize=maxIncomingBytes,
            failByDrop=False,
            autoPingInterval=0,
            autoPingTimeout=0,
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            serverConnectionDropTimeout=0,
            perMessageCompressionOffers=[],
        )

    def buildProtocol(self, addr: Any) -> ClientProtocol:
        """
        @return: a connection of the owner, tagged with its current attempt.
        """
        proto = super().buildProtocol(addr)
        proto.transferTo(self.owner, self.owner.attempt)
        return proto
