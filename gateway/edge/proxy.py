"""
Listeners behind an L4 balancer (AWS NLB, HAProxy C{send-proxy}) that send
the PROXY protocol header: the address it carries becomes the connection's
peer (C{transport.getPeer()}), so that everything which asks who the client
is (forwarding headers, hash affinity on the client's address, per-address
limits, logs) sees the client rather than the balancer.

A listener's endpoint string says C{haproxy:} before the endpoint it wraps
(C{haproxy:tcp:8080}, C{haproxy:ssl:8443:privateKey=...},
C{haproxy:unix:/run/gw.sock}).  That is the name of Twisted's own PROXY
endpoint, which the gateway replaces with L{proxyEndpoint} because Twisted's
wrapper believes a header from any peer, hands the connection on before the
header is read (so the front door would count it under the balancer's
address), drops a header cut into two reads, and, under C{ssl:}, expects the
header inside TLS, where no balancer puts it.

Who may send a header is C{proxy_protocol_from}: a connection from one of
those networks (or on a Unix socket, whose file permissions decide who
connects) must begin with one; a connection from anywhere else must not
and is otherwise served as it is, under its own address.  Either mistake,
and a header that is malformed, too large (L{MAX_V2_HEADER}) or not whole
within the deadline, closes the connection without a reply and is counted
by the callable the listener is given (the front door's rate-limited
dropped-connections log), never a traceback.

From a peer that must send a header, the header is read before the wrapped
protocol is connected: the front door's (or TLS's) C{connectionMade} runs
once the client is known, so that its connection bounds count the client.
A peer that must not send one is connected at once, under its own address.  After the
header, each read costs one call more than on a plain listener; writes go
straight to the socket (L{gateway.tcp.PassThroughWrapper}).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import directlyProvides, providedBy

from ..errors import LimitExceeded, ProtocolError
from ..tcp import PassThroughWrapper
from ..wire.forwarded import TrustedProxies
from ..wire.proxyheader import LISTENER_PREFIX, MAX_V2_HEADER, ProxyHeaderReader, proxiedEndpoint, sniff

__all__ = [
    "ProxyHeaderProtocol",
    "ProxyHeaderFactory",
    "proxyEndpoint",
    "proxiedListening",
    "proxiedEndpoint",
    "LISTENER_PREFIX",
    "MAX_V2_HEADER",
    "REFUSALS",
]

#: Why a connection is closed before it reaches the front door (the reasons
#: given to the listener's C{dropped} callable).
REFUSALS = (
    "proxy_header_untrusted",
    "proxy_header_missing",
    "proxy_header_malformed",
    "proxy_header_too_large",
    "proxy_header_timeout",
)


class ProxyHeaderProtocol(PassThroughWrapper):
    """
    One connection of a PROXY listener: reads (or, from a peer that may not
    send one, refuses) the header, then connects the wrapped protocol and
    passes every byte on.

    @ivar source: the address the header carried, or L{None} (no header, or
        one carrying no internet address: the real peer stands).
    """

    factory: ProxyHeaderFactory

    def __init__(self, factory: ProxyHeaderFactory, wrappedProtocol) -> None:
        super().__init__(factory, wrappedProtocol)
        self.source = None
        self._reader: ProxyHeaderReader | None = None
        self._held = b""
        self._connected = False
        self._passing = False
        self._closed = False
        self._timer: Any = None

    def makeConnection(self, transport) -> None:
        """
        Take the connection and decide from its peer whether a header must
        or must not come.  From a peer that must send one, the wrapped
        protocol is connected once it is read (L{_pass}), within the
        deadline.  Any other peer is who it is: the wrapped protocol is
        connected now (its own deadlines apply), and only the first bytes
        are held, until they rule a header out.
        """
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if self.factory.mayProxy(transport.getPeer()):
            self._reader = ProxyHeaderReader()
            self._timer = self.factory.clock.callLater(self.factory.timeout, self._timedOut)
        else:
            self._connected = True
            self.wrappedProtocol.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Read the header (or make sure there is none); then pass on.
        """
        if self._passing:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._closed:
            return
        reader = self._reader
        if reader is None:
            held = self._held + data
            found = sniff(held)
            if found:
                self._refuse("proxy_header_untrusted")
            elif found is None:
                self._held = held
            else:
                self._held = b""
                self._passing = True
                self.wrappedProtocol.dataReceived(held)
            return
        try:
            header = reader.feed(data)
        except LimitExceeded:
            self._refuse("proxy_header_too_large")
            return
        except ProtocolError:
            self._refuse("proxy_header_malformed" if reader.version else "proxy_header_missing")
            return
        if header is not None:
            self.source = header.source
            self._pass(reader.remaining)

    def _pass(self, data: bytes) -> None:
        self._cancelTimer()
        self._passing = self._connected = True
        self._reader = None
        self.wrappedProtocol.makeConnection(self)
        if data:
            self.wrappedProtocol.dataReceived(data)

    def _refuse(self, reason: str) -> None:
        self._cancelTimer()
        self._closed = True
        self._reader = None
        self._held = b""
        self.factory.dropped(reason)
        self.transport.loseConnection()

    def _timedOut(self) -> None:
        self._timer = None
        if not self._passing and not self._closed:
            self._refuse("proxy_header_timeout")

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def connectionLost(self, reason) -> None:
        """
        Tell the wrapped protocol, if it was connected.
        """
        self._cancelTimer()
        if self._connected:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)

    def getPeer(self):
        """
        @return: the address the header carried, else the real peer.
        """
        if self.source is not None:
            return self.source
        return self.transport.getPeer()


