"""
The extension points: balancers, session maps and health checks, each with
a named factory interface found as a drop-in (L{gateway.dropins}).

Part of L{gateway.interfaces}, which re-exports every name.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IBalancer",
    "IBalancerFactory",
    "IFixedPlacement",
    "ISessionMap",
    "ISessionMapFactory",
    "IHealthCheck",
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


class IFixedPlacement(Interface):
    """
    A marker for a balancer whose choice for a key is where that key
    belongs (rendezvous hashing): its idea of even is each key on its own
    backend, not equal connection counts, so the session mover does not
    rebalance its pools (L{gateway.sessions.mover.SessionMover}).  A
    balancer that does not provide it is rebalanced, which is what a
    balancer that counts connections wants.
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
