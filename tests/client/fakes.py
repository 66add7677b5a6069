"""
Fakes the client's test modules share: the gateway side of a WebSocket (a
real Autobahn server protocol connected to the client's real Autobahn
protocol through L{twisted.test.iosim}), a fake L{twisted.web.client.Agent}
whose long-polling requests the test answers, and a L{Harness} that puts a
L{SessionClient} on a L{MemoryReactorClock} in front of them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from gateway.client._engine import SessionEngine
from gateway.client import (
    ClientState,
    SessionClient,
    StateDetail,
)
from gateway.wire.protocol import (
    SUBPROTOCOL,
    Ack,
    Close,
    Data,
    Probe,
    Welcome,
    controlToJSON,
    dataToJSON,
    decodeMessage,
    encodeControl,
    encodeData,
    packetFromJSON,
)

URL = "ws://gateway.example:8080/chat"
SID = "0123456789abcdef0123456789abcdef"
SECRET = "k3y-0f-th3-s3ss10n-d0-n0t-l0g-m3"
NEW_SID = "fedcba9876543210fedcba9876543210"
HEARTBEAT = 10.0


class FakeGateway(WebSocketServerProtocol):
    """
    The gateway side of one connection: records the packets it receives;
    the test sends packets and closes.
    """

    def onConnect(self, request: Any) -> str | None:
        self.request = request
        self.packets: list[Any] = []
        self.closeCode: int | None = None
        deny = self.factory.deny
        if deny is not None:
            raise ConnectionDeny(deny, "no route")
        return SUBPROTOCOL if self.factory.select else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.packets.append(decodeMessage(payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closeCode = code

    def welcome(self, sid: str = SID, received: int = 0, resumed: bool = False,
                heartbeat: float = HEARTBEAT) -> None:
        self.sendMessage(encodeControl(Welcome(sid, SECRET, received, resumed, heartbeat, 30.0)))

    def dataPacket(self, seq: int, payload: bytes, isBinary: bool = False) -> None:
        self.sendMessage(encodeData(seq, payload), isBinary)

    def ack(self, count: int) -> None:
        self.sendMessage(encodeControl(Ack(count)))

    def closePacket(self, code: int, reason: str) -> None:
        self.sendMessage(encodeControl(Close(code, reason)))

    def probe(self) -> None:
        self.sendMessage(encodeControl(Probe()))

    def of(self, kind: type) -> list[Any]:
        """
        @return: the packets of type C{kind} received so far.
        """
        return [p for p in self.packets if isinstance(p, kind)]


class Harness:
    """
    A L{SessionClient} on a L{MemoryReactorClock}, whose connection
    attempts the test completes (L{accept}) or fails (L{refuse}).

    @ivar bounds: the upper bounds the client asked the jitter for;
        C{lows} the lower bounds.
    @ivar upgrades: the C{(delay, why)} of every upgrade try scheduled.
    """

    def __init__(self, jitter: float = 0.5, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.jitter = jitter
        self.bounds: list[float] = []
        self.lows: list[float] = []
        self.upgrades: list[tuple[float, str | None]] = []
        options.setdefault("uniform", self.uniform)
        options.setdefault("transport", "websocket")
        self.client = SessionClient(URL, reactor=self.reactor, **options)
        self.messages: list[tuple[Any, bool]] = []
        self.states: list[tuple[ClientState, StateDetail]] = []
        self.client.onMessage(lambda payload, isBinary: self.messages.append((payload, isBinary)))
        self.client.onState(lambda state, detail: self.states.append((state, detail)))
        self.client.onUpgradeScheduled(lambda delay, why: self.upgrades.append((delay, why)))
        self.pumps: list[iosim.IOPump] = []
        self.handled = 0
        self.serverFactory = WebSocketServerFactory(protocols=[SUBPROTOCOL], reactor=self.reactor)
        self.serverFactory.protocol = FakeGateway
        self.serverFactory.setProtocolOptions(
            openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0
        )
        self.serverFactory.select = True
        self.serverFactory.deny = None
        self.http = FakeAgent()
        self.client._dialer.agent = self.http  # long-polling requests go to the fake

    def uniform(self, low: float, high: float) -> float:
        """
        The jitter: C{jitter} of the way from C{low} to C{high}.
        """
        self.lows.append(low)
        self.bounds.append(high)
        return low + (high - low) * self.jitter

    @property
    def attempts(self) -> int:
        """
        TCP connections the client has started.
        """
        return len(self.reactor.tcpClients)

    def accept(self, select: bool = True, deny: int | None = None) -> FakeGateway:
        """
        Complete the client's latest TCP connection: connect it to a new
        fake gateway and run the opening handshake.
        """
        index = self._latest()
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[index]
        self.serverFactory.select, self.serverFactory.deny = select, deny
        client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        server = self.serverFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
            clock=self.reactor,
        )
        self.pumps.append(pump)
        self.flush()
        return server

    def _latest(self) -> int:
        index = self.attempts - 1
        assert index >= self.handled, "the client is not connecting"
        self.handled = index + 1
        return index

    def refuse(self) -> None:
        """
        Fail the client's latest TCP connection.
        """
        index = self._latest()
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[index]
        connector = self.reactor.connectors[index]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        # HostnameEndpoint reports the failure at the next tick of its
        # attempt loop (attemptDelay, 0.3 s).
        self.reactor.advance(0.3)

    def open(self, **welcome: Any) -> FakeGateway:
        """
        Connect (the first time), accept, and welcome: a session is open.
        """
        if not self.client._engine.started:
            self.client.connect()
        gateway = self.accept()
        gateway.welcome(**welcome)
        self.flush()
        assert self.client.state is ClientState.open
        return gateway

    def flush(self) -> None:
        """
        Deliver everything in flight, both ways (running calls due now).
        """
        for _ in range(10):
            self.reactor.advance(0)
            moved = False
            for pump in self.pumps:
                moved = pump.flush() or moved
            if not moved:
                break

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.flush()

    def drop(self, gateway: FakeGateway) -> None:
        """
        The TCP connection to C{gateway} breaks.
        """
        gateway.transport.loseConnection()
        self.flush()

    def closeWith(self, gateway: FakeGateway, code: int, reason: str = "") -> None:
        """
        C{gateway} closes the WebSocket with C{code} (any code: sendClose
        allows only 1000 and 3000-4999).
        """
        gateway.sendCloseFrame(code, reason.encode() or None, isReply=False)
        self.flush()

    def reconnect(self) -> FakeGateway:
        """
        Let the backoff delay pass and accept the new connection.
        """
        self.reactor.advance(self.states[-1][1].delay)
        return self.accept()


class FakeBodyTransport:
    """
    The transport a response body is delivered through.
    """

    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    """
    Just enough of an L{IResponse} for the client: a status and a body
    (with or without an announced length).
    """

    def __init__(self, code: int, body: bytes, announce: bool = True) -> None:
        self.code = code
        self.body = body
        self.length = len(body) if announce else UNKNOWN_LENGTH
        self.headers = Headers({"content-type": ["application/json"]})
        self.transport = FakeBodyTransport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        if not self.transport.stopped:
            for i in range(0, len(self.body), 1000):
                protocol.dataReceived(self.body[i:i + 1000])
        reason = ResponseFailed([]) if self.transport.stopped else ResponseDone()
        protocol.connectionLost(Failure(reason))


class FakeRequest:
    """
    One long-polling request the client made; the test answers it.

    @ivar kind: its C{txgw} value.
    @ivar body: its JSON body, decoded.
    """

    def __init__(self, method: bytes, uri: bytes, headers: Headers, body: bytes) -> None:
        self.method = method
        self.uri = uri.decode("ascii")
        query = parse_qs(urlsplit(self.uri).query)
        self.kind = query["txgw"][0]
        self.nonce = query["n"][0]
        self.headers = headers
        self.raw = body
        self.body = json.loads(body)
        self.cancelled = False
        self.d: Deferred = Deferred(lambda d: setattr(self, "cancelled", True))

    @property
    def pending(self) -> bool:
        return not self.d.called

    @property
    def packets(self) -> list[Any]:
        """
        The packets of a send, decoded.
        """
        return [packetFromJSON(p) for p in self.body["packets"]]

    def answer(self, *packets: Any, announce: bool = True) -> None:
        """
        Answer 200 with C{packets} (packet objects, or JSON objects).
        """
        objs = [p if isinstance(p, dict) else toJSON(p) for p in packets]
        body = json.dumps({"packets": objs}).encode()
        self.d.callback(FakeResponse(200, body, announce))

    def refuse(self, status: int, code: int | None = None, body: bytes | None = None) -> None:
        """
        Answer an HTTP error, with the gateway's JSON body (and session
        code) unless C{body} is given.
        """
        if body is None:
            obj = {"error": "refused", "status": status, "message": "refused by the test"}
            if code is not None:
                obj["code"] = code
            body = json.dumps(obj).encode()
        self.d.callback(FakeResponse(status, body))

    def fail(self) -> None:
        """
        The connection broke before an answer.
        """
        self.d.errback(ResponseNeverReceived([Failure(ConnectionLost())]))


def toJSON(packet: Any) -> dict:
    return dataToJSON(packet) if isinstance(packet, Data) else controlToJSON(packet)


class FakeAgent:
    """
    Stands for the client's L{twisted.web.client.Agent}: records requests;
    the test answers them.
    """

    def __init__(self) -> None:
        self.requests: list[FakeRequest] = []

    def request(self, method: bytes, uri: bytes, headers: Headers, bodyProducer: Any) -> Deferred:
        consumer = StringTransport()
        bodyProducer.startProducing(consumer)
        request = FakeRequest(method, uri, headers, consumer.value())
        self.requests.append(request)
        return request.d

    def pending(self, kind: str | None = None) -> list[FakeRequest]:
        """
        @return: the requests (of C{kind}) not answered yet, oldest first.
        """
        return [r for r in self.requests if r.pending and (kind is None or r.kind == kind)]

    def one(self, kind: str) -> FakeRequest:
        """
        @return: the one pending request of C{kind}.
        """
        pending = self.pending(kind)
        assert len(pending) == 1, [(r.kind, r.body) for r in self.pending()]
        return pending[0]


def welcomed(sid: str = SID, received: int = 0, resumed: bool = False,
             heartbeat: float = HEARTBEAT) -> Welcome:
    return Welcome(sid, SECRET, received, resumed, heartbeat, 30.0)


def pollingOpen(h: Harness, **welcome: Any) -> None:
    """
    Connect (the first time) over long-polling and answer the open with a
    welcome: a session is open, and a poll waits.
    """
    if not h.client._engine.started:
        h.client.connect()
    h.http.one("open").answer(welcomed(**welcome))
    h.flush()
    assert h.client.state is ClientState.open
    assert h.client.transport == "polling"


def upgradeToProbe(a: Harness) -> FakeGateway:
    """
    Open over long-polling (after a WebSocket failure), let the first
    upgrade start, and return the gateway side of its WebSocket (which has
    the probe hello).
    """
    a.client.connect()
    a.refuse()
    a.reactor.advance(a.states[-1][1].delay)
    pollingOpen(a)
    a.reactor.advance(a.upgrades[-1][0])  # the upgrade delay
    return a.accept()


def result(d: Deferred) -> Any:
    """
    @return: the result a L{Deferred} has already.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure(d: Deferred) -> Failure:
    """
    @return: the failure a L{Deferred} has already.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results and isinstance(results[0], Failure), f"{d!r} has not failed"
    return results[0]


def hasNotFired(d: Deferred) -> bool:
    return not d.called


def engine(mode: str = "websocket", **options: Any) -> SessionEngine:
    """
    @return: a L{SessionEngine} with the client's default bounds.
    """
    settings = dict(maxBufferMessages=1000, maxBufferBytes=4 << 20, maxMessageBytes=1 << 20,
                    connectTimeout=10.0, initialDelay=0.1, maxDelay=10.0,
                    uniform=lambda low, high: high, upgradeDelay=5.0, maxUpgradeDelay=300.0)
    settings.update(options)
    return SessionEngine(mode, **settings)
