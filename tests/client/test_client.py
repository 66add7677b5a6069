"""
Tests for L{gateway.client}: the session client against in-memory fakes of
the gateway side (for WebSocket, a real Autobahn server protocol connected
to the client's real Autobahn protocol through L{twisted.test.iosim}; for
long-polling, a fake L{twisted.web.client.Agent} whose requests the test
answers), with every timer on a L{MemoryReactorClock}.
"""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from gateway.client import (
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClient,
    SessionClosed,
    SessionLost,
    StateDetail,
)
from gateway.client._cli import LineSender, formatMessage, formatState, parseArguments
from gateway.client._state import Backoff
from gateway.errors import GatewayError, LimitExceeded
from gateway.wire.protocol import (
    SUBPROTOCOL,
    Ack,
    Close,
    Data,
    Hello,
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


# ----------------------------------------------------------------------
# The fake gateway.


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

    @ivar bounds: the upper bounds the client asked the jitter for.
    """

    def __init__(self, jitter: float = 0.5, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.jitter = jitter
        self.bounds: list[float] = []
        options.setdefault("uniform", self.uniform)
        options.setdefault("transport", "websocket")
        self.client = SessionClient(URL, reactor=self.reactor, **options)
        self.messages: list[tuple[Any, bool]] = []
        self.states: list[tuple[ClientState, StateDetail]] = []
        self.client.on_message(lambda payload, isBinary: self.messages.append((payload, isBinary)))
        self.client.on_state(lambda state, detail: self.states.append((state, detail)))
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
        self.client._agent = self.http  # long-polling requests go to the fake

    def uniform(self, low: float, high: float) -> float:
        assert low == 0
        self.bounds.append(high)
        return high * self.jitter

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
        if not self.client._started:
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
    if not h.client._started:
        h.client.connect()
    h.http.one("open").answer(welcomed(**welcome))
    h.flush()
    assert h.client.state is ClientState.open
    assert h.client.transport == "polling"


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


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def logged() -> Any:
    """
    Every log event emitted during the test, formatted.
    """
    events: list[str] = []

    def observe(event: dict) -> None:
        text = formatEvent(event)
        if "log_failure" in event:
            text += event["log_failure"].getTraceback()
        events.append(text)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


# ----------------------------------------------------------------------
# The public surface.


def test_exports() -> None:
    """
    C{gateway.client.__all__} names only things the package defines, and
    the errors sit in the gateway's exception tree (SendBufferFull is a
    LimitExceeded).
    """
    import gateway.client

    for name in gateway.client.__all__:
        assert hasattr(gateway.client, name), name
    assert issubclass(SendBufferFull, LimitExceeded)
    assert issubclass(MessageTooLarge, LimitExceeded)
    assert issubclass(SessionClosed, GatewayError)
    assert issubclass(SessionLost, GatewayError)
    assert [s.value for s in ClientState] == ["connecting", "open", "reconnecting", "closed"]


def test_importInstallsNoReactor() -> None:
    """
    Importing the client package and its command line installs no reactor.
    """
    code = (
        "import sys, gateway.client, gateway.client._cli, gateway.client.__main__\n"
        "assert 'twisted.internet.reactor' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_badArguments() -> None:
    """
    A URL that is not ws://, wss://, http:// or https://, an unknown
    transport, or inconsistent bounds, are refused at construction.
    """
    with pytest.raises(ValueError):
        SessionClient("ftp://example.com/", reactor=Clock())
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), transport="carrier-pigeon")
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), upgradeTimeout=0)
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), maxBatchMessages=0)
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), initialDelay=5, maxDelay=1)
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), maxMessageBytes=10)


# ----------------------------------------------------------------------
# Opening a session.


def test_newSession(h: Harness) -> None:
    """
    The client offers txgateway.v1, sends a hello without a session as its
    first packet, and on welcome is open: connect() fires, sessionId is the
    gateway's, on_state reports open (neither resumed nor reset).
    """
    d = h.client.connect()
    assert h.client.state is ClientState.connecting
    gateway = h.accept()
    assert gateway.request.protocols == [SUBPROTOCOL]
    assert gateway.packets == [Hello()]
    assert hasNotFired(d)
    gateway.welcome()
    h.flush()
    assert result(d) is None
    assert h.client.state is ClientState.open
    assert h.client.sessionId == SID
    assert h.states == [(ClientState.open, StateDetail(transport="websocket"))]
    assert result(h.client.connect()) is None


def test_sendTextAndBinaryBufferedUntilWelcome(h: Harness) -> None:
    """
    Messages sent before the welcome wait in the send buffer and follow
    it, in order: a str as a text data packet, bytes as a binary one.
    """
    h.client.connect()
    gateway = h.accept()
    h.client.send("h\N{LATIN SMALL LETTER E WITH ACUTE}llo")
    h.client.send(b"\x00\xff")
    h.flush()
    assert gateway.packets == [Hello()]
    gateway.welcome()
    h.flush()
    assert gateway.of(Data) == [
        Data(1, "h\N{LATIN SMALL LETTER E WITH ACUTE}llo".encode(), False),
        Data(2, b"\x00\xff", True),
    ]
    h.client.send("again")
    h.flush()
    assert gateway.of(Data)[-1] == Data(3, b"again", False)


def test_wssConnectsThroughTLS() -> None:
    """
    A wss:// URL connects to port 443 with TLS (HostnameEndpoint wrapped
    by wrapClientTLS).
    """
    reactor = MemoryReactorClock()
    client = SessionClient("wss://gateway.example/chat", reactor=reactor)
    connected = client.connect()
    host, port, factory, timeout, bindAddress = reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 443, 10.0)  # (resolved by the fake resolver)
    assert isinstance(factory._wrappedFactory, TLSMemoryBIOFactory)
    client.abort()
    assert failure(connected).check(SessionClosed)


def test_httpRefusalBeforeFirstSessionIsFatal(h: Harness) -> None:
    """
    An HTTP 4xx answer to the opening handshake of the first session
    cannot be fixed by retrying: connect() fails and the client is closed,
    saying why.
    """
    d = h.client.connect()
    h.accept(deny=404)
    error = failure(d).value
    assert isinstance(error, SessionClosed)
    assert h.client.state is ClientState.closed
    assert "HTTP 404" in error.detail.error
    assert h.attempts == 1


def test_subprotocolNotSelectedIsFatal(h: Harness) -> None:
    """
    A server that does not select txgateway.v1 (transparent proxying) gets
    no packet, and the first session fails at once.
    """
    d = h.client.connect()
    gateway = h.accept(select=False)
    assert failure(d).check(SessionClosed)
    assert gateway.packets == []
    assert h.client.state is ClientState.closed
    assert SUBPROTOCOL in h.states[-1][1].error


def test_connectTimeout(h: Harness) -> None:
    """
    A connection attempt that brings no welcome within connectTimeout is
    abandoned and retried after a backoff delay.
    """
    h.client.connect()
    h.reactor.advance(9.5)
    assert h.states == []
    h.reactor.advance(0.5)
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert "no welcome within 10 s" in detail.error
    assert h.attempts == 1
    h.reactor.advance(detail.delay)
    assert h.attempts == 2
    gateway = h.accept()
    h.advance(10)  # connected, but still no welcome
    assert h.client.state is ClientState.reconnecting
    assert gateway.transport.disconnected


# ----------------------------------------------------------------------
# Receiving.


def test_receiveInOrderDuplicatesDroppedAndAcked(h: Harness) -> None:
    """
    Data packets reach on_message once each, in order (text as str, binary
    as bytes); a duplicate is dropped but still acknowledged.
    """
    gateway = h.open()
    gateway.dataPacket(1, b"one")
    gateway.dataPacket(2, b"\x02", isBinary=True)
    h.flush()
    assert h.messages == [("one", False), (b"\x02", True)]
    assert gateway.of(Ack) == [Ack(2)]
    gateway.dataPacket(2, b"\x02", isBinary=True)
    h.flush()
    assert h.messages == [("one", False), (b"\x02", True)]
    assert gateway.of(Ack) == [Ack(2), Ack(2)]


def test_acksCoalesced(h: Harness) -> None:
    """
    Data packets that arrive in one reactor turn get one cumulative ack.
    """
    gateway = h.open()
    for seq in range(1, 6):
        gateway.dataPacket(seq, b"m%d" % seq)
    h.flush()
    assert len(h.messages) == 5
    assert gateway.of(Ack) == [Ack(5)]


def test_gapIsProtocolError(h: Harness) -> None:
    """
    A data packet beyond the next one is a protocol error: the client
    closes the connection with 4400, delivers nothing, and resumes.
    """
    gateway = h.open()
    gateway.dataPacket(2, b"two")
    h.flush()
    assert h.messages == []
    assert gateway.closeCode == 4400
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert "protocol error" in detail.error
    again = h.reconnect()
    assert again.packets == [Hello(SID, SECRET, 0)]


def test_ackBeyondSentIsProtocolError(h: Harness) -> None:
    """
    An ack for more messages than were sent is a protocol error (4400).
    """
    gateway = h.open()
    h.client.send("one")
    gateway.ack(2)
    h.flush()
    assert gateway.closeCode == 4400
    assert h.client.state is ClientState.reconnecting


def test_callbackErrorsAreLogged(h: Harness, logged: list[str]) -> None:
    """
    An exception in an on_message callback is logged; the other callbacks
    and the session carry on.
    """
    seen: list[Any] = []

    def broken(payload: Any, isBinary: bool) -> None:
        raise RuntimeError("application bug")

    h.client.on_message(broken)
    h.client.on_message(lambda payload, isBinary: seen.append(payload))
    gateway = h.open()
    gateway.dataPacket(1, b"a")
    gateway.dataPacket(2, b"b")
    h.flush()
    assert seen == ["a", "b"]
    assert gateway.of(Ack) == [Ack(2)]
    assert any("application bug" in line for line in logged)


# ----------------------------------------------------------------------
# Resuming.


def test_resumeResendsExactlyTheUnacknowledged(h: Harness) -> None:
    """
    After a dropped connection the client resumes with its sid, secret and
    received count, drops what the welcome acknowledges, and sends again
    exactly the rest, in order; new messages continue the numbering.
    """
    gateway = h.open()
    for text in ("m1", "m2", "m3"):
        h.client.send(text)
    gateway.ack(1)
    gateway.dataPacket(1, b"from backend")
    h.flush()
    h.drop(gateway)
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert detail.error == "connection lost"
    assert not detail.reset
    h.client.send("m4")  # while reconnecting: buffered
    again = h.reconnect()
    assert again.packets == [Hello(SID, SECRET, 1)]
    again.welcome(received=2, resumed=True)
    h.flush()
    assert again.of(Data) == [Data(3, b"m3", False), Data(4, b"m4", False)]
    assert h.states[-1] == (ClientState.open, StateDetail(resumed=True, transport="websocket"))
    again.dataPacket(1, b"from backend")  # the gateway's replay overlaps: dropped
    again.dataPacket(2, b"next")
    h.flush()
    assert h.messages == [("from backend", False), ("next", False)]


def test_backoffGrowsIsCappedAndResets() -> None:
    """
    Reconnect delays are jittered (uniform between 0 and a bound), the
    bound doubles from initialDelay up to maxDelay with each failure in a
    row, each next attempt starts exactly after its delay, and a welcome
    resets the bound.
    """
    h = Harness(jitter=0.5, maxDelay=1.0)
    gateway = h.open()
    h.drop(gateway)
    for _ in range(6):
        delay = h.states[-1][1].delay
        attempts = h.attempts
        h.reactor.advance(delay * 0.99)
        assert h.attempts == attempts
        h.reactor.advance(delay * 0.02)
        assert h.attempts == attempts + 1
        h.refuse()
    assert h.bounds == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert [d.delay for s, d in h.states[-7:]] == [b * 0.5 for b in h.bounds]
    assert "refused" in h.states[-1][1].error
    again = h.reconnect()
    again.welcome(resumed=True)
    h.flush()
    h.drop(again)
    assert h.bounds[-1] == 0.1


def test_backoffFullJitter() -> None:
    """
    Backoff draws each delay uniformly from 0 to the bound (full jitter).
    """
    rng = random.Random(7)
    backoff = Backoff(0.1, 10.0, rng.uniform)
    delays = [backoff.next() for _ in range(200)]
    assert all(0 <= d <= 10.0 for d in delays)
    assert delays[0] <= 0.1 and delays[3] <= 0.8
    assert len(set(delays[10:])) == len(delays[10:])  # jittered, not fixed
    assert max(delays[10:]) > 5 and min(delays[10:]) < 5


def test_4503Retries(h: Harness) -> None:
    """
    4503 (no backend for a new session) is retried with backoff: the next
    attempt asks for a new session again.
    """
    h.client.connect()
    gateway = h.accept()
    h.closeWith(gateway, 4503, "no backend")
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert detail.code == 4503
    again = h.reconnect()
    assert again.packets == [Hello()]


def test_otherCloseCodesResume(h: Harness) -> None:
    """
    Any other close code (here 1001, a gateway going away) resumes.
    """
    gateway = h.open()
    h.closeWith(gateway, 1001, "going away")
    assert h.states[-1][0] is ClientState.reconnecting
    assert h.states[-1][1].code == 1001
    assert h.reconnect().packets == [Hello(SID, SECRET, 0)]


# ----------------------------------------------------------------------
# Heartbeats.


def test_heartbeatAckAfterSilence(h: Harness) -> None:
    """
    When the client has sent nothing for `heartbeat` seconds it sends an
    ack; sending data postpones it.
    """
    gateway = h.open()
    h.advance(HEARTBEAT - 0.5)
    assert gateway.of(Ack) == []
    h.advance(0.5)
    assert gateway.of(Ack) == [Ack(0)]
    h.advance(5)
    h.client.send("x")
    gateway.ack(1)  # (and the gateway is not silent)
    h.flush()
    h.advance(HEARTBEAT - 0.5)
    assert gateway.of(Ack) == [Ack(0)]
    h.advance(0.5)
    assert gateway.of(Ack) == [Ack(0), Ack(0)]


def test_deadGatewayDetected(h: Harness) -> None:
    """
    When nothing arrives for 2 * heartbeat + 1 seconds the client drops
    the connection and resumes; anything that arrives postpones it.
    """
    gateway = h.open()
    h.advance(15)
    gateway.ack(0)
    h.flush()
    h.advance(2 * HEARTBEAT + 1 - 0.5)
    assert h.client.state is ClientState.open
    h.advance(0.5)
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert "21 s" in detail.error
    assert gateway.transport.disconnecting
    assert h.reconnect().packets == [Hello(SID, SECRET, 0)]


def test_abandonedConnectionIsIgnored(h: Harness) -> None:
    """
    What arrives on a connection the client gave up (here a late data
    packet and a 4001 on the connection it declared dead) is ignored: the
    client resumes on a new connection, and the message comes through it.
    """
    old = h.open()
    old.dataPacket(1, b"late")
    old.sendClose(4001, "replaced")
    h.advance(2 * HEARTBEAT + 1)  # declared dead before the packets arrive
    assert h.messages == []
    assert h.client.state is ClientState.reconnecting
    new = h.reconnect()
    assert new.packets == [Hello(SID, SECRET, 0)]
    new.welcome(resumed=True)
    new.dataPacket(1, b"late")
    h.flush()
    assert h.client.state is ClientState.open
    assert h.messages == [("late", False)]


# ----------------------------------------------------------------------
# Sessions that cannot be resumed.


@pytest.mark.parametrize("code", [4400, 4403, 4404, 4409, 4410, 4413])
def test_restartCodesStartANewSession(h: Harness, code: int) -> None:
    """
    When the gateway refuses the resume (4400, 4403, 4404, 4409, 4410,
    4413) the client drops what the old session did not acknowledge,
    tells the application (reconnecting, then open, with reset and the
    number dropped), fails whenAcknowledged with SessionLost, and starts a
    new session whose numbering starts at 1.
    """
    gateway = h.open()
    h.client.send("lost 1")
    h.client.send("lost 2")
    acked = h.client.whenAcknowledged()
    h.drop(gateway)
    again = h.reconnect()
    assert again.packets == [Hello(SID, SECRET, 0)]
    h.closeWith(again, code, "cannot resume")
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert (detail.reset, detail.dropped, detail.code) == (True, 2, code)
    lost = failure(acked).value
    assert isinstance(lost, SessionLost) and lost.dropped == 2
    assert h.client.sessionId is None
    assert h.client.bufferedAmount == 0
    h.client.send("fresh")
    fresh = h.reconnect()
    assert fresh.packets == [Hello()]
    fresh.welcome(sid=NEW_SID)
    h.flush()
    assert h.states[-1] == (
        ClientState.open,
        StateDetail(reset=True, dropped=2, code=code, reason="cannot resume", transport="websocket"),
    )
    assert h.client.sessionId == NEW_SID
    assert fresh.of(Data) == [Data(1, b"fresh", False)]


def test_restartWhileClosingEndsTheClient(h: Harness) -> None:
    """
    A session lost while close() waits for acknowledgements is not
    replaced: the client is closed, and the detail counts what was lost.
    """
    gateway = h.open()
    h.client.send("pending")
    closing = h.client.close()
    h.drop(gateway)
    h.closeWith(h.reconnect(), 4410, "expired")
    detail = result(closing)
    assert h.client.state is ClientState.closed
    assert (detail.code, detail.dropped) == (4410, 1)
    assert h.attempts == 2


# ----------------------------------------------------------------------
# Limits.


def test_sendBufferMessageBound() -> None:
    """
    send() refuses, with SendBufferFull, a message beyond
    maxBufferMessages unacknowledged ones; an ack makes room.
    """
    h = Harness(maxBufferMessages=2)
    gateway = h.open()
    h.client.send("1")
    h.client.send("2")
    with pytest.raises(SendBufferFull):
        h.client.send("3")
    h.flush()
    assert len(gateway.of(Data)) == 2
    gateway.ack(1)
    h.flush()
    h.client.send("3")
    h.flush()
    assert gateway.of(Data)[-1] == Data(3, b"3", False)


def test_sendBufferByteBound() -> None:
    """
    send() accepts messages up to exactly maxBufferBytes unacknowledged
    payload bytes, and refuses one byte more (here before any connection:
    the bound holds whatever the state).
    """
    h = Harness(maxBufferBytes=10)
    h.client.send(b"123456")
    with pytest.raises(SendBufferFull):
        h.client.send(b"12345")
    h.client.send(b"1234")
    assert h.client.bufferedAmount == 10
    with pytest.raises(SendBufferFull):
        h.client.send("x")


def test_messageSizeBound() -> None:
    """
    send() refuses a message whose data packet (sequence number, colon,
    payload) would exceed maxMessageBytes, and accepts one at the limit.
    """
    h = Harness(maxMessageBytes=30)
    h.client.send(b"x" * 28)  # "1:" and 28 bytes: 30
    with pytest.raises(MessageTooLarge):
        h.client.send(b"x" * 29)  # "2:" and 29 bytes: 31
    for _ in range(8):
        h.client.send(b"")
    with pytest.raises(MessageTooLarge):
        h.client.send(b"x" * 28)  # "10:" and 28 bytes: 31
    h.client.send(b"x" * 27)


def test_1009Closes(h: Harness) -> None:
    """
    1009 (message too big) closes the client with an error: resending
    would fail again.
    """
    gateway = h.open()
    h.client.send("big")
    h.closeWith(gateway, 1009, "too big")
    state, detail = h.states[-1]
    assert state is ClientState.closed
    assert detail.code == 1009 and "1009" in detail.error
    assert detail.dropped == 1
    assert h.attempts == 1


# ----------------------------------------------------------------------
# The end of a session.


def test_gatewayCloseEndsTheSession(h: Harness) -> None:
    """
    The gateway's close packet (after the backend closed): the client
    delivers what came before it, acknowledges everything, closes the
    WebSocket, and is closed with the backend's code and reason.
    """
    gateway = h.open()
    closed = h.client.nextState(ClientState.closed)
    gateway.dataPacket(1, b"last words")
    gateway.closePacket(1000, "bye")
    h.flush()
    assert h.messages == [("last words", False)]
    assert gateway.of(Ack)[-1] == Ack(1)
    assert gateway.closeCode == 1000
    state, detail = result(closed)
    assert state is ClientState.closed
    assert (detail.code, detail.reason, detail.error) == (1000, "bye", None)
    with pytest.raises(SessionClosed):
        h.client.send("too late")


def test_gatewayClosePacketThen4000(h: Harness) -> None:
    """
    A close packet followed by the gateway's own 4000 close: closed, and
    the detail carries the backend's code and reason, not 4000.
    """
    gateway = h.open()
    gateway.closePacket(4100, "backend says so")
    gateway.sendClose(4000, "session ended")
    h.flush()
    assert h.client.state is ClientState.closed
    detail = h.states[-1][1]
    assert (detail.code, detail.reason) == (4100, "backend says so")


def test_4000EndsTheSession(h: Harness) -> None:
    """
    4000 without a close packet also ends the session.
    """
    gateway = h.open()
    h.closeWith(gateway, 4000, "ended")
    assert h.client.state is ClientState.closed
    assert h.states[-1][1].code == 4000
    assert h.attempts == 1


def test_4001Closes(h: Harness) -> None:
    """
    4001 on the client's connection means another connection took the
    session over: the client stops (resuming would take it back).
    """
    gateway = h.open()
    h.closeWith(gateway, 4001, "replaced")
    assert h.client.state is ClientState.closed
    assert "4001" in h.states[-1][1].error
    assert h.attempts == 1


def test_clientCloseWaitsForAcknowledgement(h: Harness) -> None:
    """
    close() waits until everything sent is acknowledged, then sends the
    close packet; the gateway's 4000 closes the client and fires close().
    """
    gateway = h.open()
    h.client.send("a")
    acked = h.client.whenAcknowledged()
    closing = h.client.close()
    h.flush()
    assert gateway.of(Close) == []
    with pytest.raises(SessionClosed):
        h.client.send("b")
    gateway.ack(1)
    h.flush()
    assert result(acked) is None
    assert gateway.of(Close) == [Close(1000, "")]
    assert hasNotFired(closing)
    h.closeWith(gateway, 4000, "session ended")
    detail = result(closing)
    assert detail.code == 4000 and detail.error is None
    assert h.client.state is ClientState.closed
    assert result(h.client.close()) == detail


def test_clientCloseAcrossADrop(h: Harness) -> None:
    """
    If the connection drops before the gateway confirms the end, the
    client resumes and sends the close packet again.
    """
    gateway = h.open()
    closing = h.client.close()
    h.flush()
    assert gateway.of(Close) == [Close(1000, "")]
    h.drop(gateway)
    assert h.client.state is ClientState.reconnecting
    again = h.reconnect()
    again.welcome(resumed=True)
    h.flush()
    assert again.of(Close) == [Close(1000, "")]
    h.closeWith(again, 4000)
    assert result(closing).code == 4000


def test_closeWithoutSession(h: Harness) -> None:
    """
    close() before any session, with nothing sent, closes at once; so does
    cancelling a close() that waits (abort).
    """
    connected = h.client.connect()
    detail = result(h.client.close())
    assert h.client.state is ClientState.closed and detail.error is None
    assert failure(connected).check(SessionClosed)
    h2 = Harness()
    h2.open()
    h2.client.send("unacknowledged")
    closing = h2.client.close()
    closing.cancel()
    assert h2.client.state is ClientState.closed
    assert h2.states[-1][1].dropped == 1


def test_stateCallbackMayAbort(h: Harness) -> None:
    """
    An on_state callback may abort the client while it reconnects: no
    further attempt is made.
    """
    gateway = h.open()
    h.client.on_state(
        lambda state, detail: h.client.abort() if state is ClientState.reconnecting else None
    )
    h.drop(gateway)
    assert h.client.state is ClientState.closed
    h.reactor.advance(100)
    assert h.attempts == 1


def test_nextState(h: Harness) -> None:
    """
    nextState() fires at the next change (to the given state, when one
    is given), or with the closed state when the client closes first; once
    closed it fires at once.
    """
    anything = h.client.nextState()
    reconnecting = h.client.nextState(ClientState.reconnecting)
    gateway = h.open()
    assert result(anything)[0] is ClientState.open
    assert hasNotFired(reconnecting)
    h.drop(gateway)
    assert result(reconnecting)[0] is ClientState.reconnecting
    reopened = h.client.nextState(ClientState.open)
    h.client.abort()
    assert result(reopened)[0] is ClientState.closed
    assert result(h.client.nextState())[0] is ClientState.closed


# ----------------------------------------------------------------------
# Hygiene.


def test_logsNeverShowSecretOrFullId(h: Harness, logged: list[str]) -> None:
    """
    The log never contains the secret or a full session id, only the
    first 8 characters of the id.
    """
    gateway = h.open()
    h.drop(gateway)
    again = h.reconnect()
    h.closeWith(again, 4404)
    h.client.abort()
    text = "\n".join(logged)
    assert SID[:8] + "\N{HORIZONTAL ELLIPSIS}" in text
    assert SID not in text
    assert SECRET not in text


def test_noAutobahnTimerOnTheGlobalLoop(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Autobahn's own timers (which would run on txaio's global loop, not the
    client's reactor) are all off: a session's life schedules none.
    """
    loop = Clock()
    monkeypatch.setattr(txaio.config, "loop", loop)
    gateway = h.open()
    h.client.send("x")
    h.drop(gateway)
    again = h.reconnect()
    again.welcome(resumed=True)
    h.flush()
    closing = h.client.close()
    again.ack(1)
    h.flush()
    h.closeWith(again, 4000)
    assert result(closing).code == 4000
    assert loop.getDelayedCalls() == []


