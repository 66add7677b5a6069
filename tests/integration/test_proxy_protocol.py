"""
PROXY protocol listeners (C{haproxy:} endpoints) against a real C{twistd -n
gateway}: real version 1 and version 2 headers sent from 127.0.0.1, a
trusted address, carry the client's address into X-Forwarded-For and
Forwarded at an echo backend that records its handshakes, into hash
affinity, into the per-address session limit and connection cap, and
through a real HAProxy with send-proxy-v2, under TCP, TLS (the header
before the TLS handshake) and a Unix socket; v2 C{LOCAL} keeps the real
peer; a listener that does not trust 127.0.0.1 refuses a header and serves
a plain request; a trusted peer's missing, malformed or slow header is
closed without a reply, the slow one by its deadline, and each is counted
in one log line.
"""

from __future__ import annotations

import json
import re
import struct

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS

from gateway.testing import connectClient, waitUntil
from gateway.wire.frames import OP_TEXT, encodeFrame
from tests.helpers import selfSignedCertificate

from .helpers import (
    V2_SIGNATURE,
    HAProxy,
    localTCP,
    markedUpgrade,
    pollOpen,
    proxyV1,
    proxyV2,
    sendAndCollect,
    startGateway,
)

T = 10.0
PROXIED = "haproxy:tcp:0:interface=127.0.0.1"


def sessionHello() -> bytes:
    """
    @return: a session-protocol WebSocket upgrade and its hello.
    """
    head = (b"GET /chat HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: txgateway.v1\r\n\r\n")
    return head + encodeFrame(OP_TEXT, json.dumps({"t": "hello", "v": 1}).encode(), mask=True)


def seenBy(backends, marker: str) -> tuple[int, list[bytes]]:
    """
    @return: which of C{backends} saw the handshake with C{marker}, and its
        header lines.
    """
    for index, backend in enumerate(backends):
        for handshake in backend.factory.handshakes:
            if b"X-Marker: " + marker.encode() + b"\r\n" in handshake:
                return index, handshake.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    raise AssertionError(f"no backend saw {marker}")


def config(backends, *, trusted: str = "127.0.0.1/32", extra: str = "", pool: str = "",
           handshake: float = 1) -> str:
    """
    @return: a configuration that trusts C{trusted} for PROXY headers,
        with one route C{/chat} to C{backends}.
    """
    text = (f'proxy_protocol_from = ["{trusted}"]\n[timeouts]\nshutdown = 2\nhandshake = {handshake}\n{extra}'
            f'[[route]]\nprefix = "/chat"\npool = "echo"\n[pool.echo]\n{pool}')
    for backend in backends:
        text += f'[[pool.echo.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
    return text


@pytest_twisted.ensureDeferred
async def test_carried_address_in_forwarding_headers(echo_backends, gateway_process, tmp_path):
    """
    Headers v1 (IPv4, IPv6) and v2 (IPv4, IPv6) from trusted 127.0.0.1: the
    backend sees the carried address in X-Forwarded-For and Forwarded; a v2
    C{LOCAL} header (a balancer's health check) keeps 127.0.0.1.
    """
    backends = await echo_backends(1)
    gateway, _, _, _ = await startGateway(gateway_process, tmp_path, config(backends), "--listen", PROXIED)
    cases = [
        ("v1-4", proxyV1("203.0.113.7"), b"203.0.113.7", b"for=203.0.113.7"),
        ("v1-6", proxyV1("2001:db8::7"), b"2001:db8::7", b'for="[2001:db8::7]"'),
        ("v2-4", proxyV2("198.51.100.9"), b"198.51.100.9", b"for=198.51.100.9"),
        ("v2-6", proxyV2("2001:db8:0:0:0:0:0:9"), b"2001:db8::9", b'for="[2001:db8::9]"'),
        ("v2-local", proxyV2(None), b"127.0.0.1", b"for=127.0.0.1"),
    ]
    for marker, header, forwardedFor, forwarded in cases:
        answer = await sendAndCollect(localTCP(gateway.port), header, markedUpgrade(marker))
        assert answer.startswith(b"HTTP/1.1 101 "), (marker, answer[:80])
        _, lines = seenBy(backends, marker)
        assert b"X-Forwarded-For: " + forwardedFor in lines, (marker, lines)
        assert any(line.startswith(b"Forwarded: ") and forwarded in line for line in lines), (marker, lines)


