"""
Slow and hoarding clients against a real C{twistd -n gateway}: one client
address holding sockets is stopped at C{limits.max_connections_per_ip}
(503, Retry-After) while another address (127.0.0.2, loopback too) is
served; a trusted proxy's connections count against the clients they
forward; a later request head of a kept-alive connection, and a request
body, that trickle in get 408 at their deadline however often a byte
arrives, on the gateway's port and on the admin API's.
"""

from __future__ import annotations

import json
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from gateway.testing import connectClient

from .helpers import startGateway

T = 10.0
SESSION = "txgateway.v1"
OTHER = "127.0.0.2"


class _Client(Protocol):
    """
    A raw TCP client that keeps what it is sent.
    """

    def connectionMade(self):
        self.received = b""
        self.closed = Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(self.received)


async def dial(port: int, source: str = "127.0.0.1") -> _Client:
    """
    @return: a raw connection from C{source} to C{port} on 127.0.0.1.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=T, bindAddress=(source, 0))
    return await endpoint.connect(Factory.forProtocol(_Client))


async def closedWith(client: _Client, timeout: float = T) -> bytes:
    """
    @return: everything C{client} was sent, once the gateway has closed it.
    """
    def onTimeout(result, timeout):
        client.transport.abortConnection()
        return result

    return await client.closed.addTimeout(timeout, reactor, onTimeoutCancel=onTimeout)


async def trickle(client: _Client, data: bytes, interval: float, timeout: float) -> tuple[bytes, float]:
    """
    Send C{data} a byte per C{interval} seconds until the gateway closes
    the connection (or C{timeout} passes).

    @return: what the gateway answered and how long after the first byte.
    """
    started = time.monotonic()
    for byte in data:
        if client.closed.called or time.monotonic() - started > timeout:
            break
        client.transport.write(bytes([byte]))
        await deferLater(reactor, interval)
    answer = await closedWith(client, max(timeout - (time.monotonic() - started), 0.1))
    return answer, time.monotonic() - started


async def gateway(gateway_process, tmp_path, backend, extra: str = "") -> tuple[int, int]:
    """
    Run the gateway with one route C{/chat} to C{backend} and C{extra}
    before its route; @return: its port and its admin port.
    """
    text = (f"{extra}\n[[route]]\nprefix = \"/chat\"\npool = \"echo\"\n"
            f'[pool.echo]\n[[pool.echo.backend]]\nurl = "ws://127.0.0.1:{backend.port}"\n')
    process, adminPort, _, _ = await startGateway(gateway_process, tmp_path, text)
    return process.port, adminPort


def health(port: int, extra: bytes = b"", close: bool = True) -> bytes:
    return (b"GET /_gateway/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s\r\n"
            % (port, extra, b"Connection: close\r\n" if close else b""))


async def assertServed(port: int, source: str) -> None:
    """
    A normal client from C{source} is served: the health probe answers 200
    and a session WebSocket says welcome.
    """
    client = await dial(port, source)
    client.transport.write(health(port))
    assert (await closedWith(client)).startswith(b"HTTP/1.1 200 OK")
    ws = await connectClient(f"ws://127.0.0.1:{port}", path="/chat", protocols=[SESSION],
                             bindAddress=source)
    ws.send(json.dumps({"t": "hello", "v": 1}))
    payload, _ = await ws.receive(T)
    assert json.loads(payload)["t"] == "welcome"
    await ws.close().addTimeout(T, reactor)


@pytest_twisted.ensureDeferred
async def test_connectionsPerAddress(echo_backends, gateway_process, tmp_path):
    """
    With max_connections = 20 and max_connections_per_ip = 5, an address
    holding 5 idle sockets gets 503 with Retry-After: 1 on a sixth; another
    address is served meanwhile (before, the first could hold all 20 and
    shut it out); a socket closed makes room.
    """
    [backend] = await echo_backends(1)
    port, _ = await gateway(gateway_process, tmp_path, backend,
                            "[limits]\nmax_connections = 20\nmax_connections_per_ip = 5")
    held = [await dial(port) for _ in range(5)]
    await deferLater(reactor, 0.2)  # the gateway takes them: no event to wait for
    refused = await closedWith(await dial(port))
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in refused
    assert b"this address has its maximum of 5 connections open" in refused
    await assertServed(port, OTHER)
    held.pop().transport.loseConnection()
    await deferLater(reactor, 0.2)
    client = await dial(port)
    client.transport.write(health(port))
    assert (await closedWith(client)).startswith(b"HTTP/1.1 200 OK")
    for each in held:
        each.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_trustedProxyCountsForwardedClients(echo_backends, gateway_process, tmp_path):
    """
    Behind a trusted proxy (127.0.0.1 here), connections count against the
    client each forwards: a second held connection for 198.51.100.1 gets
    503, one for 198.51.100.2 is served, and the proxy itself may hold more
    connections than the per-address bound.
    """
    [backend] = await echo_backends(1)
    port, _ = await gateway(gateway_process, tmp_path, backend,
                            'trusted_proxies = ["127.0.0.1/32"]\n'
                            "[limits]\nmax_connections_per_ip = 1")
    first = await dial(port)
    first.transport.write(health(port, b"X-Forwarded-For: 198.51.100.1\r\n", close=False))
    await deferLater(reactor, 0.2)
    assert first.received.startswith(b"HTTP/1.1 200 OK")
    second = await dial(port)
    second.transport.write(health(port, b"X-Forwarded-For: 198.51.100.1\r\n"))
    assert (await closedWith(second)).startswith(b"HTTP/1.1 503 ")
    third = await dial(port)
    third.transport.write(health(port, b"X-Forwarded-For: 198.51.100.2\r\n"))
    assert (await closedWith(third)).startswith(b"HTTP/1.1 200 OK")
    first.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_laterHeadDeadline(echo_backends, gateway_process, tmp_path):
    """
    A second request head on a kept-alive connection, sent a byte every
    0.2 s, gets 408 about timeouts.handshake (1 s) after its first byte,
    on the gateway's port and on the admin API's (before: only twisted.web's
    60 s idle timer, which every byte restarts, bounded it).  The gateway
    then serves a normal client.
    """
    [backend] = await echo_backends(1)
    port, adminPort = await gateway(gateway_process, tmp_path, backend, "[timeouts]\nhandshake = 1")
    for target in (port, adminPort):
        client = await dial(target)
        client.transport.write(health(target, close=False))
        await deferLater(reactor, 0.2)
        assert client.received.startswith(b"HTTP/1.1 ")
        client.received = b""
        answer, took = await trickle(client, health(target) * 10, 0.2, 20)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert b"request head not received in time" in answer
        assert took < 15
    await assertServed(port, "127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_bodyDeadlines(echo_backends, gateway_process, tmp_path):
    """
    A long-polling POST body (and an admin API body) sent a byte every
    0.2 s is below min_body_rate (1024 bytes/s after the 1 s allowance):
    408.  With min_body_rate = 0, timeouts.request_body (2 s) still ends
    one.  The gateway then serves a normal client.
    """
    [backend] = await echo_backends(1)
    for extra in ("", "request_body = 2\n[limits]\nmin_body_rate = 0"):
        port, adminPort = await gateway(gateway_process, tmp_path, backend,
                                        f"[timeouts]\nhandshake = 1\n{extra}")
        for target, path in ((port, b"/chat?txgw=open"), (adminPort, b"/pools/echo/backends")):
            head = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n" % path)
            client = await dial(target)
            client.transport.write(head)
            answer, took = await trickle(client, b" " * 1000, 0.2, 20)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
            assert b"request body not received in time" in answer
            assert took < 15
        await assertServed(port, "127.0.0.1")