class ProxyHeaderFactory(WrappingFactory):
    """
    Wraps a listener's factory in L{ProxyHeaderProtocol}s.

    @ivar trusted: the networks that may (and must) send a header.
    @ivar timeout: seconds a header may take.
    @ivar dropped: called with one of L{REFUSALS} for each connection closed.
    """

    protocol = ProxyHeaderProtocol
    noisy = False

    def __init__(self, wrappedFactory, *, trusted: TrustedProxies, timeout: float, clock: Any,
                 dropped: Callable[[str], None]) -> None:
        super().__init__(wrappedFactory)
        self.trusted = trusted
        self.timeout = timeout
        self.clock = clock
        self.dropped = dropped

    def mayProxy(self, peer) -> bool:
        """
        @return: whether the real C{peer} must send a header: one from
            C{trusted}, or any peer of a Unix socket.
        """
        if isinstance(peer, UNIXAddress):
            return True
        if isinstance(peer, (IPv4Address, IPv6Address)):
            return peer.host in self.trusted
        return False


class _ProxiedListening:
    """
    The reactor a C{haproxy:} listener's inner endpoint is parsed with: its
    C{listen*} methods wrap the factory in a L{ProxyHeaderFactory}, beneath
    TLS for C{listenSSL} (the header comes before the TLS handshake).  Any
    other way of listening is refused rather than left without the header.
    """

    def __init__(self, reactor: Any, wrap: Callable[[Any], ProxyHeaderFactory]) -> None:
        self._reactor = reactor
        self._wrap = wrap

    def listenTCP(self, port, factory, backlog=50, interface=""):
        """
        Listen on TCP, reading a header first.
        """
        return self._reactor.listenTCP(port, self._wrap(factory), backlog, interface)

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        """
        Listen on TCP, reading a header first, then TLS.
        """
        tls = TLSMemoryBIOFactory(contextFactory, False, factory)
        return self._reactor.listenTCP(port, self._wrap(tls), backlog, interface)

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        """
        Listen on a Unix socket, reading a header first.
        """
        return self._reactor.listenUNIX(address, self._wrap(factory), backlog, mode, wantPID)

    def adoptStreamPort(self, fileDescriptor, addressFamily, factory):
        """
        Listen on an inherited socket (systemd), reading a header first.
        """
        return self._reactor.adoptStreamPort(fileDescriptor, addressFamily, self._wrap(factory))

    def __getattr__(self, name: str):
        if name.startswith(("listen", "adopt")):
            raise AttributeError(f"{name} cannot read a PROXY header first")
        return getattr(self._reactor, name)


def proxiedListening(reactor: Any, *, trusted: TrustedProxies, timeout: float,
                     dropped: Callable[[str], None]) -> Any:
    """
    @return: C{reactor} as a listener's endpoint sees it: each of its
        C{listen*} and C{adoptStreamPort} methods gives the factory's
        connections a PROXY header to read first (L{ProxyHeaderProtocol}),
        from C{trusted} peers, within C{timeout} seconds; a refused header's
        reason goes to C{dropped}.  A worker adopts a C{haproxy:} listener's
        inherited socket through it.
    """

    def wrap(factory) -> ProxyHeaderFactory:
        return ProxyHeaderFactory(factory, trusted=trusted, timeout=timeout, clock=reactor,
                                  dropped=dropped)

    return _ProxiedListening(reactor, wrap)


def proxyEndpoint(reactor: Any, description: str, *, trusted: TrustedProxies, timeout: float,
                  dropped: Callable[[str], None], parse: Callable[[Any, str], Any]):
    """
    @param description: the endpoint string after C{haproxy:}.
    @param parse: turns a reactor and an endpoint string into a server
        endpoint (C{serverFromString}, or the service's wrapper of it).
    @return: the server endpoint C{description} names, whose connections
        each read a PROXY header first (L{ProxyHeaderProtocol}).
    """
    return parse(proxiedListening(reactor, trusted=trusted, timeout=timeout, dropped=dropped),
                 description)
