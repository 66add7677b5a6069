"""
The gateway's interfaces: its extension points, and the contracts between
its parts.

Each extension point is a zope.interface with a named factory interface, so
that built-in and third-party implementations are found the same way: as
drop-ins in the top-level C{plugins} package, looked up by name through
L{gateway.dropins}.

The contracts let a part use another without importing it: the transports
and the tunnel use the front door through L{IEdge}, connects report to
passive health through L{IConnectObserver}, and the admin API drives the
node through L{IOperator}.  The composition root, L{gateway.service},
builds the parts and hands each the objects it needs.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IBalancer",
    "IBalancerFactory",
    "ISessionMap",
    "ISessionMapFactory",
    "IHealthCheck",
    "IWebSocketOwner",
    "IPollingOwner",
    "IUpgradeOwner",
    "IConnectObserver",
    "IEdge",
    "IOperator",
]


class IBalancer(Interface):
    """
    Chooses which backend of a pool serves a new connection.

    A balancer instance belongs to one pool; it may keep state between calls
    (a round-robin position).  It must never choose a backend whose
    C{available()} is false, nor one in C{exclude}.
    """

    def choose(backends, key, exclude):
        """
        Pick a backend.

        @param backends: every backend of the pool, in configuration order,
            including those that are down or full (a hashing balancer needs
            the whole list to stay stable).
        @type backends: L{typing.Sequence} of L{gateway.backends.pool.Backend}
        @param key: the request's affinity key (client address, cookie,
            header or query value), or L{None} when the pool has none.
        @type key: L{bytes} or L{None}
        @param exclude: backends that already failed for this request.
        @type exclude: L{typing.Collection} of L{gateway.backends.pool.Backend}
        @return: the chosen backend, or L{None} when none is available.
        """


class IBalancerFactory(Interface):
    """
    A named maker of L{IBalancer}s, provided by a drop-in in C{plugins/}.
    """

    name = Attribute("The name used in configuration, e.g. C{'least_conn'}.")
    description = Attribute("One line describing the balancing policy.")

    def __call__():
        """
        @return: a new L{IBalancer} for one pool.
        """


class ISessionMap(Interface):
    """
    Where a gateway records which backend serves which affinity key, and
    which backend and node each session has.

    Every method returns a L{Deferred}; implementations backed by a network
    store must bound every call with a timeout and fail the Deferred rather
    than wait for ever, with L{gateway.errors.SessionMapUnavailable} (a
    L{GatewayError}) when the store cannot be used, logging each outage
    once themselves: callers fall back (a balancer's choice instead of a
    recorded affinity) without logging again.
    """

    shared = Attribute(
        "Whether several gateway nodes share sessions through this map.  A map "
        "that shares them also has C{sharedSessions(node, sessionTtl=, nodeTtl=)}, "
        "C{nodeId} and C{nodeTtl}, which L{gateway.cluster.node.Cluster} uses."
    )

    def start():
        """
        Connect, for a networked map (the service awaits this before
        listening, so that a wrong address or password stops the gateway
        with one line instead of failing every client later).

        @return: L{Deferred} firing once the map is usable (at once for a map
            with nothing to connect), or failing with
            L{gateway.errors.SessionMapUnavailable}.
        """

    def getAffinity(pool, key):
        """
        @param pool: the pool name.
        @type pool: L{str}
        @param key: the affinity key.
        @type key: L{bytes}
        @return: L{Deferred} firing with the recorded backend name (L{str})
            or L{None}.
        """

    def setAffinity(pool, key, backend, ttl):
        """
        Record (or refresh) that C{key} in C{pool} is served by C{backend}
        for C{ttl} seconds.

        @return: L{Deferred} firing with L{None}.
        """

    def forgetAffinity(pool, key):
        """
        Drop the record for C{key} in C{pool}, if any.

        @return: L{Deferred} firing with L{None}.
        """

    def getSession(sid):
        """
        @param sid: a session id.
        @return: L{Deferred} firing with the session's record (a JSON-able
            L{dict}: pool, backend, state, node, created, updated) or L{None}.
        """

    def putSession(sid, record, ttl):
        """
        Record (or replace) a session's record, kept C{ttl} seconds unless
        written again.

        @return: L{Deferred} firing with L{None}.
        """

    def forgetSession(sid):
        """
        Drop a session's record.

        @return: L{Deferred} firing with L{None}.
        """

    def close():
        """
        Release whatever the map holds (connections, timers).

        @return: L{Deferred} firing when done.
        """


class ISessionMapFactory(Interface):
    """
    A named maker of L{ISessionMap}s, provided by a drop-in in C{plugins/}.
    """

    name = Attribute("The name used in configuration, e.g. C{'memory'}.")
    description = Attribute("One line describing the store.")

    def __call__(options, reactor):
        """
        @param options: the C{[session_map]} table of the configuration,
            less its C{type} key.
        @type options: L{typing.Mapping}
        @param reactor: provides L{IReactorTime} (and, for networked maps,
            L{IReactorTCP}).
        @return: an L{ISessionMap}.
        @raise gateway.errors.ConfigError: for bad options.
        """


class IHealthCheck(Interface):
    """
    An active probe of one backend.
    """

    def check(backend):
        """
        @param backend: the backend to probe.
        @type backend: L{gateway.backends.pool.Backend}
        @return: L{Deferred} that fires with L{None} when the backend is
            healthy and fails with L{gateway.errors.HealthCheckFailed}
            otherwise.
        """


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
    sessions = Attribute("The node's L{gateway.sessions.session.SessionRegistry}.")
    clientErrors = Attribute("How many requests were refused as malformed; transports add theirs.")

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

    def openSession(route):
        """
        Open a new session for C{route}.

        @return: a coroutine of the new L{gateway.sessions.session.Session}.
        @raise gateway.errors.NoBackendAvailable: when no backend can be had.
        @raise gateway.errors.LimitExceeded: at C{session.maxSessions}.
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
    exitOnListenFailure = Attribute("Whether a listener that cannot be bound stops the reactor.")

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