# ----------------------------------------------------------------------
# Long-polling.


@pytest.fixture
def p() -> Harness:
    return Harness(transport="polling")


def test_pollingOpenThenPoll(p: Harness) -> None:
    """
    Over long-polling the client POSTs its hello with txgw=open (a JSON body
    sent as text/plain, a unique n in the URL, the extra headers), is open
    on the welcome (detail.transport "polling"), then polls with its
    session, secret and ack; no WebSocket is tried.
    """
    h = Harness(transport="polling", headers={"Authorization": "Bearer t"})
    h.client.connect()
    opening = h.http.one("open")
    assert opening.method == b"POST"
    assert opening.uri.startswith("http://gateway.example:8080/chat?txgw=open&n=")
    assert opening.body == {"t": "hello", "v": 1}
    assert opening.headers.getRawHeaders("content-type") == ["text/plain"]
    assert opening.headers.getRawHeaders("authorization") == ["Bearer t"]
    opening.answer(welcomed())
    h.flush()
    assert h.states == [(ClientState.open, StateDetail(transport="polling"))]
    assert h.client.transport == "polling"
    poll = h.http.one("poll")
    assert poll.body == {"sid": SID, "secret": SECRET, "ack": 0}
    assert len({r.nonce for r in h.http.requests}) == len(h.http.requests)
    assert h.attempts == 0
    h.client.abort()
    assert poll.cancelled


