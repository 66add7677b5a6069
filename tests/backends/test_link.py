"""
Tests for L{gateway.backends.link}: L{connectToPool} (affinity through the
session map, a failing session map never failing a client's connection,
and each attempt's connection slot), L{backendEndpoint} (IP addresses
connected to directly), and a L{BackendLink}: its connection slot, its handshake, its closing
handshake and its timeouts, over a string transport (its WebSocket client
engine has tests of its own, tests/wire/test_wsclient.py).
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from gateway.backends.link import SERVER_DROP_TIMEOUT, BackendLink, backendEndpoint, connectToPool
from gateway.backends.balancers import LeastConnections
from gateway.errors import BackendUnreachable, GatewayError
from gateway.backends.pool import Backend, Pool
from gateway.sessionmap.memory import MemorySessionMap
from gateway.wire.frames import encodeClose, encodeFrame
from tests.helpers import unframe


class Observer:
    """
    Records connect outcomes (passive health).
    """

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.succeeded: list[str] = []
        self.statuses: list[int] = []

    def connectFailed(self, pool, backend, reason):
        self.failed.append(backend.name)

    def connectSucceeded(self, pool, backend):
        self.succeeded.append(backend.name)

    def answered(self, pool, backend, status):
        self.succeeded.append(backend.name)
        self.statuses.append(status)


class Outage(GatewayError):
    """
    What a map reports while its store is unreachable.
    """


class FailingMap(MemorySessionMap):
    """
    A session map whose affinity calls all fail with C{error}, counting
    them.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(Clock())
        self.error = error
        self.calls: list[str] = []

    def getAffinity(self, pool, key) -> Deferred:
        self.calls.append("get")
        return fail(self.error)

    def setAffinity(self, pool, key, backend, ttl) -> Deferred:
        self.calls.append("set")
        return fail(self.error)


def makePool() -> Pool:
    """
    @return: a pool of three backends, least connections, 2-hour affinity.
    """
    backends = [Backend(f"backend-{i}", "127.0.0.1", 9000 + i) for i in (1, 2, 3)]
    return Pool("chat", backends, LeastConnections(), affinity="cookie:sid", affinityTtl=7200)


async def connected(slot) -> str:
    """
    A connect attempt that always works.
    """
    return f"connection to {slot.backend.name}"


@pytest_twisted.ensureDeferred
async def test_affinityRecordedAndReused():
    """
    With C{sticky}, the backend that worked is recorded for the key, with
    the pool's TTL, and chosen again while it is available, even when the
    balancer would choose another.
    """
    pool = makePool()
    sessionMap = MemorySessionMap(Clock())
    slot, result = await connectToPool(pool, b"alice", True, sessionMap, Observer(), connected)
    backend = slot.backend
    assert result == f"connection to {backend.name}"
    assert await sessionMap.getAffinity("chat", b"alice") == backend.name
    slot, _ = await connectToPool(pool, b"alice", True, sessionMap, Observer(), connected)
    again = slot.backend
    assert again is backend
    assert backend.connections == 2


@pytest.mark.parametrize("error", [Outage("Redis down"), RuntimeError("a bug in the map")])
@pytest_twisted.ensureDeferred
async def test_failingMapFallsBackToBalancer(error):
    """
    When the session map's read and write both fail, the balancer chooses
    and the connection is made all the same, holding one slot; a map's own
    L{GatewayError} is not logged here (the map reports its outages), any
    other error is logged as a failure.
    """
    pool = makePool()
    sessionMap = FailingMap(error)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        slot, result = await connectToPool(pool, b"alice", True, sessionMap, Observer(), connected)
    finally:
        globalLogPublisher.removeObserver(events.append)
    backend = slot.backend
    assert result == f"connection to {backend.name}"
    assert backend.connections == 1
    assert sessionMap.calls == ["get", "set"]
    failures = [e for e in events if "log_failure" in e]
    if isinstance(error, GatewayError):
        assert failures == []
    else:
        assert [e["log_failure"].value for e in failures] == [error, error]
        assert "balancing without it" in failures[0]["log_format"]


