"""
Tests for L{gateway.backends.health}: the L{HealthMonitor} state machine on a
L{Clock} with a fake check, and the three probes against real servers on
127.0.0.1.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.config import HealthCheckConfig
from gateway.errors import ConfigError, HealthCheckFailed
from gateway.backends.health import (
    HealthMonitor,
    HTTPCheck,
    PassiveHealth,
    TCPCheck,
    WebSocketCheck,
    makeHealthCheck,
)
from gateway.interfaces import IHealthCheck
from gateway.backends.pool import Backend, Pool

# -- the monitor, on a Clock


@implementer(IHealthCheck)
class FakeCheck:
    """
    A health check whose results the test decides.

    @ivar calls: C{(backend, Deferred)} for every check started.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Backend, Deferred]] = []
        self.cancelled: list[Backend] = []

    def check(self, backend):
        """
        Start a check that waits for the test; cancelling it is recorded.
        """
        d: Deferred[None] = Deferred(lambda _: self.cancelled.append(backend))
        self.calls.append((backend, d))
        return d

    def pending(self, backend=None):
        """
        @return: the unfired checks (of C{backend}).
        """
        return [d for b, d in self.calls if not d.called and backend in (None, b)]

    def passAll(self):
        """
        Every pending check passes.
        """
        for d in self.pending():
            d.callback(None)

    def fail(self, backend, reason="status 500"):
        """
        The pending checks of C{backend} fail, the others pass.
        """
        for b, d in self.calls:
            if not d.called:
                if b is backend:
                    d.errback(HealthCheckFailed(reason))
                else:
                    d.callback(None)


def makeMonitor(config=HealthCheckConfig(interval=2.0, rise=2, fall=3), failTimeout=10.0):
    """
    @return: C{(monitor, pool, check, clock, events)}: a monitor of a pool
        of 3 backends with a L{FakeCheck}, and its logged events.
    """
    clock = Clock()
    backends = [Backend(f"b{i}", "127.0.0.1", 9000 + i) for i in range(3)]
    pool = Pool("chat", backends, balancer=None)
    check = FakeCheck()
    monitor = HealthMonitor(pool, config, clock, failTimeout, healthCheck=check)
    events: list[dict] = []
    monitor.log = Logger(observer=events.append)
    return monitor, pool, check, clock, events


def messages(events):
    """
    @return: the text of each logged event, as C{(level, text)}.
    """
    return [(e["log_level"].name, formatEvent(e)) for e in events]


def test_fakeCheckProvidesInterface():
    """
    The fake used below is a real L{IHealthCheck}.
    """
    assert verifyObject(IHealthCheck, FakeCheck())


def test_firstRoundAtStart():
    """
    Starting the monitor checks every backend at once, and again every
    C{interval} seconds; backends start up.
    """
    monitor, pool, check, clock, _ = makeMonitor()
    monitor.startService()
    assert [b.name for b, _ in check.calls] == ["b0", "b1", "b2"]
    assert all(b.healthy for b in pool.backends)
    check.passAll()
    clock.advance(2)
    assert len(check.calls) == 6
    check.passAll()
    monitor.stopService()


def test_fall():
    """
    An up backend goes down after C{fall} consecutive failed checks, not
    before, and the change is logged once as a warning with the reason.
    """
    monitor, pool, check, clock, events = makeMonitor()
    b1 = pool.backends[1]
    monitor.startService()
    for _ in range(2):
        check.fail(b1)
        clock.advance(2)
    assert b1.healthy
    check.fail(b1, "status 503")
    assert not b1.healthy
    assert messages(events) == [("warn", "backend b1 of pool chat is down: status 503")]
    clock.advance(2)
    check.fail(b1)
    assert not b1.healthy
    assert len(events) == 1
    assert all(b.healthy for b in pool.backends if b is not b1)
    monitor.stopService()


def test_rise():
    """
    A down backend comes up after C{rise} consecutive good checks, logged
    once at info level.
    """
    monitor, pool, check, clock, events = makeMonitor()
    b0 = pool.backends[0]
    monitor.startService()
    for _ in range(3):
        check.fail(b0)
        clock.advance(2)
    assert not b0.healthy
    check.passAll()
    assert not b0.healthy
    clock.advance(2)
    check.passAll()
    assert b0.healthy
    clock.advance(2)
    check.passAll()
    assert messages(events) == [
        ("warn", "backend b0 of pool chat is down: status 500"),
        ("info", "backend b0 of pool chat is up: passed 2 checks"),
    ]
    monitor.stopService()


