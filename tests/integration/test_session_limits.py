"""
Session bounds against a real C{twistd -n gateway}: one client address
opening sessions past C{session.max_sessions_per_ip} or faster than
C{session.max_opens_per_ip} gets 503 / 4503 with Retry-After (a WebSocket
hello: close 4503) while another address (127.0.0.2, loopback too) is still
served; a long-polling C{open} never polled ends after
C{session.attach_timeout}; the Python client backs off at 4503 and
connects once room is made.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from gateway.client import ClientState, SessionClient
from gateway.testing import connectClient, waitUntil

from .helpers import startGateway

T = 10.0
SESSION = "txgateway.v1"
OTHER = "127.0.0.2"


class _Collector(Protocol):
    def connectionMade(self):
        self.received = []
        self.transport.write(self.factory.payload)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.received))


async def exchange(port: int, payload: bytes, source: str = "127.0.0.1") -> bytes:
    """
    Send C{payload} from the address C{source} and return the whole answer.
    """
    factory = Factory.forProtocol(_Collector)
    factory.payload = payload
    factory.done = Deferred()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=T, bindAddress=(source, 0))
    proto = await endpoint.connect(factory)

    def onTimeout(result, timeout):
        proto.transport.abortConnection()
        return result

    return await factory.done.addTimeout(T, reactor, onTimeoutCancel=onTimeout)


def request(port: int, kind: str, body: dict) -> bytes:
    """
    @return: the bytes of a long-polling request C{kind} with JSON C{body}.
    """
    data = json.dumps(body).encode()
    return (b"POST /chat?txgw=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (kind.encode(), port, len(data), data))


async def open_(port: int, source: str = "127.0.0.1") -> tuple[int, dict[bytes, bytes], dict]:
    """
    A long-polling C{open} of a new session from C{source}.

    @return: the status, the headers (lower-cased names) and the JSON body.
    """
    answer = await exchange(port, request(port, "open", {"t": "hello", "v": 1}), source)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in lines[1:]))
    return int(lines[0].split(b" ")[1]), headers, json.loads(body)


async def gateway(gateway_process, tmp_path, backend, session: str) -> int:
    """
    Run the gateway with one route C{/chat} to C{backend} and C{session}
    as its C{[session]} table; @return: its port.
    """
    text = (f"[session]\n{session}\n[timeouts]\nshutdown = 2\n"
            '[[route]]\nprefix = "/chat"\npool = "echo"\n'
            f'[pool.echo]\n[[pool.echo.backend]]\nurl = "ws://127.0.0.1:{backend.port}"\n')
    process, _, _, _ = await startGateway(gateway_process, tmp_path, text)
    return process.port


def assertRefused(status: int, headers: dict, body: dict, retryAfter: int) -> None:
    assert status == 503
    assert body["code"] == 4503 and body["status"] == 503 and body["retry_after"] == retryAfter
    assert headers[b"retry-after"] == b"%d" % retryAfter


@pytest_twisted.ensureDeferred
async def test_sessions_per_address(echo_backends, gateway_process, tmp_path):
    """
    With max_sessions_per_ip = 3, a fourth open from 127.0.0.1 gets 503
    with code 4503 and Retry-After: 2, and a WebSocket hello from it a
    close with 4503; an open and a WebSocket session from 127.0.0.2 are
    served meanwhile.
    """
    [backend] = await echo_backends(1)
    port = await gateway(gateway_process, tmp_path, backend,
                         "max_sessions_per_ip = 3\nattach_timeout = 60")
    for _ in range(3):
        status, _, body = await open_(port)
        assert status == 200 and body["packets"][0]["t"] == "welcome"
    assertRefused(*await open_(port), retryAfter=2)
    client = await connectClient(f"ws://127.0.0.1:{port}", path="/chat", protocols=[SESSION])
    client.send(json.dumps({"t": "hello", "v": 1}))
    _, code, reason = await client.closed.addTimeout(T, reactor)
    assert code == 4503 and reason.endswith("retry after 2s")
    status, _, body = await open_(port, OTHER)
    assert status == 200 and body["packets"][0]["t"] == "welcome"
    other = await connectClient(f"ws://127.0.0.1:{port}", path="/chat", protocols=[SESSION],
                                bindAddress=OTHER)
    other.send(json.dumps({"t": "hello", "v": 1}))
    payload, _ = await other.receive(T)
    assert json.loads(payload)["t"] == "welcome"


@pytest_twisted.ensureDeferred
async def test_open_rate_per_address(echo_backends, gateway_process, tmp_path):
    """
    With max_opens_per_ip = 1 and open_burst_per_ip = 2, a third open at
    once from 127.0.0.1 gets 503 / 4503 with Retry-After: 1, while
    127.0.0.2 is served.
    """
    [backend] = await echo_backends(1)
    port = await gateway(gateway_process, tmp_path, backend,
                         "max_opens_per_ip = 1\nopen_burst_per_ip = 2\nattach_timeout = 60")
    for _ in range(2):
        assert (await open_(port))[0] == 200
    assertRefused(*await open_(port), retryAfter=1)
    assert (await open_(port, OTHER))[0] == 200


@pytest_twisted.ensureDeferred
async def test_never_polled_open_ends(echo_backends, gateway_process, tmp_path):
    """
    A session opened by long-polling and never polled ends after
    attach_timeout: its backend WebSocket closes, and a poll then gets 410
    (4410, expired).  A session that is polled lives on.
    """
    [backend] = await echo_backends(1)
    port = await gateway(gateway_process, tmp_path, backend, "attach_timeout = 0.5")
    status, _, body = await open_(port)
    assert status == 200
    welcome = body["packets"][0]
    await waitUntil(lambda: len(backend.factory.connections) == 1, T)
    await waitUntil(lambda: len(backend.factory.connections) == 0, T)
    answer = await exchange(port, request(port, "poll", {"sid": welcome["sid"], "secret": welcome["secret"],
                                                         "ack": 0}))
    assert answer.startswith(b"HTTP/1.1 410 ") and b'"code":4410' in answer
    # A polled session (the Python client polls at once) is not ended:
    # it is still open, and echoes, once the deadline has passed.
    client = SessionClient(f"ws://127.0.0.1:{port}/chat", reactor=reactor, transport="polling")
    received: list = []
    client.onMessage(lambda payload, isBinary: received.append(payload))
    await client.connect().addTimeout(T, reactor)
    await deferLater(reactor, 1.0)  # the deadline passing: no event to wait for
    client.send("ping")
    await waitUntil(lambda: received, T)
    assert received == ["ping"] and client.state is ClientState.open
    await client.close().addTimeout(T, reactor)


@pytest_twisted.ensureDeferred
async def test_client_backs_off_at_4503(echo_backends, gateway_process, tmp_path):
    """
    At max_sessions_per_ip = 1, held by a never-polled open, the Python
    client (long-polling and WebSocket) gets 4503, backs off and retries,
    and connects once the held session has ended (attach_timeout) and made
    room.
    """
    [backend] = await echo_backends(1)
    port = await gateway(gateway_process, tmp_path, backend,
                         "max_sessions_per_ip = 1\nattach_timeout = 1")
    for transport in ("polling", "websocket"):
        assert (await open_(port))[0] == 200
        codes: list = []
        client = SessionClient(f"ws://127.0.0.1:{port}/chat", reactor=reactor, transport=transport,
                               initialDelay=0.05, maxDelay=0.2)
        client.onState(lambda state, detail: codes.append((state, detail.code)))
        await client.connect().addTimeout(T, reactor)
        assert (ClientState.reconnecting, 4503) in codes
        assert client.state is ClientState.open
        await client.close().addTimeout(T, reactor)
        await waitUntil(lambda: len(backend.factory.connections) == 0, T)
