"""
Tests for L{gateway.site}: the front door (L{FrontDoor}) on a
L{StringTransport} and the gateway's HTTP face (L{GatewayResource}) behind
it, on a L{MemoryReactorClock}: where a request head goes, what is refused,
the hand-off of a WebSocket upgrade that arrives on a kept-alive
connection, and the health and static answers.
"""

from __future__ import annotations

import json

import pytest

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface.verify import verifyObject

from gateway.config import (
    BackendConfig,
    GatewayConfig,
    Limits,
    PoolConfig,
    RouteConfig,
    SessionConfig,
    Timeouts,
)
from gateway.interfaces import IEdge
from gateway.service import GatewayService
from gateway.site import FrontDoor, GatewayFactory
from gateway.transports.tunnel import ClientSide, Tunnel

UPGRADE = (
    b"GET /chat/room HTTP/1.1\r\n"
    b"Host: gw.example\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def makeFactory(**kwargs) -> tuple[GatewayFactory, MemoryReactorClock]:
    """
    @return: the front door factory of a gateway (not started) that routes
        C{/chat} to a pool of one backend on 127.0.0.1:9001, and its
        reactor; C{kwargs} are L{GatewayConfig} fields.
    """
    backend = BackendConfig(name="b1", url="ws://127.0.0.1:9001", host="127.0.0.1", port=9001,
                            secure=False)
    values = dict(
        pools=(PoolConfig(name="chat", backends=(backend,)),),
        routes=(RouteConfig(prefix="/chat", pool="chat"),),
    )
    values.update(kwargs)
    reactor = MemoryReactorClock()
    return GatewayService(GatewayConfig(**values), reactor).factory, reactor


def connect(factory: GatewayFactory, host: str = "192.0.2.7") -> tuple[FrontDoor, StringTransport]:
    """
    @return: a front door connected from C{host} to a L{StringTransport}
        that delivers to it, as a TCP transport does.
    """
    door = factory.buildProtocol(IPv4Address("TCP", host, 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
    transport.protocol = door
    door.makeConnection(transport)
    return door, transport


def response(transport: StringTransport) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """
    @return: the status line, the headers (lower-case names) and the body
        of the first response written to C{transport}.
    """
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def close(door: FrontDoor) -> None:
    """
    End the connection, as the reactor would.
    """
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    door.connectionLost(Failure(ConnectionDone()))


def test_provides():
    """
    The factory is what the transports use of the front door.
    """
    factory, _ = makeFactory()
    assert verifyObject(IEdge, factory)


def test_upgradeOnARoutedPathBecomesATunnel():
    """
    A WebSocket upgrade on a routed path is handed to a new L{Tunnel}: the
    connection now delivers to the tunnel's client side, and the tunnel
    connects to the route's backend.
    """
    factory, reactor = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(UPGRADE)
    [tunnel] = factory.tunnels
    assert isinstance(tunnel, Tunnel)
    assert isinstance(transport.protocol, ClientSide)
    assert tunnel.pool is factory.pools["chat"]
    [(host, port, *_)] = reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 9001)
    assert factory.openConnections == 1
    assert reactor.getDelayedCalls()  # the handshake is bounded


def test_headInPieces():
    """
    A head that arrives in pieces is routed once it is whole.
    """
    factory, _ = makeFactory()
    door, _ = connect(factory)
    for i in range(0, len(UPGRADE), 7):
        door.dataReceived(UPGRADE[i:i + 7])
    assert len(factory.tunnels) == 1


def test_refusesDotSegments():
    """
    A path with C{..} segments gets 400 and the connection closed; it
    counts as a client error.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(UPGRADE.replace(b"/chat/room", b"/chat/../admin"))
    status, _, body = response(transport)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert json.loads(body)["message"] == "the request path must not contain '.' or '..' segments"
    assert transport.disconnecting
    assert factory.clientErrors == 1
    assert not factory.tunnels


def test_refusesAnOversizedHead():
    """
    A head over C{limits.maxHeaderBytes} gets 431.
    """
    factory, _ = makeFactory(limits=Limits(maxHeaderBytes=1024))
    door, transport = connect(factory)
    door.dataReceived(b"GET /chat HTTP/1.1\r\nX-Big: " + b"x" * 2000)
    assert response(transport)[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert transport.disconnecting


def test_refusesAMalformedHead():
    """
    A head that is not HTTP/1.1 gets 400.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"NONSENSE\r\n\r\n")
    assert response(transport)[0] == b"HTTP/1.1 400 Bad Request"


def test_headTimesOut():
    """
    A head not whole within C{timeouts.handshake} gets 408.
    """
    factory, reactor = makeFactory(timeouts=Timeouts(handshake=2.0))
    door, transport = connect(factory)
    door.dataReceived(b"GET /chat HTTP/1.1\r\n")
    reactor.advance(1.9)
    assert transport.value() == b""
    reactor.advance(0.2)
    assert response(transport)[0] == b"HTTP/1.1 408 Request Timeout"
    assert transport.disconnecting


def test_connectionLimit():
    """
    Past C{limits.maxConnections}, a connection gets 503 and is not
    counted; closing a counted one frees its place.
    """
    factory, _ = makeFactory(limits=Limits(maxConnections=1))
    first, _ = connect(factory)
    second, transport = connect(factory)
    assert response(transport)[0] == b"HTTP/1.1 503 Service Unavailable"
    assert (factory.openConnections, factory.refusedConnections) == (1, 1)
    close(second)
    assert factory.openConnections == 1
    close(first)
    assert factory.openConnections == 0


def test_health():
    """
    C{/_gateway/health} answers 200 with C{{"status": "ok"}} on a node
    that shares no sessions.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"GET /_gateway/health HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, headers, body = response(transport)
    assert status == b"HTTP/1.1 200 OK"
    assert json.loads(body) == {"status": "ok"}
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"server"] == b"txgateway"
    close(door)


def test_notFound():
    """
    An unrouted path gets a JSON 404.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"GET /elsewhere HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, _, body = response(transport)
    assert status == b"HTTP/1.1 404 Not Found"
    assert json.loads(body) == {"error": "Not Found", "status": 404, "message": "no such resource"}
    close(door)


def test_routedPathWithoutUpgrade():
    """
    A routed path asked anything but an upgrade (or long-polling) gets 426
    with C{Upgrade: websocket}.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"GET /chat HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, headers, body = response(transport)
    assert status == b"HTTP/1.1 426 Upgrade Required"
    assert headers[b"upgrade"] == b"websocket"
    assert json.loads(body) == {"error": "Upgrade Required", "status": 426,
                                "message": "this path expects a WebSocket upgrade"}
    close(door)


def test_preflight():
    """
    A CORS preflight on a routed path from an allowed origin gets 204 and
    the headers a browser needs; another origin gets no allow header.
    """
    factory, _ = makeFactory(session=SessionConfig(corsOrigins=("https://app.example",)))
    for origin, allowed in ((b"https://app.example", True), (b"https://evil.example", False)):
        door, transport = connect(factory)
        door.dataReceived(b"OPTIONS /chat?txgw=open HTTP/1.1\r\nHost: gw\r\nOrigin: " + origin
                          + b"\r\n\r\n")
        status, headers, _ = response(transport)
        assert status == b"HTTP/1.1 204 No Content"
        assert headers[b"access-control-allow-methods"] == b"POST, OPTIONS"
        assert (headers.get(b"access-control-allow-origin") == origin) is allowed
        close(door)


def test_script():
    """
    The JavaScript client is served from the package, for any origin.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"GET /_gateway/txgateway.js HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, headers, body = response(transport)
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-type"] == b"text/javascript; charset=utf-8"
    assert headers[b"access-control-allow-origin"] == b"*"
    assert len(body) == int(headers[b"content-length"]) > 0
    close(door)


def test_demoPageOnlyInDemoMode():
    """
    C{/} is the demo page in demo mode, and a 404 otherwise.
    """
    factory, _ = makeFactory(demo=True)
    door, transport = connect(factory)
    door.dataReceived(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, headers, body = response(transport)
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    close(door)
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert response(transport)[0] == b"HTTP/1.1 404 Not Found"
    close(door)


def test_upgradeOnAKeptAliveConnection():
    """
    A WebSocket upgrade that comes as the second request of a kept-alive
    connection is taken back from twisted.web and tunnelled: the first
    request was answered, the tunnel now owns the connection.
    """
    factory, reactor = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"GET /_gateway/health HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert response(transport)[0] == b"HTTP/1.1 200 OK"
    assert not factory.tunnels
    door.dataReceived(UPGRADE)
    [tunnel] = factory.tunnels
    assert isinstance(transport.protocol, ClientSide)
    assert tunnel.head.path == b"/chat/room"
    assert len(reactor.tcpClients) == 1
    assert factory.openConnections == 1


def test_upgradeOnAnUnroutedPathKeptAlive():
    """
    An upgrade to an unrouted path on a kept-alive connection is answered
    by twisted.web (404) and ends the connection.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(b"GET /_gateway/health HTTP/1.1\r\nHost: gw\r\n\r\n")
    transport.clear()
    door.dataReceived(UPGRADE.replace(b"/chat/room", b"/elsewhere"))
    assert response(transport)[0] == b"HTTP/1.1 404 Not Found"
    assert not factory.tunnels
    assert transport.disconnecting
    close(door)


_KEPT = b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\n\r\n"
_UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize(
    "second, message",
    [
        (_UPGRADE.replace(b"/chat", b"/chat/../admin") + b"\r\n", "segments"),
        (_UPGRADE.replace(b"/chat", b"/chat/%2E%2e/admin") + b"\r\n", "segments"),
        (_UPGRADE + b"X-A: 1\x00\r\n\r\n", "control character"),
        (_UPGRADE + b"X-A: 1\r\n 2\r\n\r\n", "folding"),
        (_UPGRADE.replace(b"/chat", b"/chat\x80") + b"\r\n", "request line"),
        (_UPGRADE + b"Content-Length: 2\r\n\r\nab", "must not have a body"),
        (_UPGRADE + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "must not have a body"),
        (_UPGRADE + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"),
        (_UPGRADE + b"Host: y\r\n\r\n", "Host"),
        (b"\r\n\r\n", "request line"),
    ],
)
def test_second_request_head_is_checked(second: bytes, message: str) -> None:
    """
    A request head after a kept-alive first request goes through the front
    door's parser and checks: the JSON 400, the connection closed, the
    refusal counted, and no tunnel opened.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(_KEPT)
    first = transport.value()
    assert first.startswith(b"HTTP/1.1 200")
    transport.clear()
    door.dataReceived(second)
    status, headers, body = response(transport)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"application/json"
    assert message in json.loads(body)["message"]
    assert transport.disconnecting
    assert factory.clientErrors == 1 and not factory.tunnels
    close(door)


def test_second_request_head_over_the_bound() -> None:
    """
    A later request head over C{max_header_bytes} gets 431, as a first.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(_KEPT)
    transport.clear()
    limit = factory.config.limits.maxHeaderBytes
    door.dataReceived(b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * limit)
    status, _, body = response(transport)
    assert status.startswith(b"HTTP/1.1 431") and b"larger than" in body
    close(door)


def test_second_request_keeps_its_strict_head() -> None:
    """
    A well-formed later request is answered as before, and its request
    carries the head the strict parser read (header names as sent).
    """
    from gateway.web import headFromRequest

    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(_KEPT)
    transport.clear()
    seen = []
    resource = factory.web.resource
    render = resource.render
    resource.render = lambda request: (seen.append(headFromRequest(request)), render(request))[1]
    door.dataReceived(b"\r\nGET /nothing HTTP/1.1\r\nHost: x\r\nx-ODD-case: 1\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 404")
    assert seen[0].headers == [(b"Host", b"x"), (b"x-ODD-case", b"1")]
    close(door)


def test_sessionUpgradeFromAnotherOrigin():
    """
    A session-mode upgrade whose C{Origin} is another site's gets 403 with
    the gateway's JSON error body and the connection closed, before any
    backend is asked; from the gateway's own origin it goes on.
    """
    factory, reactor = makeFactory()
    door, transport = connect(factory)
    session = UPGRADE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: txgateway.v1\r\n\r\n")
    door.dataReceived(session.replace(b"\r\n\r\n", b"\r\nOrigin: https://evil.example\r\n\r\n"))
    status, headers, body = response(transport)
    assert status == b"HTTP/1.1 403 Forbidden"
    assert json.loads(body)["error"] == "Forbidden"
    assert transport.disconnecting
    assert not reactor.tcpClients
    assert factory.clientErrors == 1
    close(door)
    assert factory.openConnections == 0

    door, transport = connect(factory)
    door.dataReceived(session.replace(b"\r\n\r\n", b"\r\nOrigin: http://gw.example\r\n\r\n"))
    assert transport.value().startswith(b"HTTP/1.1 101 ")


def test_transparentUpgradeOriginChecked():
    """
    A transparent upgrade is not checked on a route without
    C{allowed_origins}; on a route with one, a foreign origin gets 403
    before any backend connection, also as a later request of a
    kept-alive connection.
    """
    evil = UPGRADE.replace(b"\r\n\r\n", b"\r\nOrigin: https://evil.example\r\n\r\n")
    factory, reactor = makeFactory()
    door, _ = connect(factory)
    door.dataReceived(evil)
    assert len(factory.tunnels) == 1

    factory, reactor = makeFactory(routes=(
        RouteConfig(prefix="/chat", pool="chat", allowedOrigins=("https://app.example",)),))
    for first in (b"", b"GET /_gateway/health HTTP/1.1\r\nHost: gw\r\n\r\n"):
        door, transport = connect(factory)
        door.dataReceived(first)
        transport.clear()
        door.dataReceived(evil)
        assert response(transport)[0] == b"HTTP/1.1 403 Forbidden"
        assert transport.disconnecting
        assert not factory.tunnels
        assert not reactor.tcpClients
        close(door)
    assert factory.openConnections == 0
    door, _ = connect(factory)
    door.dataReceived(evil.replace(b"https://evil.example", b"https://app.example"))
    assert len(factory.tunnels) == 1


def test_connectionLimitPerAddress():
    """
    Past C{limits.maxConnectionsPerIp} from one address, a connection gets
    503 with Retry-After and is not counted, while another address is
    taken; closing one frees its address's place.
    """
    factory, _ = makeFactory(limits=Limits(maxConnectionsPerIp=2))
    doors = [connect(factory)[0] for _ in range(2)]
    refused, transport = connect(factory)
    status, headers, body = response(transport)
    assert (status, headers[b"retry-after"]) == (b"HTTP/1.1 503 Service Unavailable", b"1")
    assert b"maximum of 2 connections" in body and transport.disconnecting
    close(refused)
    other, otherTransport = connect(factory, "192.0.2.8")
    assert otherTransport.value() == b""
    assert factory.admission.byAddress == {"192.0.2.7": 2, "192.0.2.8": 1}
    assert factory.dropped.total == {"max_connections_per_ip": 1}
    close(doors[0])
    _, again = connect(factory)
    assert again.value() == b""
    for door in (doors[1], other):
        close(door)


def test_trustedProxyCountsTheForwardedClient():
    """
    A trusted proxy's connections count against no address when they
    arrive; each counts against the client its first head forwards, and
    one past that client's bound gets 503 while another client's is
    served.
    """
    factory, _ = makeFactory(limits=Limits(maxConnectionsPerIp=1), trustedProxies=("192.0.2.7/32",))
    first, _ = connect(factory)
    second, transport = connect(factory)
    assert factory.admission.byAddress == {}
    head = b"GET /_gateway/health HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 198.51.100.%d\r\n\r\n"
    first.dataReceived(head % 1)
    second.dataReceived(head % 1)
    assert response(transport)[0] == b"HTTP/1.1 503 Service Unavailable"
    third, thirdTransport = connect(factory)
    third.dataReceived(head % 2)
    assert response(thirdTransport)[0] == b"HTTP/1.1 200 OK"
    close(second)
    assert factory.admission.byAddress == {"198.51.100.1": 1, "198.51.100.2": 1}
    assert factory.openConnections == 2


def test_slotFollowsTheTunnel():
    """
    A connection handed to a tunnel keeps its address's place until the
    tunnel ends.
    """
    factory, _ = makeFactory(limits=Limits(maxConnectionsPerIp=1))
    door, _ = connect(factory)
    door.dataReceived(UPGRADE)
    [tunnel] = factory.tunnels
    assert factory.admission.byAddress == {"192.0.2.7": 1}
    _, transport = connect(factory)
    assert response(transport)[0] == b"HTTP/1.1 503 Service Unavailable"
    tunnel.onClosed(tunnel)
    assert factory.admission.byAddress == {} and factory.openConnections == 0


def test_laterHeadDeadline():
    """
    A later request head of a kept-alive connection must be whole within
    C{timeouts.handshake} of its first byte, however it trickles: 408.
    """
    factory, reactor = makeFactory(timeouts=Timeouts(handshake=2.0))
    door, transport = connect(factory)
    door.dataReceived(b"GET /_gateway/health HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert response(transport)[0] == b"HTTP/1.1 200 OK"
    transport.clear()
    reactor.advance(30)  # idle between requests: the keep-alive timer only
    assert not transport.disconnecting
    for byte in b"GET /_gateway/health HTTP/1.1\r\nX-Slow: ":
        door.dataReceived(bytes([byte]))
        reactor.advance(0.05)
    reactor.advance(0.2)
    status, _, body = response(transport)
    assert status == b"HTTP/1.1 408 Request Timeout" and b"request head not received in time" in body
    assert transport.disconnecting
    close(door)


def test_bodyDeadlines():
    """
    A request body gets C{timeouts.handshake}, one more second per
    C{limits.minBodyRate} bytes, and never more than
    C{timeouts.requestBody}: past it, 408.
    """
    head = (b"POST /chat?txgw=send HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000\r\n\r\n")
    factory, reactor = makeFactory(timeouts=Timeouts(handshake=2.0, requestBody=5.0),
                                   limits=Limits(minBodyRate=100),
                                   session=SessionConfig(maxBodyBytes=60000))
    # Below the rate: 100 bytes in 2 s earn one more second, and no more.
    door, transport = connect(factory)
    door.dataReceived(head + b"x" * 100)
    reactor.advance(2.5)
    assert transport.value() == b""
    reactor.advance(0.6)
    assert response(transport)[0] == b"HTTP/1.1 408 Request Timeout"
    close(door)
    # At the rate, the cap still holds.
    door, transport = connect(factory)
    door.dataReceived(head)
    for _ in range(49):
        door.dataReceived(b"x" * 100)
        reactor.advance(0.1)
    assert transport.value() == b""
    reactor.advance(0.2)
    status, _, body = response(transport)
    assert status == b"HTTP/1.1 408 Request Timeout" and b"request body not received in time" in body
    close(door)


def test_transparentRoute():
    """
    On a route with C{protocol = "transparent"}, an upgrade offering the
    session subprotocol is tunnelled like any other (the backend decides),
    and a long-polling request gets a JSON 404.
    """
    routes = (RouteConfig(prefix="/chat", pool="chat", protocol="transparent"),)
    factory, _ = makeFactory(routes=routes)
    door, transport = connect(factory)
    door.dataReceived(UPGRADE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: txgateway.v1\r\n\r\n"))
    assert len(factory.tunnels) == 1 and isinstance(transport.protocol, ClientSide)
    door, transport = connect(factory)
    door.dataReceived(b"POST /chat?txgw=open HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}")
    status, _, body = response(transport)
    assert status == b"HTTP/1.1 404 Not Found"
    assert json.loads(body)["code"] == 4404 and "WebSocket upgrades only" in json.loads(body)["message"]