@pytest_twisted.ensureDeferred
async def test_carried_address_keys_hash_affinity(echo_backends, gateway_process, tmp_path):
    """
    Pool balanced by C{hash} on the client address: twelve carried
    addresses, all from 127.0.0.1, land on more than one of three
    backends, and each address lands where it landed before.
    """
    backends = await echo_backends(3)
    text = config(backends, pool='balance = "hash"\n')
    gateway, _, _, _ = await startGateway(gateway_process, tmp_path, text, "--listen", PROXIED)
    first = {}
    for i in range(12):
        address = f"192.0.2.{i + 1}"
        answer = await sendAndCollect(localTCP(gateway.port), proxyV2(address), markedUpgrade(f"a{i}"))
        assert answer.startswith(b"HTTP/1.1 101 ")
        first[address] = seenBy(backends, f"a{i}")[0]
    assert len(set(first.values())) > 1
    for i, address in enumerate(first):
        await sendAndCollect(localTCP(gateway.port), proxyV1(address), markedUpgrade(f"b{i}"))
        assert seenBy(backends, f"b{i}")[0] == first[address]


@pytest_twisted.ensureDeferred
async def test_carried_address_counts_in_session_limit(echo_backends, gateway_process, tmp_path):
    """
    With max_sessions_per_ip = 1, a second long-polling open carrying
    198.51.100.1 gets 503 / 4503 while one carrying 198.51.100.2 is served,
    all from 127.0.0.1; so does a session WebSocket's hello (close 4503;
    198.51.100.3 is welcomed).
    """
    backends = await echo_backends(1)
    text = config(backends, extra="[session]\nmax_sessions_per_ip = 1\nattach_timeout = 60\n")
    gateway, _, _, _ = await startGateway(gateway_process, tmp_path, text, "--listen", PROXIED)
    answer = await sendAndCollect(localTCP(gateway.port), proxyV1("198.51.100.1"), pollOpen(gateway.port))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    answer = await sendAndCollect(localTCP(gateway.port), proxyV2("198.51.100.1"), pollOpen(gateway.port))
    assert answer.startswith(b"HTTP/1.1 503 ") and b'"code":4503' in answer
    answer = await sendAndCollect(localTCP(gateway.port), proxyV2("198.51.100.2"), pollOpen(gateway.port))
    assert answer.startswith(b"HTTP/1.1 200 ")
    # The session WebSocket (Autobahn, on the same wrapped connection).
    answer = await sendAndCollect(localTCP(gateway.port), proxyV1("198.51.100.1"), sessionHello(),
                                  until=b"retry after")
    assert answer.startswith(b"HTTP/1.1 101 ") and struct.pack("!H", 4503) + b"this address holds" in answer
    answer = await sendAndCollect(localTCP(gateway.port), proxyV2("198.51.100.3"), sessionHello(),
                                  until=b"welcome")
    assert answer.startswith(b"HTTP/1.1 101 ") and b'"welcome"' in answer


class _Held(Protocol):
    def connectionMade(self):
        self.transport.write(self.factory.header)

    def connectionLost(self, reason):
        self.factory.lost.callback(None)


async def hold(port: int, header: bytes):
    """
    Open a connection that sends C{header} and nothing more (the front door
    holds it until its handshake deadline).

    @return: its protocol; C{protocol.factory.lost} fires when it ends.
    """
    factory = Factory.forProtocol(_Held)
    factory.header, factory.lost = header, Deferred()
    return await localTCP(port).connect(factory)


