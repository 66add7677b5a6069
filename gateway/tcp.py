"""
TCP details every connection of the gateway and its clients shares.

Nagle's algorithm is turned off everywhere: both ends write small packets
(an ack, then a message) that must not wait for the peer's delayed ACK.
Autobahn tries to do this itself but sets the option before reading it from
its factory, so it never takes effect.

L{writeNow} writes to a TCP transport at once when nothing is waiting in its
buffer, instead of registering it for writability and writing on the next
turn of the reactor: the splice of a transparent tunnel writes each chunk it
reads this way.

This is the one module of the gateway that reaches into Twisted's private
attributes; each place says what it reads and why:

  - L{writeNow}: a TCP connection's write buffer (C{_tempDataLen},
    C{dataBuffer}, C{offset}) and C{_writeDisconnected}, to know the buffer
    is empty;
  - L{unreadBytes}: C{HTTPChannel._buffer} and C{_dataBuffer}, the bytes
    twisted.web read past a request, when a kept-alive connection is taken
    back from it for a WebSocket tunnel;
  - L{requestLost}: C{Request._disconnected}, whether the connection of a
    request that is not finished is gone (writing to it would raise);
  - L{forgetExitSignal}: C{reactor._exitSignal}, the signal twistd raises
    again when the process ends;
  - L{stopWithStatus}: not an attribute, but twistd's way of ending: it
    exits with status 0 whatever stopped its reactor (but a signal), so a
    gateway that could not start sets the status itself;
  - L{V1Parser}, L{V2Parser}, L{InvalidProxyHeader}: Twisted's PROXY
    protocol parsers, from the private modules of
    C{twisted.protocols.haproxy} (whose public surface is only
    C{proxyEndpoint}: its wrapper takes a header from any peer, hands the
    connection on before the header has come, and puts TLS outside the
    header), re-exported for L{gateway.wire.proxyheader}.
  - L{tlsContextFactory}: C{SSL4ServerEndpoint._sslContextFactory}, the TLS
    settings of an C{ssl:} listener, for a worker process that adopts the
    listening socket its supervisor bound;
  - L{leaveSharedSocket}: C{unix.Port._bindPath} and C{_shouldShutdown},
    so that a worker that stops listening on an adopted Unix socket neither
    shuts the socket down nor removes its path, which the other workers
    still accept on (Twisted spares an adopted TCP socket both already).

L{switchProtocol} and L{deliveredTo} read the public attribute that says
which protocol a transport delivers to (C{wrappedProtocol} under TLS,
C{protocol} on TCP), which only some transports have.
"""

from __future__ import annotations

import atexit
import os
import sys

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

__all__ = [
    "noDelay",
    "NoDelayEndpoint",
    "writeNow",
    "switchProtocol",
    "replaceProducer",
    "deliveredTo",
    "connectionOpen",
    "unreadBytes",
    "requestLost",
    "forgetExitSignal",
    "stopWithStatus",
    "listenFailure",
    "observePortLog",
    "hostAndPort",
    "V1Parser",
    "V2Parser",
    "InvalidProxyHeader",
    "PassThroughWrapper",
    "tlsContextFactory",
    "leaveSharedSocket",
]


def noDelay(transport) -> None:
    """
    Turn Nagle's algorithm off on C{transport} (a no-op for transports that
    are not TCP).
    """
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is not None:
        try:
            setter(True)
        except OSError:
            pass


