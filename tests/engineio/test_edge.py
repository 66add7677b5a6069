"""
The node's Engine.IO edge (gateway.engineio.edge) and its WebSocket
handshake refusals (gateway.engineio.websocket), in a gateway service that
is built but not started (a L{MemoryReactorClock}), over
C{StringTransport}s.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gateway.config import BackendConfig, GatewayConfig, PoolConfig, RouteConfig
from gateway.engineio.engine import EngineRefusal
from gateway.engineio.packets import BAD_REQUEST
from gateway.errors import NoBackendAvailable
from gateway.service import GatewayService

ROUTE = RouteConfig(prefix="/socket.io/", pool="app", protocol="socket.io")


@pytest.fixture
def service() -> GatewayService:
    """
    A gateway with one Socket.IO route, built and not started.
    """
    backend = BackendConfig(name="sio-1", url="ws://127.0.0.1:1", host="127.0.0.1", port=1, secure=False)
    config = GatewayConfig(listen=("tcp:0:interface=127.0.0.1",), routes=(ROUTE,),
                           pools=(PoolConfig(name="app", backends=(backend,)),))
    return GatewayService(config, MemoryReactorClock())


def answer(transport: StringTransport) -> tuple[bytes, dict[bytes, bytes], dict]:
    """
    @return: the status line, headers and JSON body written to C{transport}.
    """
    head, _, body = transport.value().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    return lines[0], headers, json.loads(body)


def websocket(service: GatewayService):
    """
    @return: a client WebSocket of the Socket.IO route, connected to a
        C{StringTransport}, in its handshake.
    """
    protocol = service.engines._factory(ROUTE).buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    transport = StringTransport()
    # As a TCP transport does, let Autobahn unregister a producer it never registered.
    transport.registerProducer(protocol, True)
    protocol.makeConnection(transport)
    return protocol, transport


def test_refusalsAreJSON(service: GatewayService) -> None:
    """
    A WebSocket handshake refused, by the edge (with its status and
    C{Retry-After}) or by Autobahn itself (a bad header), is answered with
    the reference server's JSON body and C{Content-Type}, never Autobahn's
    bare status line, and counted in the refusals' metric.
    """
    protocol, transport = websocket(service)
    protocol._refusal = EngineRefusal(BAD_REQUEST, "every backend of pool 'app' is draining", 503,
                                      retryAfter=1, reason="no_backend")
    protocol.failHandshake("Service Unavailable", 503)
    status, headers, body = answer(transport)
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert (headers[b"Content-Type"], headers[b"Retry-After"]) == (b"application/json", b"1")
    assert body == {"code": 3, "message": "every backend of pool 'app' is draining"}
    assert service.metrics.registry.get_sample_value(
        "txgateway_refusals_total", {"status": "503", "reason": "no_backend"}) == 1

    protocol, transport = websocket(service)
    protocol.failHandshake("HTTP Sec-WebSocket-Key header missing", 400)
    status, headers, body = answer(transport)
    assert (status, headers[b"Content-Type"]) == (b"HTTP/1.1 400 Bad Request", b"application/json")
    assert body == {"code": 3, "message": "HTTP Sec-WebSocket-Key header missing"}
    assert b"Retry-After" not in headers


@pytest_twisted.ensureDeferred
async def test_stoppingEdge(service: GatewayService) -> None:
    """
    Once the gateway stops, the edge opens no session, and with nothing
    open its stop is over at once.
    """
    edge = service.engines
    done = edge.shutDown(5.0)
    assert edge.stopping and done.called
    with pytest.raises(NoBackendAvailable, match="shutting down"):
        await edge.open(ROUTE, None, None)
