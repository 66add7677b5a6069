"""
Tests for L{gateway.backend}: L{connectToPool} (affinity through the
session map, and a failing session map never failing a client's
connection) and L{backendEndpoint} (IP addresses connected to directly).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from gateway.backend import BackendLink, backendEndpoint, connectToPool
from gateway.balancers import LeastConnections
from gateway.errors import GatewayError
from gateway.pool import Backend, Pool
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
