"""
Tests for L{gateway.transports.tunnel}: one L{Tunnel} between two
L{StringTransport}s on a L{MemoryReactorClock}, its front door a fake
L{IEdge}: the handshake forwarded, a refusal passed on, the splice, and the
keep-alive pings and closes.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.backends.balancers import RoundRobin
from gateway.backends.routing import RouteOrigins
from gateway.backends.pool import Backend, Pool
from gateway.config import GatewayConfig, Timeouts
from gateway.interfaces import IAccessLog, IConnectObserver, IEdge
from gateway.metrics import NoMetrics
from gateway.sessionmap.memory import MemorySessionMap
from gateway.transports.tunnel import Tunnel
from gateway.wire.forwarded import TrustedProxies
from gateway.wire.frames import OP_TEXT, encodeClose, encodeFrame
from gateway.wire.http1 import findHeadEnd, parseRequestHead

UPGRADE = (
    b"GET /chat/room?x=1 HTTP/1.1\r\n"
    b"Host: gw.example\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"X-Forwarded-For: 203.0.113.9\r\n"
    b"\r\n"
)

SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


@implementer(IConnectObserver)
class Health:
    """
    Records what passive health is told.
    """

    def __init__(self) -> None:
        self.heard: list[tuple] = []

    def connectFailed(self, pool, backend, reason):
        self.heard.append(("failed", backend.name, reason))

    def connectSucceeded(self, pool, backend):
        self.heard.append(("succeeded", backend.name))

    def answered(self, pool, backend, status):
        self.heard.append(("answered", backend.name, status))


@implementer(IAccessLog)
class RecordedEnds:
    """
    An access log that keeps its records.
    """

    def __init__(self) -> None:
        self.records: list[dict] = []

    def connectionEnded(self, record: dict) -> None:
        self.records.append(record)


@implementer(IEdge)
class Edge:
    """
    What a tunnel uses of the front door: settings, a clock, the session
    map, passive health, an access log; the client is 192.0.2.7, over
    plain TCP.
    """

    def __init__(self, reactor, timeouts: Timeouts) -> None:
        self.reactor = reactor
        self.config = GatewayConfig(timeouts=timeouts)
        self.sessionMap = MemorySessionMap(reactor)
        self.trustedProxies = TrustedProxies(())
        self.health = Health()
        self.accessLog = RecordedEnds()
        self.sessions = None
        self.clientErrors = 0
        self.metrics = NoMetrics()
        self.origins = RouteOrigins([], ())

    def peerHost(self, transport):
        return "192.0.2.7"

    def secure(self, transport):
        return False

    def routeRequest(self, request):
        raise NotImplementedError("tunnels route nothing")


class Harness:
    """
    A started tunnel, its client transport, and the backend's once it
    connects (L{connectBackend}).
    """

    def __init__(self, timeouts: Timeouts | None = None, early: bytes = b"",
                 request: bytes = UPGRADE, metrics=None) -> None:
        self.reactor = MemoryReactorClock()
        self.timeouts = timeouts or Timeouts(pingInterval=5.0, pingTimeout=5.0, idle=0.0)
        self.edge = Edge(self.reactor, self.timeouts)
        if metrics is not None:
            self.edge.metrics = metrics
        self.backend = Backend("b1", "127.0.0.1", 9001)
        self.pool = Pool("chat", [self.backend], RoundRobin())
        head = parseRequestHead(request[:findHeadEnd(request, 16384)])
        self.client = StringTransport()
        self.closed: list[Tunnel] = []
        self.tunnel = Tunnel(self.edge, self.client, head, early, self.pool, None, False,
                             self.closed.append)
        self.tunnel.start(self.timeouts.handshake)
        self.server: StringTransport | None = None

    def connectBackend(self) -> StringTransport:
        """
        Let the pending connect to the backend succeed.

        @return: the backend connection's transport.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        assert (host, port) == ("127.0.0.1", 9001)
        self.server = StringTransport()
        factory.buildProtocol(None).makeConnection(self.server)
        return self.server

    def backendSends(self, data: bytes) -> None:
        self.tunnel.backendSide.dataReceived(data)

    def clientSends(self, data: bytes) -> None:
        self.tunnel.client.dataReceived(data)

    def spliced(self) -> None:
        """
        Connect, answer 101, and forget what was written so far.
        """
        self.connectBackend()
        self.backendSends(SWITCHING)
        assert self.tunnel.spliced
        self.client.clear()
        self.server.clear()


