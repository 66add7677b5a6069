"""
The contracts of an Engine.IO session (L{gateway.engineio}): the client
transport carrying it now, and its side facing the Socket.IO server.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IEngineTransport(Interface):
    """
    What carries an Engine.IO session to its client now: a long-polling
    session's held requests, or one WebSocket.
    """

    kind = Attribute('"polling" or "websocket".')

    def deliver(packets):
        """
        Send C{packets} (a list of L{gateway.engineio.packets.Packet}) to
        the client: over long-polling, as the answer to the held request
        (the session only delivers while one is held); over WebSocket, one
        frame each.
        """

    def closeTransport():
        """
        The session is over: end the connection (a WebSocket) or nothing (a
        poll's answer already carried the close).
        """


class IEngineUpstream(Interface):
    """
    An Engine.IO session's side facing its Socket.IO server.
    """

    def messageFromClient(data):
        """
        Hand a client's message (text or bytes) to the server, in order.
        """

    def closeUpstream(reason):
        """
        The session is over: close the server connection.
        """

    def pauseReading():
        """
        The client is not taking messages as fast as the server sends them:
        stop reading the server's.
        """

    def resumeReading():
        """
        Read the server's messages again.
        """
