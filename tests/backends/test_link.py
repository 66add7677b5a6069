"""
Tests for L{gateway.backends.link}: L{connectToPool} (affinity through the
session map, and a failing session map never failing a client's
connection), L{backendEndpoint} (IP addresses connected to directly) and
the session WebSockets' direct sending of messages.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from gateway.backends.link import (
    BackendLink,
    DirectMessages,
    backendEndpoint,
    connectToPool,
    maskedFrame,
    plainFrame,
)
from gateway.backends.balancers import LeastConnections
from gateway.errors import GatewayError
from gateway.backends.pool import Backend, Pool
from gateway.sessionmap.memory import MemorySessionMap


class Observer:
    """
    Records connect outcomes (passive health).
    """

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.succeeded: list[str] = []

    def connectFailed(self, pool, backend, reason):
        self.failed.append(backend.name)

    def connectSucceeded(self, pool, backend):
        self.succeeded.append(backend.name)


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


async def connected(backend: Backend) -> str:
    """
    A connect attempt that always works.
    """
    return f"connection to {backend.name}"


@pytest_twisted.ensureDeferred
async def test_affinityRecordedAndReused():
    """
    With C{sticky}, the backend that worked is recorded for the key, with
    the pool's TTL, and chosen again while it is available, even when the
    balancer would choose another.
    """
    pool = makePool()
    sessionMap = MemorySessionMap(Clock())
    backend, result = await connectToPool(pool, b"alice", True, sessionMap, Observer(), connected)
    assert result == f"connection to {backend.name}"
    assert await sessionMap.getAffinity("chat", b"alice") == backend.name
    again, _ = await connectToPool(pool, b"alice", True, sessionMap, Observer(), connected)
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
        backend, result = await connectToPool(pool, b"alice", True, sessionMap, Observer(), connected)
    finally:
        globalLogPublisher.removeObserver(events.append)
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
    L{maskedFrame} and L{plainFrame} encode one final frame of any length
    (all three length encodings), masked with the given key or not.
    """
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    key = b"\x01\x80\xfe\x37"
    assert unframe(maskedFrame(1, payload, key)) == (0x81, size, key, payload)
    assert unframe(plainFrame(2, payload)) == (0x82, size, None, payload)


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
