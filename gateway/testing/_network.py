"""
What a test drives in the reactor against the servers under test: a
WebSocket client with message queues (L{connectClient}), a raw TCP
exchange (L{rawExchange}), a wait for a condition (L{waitUntil}), and a TCP
relay whose connections the test can cut or stall (L{CuttingRelay}).

Nothing here imports the reactor at import time: pytest-twisted chooses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Factory, Protocol

__all__ = [
    "LOCALHOST",
    "CuttingRelay",
    "HandshakeFailed",
    "TestClient",
    "connectClient",
    "rawExchange",
    "waitUntil",
]

#: The address every test server listens on and every test client uses.
LOCALHOST = "127.0.0.1"


class HandshakeFailed(Exception):
    """
    The WebSocket opening handshake did not succeed.
    """


class _ClientProtocol(WebSocketClientProtocol):
    def onConnect(self, response):
        self.factory.client.response = response

    def onOpen(self):
        client = self.factory.client
        client.protocol = self
        client.opened.callback(client)

    def onMessage(self, payload, isBinary):
        self.factory.client.messages.put((payload, isBinary))

    def onPong(self, payload):
        self.factory.client.pongs.put(payload)

    def onPing(self, payload):
        self.factory.client.pings.put(payload)
        super().onPing(payload)

    def onClose(self, wasClean, code, reason):
        client = self.factory.client
        if not client.opened.called:
            client.opened.errback(HandshakeFailed(reason or "connection closed"))
        client.closed.callback((wasClean, self.remoteCloseCode, self.remoteCloseReason))


@dataclass
class TestClient:
    """
    A WebSocket client for tests.

    @ivar messages: L{DeferredQueue} of C{(payload, isBinary)} received.
    @ivar pongs: L{DeferredQueue} of pong payloads received.
    @ivar pings: L{DeferredQueue} of ping payloads received (each answered).
    @ivar closed: fires with C{(wasClean, remoteCode, remoteReason)}.
    @ivar response: Autobahn's C{ConnectionResponse} (chosen subprotocol,
        headers).
    """

    __test__ = False

    opened: Deferred = field(default_factory=Deferred)
    closed: Deferred = field(default_factory=Deferred)
    messages: DeferredQueue = field(default_factory=DeferredQueue)
    pongs: DeferredQueue = field(default_factory=DeferredQueue)
    pings: DeferredQueue = field(default_factory=DeferredQueue)
    protocol: object = None
    response: object = None

    def send(self, payload: bytes | str, isBinary: bool | None = None, fragmentSize: int | None = None) -> None:
        """
        Send a message (C{str} as text, C{bytes} as binary unless told).
        """
        if isinstance(payload, str):
            payload, isBinary = payload.encode("utf-8"), bool(isBinary)
        elif isBinary is None:
            isBinary = True
        self.protocol.sendMessage(payload, isBinary, fragmentSize=fragmentSize)

    async def receive(self, timeout: float = 10.0):
        """
        @return: the next C{(payload, isBinary)}, within C{timeout} seconds.
        """
        from twisted.internet import reactor

        return await self.messages.get().addTimeout(timeout, reactor)

    def close(self, code: int | None = 1000, reason: str | None = None) -> Deferred:
        """
        Start the closing handshake.

        @return: L{closed}.
        """
        self.protocol.sendClose(code, reason)
        return self.closed


async def connectClient(
    url: str,
    *,
    path: str = "/",
    protocols: Sequence[str] = (),
    headers: dict | None = None,
    bindAddress: str | None = None,
    compression: bool = False,
    tls=None,
    timeout: float = 10.0,
) -> TestClient:
    """
    Open a WebSocket to C{url} + C{path} (a gateway's or a backend's);
    through TLS with C{tls}, an L{IOpenSSLClientConnectionCreator}.

    @raise HandshakeFailed: when the server refuses the handshake.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from urllib.parse import urlparse

    parsed = urlparse(url)
    client = TestClient()
    factory = WebSocketClientFactory(url.rstrip("/") + path, protocols=list(protocols) or None,
                                     headers=headers or {})
    factory.protocol = _ClientProtocol
    factory.client = client
    options = dict(maxMessagePayloadSize=64 * 1024 * 1024, maxFramePayloadSize=64 * 1024 * 1024,
                   autoPingInterval=0, openHandshakeTimeout=timeout, closeHandshakeTimeout=timeout)
    if compression:
        options["perMessageCompressionOffers"] = [PerMessageDeflateOffer()]
        options["perMessageCompressionAccept"] = lambda r: (
            PerMessageDeflateResponseAccept(r) if isinstance(r, PerMessageDeflateResponse) else None
        )
    factory.setProtocolOptions(**options)
    endpoint = TCP4ClientEndpoint(reactor, parsed.hostname, parsed.port, timeout=timeout,
                                  bindAddress=(bindAddress, 0) if bindAddress else None)
    if tls is not None:
        from twisted.internet.endpoints import wrapClientTLS

        endpoint = wrapClientTLS(tls, endpoint)
    await endpoint.connect(factory)
    return await client.opened.addTimeout(timeout, reactor)