def test_pollingHttpsURL() -> None:
    """
    A wss:// URL polls over https://, and an http:// URL is the same route
    as ws://.
    """
    h = Harness(transport="polling")
    h.client = SessionClient("wss://gateway.example/chat?room=1", reactor=h.reactor,
                             transport="polling")
    h.client._agent = h.http
    h.client.connect()
    assert h.http.one("open").uri.startswith("https://gateway.example/chat?room=1&txgw=open&n=")
    assert SessionClient("http://gateway.example/x", reactor=Clock())._wsURL == (
        "ws://gateway.example/x"
    )


def test_pollingReceivesAndAcknowledgesWithTheNextPoll(p: Harness) -> None:
    """
    Data in a poll answer reaches on_message once each, in order (text and
    binary); the next poll carries the ack (no separate ack is sent); a
    replayed duplicate is dropped; an empty answer just polls again.
    """
    pollingOpen(p)
    p.http.one("poll").answer(Data(1, b"one", False), Data(2, b"\x00\xff", True))
    p.flush()
    assert p.messages == [("one", False), (b"\x00\xff", True)]
    poll = p.http.one("poll")
    assert poll.body["ack"] == 2
    poll.answer(Data(2, b"\x00\xff", True), Data(3, b"three", False), Ack(0))
    p.flush()
    assert p.messages[-1] == ("three", False)
    assert len(p.messages) == 3
    p.http.one("poll").answer()
    p.flush()
    assert p.http.one("poll").body["ack"] == 3
    assert p.http.pending("send") == []