def test_countsAreConsecutive():
    """
    A success resets the failure count, and a failure the success count.
    """
    monitor, pool, check, clock, _ = makeMonitor()
    b0 = pool.backends[0]
    monitor.startService()
    for outcome in ["fail", "fail", "pass", "fail", "fail"]:
        check.fail(b0) if outcome == "fail" else check.passAll()
        clock.advance(2)
    assert b0.healthy
    check.fail(b0)
    assert not b0.healthy
    for outcome in ["pass", "fail", "pass"]:
        clock.advance(2)
        check.fail(b0) if outcome == "fail" else check.passAll()
    assert not b0.healthy
    clock.advance(2)
    check.passAll()
    assert b0.healthy
    monitor.stopService()


def test_noOverlappingChecks():
    """
    A backend whose check is still running is not checked again when the
    next round starts; the others are.
    """
    monitor, pool, check, clock, _ = makeMonitor()
    b2 = pool.backends[2]
    monitor.startService()
    for d in check.pending():
        if check.calls[-1][1] is not d:
            d.callback(None)
    for _ in range(3):
        clock.advance(2)
        for d in check.pending():
            if d not in check.pending(b2):
                d.callback(None)
    assert len([1 for b, _ in check.calls if b is b2]) == 1
    check.pending(b2)[0].callback(None)
    clock.advance(2)
    assert len([1 for b, _ in check.calls if b is b2]) == 2
    check.passAll()
    monitor.stopService()


def test_checkRaising():
    """
    A check that raises instead of failing its Deferred counts as a failure
    and is logged.
    """

    @implementer(IHealthCheck)
    class Broken:
        """
        A check with a bug.
        """

        def check(self, backend):
            """
            Raise instead of returning a Deferred.
            """
            raise RuntimeError("oops")

    clock = Clock()
    pool = Pool("p", [Backend("b0", "127.0.0.1", 1)], balancer=None)
    monitor = HealthMonitor(
        pool, HealthCheckConfig(fall=1), clock, 10.0, healthCheck=Broken()
    )
    events: list[dict] = []
    monitor.log = Logger(observer=events.append)
    monitor.startService()
    assert not pool.backends[0].healthy
    assert monitor.status()["backends"][0]["reason"] == "check error: RuntimeError"
    assert any("log_failure" in e for e in events)
    monitor.stopService()


def test_passiveFailuresCountTowardFall():
    """
    Connect failures reported by the proxy count toward C{fall} together
    with failed checks.
    """
    monitor, pool, check, clock, events = makeMonitor()
    b0 = pool.backends[0]
    monitor.startService()
    check.fail(b0)
    monitor.connectFailed(b0, "connection refused")
    assert b0.healthy
    monitor.connectFailed(b0, "connection refused")
    assert not b0.healthy
    assert messages(events) == [("warn", "backend b0 of pool chat is down: connection refused")]
    assert clock.getDelayedCalls() and all(
        c.getTime() == 2 for c in clock.getDelayedCalls()
    ), "with active checks, no failTimeout retry is scheduled"
    monitor.stopService()


def test_passiveSuccessResets():
    """
    A successful connect resets the consecutive failure count.
    """
    monitor, pool, _, _, _ = makeMonitor(config=None)
    b0 = pool.backends[0]
    monitor.startService()
    monitor.connectFailed(b0, "connection refused")
    monitor.connectFailed(b0, "connection refused")
    monitor.connectSucceeded(b0)
    monitor.connectFailed(b0, "connection refused")
    monitor.connectFailed(b0, "connection refused")
    assert b0.healthy
    monitor.connectFailed(b0, "connection refused")
    assert not b0.healthy
    monitor.stopService()


@pytest.mark.parametrize("layer7", [False, True])
def test_answersCountOnlyAs5xxAtLayer7(layer7):
    """
    L{PassiveHealth.answered}: a 101 or a refusal below 500 is a success; a
    5xx is one too, unless the pool's monitor observes layer 7, where
    C{fall} (3) of them take the backend down.
    """
    monitor, pool, _, _, _ = makeMonitor(config=None)
    monitor.observeLayer7 = layer7
    health = PassiveHealth({pool.name: monitor})
    b0 = pool.backends[0]
    monitor.startService()
    for status in (101, 403, 404, 503, 503, 502):
        health.answered(pool, b0, status)
    assert b0.healthy is not layer7
    for _ in range(5):
        health.answered(pool, pool.backends[1], 403)
    assert pool.backends[1].healthy
    monitor.stopService()