@pytest_twisted.ensureDeferred
async def test_notStickyLeavesMapAlone():
    """
    Without C{sticky} the session map is not called at all.
    """
    sessionMap = FailingMap(Outage("Redis down"))
    await connectToPool(makePool(), None, False, sessionMap, Observer(), connected)
    assert sessionMap.calls == []


@pytest_twisted.ensureDeferred
async def test_failedAttemptReleasesItsSlot():
    """
    Each attempt holds a slot on its backend while it runs; the slot of an
    attempt that fails is released, the next backend is tried, and the slot
    of the one that worked is returned still held.
    """
    pool = makePool()
    seen = []

    async def firstFails(slot):
        seen.append((slot.backend.name, slot.held, slot.backend.connections))
        if len(seen) == 1:
            raise BackendUnreachable("refused")
        return "ok"

    observer = Observer()
    slot, result = await connectToPool(pool, None, False, MemorySessionMap(Clock()), observer, firstFails)
    assert [held for _, held, _ in seen] == [True, True]
    assert [count for _, _, count in seen] == [1, 1]
    assert observer.failed == [seen[0][0]]
    assert (slot.backend.name, slot.held, result) == (seen[1][0], True, "ok")
    assert [b.connections for b in pool.backends if b is not slot.backend] == [0, 0]


@pytest_twisted.ensureDeferred
async def test_cancelledAttemptReleasesItsSlot():
    """
    An attempt that ends with anything else (cancelled, say) releases its
    slot too, and the error goes to the caller.
    """
    pool = makePool()

    async def cancelled(slot):
        raise CancelledError()

    with pytest.raises(CancelledError):
        await connectToPool(pool, None, False, MemorySessionMap(Clock()), Observer(), cancelled)
    assert [b.connections for b in pool.backends] == [0, 0, 0]


@pytest.mark.parametrize(
    "host, kind",
    [("127.0.0.1", TCP4ClientEndpoint), ("::1", TCP6ClientEndpoint), ("echo.internal", HostnameEndpoint)],
)
def test_backendEndpointByHost(host, kind):
    """
    An IP address is connected to directly (IPv4 or IPv6), with no name
    resolution; only a host name goes through L{HostnameEndpoint}.
    """
    endpoint = backendEndpoint(MemoryReactorClock(), Backend("b", host, 9001), 5.0)
    assert type(endpoint) is kind


def test_backendEndpointIPConnectsAtOnce():
    """
    Connecting to an IPv4 backend calls C{connectTCP} in the same call,
    with the backend's address, port and connect timeout: nothing is
    resolved in a thread first.
    """
    reactor = MemoryReactorClock()
    backendEndpoint(reactor, Backend("b", "127.0.0.1", 9001), 7.0).connect(Factory())
    [(host, port, _, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 9001, 7.0)


def test_backendEndpointTLS():
    """
    A C{wss://} backend is reached through TLS, an IP address as directly
    as over plain TCP.
    """
    reactor = MemoryReactorClock()
    endpoint = backendEndpoint(reactor, Backend("b", "127.0.0.1", 9443, secure=True), 5.0)
    assert IStreamClientEndpoint.providedBy(endpoint)
    assert type(endpoint) is not TCP4ClientEndpoint
    endpoint.connect(Factory())
    [(host, port, _, _, _)] = reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 9443)


@pytest.mark.parametrize("size", [0, 1, 5, 125, 126, 1000, 65535, 65536, 70001])
def test_frames(size):
    """
    L{encodeFrame}, as the session's WebSockets use it, encodes one final
    frame of any length (all three length encodings), masked with the given
    key or not.
    """
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    key = b"\x01\x80\xfe\x37"
    assert unframe(encodeFrame(1, payload, True, key)) == (0x81, size, key, payload)
    assert unframe(encodeFrame(2, payload)) == (0x82, size, None, payload)


# -- the backend link's connection slot

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RecordingSession:
    """
    The part of a session a backend link calls, recording the calls.
    """

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def messageFromBackend(self, payload, isBinary):
        self.calls.append(("message", payload))

    def linkBound(self, link):
        self.calls.append(("bound", link))

    def backendClosed(self, code, reason, link, clean):
        self.calls.append(("closed", code, reason, clean))

    def backendReceipt(self, link, seq):
        self.calls.append(("receipt", seq))