def test_pollingOpenAnswerCarriesTheReplay(p: Harness) -> None:
    """
    The open answer's packets after the welcome are processed before the
    first poll, which therefore already acknowledges them.
    """
    p.client.connect()
    p.http.one("open").answer(welcomed(), Data(1, b"a", False), Data(2, b"b", False))
    p.flush()
    assert p.messages == [("a", False), ("b", False)]
    assert p.http.one("poll").body["ack"] == 2


def test_pollingOneSendInFlightAndBatches() -> None:
    """
    At most one send is in flight; what is sent meanwhile waits and goes in
    the next send, in order, up to maxBatchMessages packets.  A send's
    answer (the gateway's ack) acknowledges.
    """
    h = Harness(transport="polling", maxBatchMessages=2)
    pollingOpen(h)
    h.client.send("a")
    h.client.send(b"\x01")
    h.flush()
    first = h.http.one("send")
    assert first.body["sid"] == SID and first.body["secret"] == SECRET
    assert first.packets == [Data(1, b"a", False), Data(2, b"\x01", True)]
    assert first.body["packets"][1] == {"t": "m", "s": 2, "b": "AQ=="}
    for text in ("c", "d", "e"):
        h.client.send(text)
    h.flush()
    assert len(h.http.pending("send")) == 1
    acked = h.client.whenAcknowledged()
    first.answer(Ack(2))
    h.flush()
    assert h.client.bufferedAmount == 3
    second = h.http.one("send")
    assert second.packets == [Data(3, b"c", False), Data(4, b"d", False)]
    second.answer(Ack(4))
    h.flush()
    third = h.http.one("send")
    assert third.packets == [Data(5, b"e", False)]
    third.answer(Ack(5))
    h.flush()
    assert result(acked) is None
    assert h.http.pending("send") == []


