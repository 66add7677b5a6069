"""
PROXY protocol listeners (C{haproxy:} endpoints) against a real C{twistd -n
gateway}: real version 1 and version 2 headers sent from 127.0.0.1, a
trusted address, carry the client's address into X-Forwarded-For and
Forwarded at an echo backend that records its handshakes, into hash
affinity and into the per-address session limit, under TCP, TLS (the header
before the TLS handshake) and a Unix socket; v2 C{LOCAL} keeps the real
peer; a listener that does not trust 127.0.0.1 refuses a header and serves
a plain request; a trusted peer's missing, malformed or slow header is
closed without a reply, the slow one by its deadline, and each is counted
in one log line.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS

from gateway.wire.frames import OP_TEXT, encodeClose, encodeFrame

from .helpers import selfSignedCertificate, startGateway

T = 10.0
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXIED = "haproxy:tcp:0:interface=127.0.0.1"


def v1(source: str, port: int = 40000) -> bytes:
    """
    @return: a version 1 header from C{source} (TCP4 or TCP6 by its form).
    """
    family = "TCP6" if ":" in source else "TCP4"
    destination = "::1" if family == "TCP6" else "127.0.0.1"
    return f"PROXY {family} {source} {destination} {port} 8080\r\n".encode()


def v2(source: str | None, port: int = 40000) -> bytes:
    """
    @return: a version 2 header: C{PROXY} from C{source} over TCP, or
        C{LOCAL} when C{source} is L{None}.
    """
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    address = ipaddress.ip_address(source)
    if address.version == 4:
        body = address.packed + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 8080)
        family = 0x11
    else:
        body = address.packed + ipaddress.ip_address("::1").packed + struct.pack("!HH", port, 8080)
        family = 0x21
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def upgrade(marker: str, path: str = "/chat") -> bytes:
    """
    @return: a transparent WebSocket upgrade with C{X-Marker: marker}, a
        masked text frame and a close frame.
    """
    head = (f"GET {path} HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Marker: {marker}\r\n\r\n").encode()
    return head + encodeFrame(OP_TEXT, b"probe", mask=True) + encodeClose(1000, "", mask=True)


def pollOpen(port: int) -> bytes:
    """
    @return: a long-polling C{open} request.
    """
    body = json.dumps({"t": "hello", "v": 1}).encode()
    return (b"POST /chat?txgw=open HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (port, len(body), body))


class _Collector(Protocol):
    def connectionMade(self):
        self.received = []
        factory = self.factory
        if factory.tls is not None:
            self.transport.write(factory.first)
            self.transport.startTLS(factory.tls)
            self.transport.write(factory.rest)
        else:
            self.transport.write(factory.first + factory.rest)

    def dataReceived(self, data):
        self.received.append(data)
        until = self.factory.until
        if until is not None and until in b"".join(self.received):
            self.transport.abortConnection()

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.received))


async def exchange(endpoint, first: bytes, rest: bytes = b"", tls=None, until: bytes | None = None) -> bytes:
    """
    Connect, send C{first} then (under TLS, if C{tls} is given) C{rest};
    @return: everything received until the gateway closes (or until
        C{until} has been received).
    """
    factory = Factory.forProtocol(_Collector)
    factory.first, factory.rest, factory.tls, factory.done = first, rest, tls, Deferred()
    factory.until = until
    proto = await endpoint.connect(factory)

    def onTimeout(result, timeout):
        proto.transport.abortConnection()
        return result

    return await factory.done.addTimeout(T, reactor, onTimeoutCancel=onTimeout)


def tcp(port: int) -> TCP4ClientEndpoint:
    """
    @return: an endpoint to C{port} of 127.0.0.1.
    """
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=T)


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


def config(backends, *, trusted: str = "127.0.0.1/32", extra: str = "", pool: str = "") -> str:
    """
    @return: a configuration that trusts C{trusted} for PROXY headers,
        with one route C{/chat} to C{backends}.
    """
    text = (f'proxy_protocol_from = ["{trusted}"]\n[timeouts]\nshutdown = 2\nhandshake = 1\n{extra}'
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
        ("v1-4", v1("203.0.113.7"), b"203.0.113.7", b"for=203.0.113.7"),
        ("v1-6", v1("2001:db8::7"), b"2001:db8::7", b'for="[2001:db8::7]"'),
        ("v2-4", v2("198.51.100.9"), b"198.51.100.9", b"for=198.51.100.9"),
        ("v2-6", v2("2001:db8:0:0:0:0:0:9"), b"2001:db8::9", b'for="[2001:db8::9]"'),
        ("v2-local", v2(None), b"127.0.0.1", b"for=127.0.0.1"),
    ]
    for marker, header, forwardedFor, forwarded in cases:
        answer = await exchange(tcp(gateway.port), header, upgrade(marker))
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
        answer = await exchange(tcp(gateway.port), v2(address), upgrade(f"a{i}"))
        assert answer.startswith(b"HTTP/1.1 101 ")
        first[address] = seenBy(backends, f"a{i}")[0]
    assert len(set(first.values())) > 1
    for i, address in enumerate(first):
        await exchange(tcp(gateway.port), v1(address), upgrade(f"b{i}"))
        assert seenBy(backends, f"b{i}")[0] == first[address]


@pytest_twisted.ensureDeferred
async def test_carried_address_counts_in_session_limit(echo_backends, gateway_process, tmp_path):
    """
    With max_sessions_per_ip = 1, a second long-polling open carrying
    198.51.100.1 gets 503 / 4503 while one carrying 198.51.100.2 is served,
    all from 127.0.0.1.
    """
    backends = await echo_backends(1)
    text = config(backends, extra="[session]\nmax_sessions_per_ip = 1\nattach_timeout = 60\n")
    gateway, _, _, _ = await startGateway(gateway_process, tmp_path, text, "--listen", PROXIED)
    answer = await exchange(tcp(gateway.port), v1("198.51.100.1"), pollOpen(gateway.port))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    answer = await exchange(tcp(gateway.port), v2("198.51.100.1"), pollOpen(gateway.port))
    assert answer.startswith(b"HTTP/1.1 503 ") and b'"code":4503' in answer
    answer = await exchange(tcp(gateway.port), v2("198.51.100.2"), pollOpen(gateway.port))
    assert answer.startswith(b"HTTP/1.1 200 ")


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
    answer = await exchange(tcp(gateway.port), v2("203.0.113.40"), upgrade("tls"), tls=tls, until=b"probe")
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
    answer = await exchange(unix, v1("203.0.113.50"), upgrade("unix"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"X-Forwarded-For: 203.0.113.50" in seenBy(backends, "unix")[1]
    assert await exchange(unix, upgrade("unix-bare")) == b""


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
    assert await exchange(tcp(gateway.port), v1("203.0.113.7"), upgrade("spoof-1")) == b""
    assert await exchange(tcp(gateway.port), v2("203.0.113.7"), upgrade("spoof-2")) == b""
    await watcher.wait(r"connection\(s\) dropped \(proxy_header_untrusted \d\)", mark)
    answer = await exchange(tcp(gateway.port), upgrade("plain"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"X-Forwarded-For: 127.0.0.1" in seenBy(backends, "plain")[1]
    assert not any(b"X-Marker: spoof" in h for h in backends[0].factory.handshakes)


@pytest_twisted.ensureDeferred
async def test_missing_malformed_and_slow_headers_closed(echo_backends, gateway_process, tmp_path):
    """
    From trusted 127.0.0.1: no header, a malformed v1 header, a v2 header
    claiming 60000 bytes, and half a header that never ends are each closed
    without a reply (the last by the 1 s deadline); the log counts them;
    a good header is served afterwards.
    """
    backends = await echo_backends(1)
    gateway, _, watcher, _ = await startGateway(gateway_process, tmp_path, config(backends),
                                                "--listen", PROXIED)
    mark = watcher.mark()
    assert await exchange(tcp(gateway.port), upgrade("bare")) == b""
    assert await exchange(tcp(gateway.port), b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
                          upgrade("bad")) == b""
    assert await exchange(tcp(gateway.port), b"PROXY TCP4 1.2.3.4 127.0.0.1 x 2\r\n") == b""
    huge = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000)
    assert await exchange(tcp(gateway.port), huge) == b""
    started = reactor.seconds()
    assert await exchange(tcp(gateway.port), b"PROXY TCP4 1.2.") == b""
    assert 0.5 < reactor.seconds() - started < T
    seen = []
    for reason in ("missing", "malformed", "too_large", "timeout"):
        seen.append(await watcher.wait(rf"proxy_header_{reason} \d", mark))
    answer = await exchange(tcp(gateway.port), v1("203.0.113.8"), upgrade("good"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert not any("Traceback" in line for line in watcher.lines)
    assert not any(b"X-Marker: bare" in h or b"X-Marker: bad" in h for h in backends[0].factory.handshakes)


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