class LinkTransport(StringTransport):
    """
    A L{StringTransport} that, as a real one does, lets Autobahn unregister
    a producer when none is registered (it does so when it drops the
    connection).
    """

    def unregisterProducer(self):
        self.producer = None


#: What the C{opened} of the last link L{connectLink} made fired with.
outcomes: list = []


def connectLink(backend: Backend, accept: bool = True, clock: Clock | None = None):
    """
    Connect a L{BackendLink} to C{backend} over a L{LinkTransport}, with
    a slot reserved for it, and answer its handshake with a 101 when
    C{accept}.

    @return: the link, its slot and its transport (cleared); the link's
        C{opened} outcome is in C{link.outcome}.
    """
    slot = backend.reserve()
    link = BackendLink(clock or Clock(), slot, timeout=5.0)
    link.handshake(b"127.0.0.1:9001", b"/chat", {"X-Session-Id": "s"}, None)
    outcomes.clear()
    link.opened.addBoth(outcomes.append)
    transport = LinkTransport()
    link.makeConnection(transport)
    request = transport.value()
    transport.clear()
    if accept:
        [key] = [line.split(b": ", 1)[1] for line in request.split(b"\r\n")
                 if line.lower().startswith(b"sec-websocket-key:")]
        answer = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        link.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + answer + b"\r\n\r\n")
    return link, slot, transport


