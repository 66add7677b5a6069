"""
The contracts of an Engine.IO session (L{gateway.engineio}): the client
transport carrying it now, its side facing the Socket.IO server, how
sessions are found across nodes, and what the admin API and the metrics
read of one.
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

    def registerFlow(producer):
        """
        Have the push C{producer} (a client WebSocket's reading) paused
        while the server connection's write buffer is full.
        """


class IEngineCluster(Interface):
    """
    How an Engine.IO session is found from any node: the null strategy on
    one node, Redis (the session map's node channels) with several.
    """

    node = Attribute("This node's id.")
    sharesSessions = Attribute("Whether other nodes serve these sessions' requests.")
    heartbeat = Attribute("Seconds between two heartbeats of a node: how often a node's liveness"
                          " is renewed, so how often it is worth looking at again.")

    def own(sid, ttl):
        """
        Record this node as the holder of session C{sid} (L{Deferred}).
        """

    def owner(sid):
        """
        @return: L{Deferred} firing with the live node holding C{sid}, or
            L{None}.
        """

    def disown(sid):
        """
        Session C{sid} has ended (L{Deferred}).
        """

    def send(node, message):
        """
        Send C{message} (bytes) to C{node}'s listener (L{Deferred}).
        """

    def listen(listener):
        """
        Hand every message sent to this node to C{listener(message)}.
        """

    def deadOwners(owners):
        """
        Which sessions' nodes are dead: C{owners} maps session ids to the
        node said to hold each.  A node is dead for a session once its
        liveness has expired on the shard holding that session (what
        L{owner} checks), looked at with one call per shard whatever the
        number of sessions; a shard that cannot be asked says nothing, and
        none of its sessions' nodes is taken for dead.

        @return: L{Deferred} firing with the set of those session ids
            whose node is dead.
        """


class IEngineView(Interface):
    """
    What the admin API and the metrics read of an Engine.IO session to
    count and list the node's Socket.IO sessions
    (L{gateway.admin.countEngines}, L{gateway.metrics.scrape.StateCollector});
    read-only.
    """

    sid = Attribute("The session's id (the admin API shows its first characters only).")
    state = Attribute("Its L{gateway.engineio.engine.EngineState}.")
    kind = Attribute('The kind of the transport carrying it now: "polling" or "websocket".')
    upgrading = Attribute("Whether a WebSocket is upgrading it (it is still polling).")
    waiting = Attribute("Characters (bytes of binary messages) waiting for the client.")
    pool = Attribute("The name of the pool its Socket.IO server is in, or L{None}.")
    backend = Attribute("That server, a L{gateway.backends.pool.Backend}, or L{None}.")
    address = Attribute("The client's address (after trusted proxies' forwarding headers), or L{None}.")
    opened = Attribute("When it opened, in the seconds of the node's clock.")