def test_pollingSendBodyBound() -> None:
    """
    A send's body stays within maxBodyBytes: two packets go together when
    their body is exactly at the bound, and apart when it is one byte
    less (a single larger packet still goes, alone).
    """
    packets = [toJSON(Data(seq, b"x" * 40, False)) for seq in (2, 3)]
    two = len(json.dumps({"sid": SID, "secret": SECRET, "packets": packets},
                         separators=(",", ":")))
    for bound, expected in ((two, [1, 2, 1]), (two - 1, [1, 1, 1, 1])):
        h = Harness(transport="polling", maxBodyBytes=bound)
        pollingOpen(h)
        for _ in range(4):
            h.client.send("x" * 40)
            h.flush()
        sends = []
        while h.http.pending("send"):
            send = h.http.one("send")
            assert len(send.raw) <= bound
            sends.append(len(send.packets))
            send.answer(Ack(sum(sends)))
            h.flush()
        assert sends == expected
        h.client.send("y" * 2 * bound)
        h.flush()
        assert h.http.one("send").packets == [Data(5, b"y" * 2 * bound, False)]


def test_pollingClosedPacketActsAsACloseCode(p: Harness) -> None:
    """
    The gateway's {"t":"closed"} packet counts as a WebSocket close with its
    code: 1001 makes the client resume (txgw=open with a resume hello).
    """
    pollingOpen(p)
    p.http.one("poll").answer(Data(1, b"one", False), {"t": "closed", "code": 1001, "reason": "bye"})
    p.flush()
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert (detail.code, detail.transport) == (1001, "polling")
    p.reactor.advance(detail.delay)
    reopen = p.http.one("open")
    assert reopen.body == controlToJSON(Hello(SID, SECRET, 1))
    reopen.answer(welcomed(resumed=True))
    p.flush()
    assert p.states[-1] == (ClientState.open, StateDetail(resumed=True, transport="polling"))