@implementer(IStreamClientEndpoint)
class NoDelayEndpoint:
    """
    An endpoint whose connections have Nagle's algorithm turned off.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory):
        """
        Connect, then turn Nagle's algorithm off.
        """

        def connected(protocol):
            noDelay(protocol.transport)
            return protocol

        return self._endpoint.connect(factory).addCallback(connected)


def writeNow(transport, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once when the transport
    has nothing buffered; what the socket does not take (or everything, on
    a transport with data waiting, or one that is not plain TCP) goes
    through C{transport.write}, in order, with its flow control.

    A plain C{write} never sends: it buffers, registers the socket for
    writability (an C{epoll_ctl}), sends on the next turn of the reactor,
    and unregisters it (another C{epoll_ctl}).  When the socket can take the
    data, as it nearly always can, this saves both calls and a turn.
    """
    if isinstance(transport, PassThroughWrapper):
        transport = transport.transport
    if (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if not isinstance(sent, BaseException):
            if sent == len(data):
                return
            data = data[sent:]
        # A lost connection: the buffered write finds out and closes it.
    transport.write(data)


class PassThroughWrapper(ProtocolWrapper):
    """
    A protocol wrapper whose writes are its transport's writes, unchanged
    (the PROXY header reader of L{gateway.edge.proxy}): L{writeNow} writes
    to the transport beneath it.
    """


def switchProtocol(transport, protocol) -> None:
    """
    Make C{protocol} receive what C{transport} reads from now on (a TLS
    transport wraps its protocol; a TCP one holds it).
    """
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    else:
        transport.protocol = protocol


def replaceProducer(transport, producer) -> None:
    """
    Register C{producer} (streaming) on C{transport}, replacing any earlier
    one: Twisted refuses a second registration with C{RuntimeError}.
    """
    try:
        transport.registerProducer(producer, True)
    except RuntimeError:
        transport.unregisterProducer()
        transport.registerProducer(producer, True)


def deliveredTo(transport):
    """
    @return: the protocol C{transport} delivers what it reads to, or L{None}
        for a transport that does not say.
    """
    if isinstance(transport, ProtocolWrapper):
        return transport.wrappedProtocol
    return getattr(transport, "protocol", None)


def connectionOpen(transport) -> bool:
    """
    @return: whether the TCP connection beneath C{transport} (through the
        TLS and PROXY wrappers, whose own flag is not cleared when the
        connection ends) is still open: what tells, once a connection has
        been asked to close after its last write, that the write is out.
    """
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return isinstance(transport, FileDescriptor) and bool(transport.connected)


def unreadBytes(channel) -> bytes:
    """
    @return: what the twisted.web C{channel} (an C{HTTPChannel}) has read
        from its connection but not parsed as part of a request: its line
        buffer and its buffered data.  A channel that keeps neither (a
        double in a test) has none.
    """
    return getattr(channel, "_buffer", b"") + b"".join(getattr(channel, "_dataBuffer", []))


def requestLost(request) -> bool:
    """
    @return: whether the connection of the twisted.web C{request} was lost
        (C{finish} would then raise).
    """
    return request._disconnected


def forgetExitSignal(reactor, number: int) -> None:
    """
    twistd (and twist) end the process by raising again the signal the
    reactor recorded when it stopped on it (C{reactor._exitSignal}): forget
    it when it is C{number}, so that the process exits with status 0.
    """
    if getattr(reactor, "_exitSignal", None) == number:
        reactor._exitSignal = None


_exitStatus: list[int] = []


def stopWithStatus(reactor, status: int = 1) -> None:
    """
    Stop the reactor of a gateway that could not start (Redis unreachable,
    a listener refused after start-up), so that the process ends with
    C{status}, not the 0 twistd ends with whatever stopped its reactor:
    what C{systemd}'s C{Restart=on-failure}, a supervisor or a shell
    script go by.

    The status is set at the interpreter's exit, once twistd is done (its
    pidfile removed, its log closed), after standard output and error
    are flushed; exit handlers registered before this call do not run.
    """
    if not _exitStatus:
        atexit.register(_exit)
    _exitStatus[:] = [status]
    if reactor.running:
        reactor.stop()


def _exit() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exitStatus[0])


def observePortLog(port, observer) -> None:
    """
    Send what a listening TCP C{port} logs (among it, each connection it
    cannot accept: EMFILE, ENFILE) to C{observer} instead of the global log:
    the port logs through its private C{_logger}, which is replaced here by
    one of the same namespace.  A port without one is left as it is.
    """
    logger = getattr(port, "_logger", None)
    if isinstance(logger, Logger):
        port._logger = Logger(namespace=logger.namespace, observer=observer)


def listenFailure(error: BaseException) -> str:
    """
    @return: the operating system's reason a listener could not be bound
        (a L{twisted.internet.error.CannotListenError} carries it as
        C{socketError}), else the error itself, as one line.
    """
    return str(getattr(error, "socketError", None) or error)


def hostAndPort(address) -> tuple[object, object]:
    """
    @return: the host and port of a listening C{address} for the log: a
        Unix socket's address has neither, and is shown whole as the host.
    """
    return getattr(address, "host", address), getattr(address, "port", "")


def tlsContextFactory(endpoint):
    """
    @return: the TLS context factory of an C{ssl:} server endpoint (from
        C{serverFromString}), or L{None} for an endpoint of another kind.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

    if isinstance(endpoint, SSL4ServerEndpoint):
        return endpoint._sslContextFactory
    return None


def leaveSharedSocket(port) -> None:
    """
    A Unix listening C{port} that adopted a socket other processes listen on
    too would, when it stops, shut the socket down (for every process) and
    remove its path: make it only close its own descriptor (the supervisor
    that bound the socket removes the path).  A port of another kind is left
    as it is.
    """
    from twisted.internet import unix

    if isinstance(port, unix.Port):
        port._shouldShutdown = False
        path = port._bindPath
        if isinstance(path, str):
            path = path.encode("utf-8", "surrogateescape")
        # Not in the filesystem namespace: connectionLost unlinks nothing.
        port._bindPath = b"\0" + path
