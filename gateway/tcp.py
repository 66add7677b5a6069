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
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

__all__ = ["noDelay", "NoDelayEndpoint", "writeNow"]


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
