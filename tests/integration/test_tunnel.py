"""
Transparent WebSocket proxying over real loopback sockets: a real gateway in
front of real Autobahn echo servers, driven by real WebSocket clients.
"""

from __future__ import annotations

import json
import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.config import Limits, PoolConfig, RouteConfig, Timeouts
from gateway.testing import connectClient, rawExchange, waitUntil
from tests.helpers import selfSignedCertificate

T = 10.0

UPGRADE = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


def within(d: Deferred, seconds: float = T) -> Deferred:
    """
    Bound a Deferred so that a hang fails the test instead of stalling it.
    """
    return d.addTimeout(seconds, reactor)


def status(response: bytes) -> int:
    """
    The status code of a raw HTTP response.
    """
    return int(response.split(b" ", 2)[1])


def body(response: bytes) -> dict:
    """
    The JSON body of a raw HTTP response.
    """
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


class _Silent(Protocol):
    """
    Accepts connections and never answers.
    """


async def silentPort():
    """
    A port that accepts TCP connections and never says anything.
    """
    return await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(_Silent)
    )


async def closedPort() -> int:
    """
    A port number nothing listens on.
    """
    port = await silentPort()
    number = port.getHost().port
    await port.stopListening()
    return number


@pytest_twisted.ensureDeferred
async def test_text_binary_fragmented_and_large_messages(echo_backends, make_gateway):
    """
    Text and binary messages, a message sent in 100-byte fragments and a
    4 MiB message each come back from the backend exactly as sent.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await connectClient(gateway.url)
    client.send("héllo")
    assert await client.receive() == ("héllo".encode(), False)
    client.send(b"\x00\xff" * 10, True)
    assert await client.receive() == (b"\x00\xff" * 10, True)
    fragmented = os.urandom(10_000)
    client.send(fragmented, True, fragmentSize=100)
    assert await client.receive() == (fragmented, True)
    large = os.urandom(4 * 1024 * 1024)
    client.send(large, True)
    assert await client.receive(30) == (large, True)
    await within(client.close())


@pytest_twisted.ensureDeferred
async def test_ping_pong_pass_through(echo_backends, make_gateway):
    """
    A client's ping reaches the backend, and the backend's pong comes back
    with the same payload.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await connectClient(gateway.url)
    client.protocol.sendPing(b"are you there")
    assert await within(client.pongs.get()) == b"are you there"
    assert backends[0].factory.pings == 1
    await within(client.close())


@pytest_twisted.ensureDeferred
async def test_permessage_deflate_negotiated_end_to_end(echo_backends, make_gateway):
    """
    permessage-deflate offered by the client is negotiated with the backend
    (the gateway passes the extension headers through) and compressed
    messages flow both ways.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await connectClient(gateway.url, compression=True)
    assert client.protocol._perMessageCompress is not None
    assert b"permessage-deflate" in backends[0].factory.handshakes[0].lower()
    text = "compress me " * 1000
    client.send(text)
    assert await client.receive() == (text.encode(), False)
    await within(client.close())


@pytest_twisted.ensureDeferred
async def test_close_codes_and_reasons_both_ways(echo_backends, make_gateway):
    """
    A client's close code and reason reach the backend; a backend's close
    code and reason reach the client.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await connectClient(gateway.url)
    closed = backends[0].factory.nextClose()
    client.close(4000, "client bye")
    assert await within(closed) == (True, 4000, "client bye")

    client = await connectClient(gateway.url)
    client.send("close:4001:server bye")
    wasClean, code, reason = await within(client.closed)
    assert (code, reason) == (4001, "server bye")


@pytest_twisted.ensureDeferred
async def test_subprotocol_negotiated_by_backend(echo_backends, make_gateway):
    """
    Subprotocols offered by the client are offered to the backend and its
    choice is returned to the client.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await connectClient(gateway.url, protocols=["unknown", "superchat"])
    assert client.response.protocol == "superchat"
    offered = [line for line in backends[0].factory.handshakes[0].split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-protocol:")]
    assert offered == [b"Sec-WebSocket-Protocol: unknown,superchat"]
    await within(client.close())


@pytest_twisted.ensureDeferred
async def test_path_query_forwarded_headers_cookies_authorization(echo_backends, make_gateway):
    """
    The backend sees the client's path and query unchanged, the client's
    Host, each Cookie header as sent, Authorization, and forwarding headers
    in which a forged X-Forwarded-For from an untrusted client is replaced.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    request = (
        UPGRADE
        + b"Cookie: a=1\r\nCookie: b=2, c=3\r\nAuthorization: Bearer xyz\r\n"
        + b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n"
    )
    response = await rawExchange(gateway.port, request + b"\x88\x82abcd" + bytes([0x03 ^ 0x61, 0xE8 ^ 0x62]))
    assert status(response) == 101
    seen = backends[0].factory.handshakes[0]
    lines = seen.split(b"\r\n")
    assert lines[0] == b"GET /chat?room=1 HTTP/1.1"
    assert b"Host: example.test" in lines
    assert b"Cookie: a=1" in lines and b"Cookie: b=2, c=3" in lines
    assert b"Authorization: Bearer xyz" in lines
    assert b"X-Forwarded-For: 127.0.0.1" in lines
    assert b"X-Forwarded-Proto: http" in lines
    assert b"X-Forwarded-Host: example.test" in lines
    assert b'Forwarded: for=127.0.0.1;proto=http;host=example.test' in lines
    assert not any(b"6.6.6.6" in line for line in lines)