def test_failTimeoutRecovery():
    """
    Without active checks, C{fall} (3) connect failures take a backend down
    for C{failTimeout} seconds; it then comes back on probation: one more
    failure takes it down again, one success makes it fully up.
    """
    monitor, pool, check, clock, events = makeMonitor(config=None, failTimeout=10.0)
    assert monitor.fall == 3
    b0 = pool.backends[0]
    monitor.startService()
    assert clock.getDelayedCalls() == []
    for _ in range(3):
        monitor.connectFailed(b0, Exception("connection refused\nmore"))
    assert not b0.healthy
    clock.advance(9.9)
    assert not b0.healthy
    clock.advance(0.1)
    assert b0.healthy
    monitor.connectFailed(b0, "timed out")
    assert not b0.healthy
    clock.advance(10)
    assert b0.healthy
    monitor.connectSucceeded(b0)
    monitor.connectFailed(b0, "timed out")
    monitor.connectFailed(b0, "timed out")
    assert b0.healthy
    assert messages(events) == [
        ("warn", "backend b0 of pool chat is down: connection refused"),
        ("info", "backend b0 of pool chat is up: trying again after 10.0s"),
        ("warn", "backend b0 of pool chat is down: timed out"),
        ("info", "backend b0 of pool chat is up: trying again after 10.0s"),
    ]
    assert check.calls == []
    monitor.stopService()


def test_stopCancelsChecksAndTimers():
    """
    L{HealthMonitor.stopService} cancels the checks in flight, the next
    round and any C{failTimeout} retry, and returns a Deferred that has
    fired once the checks are done; late results change nothing.
    """
    monitor, pool, check, clock, _ = makeMonitor()
    monitor.startService()
    assert len(check.pending()) == 3
    stopped = monitor.stopService()
    fired = []
    stopped.addCallback(fired.append)
    assert fired == [None]
    assert check.cancelled == pool.backends
    assert check.pending() == []
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert len(check.calls) == 3
    assert all(b.healthy for b in pool.backends)

    passive, pool2, _, clock2, _ = makeMonitor(config=None)
    passive.startService()
    for _ in range(3):
        passive.connectFailed(pool2.backends[0], "refused")
    assert len(clock2.getDelayedCalls()) == 1
    passive.stopService()
    assert clock2.getDelayedCalls() == []
    passive.connectFailed(pool2.backends[1], "refused")
    passive.connectFailed(pool2.backends[1], "refused")
    passive.connectFailed(pool2.backends[1], "refused")
    assert clock2.getDelayedCalls() == []


def test_status():
    """
    L{HealthMonitor.status} describes every backend of the pool, as JSON.
    """
    monitor, pool, check, clock, _ = makeMonitor()
    pool.backends[2].draining = True
    for _ in range(7):
        pool.backends[2].reserve()
    pool.backends[2].weight = 3
    pool.backends[2].maxConnections = 100
    clock.advance(100)
    monitor.startService()
    check.fail(pool.backends[0], "timed out after 1.0s")
    status = json.loads(json.dumps(monitor.status()))
    assert status["pool"] == "chat"
    assert status["active"] == "websocket"
    assert status["backends"][0] == {
        "name": "b0",
        "url": "ws://127.0.0.1:9000",
        "healthy": True,
        "draining": False,
        "connections": 0,
        "weight": 1,
        "maxConnections": 0,
        "lastCheck": 100.0,
        "reason": "timed out after 1.0s",
    }
    assert status["backends"][2]["draining"] is True
    assert status["backends"][2]["connections"] == 7
    assert status["backends"][2]["weight"] == 3
    assert status["backends"][2]["maxConnections"] == 100
    assert status["backends"][2]["reason"] is None
    monitor.stopService()
    unchecked = makeMonitor(config=None)[0].status()
    assert unchecked["active"] is None
    assert unchecked["backends"][0]["lastCheck"] is None


# -- makeHealthCheck


@pytest.mark.parametrize(
    "kind,cls", [("tcp", TCPCheck), ("http", HTTPCheck), ("websocket", WebSocketCheck)]
)
def test_makeHealthCheck(kind, cls):
    """
    L{makeHealthCheck} makes the check its type names, with its path and
    timeout, and every check provides L{IHealthCheck}.
    """
    check = makeHealthCheck(HealthCheckConfig(type=kind, path="/up?x=1", timeout=0.5), Clock())
    assert isinstance(check, cls)
    assert verifyObject(IHealthCheck, check)
    assert check.timeout == 0.5
    if kind != "tcp":
        assert check.path == b"/up?x=1"


