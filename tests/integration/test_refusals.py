"""
A backend's refusal of a handshake (403 for a bad token) is its answer to
that client: a real C{twistd -n gateway} passes it on, in session mode
(WebSocket C{hello}, long-polling C{open}) and in transparent mode, and
passive health never counts it against the backend, so refused clients
cannot take a pool out of service.  A pool that observes layer 7 counts
answers with a 5xx, and only those.
"""

from __future__ import annotations

import json
from io import BytesIO

import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from .helpers import admin, backendsByName, poolFile, startGateway
from gateway.testing import connectClient, rawExchange

T = 10.0
SESSION = "txgateway.v1"
REFUSED = 4502
#: Refused clients sent in each round, quickly: three were enough to take
#: both backends down before refusals stopped counting.
N = 6


class _Refusing(WebSocketServerProtocol):
    """
    Echoes; refuses every handshake whose target carries C{token=bad}
    (403), or C{token=busy} (503).
    """

    def onConnect(self, request):
        if request.params.get("token") == ["bad"]:
            raise ConnectionDeny(403, "bad token")
        if request.params.get("token") == ["busy"]:
            raise ConnectionDeny(503, "busy")

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class _Backend:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.url = f"ws://127.0.0.1:{port}"


async def refusingBackends(n: int) -> tuple[list[_Backend], list]:
    backends, ports = [], []
    for i in range(n):
        factory = WebSocketServerFactory()
        factory.protocol = _Refusing
        factory.setProtocolOptions(autoPingInterval=0)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        ports.append(port)
        backends.append(_Backend(f"backend-{i + 1}", port.getHost().port))
    return backends, ports


async def refusedHello(url: str):
    """
    @return: the close C{(code, reason)} a session hello with a bad token gets.
    """
    client = await connectClient(url, path="/chat?token=bad", protocols=[SESSION])
    client.send(json.dumps({"t": "hello", "v": 1}))
    _, code, reason = await client.closed.addTimeout(T, reactor)
    return code, reason


async def refusedOpen(port: int):
    """
    @return: the C{(status, JSON body)} of a long-polling open with a bad token.
    """
    url = f"http://127.0.0.1:{port}/chat?token=bad&txgw=open&n=1".encode()
    response = await Agent(reactor).request(
        b"POST", url, Headers({b"content-type": [b"text/plain"]}),
        FileBodyProducer(BytesIO(b'{"t":"hello","v":1}')),
    ).addTimeout(T, reactor)
    return response.code, json.loads(await readBody(response))


async def sessionServed(url: str) -> bool:
    """
    @return: whether a normal session client gets its C{welcome}.
    """
    client = await connectClient(url, path="/chat", protocols=[SESSION])
    client.send(json.dumps({"t": "hello", "v": 1}))
    try:
        payload, _ = await client.receive()
    except Exception:
        return False
    served = json.loads(payload)["t"] == "welcome"
    await client.close().addTimeout(T, reactor)
    return served


async def states(port: int) -> dict[str, str]:
    status, pools = await admin(port, "GET", "/pools")
    assert status == 200
    return {name: b["state"] for name, b in backendsByName(pools).items()}


@pytest_twisted.ensureDeferred
async def test_refusals_are_passed_on_and_never_counted(tmp_path, gateway_process):
    """
    Against two backends that refuse C{token=bad} with 403, bursts of
    refused session hellos, long-polling opens and transparent upgrades:
    each hello is closed with 4502 "backend refused the session: 403 bad
    token", each open answered 502 with code 4502 and C{backend_status}
    403, each transparent upgrade gets the backend's own 403; both
    backends stay healthy, and a normal session client and a transparent
    client are served right after.
    """
    backends, ports = await refusingBackends(2)
    try:
        process, adminPort, _, _ = await startGateway(gateway_process, tmp_path, poolFile(backends))
        url = process.url
        assert await states(adminPort) == {"backend-1": "healthy", "backend-2": "healthy"}

        closes = await gatherResults([Deferred.fromCoroutine(refusedHello(url)) for _ in range(N)])
        assert closes == [(REFUSED, "backend refused the session: 403 bad token")] * N
        assert await states(adminPort) == {"backend-1": "healthy", "backend-2": "healthy"}
        assert await sessionServed(url)

        answers = await gatherResults([Deferred.fromCoroutine(refusedOpen(process.port))
                                       for _ in range(N)])
        for status, body in answers:
            assert status == 502
            assert (body["code"], body["backend_status"], body["message"]) == (
                REFUSED, 403, "backend refused the session: 403 bad token")
        assert await states(adminPort) == {"backend-1": "healthy", "backend-2": "healthy"}
        assert await sessionServed(url)

        upgrade = (b"GET /chat?token=bad HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
        raw = await gatherResults([Deferred.fromCoroutine(rawExchange(process.port, upgrade))
                                   for _ in range(N)])
        assert [r.split(b"\r\n", 1)[0] for r in raw] == [b"HTTP/1.1 403 bad token"] * N
        assert await states(adminPort) == {"backend-1": "healthy", "backend-2": "healthy"}
        client = await connectClient(url, path="/chat")
        client.send("hi")
        assert await client.receive() == (b"hi", False)
        await client.close().addTimeout(T, reactor)
        assert await sessionServed(url)
    finally:
        for port in ports:
            await port.stopListening()


def upgradeWith(token: str) -> bytes:
    return (b"GET /chat?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % token.encode())


@pytest_twisted.ensureDeferred
async def test_layer7_counts_only_5xx(tmp_path, gateway_process):
    """
    By default a backend's 503 is passed on and not counted, as a 403 is.
    With C{observe = "layer7"} on the pool, 403s are still not counted, and
    503s are passed on and counted: both backends go down, and the gateway
    answers 503 itself until they come back.
    """
    backends, ports = await refusingBackends(2)
    try:
        for observe, busyDown in (("layer4", False), ("layer7", True)):
            text = poolFile(backends).replace("[pool.chat]\n", f'[pool.chat]\nobserve = "{observe}"\n')
            process, adminPort, _, _ = await startGateway(gateway_process, tmp_path, text)
            for token, status in (("bad", b"403 bad token"), ("busy", b"503 busy")):
                raw = await gatherResults([Deferred.fromCoroutine(rawExchange(process.port, upgradeWith(token)))
                                           for _ in range(N)])
                heads = {r.split(b"\r\n", 1)[0] for r in raw}
                down = token == "busy" and busyDown
                assert heads <= {b"HTTP/1.1 " + status, b"HTTP/1.1 503 Service Unavailable"}
                assert b"HTTP/1.1 " + status in heads
                expected = "down" if down else "healthy"
                assert await states(adminPort) == {"backend-1": expected, "backend-2": expected}
            if not busyDown:
                assert await sessionServed(process.url)
            process.signal("KILL")
            await process.wait(10)
    finally:
        for port in ports:
            await port.stopListening()