@pytest_twisted.ensureDeferred
async def test_carried_address_counts_in_connection_cap(echo_backends, gateway_process, tmp_path):
    """
    With max_connections_per_ip = 2, two connections held open carrying
    198.51.100.5 leave a third carrying it refused with 503, while one
    carrying 198.51.100.6 is served, all from 127.0.0.1.
    """
    backends = await echo_backends(1)
    text = config(backends, extra="[limits]\nmax_connections_per_ip = 2\n", handshake=20)
    gateway, _, _, _ = await startGateway(gateway_process, tmp_path, text, "--listen", PROXIED)
    held = [await hold(gateway.port, proxyV2("198.51.100.5")) for _ in range(2)]
    answer = await sendAndCollect(localTCP(gateway.port), proxyV1("198.51.100.5"), markedUpgrade("third"))
    assert answer.startswith(b"HTTP/1.1 503 ") and b"this address has its maximum of 2 connections" in answer
    answer = await sendAndCollect(localTCP(gateway.port), proxyV1("198.51.100.6"), markedUpgrade("other"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    for protocol in held:
        protocol.transport.abortConnection()
        await protocol.factory.lost


@pytest_twisted.ensureDeferred
async def test_header_before_tls(echo_backends, gateway_process, tmp_path):
    """
    C{haproxy:ssl:}: the header comes first, then the TLS handshake; the
    backend sees the carried address and C{X-Forwarded-Proto: https}.
    """
    backends = await echo_backends(1)
    keyPath, certPath, pem = selfSignedCertificate(tmp_path)
    listen = f"haproxy:ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}"
    gateway, _, _, _ = await startGateway(gateway_process, tmp_path, config(backends), "--listen", listen)
    tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
    answer = await sendAndCollect(localTCP(gateway.port), proxyV2("203.0.113.40"), markedUpgrade("tls"), tls=tls, until=b"probe")
    assert answer.startswith(b"HTTP/1.1 101 ")
    _, lines = seenBy(backends, "tls")
    assert b"X-Forwarded-For: 203.0.113.40" in lines and b"X-Forwarded-Proto: https" in lines


@pytest_twisted.ensureDeferred
async def test_unix_socket(echo_backends, gateway_process, tmp_path):
    """
    C{haproxy:unix:}: a peer of the socket must send a header; the carried
    address reaches the backend; without a header the connection is closed.
    """
    backends = await echo_backends(1)
    path = str(tmp_path / "gw.sock")
    gateway, _, _, _ = await startGateway(gateway_process, tmp_path, config(backends),
                                          "--listen", "tcp:0:interface=127.0.0.1",
                                          "--listen", f"haproxy:unix:{path}")
    unix = UNIXClientEndpoint(reactor, path, timeout=T)
    answer = await sendAndCollect(unix, proxyV1("203.0.113.50"), markedUpgrade("unix"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"X-Forwarded-For: 203.0.113.50" in seenBy(backends, "unix")[1]
    assert await sendAndCollect(unix, markedUpgrade("unix-bare")) == b""


@pytest_twisted.ensureDeferred
async def test_ipv6_listener(echo_backends, gateway_process, tmp_path):
    """
    C{haproxy:tcp6:} on ::1, trusting ::1/128: a v1 header from ::1 carries
    its IPv4 client to the backend; without a header ::1 is refused.
    """
    backends = await echo_backends(1)
    gateway, _, watcher, _ = await startGateway(gateway_process, tmp_path, config(backends, trusted="::1/128"),
                                                "--listen", "tcp:0:interface=127.0.0.1",
                                                "--listen", "haproxy:tcp6:0:interface=\\:\\:1")
    # Polled: the line may have come in the same read as the one the
    # process was found ready by, before the watcher was hooked in.
    await waitUntil(lambda: watcher.matching(r"gateway listening on .*\(haproxy:tcp6"), T)
    [line] = watcher.matching(r"gateway listening on .*\(haproxy:tcp6")
    [port] = re.findall(r"::1:(\d+) \(haproxy", line)
    ipv6 = TCP6ClientEndpoint(reactor, "::1", int(port), timeout=T)
    answer = await sendAndCollect(ipv6, proxyV1("198.51.100.60"), markedUpgrade("six"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"X-Forwarded-For: 198.51.100.60" in seenBy(backends, "six")[1]
    answer = await sendAndCollect(ipv6, markedUpgrade("six-bare"))
    assert answer == b""


@pytest_twisted.ensureDeferred
async def test_untrusted_peer_may_not_send_header(echo_backends, gateway_process, tmp_path):
    """
    A listener that trusts only 10.0.0.0/8: a header from 127.0.0.1 (v1
    or v2) is closed without a reply and logged; a plain upgrade from
    127.0.0.1 is served under its own address.
    """
    backends = await echo_backends(1)
    gateway, _, watcher, _ = await startGateway(gateway_process, tmp_path,
                                                config(backends, trusted="10.0.0.0/8"), "--listen", PROXIED)
    mark = watcher.mark()
    assert await sendAndCollect(localTCP(gateway.port), proxyV1("203.0.113.7"), markedUpgrade("spoof-1")) == b""
    assert await sendAndCollect(localTCP(gateway.port), proxyV2("203.0.113.7"), markedUpgrade("spoof-2")) == b""
    await watcher.wait(r"connection\(s\) dropped \(proxy_header_untrusted \d\)", mark)
    answer = await sendAndCollect(localTCP(gateway.port), markedUpgrade("plain"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"X-Forwarded-For: 127.0.0.1" in seenBy(backends, "plain")[1]
    assert not any(b"X-Marker: spoof" in h for h in backends[0].factory.handshakes)


@pytest_twisted.ensureDeferred
async def test_missing_malformed_and_slow_headers_closed(echo_backends, gateway_process, tmp_path):
    """
    From trusted 127.0.0.1: no header, a malformed v1 header, a v2 header
    claiming 60000 bytes, and half a header that never ends are each closed
    without a reply (the last by the 1 s deadline); a good header is served
    afterwards; the log counts each refusal, with no traceback.
    """
    backends = await echo_backends(1)
    gateway, _, watcher, _ = await startGateway(gateway_process, tmp_path, config(backends),
                                                "--listen", PROXIED)
    mark = watcher.mark()
    assert await sendAndCollect(localTCP(gateway.port), markedUpgrade("bare")) == b""
    assert await sendAndCollect(localTCP(gateway.port), b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
                          markedUpgrade("bad")) == b""
    assert await sendAndCollect(localTCP(gateway.port), b"PROXY TCP4 1.2.3.4 127.0.0.1 x 2\r\n") == b""
    huge = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000)
    assert await sendAndCollect(localTCP(gateway.port), huge) == b""
    started = reactor.seconds()
    assert await sendAndCollect(localTCP(gateway.port), b"PROXY TCP4 1.2.") == b""
    assert 0.5 < reactor.seconds() - started < T
    answer = await sendAndCollect(localTCP(gateway.port), proxyV1("203.0.113.8"), markedUpgrade("good"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    # The first refusal is logged at once, the rest at most 10 s later, or
    # when the gateway stops.
    gateway.signal("TERM")
    await gateway.wait(15)
    for reason in ("missing", "malformed", "too_large", "timeout"):
        assert watcher.matching(rf"connection\(s\) dropped \(.*proxy_header_{reason} \d", mark), reason
    assert not any("Traceback" in line for line in watcher.lines)
    assert not any(b"X-Marker: bare" in h or b"X-Marker: bad" in h for h in backends[0].factory.handshakes)


@pytest_twisted.ensureDeferred
async def test_behind_real_haproxy(echo_backends, gateway_process, tmp_path):
    """
    A real HAProxy in TCP mode with C{send-proxy-v2} (and
    C{check-send-proxy} for its health checks) in front: a client that
    connects to HAProxy from 127.0.0.2 is 127.0.0.2 at the backend, while
    the gateway's TCP peer is HAProxy on 127.0.0.1; HAProxy's health checks
    are not refused.
    """
    backends = await echo_backends(1)
    gateway, _, watcher, _ = await startGateway(gateway_process, tmp_path, config(backends),
                                                "--listen", PROXIED)
    proxy = HAProxy(str(tmp_path), [gateway.port], serverOptions="send-proxy-v2 check-send-proxy")
    port = await proxy.start()
    try:
        client = await connectClient(f"ws://127.0.0.1:{port}", path="/chat", bindAddress="127.0.0.2",
                                     headers={"X-Marker": "haproxy"})
        client.send("through haproxy")
        assert await client.receive(T) == (b"through haproxy", False)
        await client.close().addTimeout(T, reactor)
        _, lines = seenBy(backends, "haproxy")
        assert b"X-Forwarded-For: 127.0.0.2" in lines
        assert not watcher.matching(r"proxy_header_")
    finally:
        proxy.stop()


@pytest_twisted.ensureDeferred
async def test_listener_needs_trusted_networks(gateway_process, tmp_path, echo_backends):
    """
    A C{haproxy:} listener without C{proxy_protocol_from} stops the gateway
    with one line naming the listener.
    """
    import subprocess
    import sys

    from gateway.testing import projectEnvironment

    backends = await echo_backends(1)
    path = tmp_path / "gateway.toml"
    path.write_text(config(backends).split("\n", 1)[1])
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         "gateway", "--config", str(path), "--listen", PROXIED],
        capture_output=True, text=True, timeout=60, env=projectEnvironment(), cwd=str(tmp_path))
    assert result.returncode != 0
    assert "proxy_protocol_from" in result.stderr + result.stdout