@pytest.mark.parametrize(
    "config",
    [
        HealthCheckConfig(type="icmp"),
        HealthCheckConfig(type="http", path="up"),
        HealthCheckConfig(type="websocket", path="/a b"),
        HealthCheckConfig(type="http", path="/\r\nX: y"),
        HealthCheckConfig(type="http", path="/caf\u00e9"),
    ],
)
def test_makeHealthCheckErrors(config):
    """
    An unknown type or a path that is not a printable ASCII request target
    is a L{ConfigError}.
    """
    with pytest.raises(ConfigError):
        makeHealthCheck(config, Clock())


def test_monitorMakesCheck():
    """
    Given a config and no check, the monitor makes the check the config
    names; without a config it has none.
    """
    pool = Pool("p", [], balancer=None)
    monitor = HealthMonitor(pool, HealthCheckConfig(type="tcp"), Clock(), 10.0)
    assert isinstance(monitor.healthCheck, TCPCheck)
    assert HealthMonitor(pool, None, Clock(), 10.0).healthCheck is None


@pytest.mark.parametrize("kind", ["tcp", "http", "websocket"])
def test_connectTimeout(kind):
    """
    A check whose connect attempt never completes fails with "timed out
    after 1.0s" exactly C{timeout} seconds later and stops connecting.
    """
    reactor = MemoryReactorClock()
    check = makeHealthCheck(HealthCheckConfig(type=kind, timeout=1.0), reactor)
    results = []
    check.check(Backend("b", "127.0.0.1", 9000)).addErrback(results.append)
    [connection] = reactor.tcpClients
    assert connection[:2] == ("127.0.0.1", 9000)
    reactor.advance(0.99)
    assert results == []
    reactor.advance(0.01)
    [failed] = results
    assert failed.check(HealthCheckFailed)
    assert str(failed.value) == "timed out after 1.0s"
    assert reactor.connectors[0].stoppedConnecting
    assert reactor.getDelayedCalls() == []


def test_cancelWhileConnecting():
    """
    Cancelling a check while it connects fails it with L{CancelledError}
    and stops connecting.
    """
    reactor = MemoryReactorClock()
    d = TCPCheck(reactor, 1.0).check(Backend("b", "127.0.0.1", 9000))
    d.cancel()
    results = []
    d.addErrback(results.append)
    assert results[0].check(CancelledError)
    assert reactor.connectors[0].stoppedConnecting
    assert reactor.getDelayedCalls() == []


# -- the checks, against real servers


def within(d: Deferred, seconds: float = 2.0) -> Deferred:
    """
    Bound a test's wait for a server-side event.
    """
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


class Probe(Resource):
    """
    C{/ok} answers 200, C{/fail} 500, C{/moved} 302; requests are recorded.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def render_GET(self, request):
        """
        Answer by path.
        """
        self.seen.append(
            {
                "path": request.path,
                "host": request.getHeader(b"host"),
                "userAgent": request.getHeader(b"user-agent"),
                "connection": request.getHeader(b"connection"),
            }
        )
        code = {b"/ok": 200, b"/fail": 500, b"/moved": 302}.get(request.path, 404)
        request.setResponseCode(code)
        if code == 302:
            request.setHeader(b"location", b"/ok")
        return b"body"


class Recording(Protocol):
    """
    A server protocol that says nothing, or C{factory.reply} once a request
    head arrived, or closes at once (C{factory.closeAtOnce}); it fires
    C{factory.head} when a request head arrived and C{factory.lost} with
    the bytes received when its connection closes.
    """

    def connectionMade(self) -> None:
        """
        Close at once if told to.
        """
        self.buffer = b""
        if self.factory.closeAtOnce:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Answer with C{factory.reply} once the request head is complete.
        """
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.factory.head.called:
            self.factory.head.callback(None)
            if self.factory.reply is not None:
                self.transport.write(self.factory.reply)

    def connectionLost(self, reason) -> None:
        """
        Fire C{factory.lost}.
        """
        if not self.factory.lost.called:
            self.factory.lost.callback(self.buffer)