def test_pollingClosed4001Closes(p: Harness) -> None:
    """
    closed 4001 (another connection took the session over) stops the
    client, as on a WebSocket.
    """
    pollingOpen(p)
    p.http.one("poll").answer({"t": "closed", "code": 4001, "reason": "replaced"})
    p.flush()
    assert p.client.state is ClientState.closed
    assert "4001" in p.states[-1][1].error


@pytest.mark.parametrize(
    "status,code", [(404, 4404), (410, 4410), (403, 4403), (409, 4409), (400, 4400)]
)
def test_pollingRefusalCodesRestart(p: Harness, status: int, code: int) -> None:
    """
    An HTTP error's JSON code counts as a close code: the restart codes
    drop the old session (reset) and open a new one with txgw=open.
    """
    pollingOpen(p)
    p.client.send("lost")
    p.flush()
    p.http.one("send").refuse(status, code)
    p.flush()
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert (detail.reset, detail.dropped, detail.code) == (True, 1, code)
    assert p.http.pending() == []  # the poll was aborted with the link
    p.reactor.advance(detail.delay)
    p.http.one("open").answer(welcomed(sid=NEW_SID))
    p.flush()
    assert p.states[-1][1].reset and p.client.sessionId == NEW_SID


def test_pollingRefusalWithoutCode(p: Harness) -> None:
    """
    An HTTP error without a session code counts as the status of a
    WebSocket handshake would: a 4xx before the first session is final;
    503 with 4503 is retried.
    """
    connected = p.client.connect()
    p.http.one("open").refuse(503, 4503)
    assert p.states[-1][0] is ClientState.reconnecting
    p.reactor.advance(p.states[-1][1].delay)
    p.http.one("open").refuse(404, body=b"<html>not found</html>")
    assert failure(connected).check(SessionClosed)
    assert p.client.state is ClientState.closed
    assert "HTTP 404" in p.states[-1][1].error


@pytest.mark.parametrize("body", [None, b'{"error":"Payload Too Large","status":413}'])
def test_polling413Closes(p: Harness, body: bytes | None) -> None:
    """
    413 (code 1009: a body or batch too large for the gateway) stops the
    client: resending would fail again.  A 413 without a code counts the
    same.
    """
    pollingOpen(p)
    p.client.send("big")
    p.flush()
    p.http.one("send").refuse(413, 1009, body=body)
    state, detail = p.states[-1]
    assert state is ClientState.closed
    assert detail.code == 1009 and "1009" in detail.error and "gateway" in detail.error


def test_pollingFailureResumesAndResends(p: Harness) -> None:
    """
    A failed request ends the link: the other requests are aborted, and
    the client resumes with txgw=open, then sends again exactly what the
    welcome does not acknowledge.
    """
    pollingOpen(p)
    p.client.send("m1")
    p.flush()
    send = p.http.one("send")
    p.client.send("m2")
    p.http.one("poll").fail()
    assert send.cancelled
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert detail.error == "request failed: Connection to the other side was lost in a non-clean fashion."
    p.reactor.advance(detail.delay)
    p.http.one("open").answer(welcomed(received=1, resumed=True))
    p.flush()
    assert p.http.one("send").packets == [Data(2, b"m2", False)]


def test_pollingRequestTimeout(p: Harness) -> None:
    """
    A poll unanswered for twice the heartbeat plus connectTimeout counts
    as a dead connection.
    """
    pollingOpen(p)
    poll = p.http.one("poll")
    p.advance(2 * HEARTBEAT + 10 - 0.5)
    assert p.client.state is ClientState.open
    p.advance(0.5)
    assert poll.cancelled
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert "in time" in detail.error


def test_pollingNoWelcome(p: Harness) -> None:
    """
    An open answer that does not start with welcome is a protocol error;
    an unanswered open is abandoned after connectTimeout.
    """
    p.client.connect()
    p.http.one("open").answer(Ack(0))
    assert "protocol error" in p.states[-1][1].error
    p.reactor.advance(p.states[-1][1].delay)
    opening = p.http.one("open")
    p.advance(10)
    assert opening.cancelled
    assert "no welcome within 10 s" in p.states[-1][1].error


def test_pollingAnswerBound() -> None:
    """
    An answer larger than maxAnswerBytes stops the client (as a 1009 close
    would), whether its length is announced or not; one at the limit is
    read.
    """
    body = json.dumps({"packets": [toJSON(welcomed())]}).encode()
    for announce in (True, False):
        h = Harness(transport="polling", maxAnswerBytes=len(body))
        h.client.connect()
        h.http.one("open").answer(welcomed(), announce=announce)
        assert h.client.state is ClientState.open
        h.http.one("poll").answer(Data(1, b"x" * len(body), False), announce=announce)
        state, detail = h.states[-1]
        assert state is ClientState.closed
        assert detail.code == 1009 and "larger than" in detail.error


def test_pollingIncomingMessageBound() -> None:
    """
    A data message larger than a WebSocket would accept (maxMessageBytes
    plus 20) is refused on long-polling too.
    """
    h = Harness(transport="polling", maxMessageBytes=30)
    pollingOpen(h)
    h.http.one("poll").answer(Data(1, b"x" * 50, False), Data(2, b"x" * 51, False))
    assert h.messages == [("x" * 50, False)]
    assert h.client.state is ClientState.closed
    assert h.states[-1][1].code == 1009