@pytest_twisted.ensureDeferred
async def test_trusted_proxy_forwarding_headers_appended(echo_backends, make_gateway):
    """
    From a trusted proxy, X-Forwarded-For and Forwarded are appended to.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, trustedProxies=("127.0.0.0/8",))
    request = UPGRADE + b"X-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\n\r\n"
    response = await rawExchange(gateway.port, request + b"\x88\x80abcd")
    assert status(response) == 101
    lines = backends[0].factory.handshakes[0].split(b"\r\n")
    assert b"X-Forwarded-For: 203.0.113.9, 127.0.0.1" in lines
    assert b"Forwarded: for=203.0.113.9, for=127.0.0.1;proto=http;host=example.test" in lines


class _Refuse(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain")
        return b"go away"


@pytest_twisted.ensureDeferred
async def test_backend_refusal_status_reaches_client(make_gateway):
    """
    A backend that refuses the handshake (403 with a body): the client gets
    that status and body.
    """
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(_Refuse()))
    try:
        from gateway.config import BackendConfig

        backend = BackendConfig("refuser", f"ws://127.0.0.1:{port.getHost().port}", "127.0.0.1",
                                port.getHost().port, False)
        gateway = await make_gateway([backend])
        response = await rawExchange(gateway.port, UPGRADE + b"\r\n")
        assert status(response) == 403
        assert response.endswith(b"\r\n\r\ngo away")
        assert b"Connection: close" in response
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_backend_refusal_body_cut_at_max_error_body(make_gateway):
    """
    A refusal body longer than max_error_body reaches the client cut to
    that many bytes, with a Content-Length that says so.
    """
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(_Refuse()))
    try:
        from gateway.config import BackendConfig

        backend = BackendConfig("refuser", f"ws://127.0.0.1:{port.getHost().port}", "127.0.0.1",
                                port.getHost().port, False)
        gateway = await make_gateway([backend], limits=Limits(maxErrorBody=3))
        response = await rawExchange(gateway.port, UPGRADE + b"\r\n")
        assert status(response) == 403
        assert response.endswith(b"Content-Length: 3\r\nConnection: close\r\n\r\ngo ")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_unreachable_backend_next_candidate_tried(echo_backends, make_gateway):
    """
    With one backend refusing connections, every client is still served by
    the other, within the connect-attempt budget.
    """
    backends = await echo_backends(1)
    dead = await closedPort()
    deadConfig = backends[0].config().__class__("dead", f"ws://127.0.0.1:{dead}", "127.0.0.1", dead, False)
    gateway = await make_gateway([deadConfig, backends[0]], balance="round_robin")
    for i in range(4):
        client = await connectClient(gateway.url)
        client.send(f"m{i}")
        assert await client.receive() == (f"m{i}".encode(), False)
        await within(client.close())
    assert backends[0].factory.opened == 4


@pytest_twisted.ensureDeferred
async def test_no_backend_reachable_gives_503(make_gateway):
    """
    When no backend can be reached, the client gets 503 with a JSON reason.
    """
    from gateway.config import BackendConfig

    ports = [await closedPort(), await closedPort()]
    configs = [BackendConfig(f"b{p}", f"ws://127.0.0.1:{p}", "127.0.0.1", p, False) for p in ports]
    gateway = await make_gateway(configs)
    response = await rawExchange(gateway.port, UPGRADE + b"\r\n")
    assert status(response) == 503
    assert "could be reached" in body(response)["message"]
    assert "connection refused" in body(response)["message"]


@pytest_twisted.ensureDeferred
async def test_every_backend_full_gives_503(echo_backends, make_gateway):
    """
    Backends at their max_connections take no more: the next client gets
    503 saying so, and no queue builds up.
    """
    backends = await echo_backends(2)
    configs = [b.config(maxConnections=1) for b in backends]
    gateway = await make_gateway(configs)
    first = await connectClient(gateway.url)
    second = await connectClient(gateway.url)
    response = await rawExchange(gateway.port, UPGRADE + b"\r\n")
    assert status(response) == 503
    assert "connection limit" in body(response)["message"]
    assert sorted(b.factory.opened for b in backends) == [1, 1]
    await within(first.close())
    await within(second.close())


@pytest_twisted.ensureDeferred
async def test_backend_handshake_timeout_gives_504(make_gateway):
    """
    A backend that accepts TCP but never answers the handshake: the client
    gets 504 once the handshake timeout has passed.
    """
    from gateway.config import BackendConfig

    silent = await silentPort()
    try:
        p = silent.getHost().port
        gateway = await make_gateway(
            [BackendConfig("silent", f"ws://127.0.0.1:{p}", "127.0.0.1", p, False)],
            timeouts=Timeouts(handshake=0.5),
        )
        response = await rawExchange(gateway.port, UPGRADE + b"\r\n")
        assert status(response) == 504
    finally:
        await silent.stopListening()


@pytest_twisted.ensureDeferred
async def test_idle_peers_pinged(echo_backends, make_gateway):
    """
    When nothing flows, the gateway pings both the client and the backend
    at the configured interval, and answered pings keep the tunnel open.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, timeouts=Timeouts(pingInterval=0.2, pingTimeout=0.4))
    client = await connectClient(gateway.url)
    assert await within(client.pings.get()) == b"txgateway"
    await within(client.pings.get())
    assert backends[0].factory.pings >= 1
    client.send("still here")
    assert await client.receive() == (b"still here", False)
    await within(client.close())