def recordingFactory(reply=None, closeAtOnce=False):
    """
    @return: a factory of L{Recording} protocols.
    """
    factory = Factory.forProtocol(Recording)
    factory.reply = reply
    factory.closeAtOnce = closeAtOnce
    factory.head = Deferred()
    factory.lost = Deferred()
    return factory


def echoFactory():
    """
    @return: an autobahn WebSocket echo server factory whose C{closes}
        Deferred fires with the close code the server received.
    """
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Echo(WebSocketServerProtocol):
        """
        Echoes messages; reports the close code it received.
        """

        def onMessage(self, payload, isBinary):
            """
            Send the message back.
            """
            self.sendMessage(payload, isBinary)

        def onClose(self, wasClean, code, reason):
            """
            Fire C{factory.closes} with the peer's close code.
            """
            if not self.factory.closes.called:
                self.factory.closes.callback(self.remoteCloseCode)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    factory.setProtocolOptions(
        maxMessagePayloadSize=65536,
        maxFramePayloadSize=65536,
        autoPingInterval=10,
        autoPingTimeout=5,
        openHandshakeTimeout=2,
        closeHandshakeTimeout=1,
        allowedOrigins=["*"],
        failByDrop=False,
    )
    factory.closes = Deferred()
    return factory


class Server:
    """
    A server on 127.0.0.1, port 0, as a backend; C{async with} stops it.
    """

    def __init__(self, factory) -> None:
        self.factory = factory

    async def __aenter__(self) -> Backend:
        from twisted.internet import reactor

        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        return Backend("s", "127.0.0.1", self.port.getHost().port)

    async def __aexit__(self, *exc) -> None:
        await self.port.stopListening()


async def closedPort() -> Backend:
    """
    @return: a backend on a port nothing listens on (bound, then closed).
    """
    from twisted.internet import reactor

    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    number = port.getHost().port
    await port.stopListening()
    return Backend("closed", "127.0.0.1", number)


async def failure(d: Deferred) -> str:
    """
    @return: the message of the L{HealthCheckFailed} C{d} fails with.
    """
    with pytest.raises(HealthCheckFailed) as info:
        await d
    return str(info.value)


def checks(path=b"/ok", timeout=2.0):
    """
    @return: the three checks, on the running reactor.
    """
    from twisted.internet import reactor

    return {
        "tcp": TCPCheck(reactor, timeout),
        "http": HTTPCheck(reactor, path, timeout),
        "websocket": WebSocketCheck(reactor, path, timeout),
    }


@pytest_twisted.ensureDeferred
async def test_tcpCheckUp():
    """
    The TCP check passes when a connection opens, and closes it.
    """
    factory = recordingFactory()
    async with Server(factory) as backend:
        assert await checks()["tcp"].check(backend) is None
        assert await within(factory.lost) == b""


@pytest.mark.parametrize("kind", ["tcp", "http", "websocket"])
@pytest_twisted.ensureDeferred
async def test_refused(kind):
    """
    Every check fails with "connection refused" on a closed port.
    """
    backend = await closedPort()
    assert await failure(checks()[kind].check(backend)) == "connection refused"


@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest_twisted.ensureDeferred
async def test_timeout(kind):
    """
    On a server that accepts and never answers, the HTTP and WebSocket
    checks fail with "timed out after 0.5s" after 0.5 s and abort their
    connection.
    """
    from twisted.internet import reactor

    factory = recordingFactory()
    async with Server(factory) as backend:
        started = reactor.seconds()
        reason = await failure(checks(timeout=0.5)[kind].check(backend))
        elapsed = reactor.seconds() - started
        assert reason == "timed out after 0.5s"
        assert 0.45 <= elapsed < 1.5
        request = await within(factory.lost)
        assert request.startswith(b"GET /ok HTTP/1.1\r\n")


@pytest_twisted.ensureDeferred
async def test_cancel():
    """
    Cancelling a check fails it with L{CancelledError} (not
    L{HealthCheckFailed}) and aborts its connection.
    """
    factory = recordingFactory()
    async with Server(factory) as backend:
        d = checks()["http"].check(backend)
        await within(factory.head)
        d.cancel()
        with pytest.raises(CancelledError):
            await d
        await within(factory.lost)