class _Collector(Protocol):
    def connectionMade(self):
        self.received = []
        self.transport.write(self.factory.payload)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.received))


async def rawExchange(port: int, payload: bytes, timeout: float = 10.0, host: str = LOCALHOST) -> bytes:
    """
    Connect, send C{payload}, and return everything received until the
    server closes the connection (within C{timeout} seconds).
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    factory = Factory.forProtocol(_Collector)
    factory.payload = payload
    factory.done = Deferred()
    proto = await TCP4ClientEndpoint(reactor, host, port, timeout=timeout).connect(factory)

    def onTimeout(result, timeout):
        proto.transport.abortConnection()
        return result

    return await factory.done.addTimeout(timeout, reactor, onTimeoutCancel=onTimeout)


async def waitUntil(predicate, timeout: float = 10.0, interval: float = 0.01) -> None:
    """
    Wait, without blocking the reactor, until C{predicate()} is true: for
    state that changes on a timer of the code under test (a health check),
    with no event to wait on.

    @raise TimeoutError: when it is still false after C{timeout} seconds.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise TimeoutError(f"condition still false after {timeout}s")
        await deferLater(reactor, interval)


class _RelayEnd(Protocol):
    """
    One side of a relayed connection.
    """

    def __init__(self, relay, peer=None):
        self.relay = relay
        self.peer = peer
        self.pending = []

    def connectionMade(self):
        self.relay.ends.add(self)
        if self.peer is None:
            # The client side: connect onward, holding what arrives meanwhile.
            self.transport.pauseProducing()
            from twisted.internet import reactor
            from twisted.internet.endpoints import TCP4ClientEndpoint

            factory = Factory.forProtocol(lambda: _RelayEnd(self.relay, self))
            d = TCP4ClientEndpoint(reactor, LOCALHOST, self.relay.nextTarget()).connect(factory)
            d.addErrback(lambda f: self.transport.abortConnection())
        else:
            self.peer.peer = self
            self.peer.transport.resumeProducing()

    def dataReceived(self, data):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason):
        self.relay.ends.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class CuttingRelay:
    """
    A TCP relay in front of a port, whose connections a test can cut at any
    moment (both sides aborted, as a failing network or proxy would), from
    outside the client under test.

    Given several ports, it spreads connections over them in turn (round
    robin, no affinity), as a plain L4 balancer in front of gateway nodes.
    """

    def __init__(self, targetPort: int, *morePorts: int) -> None:
        self.targetPort = targetPort
        self.targets = [targetPort, *morePorts]
        self._turn = 0
        self.ends: set[_RelayEnd] = set()
        self.cuts = 0
        self.port = None
        self._listening = None

    def nextTarget(self) -> int:
        """
        @return: the port the next connection goes to.
        """
        port = self.targets[self._turn % len(self.targets)]
        self._turn += 1
        return port

    async def start(self) -> int:
        """
        Listen on a free port of 127.0.0.1.

        @return: the port.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        factory = Factory.forProtocol(lambda: _RelayEnd(self))
        factory.noisy = False
        self._listening = await TCP4ServerEndpoint(reactor, 0, interface=LOCALHOST).listen(factory)
        self.port = self._listening.getHost().port
        return self.port

    def cut(self) -> int:
        """
        Abort every relayed connection now.

        @return: how many connections were cut.
        """
        ends = [e for e in self.ends if e.transport is not None]
        for end in ends:
            end.transport.abortConnection()
        if ends:
            self.cuts += 1
        return len(ends)

    def pause(self) -> None:
        """
        Stop relaying (both ways) without closing anything: a stalled peer,
        whose TCP buffers fill and push back on the sender.
        """
        for end in self.ends:
            if end.transport is not None:
                end.transport.pauseProducing()

    def resume(self) -> None:
        """
        Relay again after L{pause}.
        """
        for end in self.ends:
            if end.transport is not None:
                end.transport.resumeProducing()

    async def stop(self) -> None:
        """
        Stop listening and cut what is left.
        """
        self.cut()
        if self._listening is not None:
            await self._listening.stopListening()