def test_linkHoldsItsSlot():
    """
    A link has no slot nor backend until it connects; then it holds the
    slot it was given, and its C{opened} fires with it once the backend
    accepts.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    assert (BackendLink(Clock()).backend, BackendLink(Clock()).slot.held) == (None, False)
    link, slot, _ = connectLink(backend)
    assert link.slot is slot
    assert (link.backend, backend.connections) == (backend, 1)
    assert outcomes == [link]


def test_linkHandshake():
    """
    The opening handshake names the target and C{Host}, asks for a
    WebSocket upgrade with a fresh key, and carries the headers given, a
    C{User-Agent} of the gateway's own when none is, and C{Origin} when
    given.
    """
    link = BackendLink(Clock(), Backend("b", "127.0.0.1", 9001).reserve())
    link.handshake(b"b:9001", b"/chat?x=1", {"X-Session-Id": "s1", "Cookie": "a=1; b=2"}, "https://app")
    transport = LinkTransport()
    link.makeConnection(transport)
    lines = transport.value().split(b"\r\n")
    assert lines[0] == b"GET /chat?x=1 HTTP/1.1"
    headers = dict(line.split(b": ", 1) for line in lines[1:] if line)
    assert headers[b"Host"] == b"b:9001"
    assert (headers[b"Upgrade"], headers[b"Connection"]) == (b"websocket", b"Upgrade")
    assert len(base64.b64decode(headers[b"Sec-WebSocket-Key"])) == 16
    assert headers[b"Sec-WebSocket-Version"] == b"13"
    assert (headers[b"X-Session-Id"], headers[b"Cookie"]) == (b"s1", b"a=1; b=2")
    assert headers[b"User-Agent"].startswith(b"txgateway/")
    assert headers[b"Origin"] == b"https://app"
    forwarded = BackendLink(Clock())
    forwarded.handshake(b"b", b"/", {"User-Agent": "browser"}, None)
    forwarded.makeConnection(transport)
    assert transport.value().count(b"User-Agent") == 2  # the first link's and this one's
    assert b"User-Agent: browser\r\n" in transport.value()


def test_linkRefused():
    """
    A handshake answered with another status fails C{opened} with
    L{BackendRefused} (status and phrase) and closes the connection.
    """
    link, _, transport = connectLink(Backend("b", "127.0.0.1", 9001), accept=False)
    link.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    [failure] = outcomes
    assert (failure.value.status, failure.value.phrase) == (403, "Forbidden")
    assert transport.disconnecting


@pytest.mark.parametrize("answer", [
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Accept: wrong=\r\n\r\n"),
    b"garbage\r\n\r\n",
])
def test_linkHandshakeFailed(answer):
    """
    A 101 with the wrong accept key, or an answer that is not HTTP, fails
    C{opened} with L{BackendUnreachable} and drops the connection.
    """
    link, _, transport = connectLink(Backend("b", "127.0.0.1", 9001), accept=False)
    link.dataReceived(answer)
    assert outcomes[0].check(BackendUnreachable)
    assert "backend handshake failed" in str(outcomes[0].value)
    assert transport.disconnecting


def test_linkHandshakeTimeout():
    """
    A backend that does not answer the handshake within the timeout fails
    C{opened} with L{BackendUnreachable}, and the connection is dropped.
    """
    clock = Clock()
    _, _, transport = connectLink(Backend("b", "127.0.0.1", 9001), accept=False, clock=clock)
    clock.advance(4.9)
    assert outcomes == []
    clock.advance(0.2)
    assert outcomes[0].check(BackendUnreachable)
    assert "timed out" in str(outcomes[0].value)
    assert transport.disconnecting


def test_linkOpeningCancelled():
    """
    Cancelling C{opened} (the session ended while its link was opening)
    drops the connection, and its loss reports nothing more.
    """
    slot = Backend("b", "127.0.0.1", 9001).reserve()
    link = BackendLink(Clock(), slot)
    link.handshake(b"b", b"/", {}, None)
    failures = []
    opened = link.opened
    opened.addErrback(failures.append)
    transport = LinkTransport()
    link.makeConnection(transport)
    opened.cancel()
    assert failures[0].check(CancelledError)
    assert transport.disconnecting
    link.connectionLost(Failure(ConnectionDone()))
    assert len(failures) == 1


def test_linkPingsAndPongs():
    """
    The backend's pings are answered with pongs; a pong to a receipt's ping
    is the session's receipt; the receipt's ping carries the sequence
    number, masked.
    """
    link, _, transport = connectLink(Backend("b", "127.0.0.1", 9001))
    session = RecordingSession()
    link.bind(session, link.backend)
    link.dataReceived(encodeFrame(0x9, b"hi"))
    first, _, key, payload = unframe(transport.value())
    assert (first, payload, key is not None) == (0x8A, b"hi", True)
    transport.clear()
    link.requestReceipt(12)
    first, _, key, payload = unframe(transport.value())
    assert (first, payload, key is not None) == (0x89, b"12", True)
    link.dataReceived(encodeFrame(0xA, b"12") + encodeFrame(0xA, b"not a number"))
    assert session.calls[-1] == ("receipt", 12)


def test_linkFinishWaitsForTheBackendsClose():
    """
    L{BackendLink.finishLink} sends a close frame and still hands the
    session what the backend sends until its close frame arrives; then the
    backend's code is reported, clean, once the connection is lost.  A
    backend that does not close the connection then has it closed after
    L{SERVER_DROP_TIMEOUT}.
    """
    clock = Clock()
    link, _, transport = connectLink(Backend("b", "127.0.0.1", 9001), clock=clock)
    session = RecordingSession()
    link.bind(session, link.backend)
    link.finishLink(1001, "moving")
    first, _, key, payload = unframe(transport.value())
    assert (first, payload[:2], payload[2:], key is not None) == (0x88, b"\x03\xe9", b"moving", True)
    link.sendMessage(b"too late", False)
    assert unframe(transport.value())[3] == payload  # nothing more written
    link.dataReceived(encodeFrame(1, b"last") + encodeClose(1000, "ok"))
    clock.advance(SERVER_DROP_TIMEOUT - 0.1)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    link.connectionLost(Failure(ConnectionDone()))
    assert session.calls[1:] == [("message", b"last"), ("closed", 1000, "ok", True)]


def test_linkCloseTimeout():
    """
    A closing handshake the backend does not answer within the timeout
    drops the connection; the session then hears of a close that was not
    clean, without a code.
    """
    clock = Clock()
    link, _, transport = connectLink(Backend("b", "127.0.0.1", 9001), clock=clock)
    session = RecordingSession()
    link.bind(session, link.backend)
    link.finishLink(1001, "moving")
    clock.advance(5.1)
    assert transport.disconnecting
    link.connectionLost(Failure(ConnectionDone()))
    assert session.calls[-1] == ("closed", None, None, False)


@pytest.mark.parametrize("frames, code", [
    (encodeFrame(1, b"x" * 101), 1009),
    (encodeFrame(1, b"\xff"), 1007),
    (b"\x81\x81abcdx", 1002),
])
def test_linkFailsABrokenBackend(frames, code):
    """
    A backend that sends a message over the limit, text that is not UTF-8
    or a masked frame gets a close frame with the RFC's code and the
    connection is closed; the session is told of that code, not clean.
    """
    link = BackendLink(Clock(), Backend("b", "127.0.0.1", 9001).reserve(), maxMessageBytes=100)
    link.handshake(b"b", b"/", {}, None)
    transport = LinkTransport()
    link.makeConnection(transport)
    [key] = [line.split(b": ", 1)[1] for line in transport.value().split(b"\r\n")
             if line.startswith(b"Sec-WebSocket-Key:")]
    answer = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    link.dataReceived(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                      b"Sec-WebSocket-Accept: " + answer + b"\r\n\r\n")
    session = RecordingSession()
    link.bind(session, link.backend)
    transport.clear()
    link.dataReceived(frames)
    first, _, _, payload = unframe(transport.value())
    assert (first, struct.unpack("!H", payload[:2])[0]) == (0x88, code)
    assert transport.disconnecting
    link.connectionLost(Failure(ConnectionDone()))
    assert session.calls[-1][:2] == ("closed", code)
    assert session.calls[-1][3] is False


def test_closeLinkReleasesUnbound():
    """
    Closing a link that was never bound to a session (the session ended, or
    a takeover failed, while it was opening) sends the close and releases
    its slot; closing it again changes nothing.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    link, _, transport = connectLink(backend)
    link.closeLink(1001, "session ended")
    assert transport.value()[:1] == b"\x88"
    assert backend.connections == 0
    link.closeLink(1001, "session ended")
    assert backend.connections == 0