@pytest_twisted.ensureDeferred
async def test_http():
    """
    The HTTP check passes on 2xx and 3xx and fails with "status N"
    otherwise; it sends C{GET path} with the backend's Host, C{Connection:
    close} and C{User-Agent: txgateway-health}.
    """
    probe = Probe()
    async with Server(Site(probe)) as backend:
        assert await checks(b"/ok")["http"].check(backend) is None
        assert await checks(b"/moved")["http"].check(backend) is None
        assert await failure(checks(b"/fail")["http"].check(backend)) == "status 500"
        assert await failure(checks(b"/nowhere")["http"].check(backend)) == "status 404"
    assert probe.seen[0] == {
        "path": b"/ok",
        "host": f"127.0.0.1:{backend.port}".encode(),
        "userAgent": b"txgateway-health",
        "connection": b"close",
    }
    assert [s["path"] for s in probe.seen] == [b"/ok", b"/moved", b"/fail", b"/nowhere"]


@pytest.mark.parametrize(
    "reply,reason",
    [
        (b"SMTP ready\r\n\r\n", "bad response: malformed status line"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 17000, "response head larger than 16384 bytes"),
        (None, "connection closed before a response"),
    ],
    ids=["notHTTP", "hugeHead", "closed"],
)
@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest_twisted.ensureDeferred
async def test_badResponses(kind, reply, reason):
    """
    A response that is not HTTP, a head over 16 KiB, or a connection closed
    before any response fails the check with a one-line reason.
    """
    if reply is None:
        factory = recordingFactory(closeAtOnce=True)
    else:
        factory = recordingFactory(reply=reply)
    async with Server(factory) as backend:
        assert await failure(checks()[kind].check(backend)) == reason
        await within(factory.lost)


@pytest_twisted.ensureDeferred
async def test_websocket():
    """
    The WebSocket check completes a real handshake with an autobahn server,
    then sends a close frame with code 1000.
    """
    factory = echoFactory()
    async with Server(factory) as backend:
        assert await checks(b"/ws")["websocket"].check(backend) is None
        assert await within(factory.closes) == 1000


@pytest_twisted.ensureDeferred
async def test_websocketNotUpgraded():
    """
    A server that answers the handshake with anything but 101 fails the
    WebSocket check with "status N".
    """
    async with Server(Site(Probe())) as backend:
        assert await failure(checks(b"/ok")["websocket"].check(backend)) == "status 200"


@pytest.mark.parametrize(
    "reply,reason",
    [
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            "bad Sec-WebSocket-Accept",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
            "101 without Upgrade: websocket",
        ),
    ],
    ids=["badAccept", "noUpgrade"],
)
@pytest_twisted.ensureDeferred
async def test_websocketBadHandshake(reply, reason):
    """
    A 101 with the wrong C{Sec-WebSocket-Accept} (here, the RFC's example
    answer to another key) or without C{Upgrade: websocket} fails the check.
    """
    factory = recordingFactory(reply=reply)
    async with Server(factory) as backend:
        assert await failure(checks()["websocket"].check(backend)) == reason
        request = await within(factory.lost)
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in request
    assert b"\r\nUpgrade: websocket\r\n" in request


@pytest_twisted.ensureDeferred
async def test_monitorWithRealCheck():
    """
    A monitor with a real TCP check (fall 1) takes a backend on a closed
    port down on its first round, logging why, and leaves a live one up.
    """
    from twisted.internet import reactor

    real = TCPCheck(reactor, 1.0)
    finished: list[Deferred] = []

    @implementer(IHealthCheck)
    class Watched:
        """
        The real check, telling the test when the monitor has counted each
        result.
        """

        def check(self, backend):
            """
            Run the real check; fire an entry of C{finished} once the monitor
            has its result.
            """
            seen: Deferred[None] = Deferred()
            finished.append(seen)

            def report(result):
                # On the next reactor turn: after the monitor has counted it.
                reactor.callLater(0, seen.callback, None)
                return result

            return real.check(backend).addBoth(report)

    factory = recordingFactory()
    async with Server(factory) as live:
        dead = await closedPort()
        pool = Pool("p", [live, dead], balancer=None)
        config = HealthCheckConfig(type="tcp", interval=60, timeout=1.0, fall=1)
        monitor = HealthMonitor(pool, config, reactor, 10.0, healthCheck=Watched())
        events: list[dict] = []
        monitor.log = Logger(observer=events.append)
        monitor.startService()
        try:
            assert len(finished) == 2
            await within(gatherResults(finished))
            assert not dead.healthy
            assert live.healthy
            assert messages(events) == [
                ("warn", "backend closed of pool p is down: connection refused")
            ]
            assert monitor.status()["backends"][1]["reason"] == "connection refused"
        finally:
            await monitor.stopService()
        await within(factory.lost)