@pytest_twisted.ensureDeferred
async def test_dead_client_detected_and_backend_told(echo_backends, make_gateway):
    """
    A client that stops answering (no pong, nothing sent) is dropped after
    ping interval + ping timeout, and its backend gets a 1001 close.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, timeouts=Timeouts(pingInterval=0.2, pingTimeout=0.3))
    closed = backends[0].factory.nextClose()
    # A raw client: completes the handshake, then never reads or answers.
    response = await rawExchange(gateway.port, UPGRADE + b"\r\n", timeout=T)
    assert status(response) == 101
    wasClean, code, reason = await within(closed)
    assert code == 1001
    assert reason == "client went away"


@pytest_twisted.ensureDeferred
async def test_backend_gone_client_told_to_reconnect(echo_backends, make_gateway):
    """
    When the backend connection drops without a close frame, the client
    gets close code 1012 (service restart: reconnect).
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await connectClient(gateway.url)
    for proto in list(backends[0].factory.connections):
        proto.dropConnection(abort=True)
    wasClean, code, reason = await within(client.closed)
    assert code == 1012


@pytest_twisted.ensureDeferred
async def test_shutdown_closes_clients_with_1001(echo_backends, make_gateway):
    """
    Stopping the gateway closes every client and backend with 1001 at a
    frame boundary, within the shutdown deadline.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, timeouts=Timeouts(shutdown=2.0))
    clients = [await connectClient(gateway.url) for _ in range(3)]
    big = os.urandom(300_000)
    clients[0].send(big, True)
    assert await clients[0].receive() == (big, True)
    await within(gateway.service.stopService())
    for client in clients:
        wasClean, code, reason = await within(client.closed)
        assert (code, reason) == (1001, "gateway shutting down")
    assert all(close[1] == 1001 for close in backends[0].factory.closes)


@pytest_twisted.ensureDeferred
async def test_http_errors_on_the_shared_port(echo_backends, make_gateway):
    """
    On the shared port: an upgrade to an unrouted path gets 404, a routed
    path asked without an upgrade 426, a malformed request 400, an
    oversized head 431, all with JSON bodies; the health probe answers 200.
    """
    backends = await echo_backends(1)
    pool = PoolConfig("chat", (backends[0].config(),))
    gateway = await make_gateway(pools=[pool], routes=[RouteConfig("/chat", "chat")],
                                 limits=Limits(maxHeaderBytes=2048))
    unrouted = await rawExchange(gateway.port, UPGRADE.replace(b"/chat?room=1", b"/other") + b"\r\n")
    assert status(unrouted) == 404 and body(unrouted)["status"] == 404
    plain = await rawExchange(gateway.port, b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status(plain) == 426
    malformed = await rawExchange(gateway.port, b"GARBAGE\r\n\r\n")
    assert status(malformed) == 400 and "request line" in body(malformed)["message"]
    huge = await rawExchange(gateway.port, UPGRADE + b"X-Big: " + b"a" * 4096 + b"\r\n\r\n")
    assert status(huge) == 431
    health = await rawExchange(gateway.port, b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status(health) == 200 and body(health) == {"status": "ok"}


@pytest_twisted.ensureDeferred
async def test_slow_request_head_times_out(echo_backends, make_gateway):
    """
    A client that does not finish its request head within the handshake
    timeout gets 408 and is disconnected.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, timeouts=Timeouts(handshake=0.3))
    response = await rawExchange(gateway.port, b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert status(response) == 408


@pytest_twisted.ensureDeferred
async def test_connection_limit(echo_backends, make_gateway):
    """
    Past max_connections the gateway answers 503 and closes at once.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, limits=Limits(maxConnections=1))
    client = await connectClient(gateway.url)
    response = await rawExchange(gateway.port, UPGRADE + b"\r\n")
    assert status(response) == 503
    assert "connection limit" in body(response)["message"]
    closed = backends[0].factory.nextClose()
    await within(client.close())
    await within(closed)
    again = await connectClient(gateway.url)
    await within(again.close())


@pytest_twisted.ensureDeferred
async def test_upgrade_after_keep_alive_request(echo_backends, make_gateway):
    """
    A WebSocket upgrade sent as the second request of a kept-alive HTTP
    connection is tunnelled like a first one.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    first = b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\n\r\n"
    # After the health answer, send the upgrade and a masked close frame.
    response = await rawExchange(gateway.port, first + UPGRADE + b"\r\n" + b"\x88\x80abcd")
    assert response.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 101" in response
    assert backends[0].factory.opened == 1


@pytest_twisted.ensureDeferred
async def test_demo_mode_serves_page_and_echo_backends(make_gateway):
    """
    Demo mode starts echo backends, serves the demo page at /, and a
    WebSocket through the gateway is answered by a named backend.
    """
    from gateway.config import GatewayConfig

    gateway = await make_gateway(config=GatewayConfig(demo=True))
    page = await rawExchange(gateway.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status(page) == 200 and b"txgateway demo" in page
    client = await connectClient(gateway.url, path="/echo")
    client.send("hi")
    payload, _ = await client.receive()
    assert payload.startswith(b"backend-") and payload.endswith(b": hi")
    await within(client.close())


def buffered(transport) -> int:
    """
    Bytes a Twisted TCP transport holds that the kernel has not taken yet.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def onPause(side) -> Deferred:
    """
    A Deferred that fires the first time C{side} is asked to pause.
    """
    paused: Deferred = Deferred()
    original = side.pauseProducing

    def pauseProducing():
        original()
        if not paused.called:
            paused.callback(None)

    side.pauseProducing = pauseProducing
    return paused


class _StalledClient(Protocol):
    """
    Completes the handshake, then stops reading until told to resume.
    """

    def connectionMade(self):
        self.received = 0
        self.upgraded = Deferred()
        self.transport.write(UPGRADE + b"\r\n")

    def dataReceived(self, data):
        self.received += len(data)
        if not self.upgraded.called and b"\r\n\r\n" in data:
            self.transport.pauseProducing()
            self.upgraded.callback(None)


FLOOD_MESSAGES = 64
FLOOD_SIZE = 512 * 1024
BOUND = 256 * 1024


@pytest_twisted.ensureDeferred
async def test_stalled_client_pauses_backend(echo_backends, make_gateway):
    """
    A client that stops reading pauses reading from its backend: while the
    backend tries to send 32 MiB, the gateway holds less than 256 KiB for
    the client; when the client reads again, every byte arrives.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.port).connect(
        Factory.forProtocol(_StalledClient)
    )
    await within(client.upgraded)
    await waitUntil(lambda: backends[0].factory.connections)
    [tunnel] = gateway.service.factory.tunnels
    paused = onPause(tunnel.backendSide)
    [backend] = backends[0].factory.connections
    for _ in range(FLOOD_MESSAGES):
        backend.sendMessage(b"x" * FLOOD_SIZE, isBinary=True)
    await within(paused)
    held = buffered(tunnel.client.transport)
    print(f"\nstalled client: the gateway holds {held / 1024:.0f} KiB for it")
    assert held < BOUND
    assert tunnel.backendSide.transport not in reactor.getReaders()

    client.transport.resumeProducing()
    await waitUntil(lambda: client.received >= FLOOD_MESSAGES * FLOOD_SIZE, timeout=30)
    client.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_stalled_backend_pauses_client(echo_backends, make_gateway):
    """
    A backend that stops reading pauses reading from its client: while the
    client sends 32 MiB, the gateway holds less than 256 KiB for the
    backend; when the backend reads again, every message is echoed.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    client = await connectClient(gateway.url)
    [tunnel] = gateway.service.factory.tunnels
    [backend] = backends[0].factory.connections
    backend.transport.pauseProducing()
    paused = onPause(tunnel.client)
    for _ in range(FLOOD_MESSAGES):
        client.send(b"y" * FLOOD_SIZE, True)
    await within(paused)
    held = buffered(tunnel.backendSide.transport)
    print(f"\nstalled backend: the gateway holds {held / 1024:.0f} KiB for it")
    assert held < BOUND
    assert tunnel.client.transport not in reactor.getReaders()

    backend.transport.resumeProducing()
    for _ in range(FLOOD_MESSAGES):
        payload, _ = await client.receive(30)
        assert len(payload) == FLOOD_SIZE
    await within(client.close())


@pytest_twisted.ensureDeferred
async def test_tls_listener(echo_backends, make_gateway, tmp_path):
    """
    On an C{ssl:} listener the handshake and the splice run through TLS,
    and the backend is told the client's protocol was https.
    """
    from dataclasses import replace

    from twisted.internet.ssl import Certificate, optionsForClientTLS

    from gateway.testing import gatewayConfig

    keyPath, certPath, pem = selfSignedCertificate(tmp_path)
    backends = await echo_backends(1)
    config = replace(gatewayConfig(backends),
                     listen=(f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}",))
    gateway = await make_gateway(config=config)
    tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
    client = await connectClient(f"wss://127.0.0.1:{gateway.port}", tls=tls)
    message = os.urandom(200_000)
    client.send(message, True)
    assert await client.receive() == (message, True)
    assert b"X-Forwarded-Proto: https" in backends[0].factory.handshakes[0]
    await within(client.close())


class _GarbageBackend(Protocol):
    """
    Answers any handshake with an endless header line.
    """

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nX-Long: " + b"a" * 70000)


@pytest_twisted.ensureDeferred
async def test_oversized_backend_answer_tries_next(echo_backends, make_gateway):
    """
    A backend whose response head exceeds max_header_bytes counts as failed:
    its connection is aborted and the next backend serves the client.
    """
    from gateway.config import BackendConfig

    garbage = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(_GarbageBackend)
    )
    try:
        p = garbage.getHost().port
        backends = await echo_backends(1)
        bad = BackendConfig("garbage", f"ws://127.0.0.1:{p}", "127.0.0.1", p, False)
        gateway = await make_gateway([bad, backends[0]], balance="round_robin")
        client = await connectClient(gateway.url)
        client.send("ok?")
        assert await client.receive() == (b"ok?", False)
        pool = gateway.service.pools["default"]
        assert pool.backend("garbage").connections == 0
        await within(client.close())
    finally:
        await garbage.stopListening()


@pytest_twisted.ensureDeferred
async def test_idle_timeout_closes_quiet_tunnels(echo_backends, make_gateway):
    """
    With timeouts.idle set, a tunnel where data flows stays open past it,
    and one where only keep-alive pings flow is closed with 1001 "idle
    timeout" on both sides.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(
        backends, timeouts=Timeouts(pingInterval=0.1, pingTimeout=1.0, idle=0.6)
    )
    client = await connectClient(gateway.url)
    closed = backends[0].factory.nextClose()
    for i in range(6):
        client.send(f"busy {i}")
        assert await client.receive() == (f"busy {i}".encode(), False)
        await within(client.pings.get())
    assert not client.closed.called
    wasClean, code, reason = await within(client.closed)
    assert (code, reason) == (1001, "idle timeout")
    assert (await within(closed))[1:] == (1001, "idle timeout")


@pytest_twisted.ensureDeferred
async def test_javascript_client_served(echo_backends, make_gateway):
    """
    The JavaScript client is served at its stable paths, as a classic
    script and as an ES module.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    for path, marker in [(b"/_gateway/txgateway.js", b"TxGateway"), (b"/_gateway/txgateway.mjs", b"export")]:
        answer = await rawExchange(gateway.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        assert status(answer) == 200
        assert b"Content-Type: text/javascript; charset=utf-8" in answer
        assert marker in answer.split(b"\r\n\r\n", 1)[1]
