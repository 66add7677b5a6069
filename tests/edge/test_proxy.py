"""
L{gateway.edge.proxy}: the trust decision (who must and who must not send a
PROXY header), the wrapped protocol connected only once the peer is known,
the bounds (deadline, size) and the refusals, on a Clock and
StringTransports; and the listeners, with the header beneath TLS.
"""

from __future__ import annotations

import struct

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from gateway.edge.proxy import REFUSALS, ProxyHeaderFactory, ProxyHeaderProtocol, proxyEndpoint
from gateway.edge.listeners import parseEndpoint
from gateway.tcp import PassThroughWrapper, writeNow
from gateway.wire.forwarded import TrustedProxies
from tests.helpers import selfSignedCertificate

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
V1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 80\r\n"


class Recorder(Protocol):
    """
    The wrapped protocol: what it was told, and the peer it saw.
    """

    def __init__(self) -> None:
        self.data = b""
        self.peer = None
        self.lost = False

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.lost = True


class Harness:
    """
    One connection of a PROXY listener that trusts 10.0.0.0/8, from
    C{peer}.
    """

    def __init__(self, peer=IPv4Address("TCP", "10.1.2.3", 5555), timeout: float = 2.0) -> None:
        self.clock = Clock()
        self.refused: list[str] = []
        self.factory = ProxyHeaderFactory(Factory.forProtocol(Recorder), trusted=TrustedProxies(["10.0.0.0/8"]),
                                          timeout=timeout, clock=self.clock, dropped=self.refused.append)
        self.transport = StringTransport(peerAddress=peer)
        self.protocol: ProxyHeaderProtocol = self.factory.buildProtocol(peer)
        self.protocol.makeConnection(self.transport)
        self.inner: Recorder = self.protocol.wrappedProtocol

    def send(self, data: bytes, step: int | None = None) -> None:
        step = step or len(data)
        for i in range(0, len(data), step):
            self.protocol.dataReceived(data[i : i + step])


def test_trustedPeerHeader() -> None:
    """
    From a trusted peer, the wrapped protocol is connected once the header
    is read (not before), sees the carried address as its peer, and gets
    the bytes after the header.
    """
    harness = Harness()
    harness.send(V1[:10])
    assert harness.inner.transport is None
    harness.send(V1[10:] + REQUEST)
    assert harness.inner.peer == IPv4Address("TCP", "203.0.113.7", 4000)
    assert harness.protocol.getPeer().host == "203.0.113.7"
    assert harness.inner.data == REQUEST
    harness.send(b"more")
    assert harness.inner.data == REQUEST + b"more"
    assert harness.refused == [] and not harness.clock.getDelayedCalls()


def test_localKeepsRealPeer() -> None:
    """
    A v2 C{LOCAL} header (a balancer's health check): the real peer stands.
    """
    harness = Harness()
    harness.send(SIGNATURE + bytes([0x20, 0x00, 0, 0]) + REQUEST, step=3)
    assert harness.inner.peer == IPv4Address("TCP", "10.1.2.3", 5555)
    assert harness.inner.data.endswith(REQUEST[-3:]) and REQUEST.endswith(harness.inner.data[-5:])


def test_ipv6Header() -> None:
    """
    A v2 IPv6 header: the peer is an L{IPv6Address} in short form.
    """
    harness = Harness()
    body = bytes.fromhex("20010db8000000000000000000000009") + bytes(15) + b"\x01" + struct.pack("!HH", 7, 80)
    harness.send(SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body)
    assert harness.inner.peer == IPv6Address("TCP", "2001:db8::9", 7)


@pytest.mark.parametrize("data, reason", [
    (REQUEST, "proxy_header_missing"),
    (b"PROXY TCP4 nowhere 127.0.0.1 1 2\r\n" + REQUEST, "proxy_header_malformed"),
    (SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000), "proxy_header_too_large"),
])
def test_trustedPeerRefused(data: bytes, reason: str) -> None:
    """
    From a trusted peer: no header, a malformed one, an oversized one each
    close the connection without a reply, once counted, and the wrapped
    protocol is never connected (nor told of the loss).
    """
    harness = Harness()
    harness.send(data)
    assert harness.refused == [reason] and reason in REFUSALS
    assert harness.transport.disconnecting and harness.transport.value() == b""
    harness.send(b"more")
    harness.protocol.connectionLost(None)
    assert harness.inner.transport is None and not harness.inner.lost
    assert not harness.clock.getDelayedCalls()


def test_deadline() -> None:
    """
    Half a header still not whole at the deadline: closed, counted.
    """
    harness = Harness(timeout=2.0)
    harness.send(V1[:12])
    harness.clock.advance(1.9)
    assert not harness.transport.disconnecting
    harness.clock.advance(0.2)
    assert harness.refused == ["proxy_header_timeout"] and harness.transport.disconnecting