def test_boundLinkReleasesOnClose():
    """
    A bound link hands its early messages over, tells the session it is
    bound, and, when the backend closes it, releases its slot before
    telling the session (code, reason, clean); a later C{closeLink} does
    not release it again.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    other = backend.reserve()
    link, _, _ = connectLink(backend)
    session = RecordingSession()
    link.dataReceived(encodeFrame(1, b"early"))
    link.bind(session, backend)
    assert session.calls == [("message", b"early"), ("bound", link)]
    link.dataReceived(encodeClose(1000, "bye"))
    link.connectionLost(Failure(ConnectionDone()))
    assert session.calls[2:] == [("closed", 1000, "bye", True)]
    assert (link.slot.held, backend.connections) == (False, 1)
    link.closeLink(1001, "again")
    assert (other.held, backend.connections) == (True, 1)


def test_bindClosedLink():
    """
    A link whose connection was lost before it was bound releases its slot
    and reports the close (not clean) when bound, and the session is not
    told it is bound.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    link, _, _ = connectLink(backend)
    link.connectionLost(Failure(ConnectionDone()))
    assert backend.connections == 1
    session = RecordingSession()
    link.bind(session, backend)
    assert session.calls == [("closed", None, None, False)]
    assert backend.connections == 0


def test_handshakeFailedKeepsSlot():
    """
    A link whose handshake fails fails its C{opened} with
    L{BackendUnreachable} and leaves the slot to the connect attempt that
    holds it (L{connectToPool} releases it).
    """
    backend = Backend("b", "127.0.0.1", 9001)
    link, slot, _ = connectLink(backend, accept=False)
    link.connectionLost(Failure(ConnectionDone()))
    assert outcomes[0].check(BackendUnreachable)
    assert (slot.held, backend.connections) == (True, 1)


def test_registerFlowAfterConnectionLost():
    """
    Once its connection is lost, a link registers no producer on its
    transport.
    """
    link, _, transport = connectLink(Backend("b", "127.0.0.1", 9001))
    assert link.transportGone is False
    link.connectionLost(Failure(ConnectionDone()))
    assert link.transportGone is True
    link.registerFlow(object())
    assert transport.producer is None