def test_pollingGatewayCloseEndsTheSession(p: Harness) -> None:
    """
    The gateway's close packet in a poll answer: the client delivers what
    came before it, polls no more, sends an ack for everything, and is
    closed with the backend's code and reason once that send is answered.
    """
    pollingOpen(p)
    p.http.one("poll").answer(Data(1, b"last", False), Close(1000, "bye"))
    p.flush()
    assert p.messages == [("last", False)]
    assert p.http.pending("poll") == []
    ack = p.http.one("send")
    assert ack.packets == [Ack(1)]
    assert p.client.state is ClientState.open
    ack.answer(Ack(0))
    p.flush()
    state, detail = p.states[-1]
    assert state is ClientState.closed
    assert (detail.code, detail.reason, detail.error) == (1000, "bye", None)


def test_pollingClientClose(p: Harness) -> None:
    """
    close() over long-polling: once everything is acknowledged the close
    packet goes in a send; closed 4000 in the poll answer ends the client.
    """
    pollingOpen(p)
    p.client.send("a")
    closing = p.client.close()
    p.flush()
    send = p.http.one("send")
    assert send.packets == [Data(1, b"a", False)]
    send.answer(Ack(1))
    p.flush()
    assert p.http.one("send").packets == [Close(1000, "")]
    p.http.one("send").answer(Ack(1))
    p.http.one("poll").answer({"t": "closed", "code": 4000, "reason": "session ended"})
    detail = result(closing)
    assert (detail.code, detail.error, detail.transport) == (4000, None, "polling")


# ----------------------------------------------------------------------
# Auto: WebSocket first, long-polling as fallback, upgrades back.


@pytest.fixture
def a() -> Harness:
    return Harness(transport="auto")


def test_autoIsTheDefault() -> None:
    """
    Without a transport keyword the client is in auto mode and tries a
    WebSocket first.
    """
    reactor = MemoryReactorClock()
    client = SessionClient(URL, reactor=reactor)
    connected = client.connect()
    assert client._mode == "auto" and client.transport == "websocket"
    assert len(reactor.tcpClients) == 1
    client.abort()
    assert failure(connected).check(SessionClosed)


def test_autoFallsBackWhenTheWebSocketFails(a: Harness) -> None:
    """
    A WebSocket that cannot connect makes the next attempt use
    long-polling (the reconnecting state says so).
    """
    a.client.connect()
    a.refuse()
    state, detail = a.states[-1]
    assert state is ClientState.reconnecting and detail.transport == "polling"
    assert a.client.transport == "websocket"  # (the one that failed, until the next attempt)
    a.reactor.advance(detail.delay)
    assert a.attempts == 1
    a.http.one("open").answer(welcomed())
    a.flush()
    assert a.states[-1] == (ClientState.open, StateDetail(transport="polling"))


@pytest.mark.parametrize("how", ["timeout", "http400"])
def test_autoFallsBackWithoutWelcome(a: Harness, how: str) -> None:
    """
    A WebSocket with no welcome within connectTimeout, or refused with an
    HTTP 4xx (a proxy that will not upgrade), falls back to long-polling
    (in auto mode a 4xx is not final).
    """
    a.client.connect()
    if how == "timeout":
        a.accept()
        a.advance(10)
    else:
        a.accept(deny=400)
    state, detail = a.states[-1]
    assert state is ClientState.reconnecting
    a.reactor.advance(detail.delay)
    assert a.http.one("open").body == {"t": "hello", "v": 1}


def test_autoWebSocketBreakFallsBack(a: Harness) -> None:
    """
    A WebSocket that breaks is resumed over long-polling (docs/protocol.md,
    "Falling back"); nothing in flight is lost.
    """
    gateway = a.open()
    a.client.send("m1")
    a.flush()
    a.drop(gateway)
    a.reactor.advance(a.states[-1][1].delay)
    opening = a.http.one("open")
    assert opening.body == controlToJSON(Hello(SID, SECRET, 0))
    opening.answer(welcomed(resumed=True))
    a.flush()
    assert a.states[-1] == (ClientState.open, StateDetail(resumed=True, transport="polling"))
    assert a.http.one("send").packets == [Data(1, b"m1", False)]


def test_autoPollingThatNeverWorkedTriesWebSocketAgain(a: Harness) -> None:
    """
    While long-polling has never opened a session (a gateway without it,
    or no network), a failed long-polling attempt is followed by a
    WebSocket one.
    """
    gateway = a.open()
    a.drop(gateway)
    a.reactor.advance(a.states[-1][1].delay)
    a.http.one("open").refuse(405, body=b"")
    assert a.client.state is ClientState.reconnecting
    again = a.reconnect()
    assert again.packets == [Hello(SID, SECRET, 0)]


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
    a.reactor.advance(a.bounds[-1] * a.jitter)  # the upgrade delay
    return a.accept()


def test_autoUpgrade(a: Harness) -> None:
    """
    On long-polling the client tries a WebSocket: it sends the probe hello,
    and after the probe answer it polls no more, waits for the outstanding
    poll to end (taking in its messages), then resumes on the WebSocket with
    the count they make, and is open there (reported again, with transport
    "websocket", neither resumed nor reset: nothing dropped); what is sent
    meanwhile goes on the WebSocket.
    """
    ws = upgradeToProbe(a)
    assert ws.packets == [Hello(SID, SECRET, 0, probe=True)]
    ws.probe()
    a.flush()
    assert ws.packets == [Hello(SID, SECRET, 0, probe=True)]  # the poll is still out
    a.client.send("during")
    a.flush()
    assert a.http.pending("send") == []
    a.http.one("poll").answer(Data(1, b"last polled", False))
    a.flush()
    assert a.http.pending() == []
    assert ws.packets[-1] == Hello(SID, SECRET, 1)
    assert a.client.transport == "websocket"
    ws.welcome(received=0, resumed=True)
    ws.dataPacket(2, b"first on ws")
    a.flush()
    assert a.states[-1] == (ClientState.open, StateDetail(transport="websocket"))
    assert ws.of(Data) == [Data(1, b"during", False)]
    assert a.messages == [("last polled", False), ("first on ws", False)]
    assert a.http.pending() == []