def test_fakeEdge():
    """
    The fake front door provides what a tunnel may use.
    """
    assert verifyObject(IEdge, Harness().edge)


def test_handshakeForwarded():
    """
    The backend is sent the client's request line and headers, with the
    hop-by-hop headers replaced and the forwarding headers of this hop
    (the client's own X-Forwarded-For, from an untrusted peer, dropped).
    """
    harness = Harness()
    server = harness.connectBackend()
    head, _, rest = server.value().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /chat/room?x=1 HTTP/1.1"
    assert b"Upgrade: websocket" in lines and b"Connection: Upgrade" in lines
    assert b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" in lines
    assert b"X-Forwarded-For: 192.0.2.7" in lines
    assert b"X-Forwarded-For: 203.0.113.9" not in lines
    assert rest == b""
    assert harness.backend.connections == 1


def test_handshakeDropsOwnedAndNamedHeaders():
    """
    The client's copies of the headers the gateway owns (session headers
    and forwarding headers, any case, C{_} for C{-}) and the headers it
    named in Connection do not reach the backend; the gateway's own
    forwarding headers and the client's other headers do.
    """
    request = UPGRADE.replace(b"Connection: Upgrade\r\n", b"Connection: Upgrade, X-Hop\r\n").replace(
        b"\r\n\r\n",
        b"\r\nX-Session-Id: stolen\r\nx_session_epoch: 999\r\nX-SESSION-RESUMED: 1\r\n"
        b"X-Session-Received: 0\r\nX-Session-Delivered: 0\r\nX_Forwarded_For: 6.6.6.6\r\n"
        b"x-real-ip: 6.6.6.6\r\nX-Hop: secret\r\nX-Kept: yes\r\n\r\n")
    harness = Harness(request=request)
    server = harness.connectBackend()
    lines = server.value().partition(b"\r\n\r\n")[0].split(b"\r\n")
    names = [line.split(b":", 1)[0].lower().replace(b"_", b"-") for line in lines[1:]]
    assert not any(n.startswith(b"x-session-") for n in names)
    assert b"x-real-ip" not in names and b"x-hop" not in names
    assert names.count(b"x-forwarded-for") == 1 and b"X-Forwarded-For: 192.0.2.7" in lines
    assert b"X-Kept: yes" in lines and b"Connection: Upgrade" in lines
    assert not any(b"6.6.6.6" in line or b"stolen" in line for line in lines)


def test_switchingPassedOnAndSpliced():
    """
    The backend's 101 goes to the client as it came; the tunnel is spliced,
    passive health hears of a success, and early client bytes follow.
    """
    early = encodeFrame(OP_TEXT, b"early", True)
    harness = Harness(early=early)
    harness.connectBackend()
    harness.server.clear()
    harness.backendSends(SWITCHING)
    assert harness.client.value() == SWITCHING
    assert harness.tunnel.spliced
    assert harness.server.value() == early
    assert harness.edge.health.heard == [("answered", "b1", 101)]


def test_splice():
    """
    Once spliced, bytes are copied both ways as they come, whole frames or
    not.
    """
    harness = Harness()
    harness.spliced()
    frame = encodeFrame(OP_TEXT, b"hello", True)
    harness.clientSends(frame[:3])
    harness.clientSends(frame[3:])
    assert harness.server.value() == frame
    answer = encodeFrame(OP_TEXT, b"world")
    harness.backendSends(answer)
    assert harness.client.value() == answer
    assert harness.client.producer is harness.tunnel.backendSide
    assert harness.server.producer is harness.tunnel.client


