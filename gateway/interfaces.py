"""
The gateway's extension points.

Each is a zope.interface with a named factory interface, so that built-in and
third-party implementations are found the same way: as drop-ins in the
top-level C{plugins} package, looked up by name through L{gateway.dropins}.
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
    recorded affinity) without logging again.  A networked map may also
    have C{start()}, returning a L{Deferred} that fires once it is connected
    (the service awaits it before listening).
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
