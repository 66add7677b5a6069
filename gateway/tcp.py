"""
TCP details every connection of the gateway and its clients shares.

Nagle's algorithm is turned off everywhere: both ends write small packets
(an ack, then a message) that must not wait for the peer's delayed ACK.
Autobahn tries to do this itself but sets the option before reading it from
its factory, so it never takes effect.
"""

from __future__ import annotations

from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

__all__ = ["noDelay", "NoDelayEndpoint"]


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