def test_refusalPassedOn():
    """
    A backend's answer other than 101 is passed on with its status, its
    headers (a fresh length, and C{Connection: close}) and its body, then
    both connections close; it is an answer, not a failure, for passive
    health.
    """
    harness = Harness()
    harness.connectBackend()
    harness.backendSends(b"HTTP/1.1 403 Forbidden\r\nX-Why: nope\r\nContent-Length: 5\r\n\r\nno")
    assert harness.client.value() == b""
    harness.backendSends(b"pe!")
    assert harness.client.value() == (
        b"HTTP/1.1 403 Forbidden\r\nX-Why: nope\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope!"
    )
    assert harness.client.disconnecting and harness.server.disconnecting
    assert not harness.tunnel.spliced
    assert harness.edge.health.heard == [("answered", "b1", 403)]


def test_unreachableBackend():
    """
    A backend that refuses the connection is reported to passive health;
    with no other backend the client gets 503.
    """
    harness = Harness()
    _, _, factory, _, _ = harness.reactor.tcpClients[-1]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert harness.edge.health.heard == [("failed", "b1", "b1: connection refused")]
    assert harness.client.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert harness.client.disconnecting
    assert harness.backend.connections == 0


def test_handshakeTimesOut():
    """
    A backend that does not answer the handshake in time: 504 to the
    client, the backend connection aborted.
    """
    harness = Harness(Timeouts(handshake=3.0))
    server = harness.connectBackend()
    harness.reactor.advance(3.0)
    assert harness.client.value().startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert server.disconnecting


def test_pingWhenSilentThenCloseOnSilence():
    """
    A side silent for C{pingInterval} is pinged (masked towards the
    backend); one still silent C{pingTimeout} seconds later is aborted.
    """
    harness = Harness()
    harness.spliced()
    now = harness.reactor.seconds()
    harness.tunnel.sweep(now + 1, harness.timeouts)  # data seen since the splice
    harness.tunnel.sweep(now + 3, harness.timeouts)
    assert harness.client.value() == harness.server.value() == b""
    harness.tunnel.sweep(now + 6, harness.timeouts)
    assert harness.client.value() == b"\x89\x09txgateway"
    assert harness.server.value()[:2] == b"\x89\x89"  # a masked ping
    harness.clientSends(b"\x8a\x80abcd")  # the client's (masked, empty) pong
    harness.tunnel.sweep(now + 11, harness.timeouts)
    assert not harness.client.disconnecting
    assert harness.server.disconnected  # the backend stayed silent: aborted


def test_idleClose():
    """
    With C{idle} set, a tunnel through which no data frame passed for that
    long is closed with 1001 to both sides.
    """
    harness = Harness(Timeouts(pingInterval=100.0, pingTimeout=100.0, idle=30.0))
    harness.spliced()
    now = harness.reactor.seconds()
    harness.tunnel.sweep(now + 29, harness.timeouts)
    assert harness.client.value() == b""
    harness.tunnel.sweep(now + 30, harness.timeouts)
    assert harness.client.value() == encodeClose(1001, "idle timeout")
    assert harness.server.value()[:2] == b"\x88\x8e"  # masked, 2 + 12 bytes


def test_accessRecord():
    """
    A tunnel that ends gives the access log one record: the client, path,
    pool and backend, status 101, bytes and data frames each way (from the
    counters the splice keeps), and the close code of the first close
    frame that passed.
    """
    harness = Harness()
    harness.spliced()
    harness.reactor.advance(2.5)
    fromClient = encodeFrame(OP_TEXT, b"hello", mask=True) + encodeClose(4001, "bye", mask=True)
    harness.tunnel.client.dataReceived(fromClient)
    fromBackend = encodeFrame(OP_TEXT, b"a") + encodeFrame(OP_TEXT, b"b") + encodeClose(4001, "bye")
    harness.backendSends(fromBackend)
    harness.tunnel.client.connectionLost(Failure(ConnectionDone()))
    harness.tunnel.backendSide.connectionLost(Failure(ConnectionDone()))
    [record] = harness.edge.accessLog.records
    assert record == {
        "event": "tunnel", "client": "192.0.2.7", "peer": "192.0.2.7", "path": "/chat/room",
        "pool": "chat", "backend": "b1", "mode": "transparent", "transport": "websocket", "tls": False,
        "status": 101, "duration": 2.5, "bytes_from_client": len(fromClient),
        "bytes_to_client": len(fromBackend), "messages_from_client": 1, "messages_to_client": 2,
        "close_code": 4001,
    }