def test_untrustedPeerConnectedAtOnce() -> None:
    """
    An untrusted peer is handed on at once, under its own address, with no
    deadline of the wrapper's (the front door's apply); bytes that may
    still begin a header are held, not passed on.
    """
    harness = Harness(peer=IPv4Address("TCP", "192.0.2.1", 1))
    assert harness.inner.peer == IPv4Address("TCP", "192.0.2.1", 1)
    assert not harness.clock.getDelayedCalls()
    harness.send(b"PROX")
    assert harness.inner.data == b"" and harness.refused == []


@pytest.mark.parametrize("header", [V1, SIGNATURE + bytes([0x20, 0x00, 0, 0])])
def test_untrustedPeerHeader(header: bytes) -> None:
    """
    From a peer outside the trusted networks a header (even one byte at a
    time) is refused: closed without a reply, never passed on; the wrapped
    protocol is told of the loss.
    """
    harness = Harness(peer=IPv4Address("TCP", "192.0.2.1", 1))
    harness.send(header + REQUEST, step=1)
    assert harness.refused == ["proxy_header_untrusted"]
    assert harness.transport.disconnecting and harness.inner.data == b""
    harness.protocol.connectionLost(None)
    assert harness.inner.lost


def test_untrustedPeerPlain() -> None:
    """
    A plain request from an untrusted peer is passed on as soon as its
    first byte rules a header out.
    """
    harness = Harness(peer=IPv4Address("TCP", "192.0.2.1", 1))
    harness.send(b"G")
    assert harness.inner.data == b"G"
    harness.send(REQUEST[1:])
    assert harness.inner.data == REQUEST and harness.refused == []
    assert not harness.clock.getDelayedCalls()


def test_unixPeerMustSend() -> None:
    """
    On a Unix socket every peer must send a header.
    """
    harness = Harness(peer=UNIXAddress(None))
    harness.send(REQUEST)
    assert harness.refused == ["proxy_header_missing"]
    harness = Harness(peer=UNIXAddress(None))
    harness.send(V1)
    assert harness.inner.peer.host == "203.0.113.7"


def test_writesPassThrough() -> None:
    """
    What the wrapped protocol writes reaches the socket unchanged, and
    L{writeNow} writes to the transport beneath the wrapper.
    """
    harness = Harness()
    harness.send(V1)
    assert isinstance(harness.inner.transport, PassThroughWrapper)
    harness.inner.transport.write(b"a")
    writeNow(harness.inner.transport, b"b")
    assert harness.transport.value() == b"ab"


def test_listeners() -> None:
    """
    C{haproxy:tcp:} wraps the listener's factory; C{haproxy:ssl:} puts the
    header beneath TLS (TCP -> PROXY -> TLS -> the gateway); C{haproxy:unix:}
    wraps too; the endpoint gets the service's listen backlog.
    """
    reactor = MemoryReactorClock()
    gateway = Factory.forProtocol(Recorder)
    trusted = TrustedProxies(["10.0.0.0/8"])

    def endpoint(description: str):
        return proxyEndpoint(reactor, description, trusted=trusted, timeout=1.0, dropped=lambda r: None,
                             parse=lambda r, d: parseEndpoint(r, "listen", d, backlog=True))

    endpoint("tcp:8080:interface=127.0.0.1").listen(gateway)
    port, factory, backlog, interface = reactor.tcpServers[-1]
    assert (port, backlog, interface) == (8080, 511, "127.0.0.1")
    assert isinstance(factory, ProxyHeaderFactory) and factory.wrappedFactory is gateway
    assert factory.trusted is trusted


def test_tlsBeneath(tmp_path) -> None:
    """
    C{haproxy:ssl:} listens on TCP with the PROXY wrapper outside TLS.
    """
    keyPath, certPath, _ = selfSignedCertificate(tmp_path)
    reactor = MemoryReactorClock()
    gateway = Factory.forProtocol(Recorder)
    parsed = parseEndpoint(reactor, "listen", f"haproxy:ssl:8443:privateKey={keyPath}:certKey={certPath}",
                            backlog=True, mayProxy=True)
    parsed.listen(gateway)
    port, factory, backlog, _ = reactor.tcpServers[-1]
    assert (port, backlog) == (8443, 511)
    assert isinstance(factory, ProxyHeaderFactory)
    assert isinstance(factory.wrappedFactory, TLSMemoryBIOFactory)
    assert factory.wrappedFactory.wrappedFactory is gateway
    parseEndpoint(reactor, "listen", "haproxy:unix:/tmp/gw.sock", mayProxy=True).listen(gateway)
    assert isinstance(reactor.unixServers[-1][1], ProxyHeaderFactory)


def test_frontDoorPeerHost() -> None:
    """
    The front door's C{peerHost} (what routing, forwarding headers and the
    per-address bounds read) is the carried address, and the real peer's
    when the header carries none.
    """
    from gateway.site import GatewayFactory

    harness = Harness()
    harness.send(V1)
    assert GatewayFactory.peerHost(harness.inner.transport) == "203.0.113.7"
    harness = Harness()
    harness.send(SIGNATURE + bytes([0x20, 0x00, 0, 0]))
    assert GatewayFactory.peerHost(harness.inner.transport) == "10.1.2.3"
