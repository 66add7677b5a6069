"""
The Python client's contracts: what its WebSocket, polling and upgrade
adapters report to (L{gateway.client}).

Part of L{gateway.interfaces}, which re-exports every name.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IWebSocketOwner",
    "IPollingOwner",
    "IUpgradeOwner",
]


class IWebSocketOwner(Interface):
    """
    What one WebSocket of the Python client (L{gateway.client._websocket})
    reports to: the session's connection driver, or a transport upgrade's
    probe until the driver takes the connection over.  Every method gets the
    connection it is about, so that an owner can ignore the events of a
    connection it has given up.  The connection's methods are synchronous,
    and so are these.
    """

    attempt = Attribute(
        "The number of the owner's current connection attempt (an L{int}): "
        "every new connection is tagged with it."
    )
    clock = Attribute("Provides L{IReactorTime}: the connection's own timers run on it.")
    closeTimeout = Attribute(
        "Seconds a closing handshake may take before the connection is dropped."
    )

    def webSocketConnected(connection):
        """
        The TCP (and TLS) connection is up; the opening handshake was sent.
        """

    def webSocketOpened(connection):
        """
        The opening handshake completed; C{connection.selected} is the
        subprotocol the gateway chose (L{None} for none).
        """

    def webSocketMessage(connection, payload, isBinary):
        """
        One message (a session packet) arrived.

        @type payload: L{bytes}
        @type isBinary: L{bool}
        """

    def webSocketActivity(connection):
        """
        Something other than a message (a ping) showed that the gateway is
        alive.
        """

    def webSocketClosed(connection, code, reason):
        """
        The connection is gone, with the close C{code} and C{reason}
        (L{None} when there was no close frame).
        """


class IPollingOwner(Interface):
    """
    What one long-polling link of the Python client
    (L{gateway.client._polling.PollingLink}) reports to.  A link that has
    failed or been stopped reports nothing more.
    """

    def pollAnswered(link, packets, opening):
        """
        The packets of one successful answer, in order (an empty answer
        too: it shows the gateway is alive).

        @param packets: session packets and
            L{gateway.client._polling.Closed} notices.
        @param opening: the answer is the one to the link's C{txgw=open}.
        """

    def pollRefused(link, refusal):
        """
        The gateway answered an HTTP error; the link has stopped.

        @type refusal: L{gateway.client._polling.Refused}
        """

    def pollLost(link, code, reason, error):
        """
        The link is gone: closed with the session close C{code}, failed
        (C{error}, a one-line description), or drained after the gateway's
        C{close} packet (all three L{None}).
        """

    def pollIdle(link):
        """
        The paused link has no request outstanding.
        """


class IUpgradeOwner(Interface):
    """
    What one attempt to move a session from long-polling to a WebSocket
    (L{gateway.client._upgrade.Upgrade}) reports to, once: either method.
    """

    def upgradeProbed(upgrade):
        """
        The probe came back: the upgrade's WebSocket is ready for the resume
        C{hello} (L{gateway.client._upgrade.Upgrade.handOver}).
        """

    def upgradeFailed(upgrade, why):
        """
        The upgrade did not work, for the one-line reason C{why}; it has
        closed its WebSocket.
        """
