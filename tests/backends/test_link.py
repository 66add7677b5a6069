"""
Tests for L{gateway.backends.link}: L{connectToPool} (affinity through the
session map, a failing session map never failing a client's connection,
and each attempt's connection slot), L{backendEndpoint} (IP addresses
connected to directly), the session WebSockets' direct sending of messages,
and a L{BackendLink}'s connection slot.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from types import SimpleNamespace

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

from gateway.backends.link import (
    BackendLink,
    BackendLinkFactory,
    DirectMessages,
    backendEndpoint,
    connectToPool,
)
from gateway.backends.balancers import LeastConnections
from gateway.errors import BackendUnreachable, GatewayError
from gateway.backends.pool import Backend, Pool
from gateway.sessionmap.memory import MemorySessionMap
from gateway.wire.frames import encodeClose, encodeFrame


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


def test_backendLinkDropsDebugEvents():
    """
    A backend link logs through Autobahn's own (txaio) logger, which drops
    debug events where they are emitted (Autobahn emits two per frame), and
    passes warnings on.
    """
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        link = BackendLink()
        link.log.debug("{n} bytes", n=1)
        link.log.warn("a warning")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e["log_format"] for e in events] == ["a warning"]


def unframe(frame: bytes) -> tuple[int, int, bytes | None, bytes]:
    """
    Read one frame: (first byte, payload length, masking key or None,
    unmasked payload); the whole frame must be used.
    """
    first, second = frame[0], frame[1]
    n, at = second & 0x7F, 2
    if n == 126:
        n, at = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, at = struct.unpack("!Q", frame[2:10])[0], 10
    key = None
    if second & 0x80:
        key, at = frame[at:at + 4], at + 4
    payload = frame[at:]
    assert len(payload) == n
    if key is not None:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return first, n, key, payload


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


class Recorded:
    """
    Stands for Autobahn's protocol under L{DirectMessages}: records the
    messages it is asked to send itself.
    """

    STATE_OPEN = 3

    def __init__(self, isServer: bool) -> None:
        self.factory = SimpleNamespace(isServer=isServer)
        self.state = self.STATE_OPEN
        self._perMessageCompress = None
        self.autoFragmentSize = 0
        self.send_queue: list = []
        self.logFrames = self.logOctets = False
        self.trackedTimings = None
        self.maxMessagePayloadSize = 0
        self.maskServerFrames, self.maskClientFrames = False, True
        self.transport = StringTransport()
        self.autobahn: list = []
        self.received: list = []

    def sendMessage(self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False):
        self.autobahn.append((payload, isBinary, fragmentSize, sync))

    def _onMessage(self, payload, isBinary):
        self.received.append((payload, isBinary))


class Direct(DirectMessages, Recorded):
    """
    L{DirectMessages} over the recorder.
    """


@pytest.mark.parametrize("isServer, masked", [(True, False), (False, True)])
def test_directMessage(isServer, masked):
    """
    A message is written as one frame, masked by a client and not by a
    server, without Autobahn's sending code.
    """
    protocol = Direct(isServer)
    protocol.sendMessage(b"7:hello", False)
    protocol.sendMessage(b"\x00\x01", True)
    written = protocol.transport.value()
    head = 2 + (4 if masked else 0)
    first, _, key, text = unframe(written[: head + 7])
    assert (first, text, key is not None) == (0x81, b"7:hello", masked)
    second, _, key, data = unframe(written[head + 7:])
    assert (second, data, key is not None) == (0x82, b"\x00\x01", masked)
    assert protocol.autobahn == []


@pytest.mark.parametrize(
    "setting",
    [
        {"_perMessageCompress": object()},
        {"autoFragmentSize": 10},
        {"send_queue": [(b"x", False)]},
        {"logFrames": True},
        {"maxMessagePayloadSize": 3},
        {"state": 2},
    ],
)
def test_autobahnSendsOtherwise(setting):
    """
    With compression, fragmentation, a send queue, frame logging, a message
    over the size limit, or a WebSocket not open, Autobahn sends the message
    itself (and does what it does in those cases).
    """
    protocol = Direct(False)
    vars(protocol).update(setting)
    protocol.sendMessage(b"hello", False)
    assert protocol.autobahn == [(b"hello", False, None, False)]
    assert protocol.transport.value() == b""


def test_autobahnSendsFragmentedOrSync():
    """
    A fragmented or synchronous send is Autobahn's.
    """
    protocol = Direct(True)
    protocol.sendMessage(b"hello", True, fragmentSize=2)
    protocol.sendMessage(b"hello", True, sync=True)
    assert protocol.autobahn == [(b"hello", True, 2, False), (b"hello", True, None, True)]


def test_messageEnd():
    """
    A whole message goes to C{onMessage} (through Autobahn's C{_onMessage}),
    its fragments joined, unless the protocol failed the connection itself.
    """
    protocol = Direct(True)
    protocol.failedByMe = False
    protocol.message_data, protocol.message_is_binary = [b"he", b"llo"], False
    protocol.onMessageEnd()
    protocol.failedByMe = True
    protocol.message_data = [b"late"]
    protocol.onMessageEnd()
    assert protocol.received == [(b"hello", False)]
    assert protocol.message_data is None


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


class LinkTransport(StringTransport):
    """
    A L{StringTransport} that, as a real one does, lets Autobahn unregister
    a producer when none is registered (it does so when it drops the
    connection).
    """

    def unregisterProducer(self):
        self.producer = None


def connectLink(backend: Backend, accept: bool = True):
    """
    Connect a L{BackendLink} to C{backend} over a L{LinkTransport}, with
    a slot reserved for it, and answer its handshake with a 101 when
    C{accept}.

    @return: the link, its factory and its transport (cleared).
    """
    factory = BackendLinkFactory("ws://127.0.0.1:9001/chat", backend.reserve(),
                                 headers={"X-Session-Id": "s"}, origin=None)
    link = factory.buildProtocol(None)
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
    return link, factory, transport


def test_linkHoldsItsFactorySlot():
    """
    A link has no slot nor backend until it connects; then it holds its
    factory's slot, and its factory's C{opened} fires with it once the
    backend accepts.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    assert (BackendLink().backend, BackendLink().slot.held) == (None, False)
    link, factory, _ = connectLink(backend)
    assert link.slot is factory.slot
    assert (link.backend, backend.connections) == (backend, 1)
    assert factory.opened.called
    opened = []
    factory.opened.addCallback(opened.append)
    assert opened == [link]


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
    A link whose handshake fails fails its factory's C{opened} with
    L{BackendUnreachable} and leaves the slot to the connect attempt that
    holds it (L{connectToPool} releases it).
    """
    backend = Backend("b", "127.0.0.1", 9001)
    link, factory, _ = connectLink(backend, accept=False)
    link.connectionLost(Failure(ConnectionDone()))
    failures = []
    factory.opened.addErrback(failures.append)
    assert failures[0].check(BackendUnreachable)
    assert (factory.slot.held, backend.connections) == (True, 1)


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
