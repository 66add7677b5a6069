"""
The edge's contracts: passive health (what connects report to), what the
transports use of the front door, and the operator's surface the admin API
drives.

Part of L{gateway.interfaces}, which re-exports every name.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IAccessLog",
    "IConnectObserver",
    "IEdge",
    "IOperator",
    "IPollRequest",
]


class IConnectObserver(Interface):
    """
    Passive health: told how each connect (and handshake) to a backend went,
    by the tunnels and the session links alike.
    """

    def connectFailed(pool, backend, reason):
        """
        A connect or handshake to C{backend} of C{pool} failed.

        @param reason: one line saying why.
        @type reason: L{str}
        """

    def connectSucceeded(pool, backend):
        """
        A handshake with C{backend} of C{pool} succeeded.
        """

    def answered(pool, backend, status):
        """
        C{backend} of C{pool} answered a handshake with the HTTP C{status}
        (101, or a refusal passed on to its client): it is serving, unless
        the pool observes layer 7 (C{observe = "layer7"}) and C{status} is
        a 5xx, which then counts as a failure.

        @type status: L{int}
        """


class IAccessLog(Interface):
    """
    Where the end of each client connection or session is reported: the
    tunnels and the session registry each give one record per end
    (L{gateway.edge.accesslog}).  Called once per end, never per message.
    """

    def connectionEnded(record):
        """
        A tunnel or a session has ended.

        @param record: what to log of it: a L{dict} of JSON values (see
            docs/operations.md, "Access log", for the fields).
        """


class IEdge(Interface):
    """
    What the client-facing transports (the transparent tunnel, long-polling,
    the session WebSocket) use of the gateway's front door,
    L{gateway.site.GatewayFactory}: its settings, its clock, routing and the
    session layer.
    """

    reactor = Attribute("Provides L{IReactorTime} (and L{IReactorTCP} for backend connects).")
    config = Attribute("The L{gateway.config.GatewayConfig} in force.")
    sessionMap = Attribute("The node's L{ISessionMap} (affinity records).")
    trustedProxies = Attribute(
        "The L{gateway.wire.forwarded.TrustedProxies} whose forwarding headers are believed."
    )
    health = Attribute("The L{IConnectObserver} that backend connects report to.")
    accessLog = Attribute("The L{IAccessLog} each tunnel reports its end to.")
    sessions = Attribute(
        "The node's L{gateway.sessions.registry.SessionRegistry}: transports open, find "
        "and resume sessions through it."
    )
    clientErrors = Attribute("How many requests were refused as malformed; transports add theirs.")
    metrics = Attribute("The node's L{gateway.interfaces.IMetrics}: what the transports record to.")
    origins = Attribute(
        "The L{gateway.backends.routing.RouteOrigins} every upgrade and long-polling request's "
        "C{Origin} is checked against."
    )

    def peerHost(transport):
        """
        @return: the IP address of the peer of C{transport} (L{str}), or
            C{"unknown"}.
        """

    def secure(transport):
        """
        @return: whether C{transport} is TLS.
        """

    def routeRequest(request):
        """
        @param request: a twisted.web request on a routed path.
        @return: where a session opened by C{request} goes
            (L{gateway.site.Route}).
        """


class IOperator(Interface):
    """
    The operator's surface of one gateway node, as the admin API drives it
    (L{gateway.service.GatewayService} provides it).
    """

    reactor = Attribute("Provides L{IReactorTime} (and what the admin listener needs).")
    config = Attribute("The L{gateway.config.GatewayConfig} in force (C{config.admin}: the token).")
    pools = Attribute("The pools (L{gateway.backends.pool.Pool}) by name.")
    sessions = Attribute("The node's L{gateway.sessions.session.SessionRegistry}.")
    mover = Attribute("The node's L{gateway.sessions.mover.SessionMover}.")
    engines = Attribute("The node's Socket.IO sessions (L{gateway.engineio.EngineIOEdge}): its "
                        "C{sessions} by id, each an L{IEngineView}.")
    exitOnListenFailure = Attribute("Whether a listener that cannot be bound stops the reactor.")
    metrics = Attribute("The node's L{gateway.metrics.Metrics} (its C{registry} is served at /metrics).")

    def pool(name):
        """
        @return: the pool called C{name}.
        @raise gateway.backends.pool.UnknownPool: when there is none.
        """

    def drainBackend(poolName, name):
        """
        Give a backend no new connections, leaving those it has.

        @return: the backend.
        """

    def enableBackend(poolName, name):
        """
        Give a drained backend new connections again.

        @return: the backend.
        """

    def setWeight(poolName, name, weight):
        """
        Change a backend's weight until the next reload or restart.

        @return: the backend.
        """

    def reload():
        """
        Read the configuration file again and apply what can be applied.

        @return: what was done (L{gateway.service.Reloaded}).
        @raise gateway.errors.NothingToReload: started without a file.
        @raise gateway.errors.ConfigError: the file is wrong; nothing changed.
        """


class IPollRequest(Interface):
    """
    What the long-polling front end uses of a request: a twisted.web
    C{Request} has it all under these names, and so has the lean request
    the gateway's channel makes for long-polling
    (L{gateway.edge.exchange.LeanRequest}).
    """

    method = Attribute("The request method (bytes).")
    path = Attribute("The path of the request target, without its query (bytes).")
    content = Attribute("The body, as a file opened for reading.")
    transport = Attribute("The connection's transport.")
    finished = Attribute("Whether the answer has been written.")

    def isSecure():
        """
        @return: whether the connection is TLS.
        """

    def setResponseCode(code, message=None):
        """
        Set the answer's status.
        """

    def setHeader(name, value):
        """
        Set a response header, replacing any of the same name.
        """

    def write(data):
        """
        Add C{data} to the answer's body.
        """

    def finish():
        """
        End the answer.
        """

    def notifyFinish():
        """
        @return: L{Deferred} firing once the answer is written, failing if
            the connection is lost first.
        """
