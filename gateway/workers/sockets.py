"""
The listening sockets the workers share.

The supervisor binds every listener itself (with Twisted's endpoint
parsers, so every endpoint string a single gateway accepts works, TLS and
Unix sockets included), never accepts on them (it stops reading at once),
and hands them down to each worker it starts as inherited file descriptors;
a worker adopts them (C{reactor.adoptStreamPort}, through
L{AdoptedStreamServerEndpoint}) and accepts on them.  Every worker's accept
takes connections from the one kernel queue of each socket.

This was chosen over C{SO_REUSEPORT} (a socket of its own in each worker)
because the sockets outlive the workers: while one is restarted, or replaced
by a rolling restart, the port stays bound and listening in the supervisor,
so a connection that arrives meanwhile waits in the queue for another worker
instead of being refused, and nothing that was queued is lost (with
C{SO_REUSEPORT}, the connections queued on a closing socket are reset).  It
also works for Unix sockets, which C{SO_REUSEPORT} does not balance.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import ServerFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from ..tcp import leaveSharedSocket, tlsContextFactory

__all__ = ["SharedSocket", "bindShared", "adoptedEndpoint", "FAMILIES"]

#: The address families a listener may have, by name (for the worker's
#: set-up) and back.
FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}


class _NoAccept(ServerFactory):
    """
    The factory of the supervisor's own ports, which never accept (they stop
    reading as soon as they are bound); should one accept all the same, the
    connection is closed.
    """

    noisy = False

    def logPrefix(self) -> str:
        """
        How the port names itself in the log ("... starting on 8080").
        """
        return "gateway listener, shared with the workers,"

    def buildProtocol(self, addr):
        """
        Refuse: the workers accept, never the supervisor.
        """
        return None


@dataclass
class SharedSocket:
    """
    One listener bound by the supervisor.

    @ivar description: the endpoint string, as configured.
    @ivar port: the listening port (not reading).
    @ivar family: its address family's name (a key of L{FAMILIES}).
    """

    description: str
    port: Any
    family: str

    def fileno(self) -> int:
        """
        @return: the listening socket's file descriptor, to hand down.
        """
        return self.port.fileno()


def _familyOf(address) -> str:
    if isinstance(address, IPv6Address):
        return "inet6"
    if isinstance(address, IPv4Address):
        return "inet"
    if isinstance(address, UNIXAddress):
        return "unix"
    raise ValueError(f"cannot hand down a listener on {address!r}")


async def bindShared(reactor, description: str, endpoint: IStreamServerEndpoint) -> SharedSocket:
    """
    Bind C{endpoint} (parsed from C{description}) in this process, without
    accepting on it.

    @raise Exception: what the endpoint raises when it cannot listen.
    """
    port = await endpoint.listen(_NoAccept())
    port.stopReading()
    try:
        family = _familyOf(port.getHost())
    except ValueError:
        await port.stopListening()
        raise
    return SharedSocket(description, port, family)


@implementer(IStreamServerEndpoint)
class _AdoptedTLS:
    """
    An adopted listening socket whose connections are TLS, with the settings
    the C{ssl:} endpoint string gives.
    """

    def __init__(self, adopted: AdoptedStreamServerEndpoint, contextFactory) -> None:
        self._adopted = adopted
        self._contextFactory = contextFactory

    def listen(self, factory):
        """
        Accept on the adopted socket, each connection wrapped in TLS.
        """
        return self._adopted.listen(TLSMemoryBIOFactory(self._contextFactory, False, factory))


@implementer(IStreamServerEndpoint)
class _KeepPath:
    """
    An adopted Unix socket whose path outlives this worker's port.
    """

    def __init__(self, adopted: AdoptedStreamServerEndpoint) -> None:
        self._adopted = adopted

    def listen(self, factory):
        """
        Accept on the adopted socket; stopping leaves its path in place.
        """

        def adopted(port):
            leaveSharedSocket(port)
            return port

        return self._adopted.listen(factory).addCallback(adopted)


def adoptedEndpoint(reactor, fd: int, family: str, description: str) -> IStreamServerEndpoint:
    """
    @param fd: an inherited listening socket.
    @param family: its family's name (a key of L{FAMILIES}).
    @param description: the endpoint string it was bound from: an C{ssl:}
        one makes the connections TLS with the same key and certificate.
    @return: the endpoint that accepts on it.
    """
    adopted = AdoptedStreamServerEndpoint(reactor, fd, FAMILIES[family])
    if family == "unix":
        return _KeepPath(adopted)
    contextFactory = tlsContextFactory(serverFromString(reactor, description))
    if contextFactory is not None:
        return _AdoptedTLS(adopted, contextFactory)
    return adopted