def test_autoUpgradeProbeTimeout(a: Harness) -> None:
    """
    A probe that does not come back within upgradeTimeout: the WebSocket is
    dropped, the session stays on long-polling, and the next upgrade comes
    after a longer backoff.
    """
    ws = upgradeToProbe(a)
    bound = a.bounds[-1]
    a.advance(5)
    assert ws.transport.disconnecting or ws.closeCode is not None
    assert a.client.transport == "polling"
    assert a.client.state is ClientState.open
    assert a.bounds[-1] == 2 * bound
    a.http.one("poll").answer(Data(1, b"still polling", False))
    a.flush()
    assert a.http.one("poll").body["ack"] == 1


def test_autoUpgradeRefusedProbe(a: Harness) -> None:
    """
    A probe refused by the gateway (a close code) leaves the session on
    long-polling; its poll carries on.
    """
    ws = upgradeToProbe(a)
    a.closeWith(ws, 4404, "unknown")
    assert a.client.transport == "polling"
    assert a.client.state is ClientState.open
    assert len(a.http.pending("poll")) == 1


def test_autoUpgradeAbortsAHeldPoll(a: Harness) -> None:
    """
    After the probe, a poll the gateway holds (nothing to send) is aborted
    once upgradeTimeout has passed; the switch follows.
    """
    ws = upgradeToProbe(a)
    ws.probe()
    a.flush()
    poll = a.http.one("poll")
    a.advance(5)
    assert poll.cancelled
    assert ws.packets[-1] == Hello(SID, SECRET, 0)


def test_autoUpgradeWaitsForASend(a: Harness) -> None:
    """
    A send in flight is never aborted: the switch waits for its answer;
    if it takes longer than upgradeTimeout the upgrade is given up and
    long-polling carries on.
    """
    ws = upgradeToProbe(a)
    a.client.send("m1")
    a.flush()
    send = a.http.one("send")
    ws.probe()
    a.flush()
    a.http.one("poll").answer()
    a.flush()
    assert ws.packets == [Hello(SID, SECRET, 0, probe=True)]
    a.advance(5)
    assert not send.cancelled
    assert a.client.transport == "polling"
    assert len(a.http.pending("poll")) == 1
    send.answer(Ack(1))
    a.flush()
    assert a.client.bufferedAmount == 0


def test_autoUpgradeThenBreakFallsBackAgain(a: Harness) -> None:
    """
    After an upgrade, a broken WebSocket falls back to long-polling again.
    """
    ws = upgradeToProbe(a)
    ws.probe()
    a.flush()
    a.http.one("poll").answer()
    a.flush()
    ws.welcome(resumed=True)
    a.flush()
    a.drop(ws)
    a.reactor.advance(a.states[-1][1].delay)
    assert a.http.one("open").body == controlToJSON(Hello(SID, SECRET, 0))


def test_autoNoUpgradeWhileClosing(a: Harness) -> None:
    """
    close() abandons an upgrade under way: polling carries the close.
    """
    ws = upgradeToProbe(a)
    ws.probe()
    a.flush()
    a.client.close()
    a.flush()
    assert ws.transport.disconnecting or ws.closeCode is not None
    assert a.http.one("send").packets == [Close(1000, "")]
    assert a.client.transport == "polling"


# ----------------------------------------------------------------------
# The command line.


class FakeClient:
    """
    Just enough of a SessionClient for L{LineSender}: a send buffer of
    C{room} messages.
    """

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[str] = []
        self.waiting: list[Deferred] = []

    def send(self, text: str) -> None:
        if len(self.sent) >= self.room:
            raise SendBufferFull("full")
        self.sent.append(text)

    def whenAcknowledged(self) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append(d)
        return d

    def acknowledge(self) -> None:
        self.room += len(self.sent)
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


def test_cliSendsLinesWithBackpressure() -> None:
    """
    Each input line is sent as a text message; when the send buffer is
    full, reading pauses until acknowledgements make room, and the end of
    input is reported only once every line is in the buffer.
    """
    client = FakeClient(room=2)
    reports: list[str] = []
    sender = LineSender(client, 1000, reports.append)
    transport = StringTransport()
    sender.makeConnection(transport)
    sender.dataReceived(b"one\r\ntwo\nthree\nfour\nfive")
    assert client.sent == ["one", "two"]
    assert transport.producerState == "paused"
    sender.readConnectionLost()
    assert not sender.ended.called
    client.acknowledge()
    assert client.sent == ["one", "two", "three", "four"]
    assert transport.producerState == "paused"
    client.acknowledge()
    assert client.sent == ["one", "two", "three", "four", "five"]
    assert result(sender.ended) is None
    assert reports == []


def test_cliStopsOnOverlongLine() -> None:
    """
    A line longer than the largest message ends the input with a one-line
    error; received messages are written to standard output.
    """
    client = FakeClient(room=10)
    sender = LineSender(client, 8, [].append)
    transport = StringTransport()
    sender.makeConnection(transport)
    sender.dataReceived(b"short\n" + b"x" * 20 + b"\n")
    assert client.sent == ["short"]
    assert "longer than 8 bytes" in result(sender.ended)
    sender.messageReceived(b"\x01", True)
    sender.messageReceived("text", False)
    assert transport.value() == b"[binary, hex] 01\ntext\n"


def test_cliOutput() -> None:
    """
    Received text is printed as it is, binary as hex (and says so); state
    lines show the truncated session id only.
    """
    assert formatMessage("hé", False) == "hé\n".encode()
    assert formatMessage(b"\x00\xff", True) == b"[binary, hex] 00ff\n"
    line = formatState(ClientState.open, StateDetail(reset=True, dropped=3, code=4404), SID)
    assert SID not in line and SID[:8] in line and "3 unacknowledged" in line
    line = formatState(ClientState.reconnecting, StateDetail(error="connection lost", delay=1.5), SID)
    assert "connection lost" in line and "1.50 s" in line
    line = formatState(ClientState.open, StateDetail(resumed=True, transport="polling"), SID)
    assert line.endswith(" resumed over polling\n")
    assert parseArguments([URL, "--max-delay", "3"]).max_delay == 3.0
    with pytest.raises(SystemExit):
        parseArguments([URL, "--max-delay", "0"])


def test_cliTransport(capsys: pytest.CaptureFixture) -> None:
    """
    --transport chooses auto (the default), websocket or polling; anything
    else is a usage error.
    """
    assert parseArguments([URL]).transport == "auto"
    for choice in ("auto", "websocket", "polling"):
        assert parseArguments([URL, "--transport", choice]).transport == choice
    with pytest.raises(SystemExit):
        parseArguments([URL, "--transport", "smoke-signals"])
    assert "--transport" in capsys.readouterr().err