def test_refusedTunnelRecord():
    """
    A tunnel refused before any backend answered (503: its only backend
    never connected) is logged once, with its status and no backend bytes.
    """
    harness = Harness()
    harness.reactor.advance(harness.timeouts.handshake + 0.1)
    harness.tunnel.client.connectionLost(Failure(ConnectionDone()))
    [record] = harness.edge.accessLog.records
    assert (record["status"], record["bytes_to_client"], record["close_code"]) == (503, 0, None)


def test_clientGoneClosesBackend():
    """
    When the client leaves between frames, the backend is sent a 1001
    close and its connection ended; once it has, the tunnel is over and
    its connection slot released.
    """
    harness = Harness()
    harness.spliced()
    harness.tunnel.client.connectionLost(Failure(ConnectionDone()))
    assert harness.server.value()[:2] == b"\x88\x92"  # masked close: 1001, "client went away"
    assert harness.server.disconnecting
    assert harness.closed == []
    harness.tunnel.backendSide.connectionLost(Failure(ConnectionDone()))
    assert harness.closed == [harness.tunnel]
    assert harness.backend.connections == 0


# Metrics.


def _samples(metrics) -> dict:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metricsOfATunnel():
    """
    A tunnel counts itself accepted and its handshake when spliced; its
    frames and bytes each way are added to the node's traffic once it
    ends, and a close it sends its client is counted.
    """
    from prometheus_client import CollectorRegistry

    from gateway.metrics import Metrics

    metrics = Metrics(CollectorRegistry(), process=False)
    harness = Harness(metrics=metrics)
    harness.spliced()
    frame = encodeFrame(OP_TEXT, b"hello", True)
    harness.clientSends(frame)
    harness.backendSends(encodeFrame(OP_TEXT, b"hi"))
    harness.backendSends(encodeFrame(OP_TEXT, b"again"))
    assert metrics.traffic.tunnelUpMessages == 0  # read live at scrape time meanwhile
    harness.tunnel.backendSide.connectionLost(Failure(ConnectionDone()))
    harness.tunnel.client.connectionLost(Failure(ConnectionDone()))
    traffic = metrics.traffic
    assert (traffic.tunnelUpMessages, traffic.tunnelUpBytes) == (1, len(frame))
    assert (traffic.tunnelDownMessages, traffic.tunnelDownBytes) == (2, 4 + 7)
    s = _samples(metrics)
    labels = (("mode", "transparent"), ("transport", "websocket"))
    assert s[("txgateway_connections_accepted_total", labels)] == 1
    assert s[("txgateway_handshake_duration_seconds_count", labels)] == 1
    assert s[("txgateway_closes_total", (("code", "1012"), ("mode", "transparent"),
                                        ("reason", "backend_gone")))] == 1


def test_metricsOfARefusal():
    """
    The tunnel's own refusals are counted with their status and reason.
    """
    from prometheus_client import CollectorRegistry

    from gateway.metrics import Metrics

    metrics = Metrics(CollectorRegistry(), process=False)
    harness = Harness(metrics=metrics)
    _, _, factory, _, _ = harness.reactor.tcpClients[-1]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert harness.client.value().startswith(b"HTTP/1.1 503 ")
    assert _samples(metrics)[("txgateway_refusals_total", (("reason", "no_backend"), ("status", "503")))] == 1
