"""
The gateway as a Twisted service, and the composition root: it builds the
pools, their health monitors and passive health, the session map and the
session registry (with the cluster when the map shares sessions), the front
door (L{gateway.site.GatewayFactory}), the session mover and the admin API,
hands each part the objects it needs, and starts and stops them together
with the listeners and the keep-alive sweep.

L{GatewayService} is also the node's operator surface
(L{gateway.interfaces.IOperator}): drain, enable, weights and reload, for the
admin API and SIGHUP.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from typing import Callable

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .collector import CollectAfterDrops, tuneCollector
from .config import GatewayConfig, PoolConfig, restartNeeded
from .errors import ConfigError, NothingToReload
from .interfaces import IMeasured, IOperator, ISessionCluster
from .metrics import LoopLag, Metrics
from .metrics.observers import CountingObserver, TimedHealthCheck
from .metrics.scrape import MetricsService, StateCollector
from .tcp import forgetExitSignal, hostAndPort, listenFailure, stopWithStatus
from .wire.forwarded import TrustedProxies
from .edge.accesslog import AccessLog, NoAccessLog
from .edge.listeners import ProxyHeaders, parseEndpoint
from .backends.health import HealthMonitor, PassiveHealth, makeHealthCheck
from .backends.pool import Backend, Pool, UnknownPool
from .dropins import findBalancerFactory, findSessionMapFactory
from .backends.routing import Router, parseKeySpec
from .sessions.mover import SessionMover
from .sessions.local import SingleNode
from .sessions.opener import SessionOpener
from .sessions.registry import SessionRegistry
from .site import GatewayFactory

__all__ = [
    "GatewayService",
    "DEMO_BACKENDS",
    "STOP_MARGIN",
    "Reloaded",
    "NothingToReload",
]

#: How many echo backends C{--demo} starts.
DEMO_BACKENDS = 3

#: Seconds a stop may take past C{timeouts.shutdown} (which bounds the close
#: handshakes) for aborting what is left and releasing the session map; a
#: stop still unfinished then is given up on.
STOP_MARGIN = 1.0


@dataclass(frozen=True)
class Reloaded:
    """
    What a reload did.

    @ivar changes: one line per change applied.
    @ivar restartNeeded: the keys whose new values wait for a restart.
    """

    changes: tuple[str, ...]
    restartNeeded: tuple[str, ...]


@implementer(IOperator)
class GatewayService(MultiService):
    """
    One gateway node.

    Construction checks everything that can be checked without touching the
    network (balancer and session-map names, key specs, endpoint strings) and
    raises L{ConfigError}; listening happens in C{startService}.

    @ivar pools: pools by name.
    @ivar monitors: the health monitor of each pool, by pool name.
    @ivar ports: the listening ports, once listening.
    """

    log = Logger()

    def __init__(self, config: GatewayConfig, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as defaultReactor

            reactor = defaultReactor
        self.reactor = reactor
        self.config = config
        #: The node's instruments and their registry (served at /metrics).
        self.metrics = Metrics()
        self.trustedProxies = TrustedProxies(config.trustedProxies)
        self.pools: dict[str, Pool] = {}
        self.monitors: dict[str, HealthMonitor] = {}
        for poolConfig in config.pools:
            self.addPool(poolConfig)
        self.router = Router([(r.prefix, self.pools[r.pool]) for r in config.routes])
        mapConfig = config.sessionMap
        self.sessionMap = findSessionMapFactory(mapConfig.type)(dict(mapConfig.options), reactor)
        self.health = CountingObserver(PassiveHealth(self.monitors), self.metrics)
        #: Opens sessions' backend links: new ones, takeovers, failovers, moves.
        self.opener = SessionOpener(reactor, config, self.pools, self.sessionMap, self.trustedProxies,
                                    self.health)
        cluster: Callable[[SessionRegistry], ISessionCluster] = SingleNode
        if self.sessionMap.shared:
            # Several nodes share sessions through this map (Redis).
            from .cluster.node import Cluster

            def cluster(registry: SessionRegistry) -> ISessionCluster:
                return Cluster(registry, self.sessionMap, reactor, nodeTtl=self.sessionMap.nodeTtl,
                               node=self.sessionMap.nodeId, opener=self.opener)
        #: One JSON line per tunnel or session that ends, when configured.
        self.accessLog: AccessLog | NoAccessLog = NoAccessLog()
        if config.accessLog is not None:
            self.accessLog = AccessLog(config.accessLog.path, config.accessLog.maxBufferBytes, reactor)
        self.sessions = SessionRegistry(config.session, reactor, self.sessionMap, opener=self.opener,
                                        cluster=cluster, accessLog=self.accessLog, metrics=self.metrics)
        if IMeasured.providedBy(self.sessionMap):
            self.sessionMap.measureWith(self.metrics)
        engines = None
        if self.sessionMap.shared:
            from .cluster.engines import SharedEngines

            engines = SharedEngines(self.sessions.cluster)
        self.factory = GatewayFactory(
            config=config, router=self.router, pools=self.pools, sessions=self.sessions,
            sessionMap=self.sessionMap, trustedProxies=self.trustedProxies, health=self.health,
            reactor=reactor, accessLog=self.accessLog, metrics=self.metrics, engines=engines,
        )
        #: The node's Socket.IO sessions (the admin API lists them).
        self.engines = self.factory.engineio
        self.metrics.registry.register(StateCollector(
            pools=self.pools, sessions=self.sessions, edge=self.factory, traffic=self.metrics.traffic,
            config=config.session))
        LoopLag(reactor, self.metrics.lagSampled).setServiceParent(self)
        self.proxied = ProxyHeaders(TrustedProxies(config.proxyProtocolFrom), config.timeouts.handshake,
                                     self.factory.dropped.dropped)
        self.endpoints = [
            (description, parseEndpoint(reactor, "listen", description, backlog=True, proxied=self.proxied,
                                         mayProxy=True))
            for description in config.listen
        ]
        self.ports: list = []
        self._listening: Deferred | None = None
        self._demoPorts: list = []
        self._sweeper: LoopingCall | None = None
        self._collector: CollectAfterDrops | None = None
        self._listenings: list | None = None
        #: Set by C{twistd gateway}: a listener that cannot be bound ends the
        #: process with one line.
        self.exitOnListenFailure = False
        #: Set by C{twistd gateway}: the process's garbage collector is set
        #: up for a long-running gateway when it starts (L{tuneCollector}).
        self.tunesCollector = False
        #: Set by C{twistd gateway}: SIGHUP reloads the configuration (when
        #: there is a L{configLoader}), and a SIGTERM after which the gateway
        #: stopped within its deadline ends the process with status 0.
        self.processSignals = False
        #: Reads the configuration again for L{reload} (the file and flags the
        #: gateway was started with); L{None} without a file.
        self.configLoader: Callable[[], GatewayConfig] | None = None
        #: Whether the last stop finished within its deadline (L{None} before).
        self.stoppedCleanly: bool | None = None
        #: The worker number under --workers (env TXGATEWAY_WORKER); else None.
        self.worker: int | None = None
        self._hangupInstalled = False
        self._previousHangup = None
        #: Moves sessions off draining backends and towards an even spread.
        self.mover = SessionMover(self.pools, self.sessions, reactor)
        self.mover.setServiceParent(self)
        self.admin = None
        if config.admin is not None:
            from .admin import AdminService

            self.admin = AdminService(self, parseEndpoint(reactor, "admin.listen", config.admin.listen))
            self.admin.setServiceParent(self)
        self.metricsListener = None
        if config.metrics is not None:
            self.metricsListener = MetricsService(
                self, parseEndpoint(reactor, "metrics.listen", config.metrics.listen),
                config.metrics.listen, self.metrics.registry)
            self.metricsListener.setServiceParent(self)

    def addPool(self, poolConfig: PoolConfig, backends: list[Backend] | None = None) -> Pool:
        """
        Build a pool (and its health monitor) from its configuration.

        @raise ConfigError: for an unknown balancer or a bad affinity spec.
        """
        if backends is None:
            backends = [Backend.fromConfig(b) for b in poolConfig.backends]
        balancer = findBalancerFactory(poolConfig.balance)()
        pool = Pool(
            poolConfig.name,
            backends,
            balancer,
            affinity=poolConfig.affinity,
            affinityTtl=poolConfig.affinityTtl,
            connectAttempts=poolConfig.connectAttempts,
            keySpec=parseKeySpec(poolConfig.affinity) if poolConfig.affinity else None,
        )
        _sessionSettings(pool, poolConfig)
        self.pools[pool.name] = pool
        check = poolConfig.health and TimedHealthCheck(makeHealthCheck(poolConfig.health, self.reactor),
                                                       pool.name, self.metrics, self.reactor)
        monitor = HealthMonitor(pool, poolConfig.health, self.reactor, poolConfig.failTimeout,
                                poolConfig.observe == "layer7", healthCheck=check)
        self.monitors[pool.name] = monitor
        monitor.setServiceParent(self)
        return pool

    def privilegedStartService(self) -> None:
        """
        Bind the listeners (before twistd drops privileges).

        @raise SystemExit: under twistd (L{exitOnListenFailure}), with one
            line, when a listener cannot be bound.
        """
        super().privilegedStartService()
        self._listen()

    def _listen(self) -> None:
        if self._listenings is not None:
            return
        self._listenings = [(d, e.listen(self.factory)) for d, e in self.endpoints]
        if self.exitOnListenFailure:
            for description, listening in self._listenings:
                if listening.called and isinstance(listening.result, Failure):
                    why = listenFailure(listening.result.value)
                    listening.addErrback(lambda f: None)
                    raise SystemExit(f"gateway: cannot listen on {description}: {why}")

    def startService(self) -> None:
        """
        Start the health monitors, the demo backends when asked for, the
        listeners (unless already bound) and the keep-alive sweep.
        """
        if self.tunesCollector:
            tuneCollector()
            self._collector = CollectAfterDrops(self.reactor, lambda: self.factory.openConnections)
            self._collector.start()
        super().startService()
        self._listen()
        self._installHangup()
        self._listening = Deferred.fromCoroutine(self._start())
        self._listening.addErrback(self._startFailed)

    async def _start(self):
        # A networked map connects now, so that a wrong address or password
        # stops the gateway with one line instead of failing every client
        # later.
        await self.sessionMap.start()
        await self.sessions.cluster.start()
        if self.config.demo and not self.config.pools:
            await self._startDemo()
        timeouts = self.config.timeouts
        session = self.config.session
        tick = max(0.05, min(t for t in (timeouts.pingInterval, timeouts.pingTimeout, timeouts.idle,
                                         session.heartbeat, session.heartbeatTimeout) if t) / 4)
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        self._sweeper.start(tick, now=False).addErrback(
            lambda f: self.log.failure("keep-alive sweep failed", f)
        )
        for description, listening in self._listenings:
            try:
                port = await listening
            except Exception as e:
                raise ConfigError(f"cannot listen on {description}: {listenFailure(e)}") from None
            self.ports.append(port)
            self.factory.dropped.watch(port)
            host, portNumber = hostAndPort(port.getHost())
            self.log.info(
                "gateway listening on {host}:{port} ({description})",
                host=host, port=portNumber, description=description,
            )
        return self.ports

    def _startFailed(self, failure: Failure) -> Failure:
        self.log.critical("gateway: {error}", error=failure.getErrorMessage())
        if self.exitOnListenFailure:
            stopWithStatus(self.reactor)
        return failure

    def whenListening(self) -> Deferred:
        """
        @return: L{Deferred} firing with the listening ports once every
            listener is up, or failing with L{ConfigError} if one cannot be.
        """
        if self._listening is None:
            raise RuntimeError("the service has not been started")
        d: Deferred = Deferred()

        def relay(result):
            if isinstance(result, Failure):
                d.errback(result)
                return None
            d.callback(result)
            return result

        self._listening.addBoth(relay)
        return d

    async def _startDemo(self) -> None:
        from .demo import EchoServerFactory, listenEcho

        backends = []
        for i in range(1, DEMO_BACKENDS + 1):
            factory = EchoServerFactory(f"backend-{i}", prefix=f"backend-{i}: ".encode(),
                                        logConnections=True)
            port = await listenEcho(self.reactor, factory)
            self._demoPorts.append(port)
            backends.append(Backend(f"backend-{i}", "127.0.0.1", port.getHost().port))
            self.log.info("demo echo backend {name} on 127.0.0.1:{port}", name=f"backend-{i}",
                          port=port.getHost().port)
        pool = self.addPool(PoolConfig(name="demo", backends=()), backends)
        self.router = Router([("/", pool)])
        self.factory.router = self.router

    def _sweep(self) -> None:
        timeouts = self.config.timeouts
        now = self.reactor.seconds()
        for tunnel in list(self.factory.tunnels):
            if tunnel.spliced and not tunnel.closed:
                tunnel.sweep(now, timeouts)
        self.sessions.sweep()
        self._pruneRetired()

    def stopService(self) -> Deferred:
        """
        Stop listening, close every tunnel with 1001 at a frame boundary
        and every Socket.IO session (a close packet to a held poll, 1001 to
        a WebSocket), aborting what is still open after
        C{timeouts.shutdown}; stop the health monitors and release the
        session map; give up waiting
        L{STOP_MARGIN} seconds after that (see L{stoppedCleanly}).
        """
        self._removeHangup()
        return self._stopWithin(Deferred.fromCoroutine(self._stop()))

    def stopAccepting(self) -> Deferred:
        """
        Stop listening, leaving open connections and sessions be (a worker
        being replaced drains so): fires once no listener is left.
        """
        ports, self.ports = self.ports, []
        return gatherResults([p.stopListening() for p in ports])

    async def _stop(self) -> None:
        await self.stopAccepting()
        self.factory.dropped.stop()
        deadline = self.config.timeouts.shutdown
        # With several nodes, say this node is gone first, so that the
        # clients told to resume elsewhere find their sessions ready to take
        # over.
        await self.sessions.cluster.stop()
        self.sessions.shutDown()
        engines = self.engines.shutDown(deadline)
        tunnels = list(self.factory.tunnels)
        if tunnels:
            self.log.info("closing {n} tunnels", n=len(tunnels))
        await DeferredList([engines, *[t.shutDown(deadline) for t in tunnels]])
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        if self._collector is not None:
            self._collector.stop()
        await super().stopService()
        await self.accessLog.stop()
        await self.sessionMap.close()
        await gatherResults([p.stopListening() for p in self._demoPorts])
        for port in self._demoPorts:
            for proto in list(port.factory.connections):
                proto.dropConnection(abort=True)
        self._demoPorts = []


    def _stopWithin(self, stopping: Deferred) -> Deferred:
        """
        @return: L{Deferred} firing when C{stopping} does, or
            C{timeouts.shutdown} + L{STOP_MARGIN} seconds from now, whichever
            comes first.
        """
        bound = self.config.timeouts.shutdown + STOP_MARGIN
        done: Deferred = Deferred()

        def late() -> None:
            self.stoppedCleanly = False
            self.log.error(
                "gateway: stopping took more than {bound:g}s; not waiting for the rest",
                bound=bound,
            )
            done.callback(None)

        timer = self.reactor.callLater(bound, late)

        def finished(result: object) -> None:
            if done.called:
                return None
            timer.cancel()
            if isinstance(result, Failure):
                self.stoppedCleanly = False
                done.errback(result)
                return None
            self.stoppedCleanly = True
            if self.processSignals:
                self._exitZeroAfterTerm()
            done.callback(None)
            return None

        stopping.addBoth(finished)
        return done

    def _exitZeroAfterTerm(self) -> None:
        """
        twistd (and twist) end the process by raising again the signal the
        reactor recorded when it stopped on it (C{reactor._exitSignal}).  A
        SIGTERM answered by a stop that finished in time is an orderly end:
        forget it, so that the process exits with status 0.
        """
        forgetExitSignal(self.reactor, signal.SIGTERM)

    # -- SIGHUP

    def _installHangup(self) -> None:
        """
        Under twistd with a configuration file: reload it on SIGHUP.
        """
        if not self.processSignals or self.configLoader is None or self._hangupInstalled:
            return
        self._previousHangup = signal.signal(signal.SIGHUP, self._hangup)
        self._hangupInstalled = True

    def _removeHangup(self) -> None:
        """
        Put back the SIGHUP handler there was before L{_installHangup}.
        """
        if self._hangupInstalled:
            signal.signal(signal.SIGHUP, self._previousHangup or signal.SIG_DFL)
            self._hangupInstalled = False
            self._previousHangup = None

    def _hangup(self, number: int, frame: object) -> None:
        """
        The SIGHUP handler: reload from the reactor's thread.
        """
        self.reactor.callFromThread(self._reloadOnSignal)

    def _reloadOnSignal(self) -> None:
        self.log.info("SIGHUP: reloading the configuration")
        try:
            self.reload()
        except ConfigError:
            pass  # reload() logged why, in one line

    # -- the operator's surface (the admin API, SIGHUP)

    def pool(self, name: str) -> Pool:
        """
        @return: the pool called C{name}.
        @raise UnknownPool: when there is none.
        """
        pool = self.pools.get(name)
        if pool is None:
            raise UnknownPool(f"no pool {name!r}")
        return pool

    def drainBackend(self, poolName: str, name: str) -> Backend:
        """
        Give a backend no new connections, leaving those it has (the
        session mover then moves its sessions, as the pool's C{drain} says).
        Draining a draining backend changes nothing.

        @raise UnknownPool: no such pool.
        @raise UnknownBackend: no such backend in it.
        """
        pool = self.pool(poolName)
        backend = pool.get(name)
        if backend.drain():
            self.log.info("backend {backend} of pool {pool} is draining", backend=name, pool=poolName)
        return backend

    def enableBackend(self, poolName: str, name: str) -> Backend:
        """
        Give a drained backend new connections again.

        @raise UnknownPool: no such pool.
        @raise UnknownBackend: no such backend in it.
        @raise BackendRetired: it was removed from the file.
        """
        backend = self.pool(poolName).get(name)
        if backend.enable():
            self.log.info("backend {backend} of pool {pool} is enabled", backend=name, pool=poolName)
        return backend

    def setWeight(self, poolName: str, name: str, weight: object) -> Backend:
        """
        Change a backend's weight until the next reload or restart.

        @raise UnknownPool: no such pool.
        @raise UnknownBackend: no such backend in it.
        @raise InvalidWeight: unless C{weight} is an integer from 1 to
            L{gateway.backends.pool.MAX_WEIGHT}.
        """
        backend = self.pool(poolName).get(name)
        was = backend.setWeight(weight)
        if was != backend.weight:
            self.log.info(
                "backend {backend} of pool {pool}: weight {was} -> {weight}",
                backend=name, pool=poolName, was=was, weight=backend.weight,
            )
        return backend

    def reload(self) -> Reloaded:
        """
        Read the configuration file again and apply what can be applied
        while running: backends of existing pools added, removed (drained,
        then taken out once their last connection ends) and given their new
        C{weight} and C{max_connections}; the pools' C{balance},
        C{affinity_ttl}, C{fail_timeout} and C{connect_attempts}; the admin
        token.  Anything else waits for a restart (L{Reloaded.restartNeeded}).

        @raise NothingToReload: the gateway was started without a file.
        @raise ConfigError: the file (or something the service checks) is
            wrong; nothing was changed, and one line saying why was logged.
        """
        if self.configLoader is None:
            raise NothingToReload("nothing to reload: the gateway was started without --config")
        try:
            new = self.configLoader()
            self._checkReload(new)
        except ConfigError as error:
            self.log.error("gateway: reload failed, nothing changed: {error}", error=error)
            raise
        changes: list[str] = []
        running = {p.name: p for p in self.config.pools}
        inForce = []
        for poolConfig in new.pools:
            old = running.get(poolConfig.name)
            pool = self.pools.get(poolConfig.name)
            if old is None or pool is None:
                continue  # a new pool waits for a restart
            inForce.append(replace(poolConfig, affinity=old.affinity, health=old.health))
            changes += self._reloadPool(pool, old, poolConfig)
        inForce += [p for p in self.config.pools if p.name not in {q.name for q in new.pools}]
        admin = self.config.admin
        if admin is not None and new.admin is not None and admin.listen == new.admin.listen:
            if admin.token != new.admin.token:
                changes.append("admin token changed")
            admin = new.admin
        later = restartNeeded(self.config, new)
        self.config = replace(self.config, pools=tuple(inForce), admin=admin)
        self._pruneRetired()
        self.log.info(
            "configuration reloaded from {source}: {changes}",
            source=new.source, changes="; ".join(changes) or "no change",
        )
        if later:
            self.log.warn(
                "reload: not applied until a restart: {keys}", keys=", ".join(later)
            )
        return Reloaded(tuple(changes), tuple(later))

    def _checkReload(self, new: GatewayConfig) -> None:
        """
        Check what the service checks when it is built, and that no kept
        backend name now points to another server.

        @raise ConfigError: naming the file and the reason.
        """
        for poolConfig in new.pools:
            findBalancerFactory(poolConfig.balance)
            pool = self.pools.get(poolConfig.name)
            if pool is not None:
                refused = pool.checkUpdate(poolConfig.backends)
                if refused is not None:
                    raise ConfigError(f"{new.source}: {refused}")
        findSessionMapFactory(new.sessionMap.type)
        for description in new.listen:
            parseEndpoint(self.reactor, "listen", description, backlog=True, mayProxy=True)
        if new.admin is not None:
            parseEndpoint(self.reactor, "admin.listen", new.admin.listen)
        if new.metrics is not None:
            parseEndpoint(self.reactor, "metrics.listen", new.metrics.listen)

    def _reloadPool(self, pool: Pool, old: PoolConfig, new: PoolConfig) -> list[str]:
        """
        Apply a pool's new backends and settings.

        @return: one line per change.
        """
        changes, _ = pool.update(new.backends)
        if old.balance != new.balance:
            pool.balancer = findBalancerFactory(new.balance)()
            changes.append(f"pool {pool.name}: balance {old.balance} -> {new.balance}")
        if old.affinityTtl != new.affinityTtl:
            pool.affinityTtl = new.affinityTtl
            changes.append(f"pool {pool.name}: affinity_ttl {old.affinityTtl:g} -> {new.affinityTtl:g}")
        if old.connectAttempts != new.connectAttempts:
            pool.connectAttempts = new.connectAttempts
            changes.append(
                f"pool {pool.name}: connect_attempts {old.connectAttempts} -> {new.connectAttempts}"
            )
        if old.failTimeout != new.failTimeout:
            self.monitors[pool.name].failTimeout = new.failTimeout
            changes.append(f"pool {pool.name}: fail_timeout {old.failTimeout:g} -> {new.failTimeout:g}")
        if old.observe != new.observe:
            self.monitors[pool.name].observeLayer7 = new.observe == "layer7"
            changes.append(f"pool {pool.name}: observe {old.observe} -> {new.observe}")
        for key, attribute in _SESSION_SETTINGS:
            was, now = getattr(old, attribute), getattr(new, attribute)
            if was != now:
                changes.append(f"pool {pool.name}: {key} {was:g} -> {now:g}" if isinstance(now, float)
                               else f"pool {pool.name}: {key} {was} -> {now}")
        _sessionSettings(pool, new)
        return changes

    def _pruneRetired(self) -> None:
        """
        Take out of their pools the backends removed from the file whose last
        connection has ended.
        """
        for pool in self.pools.values():
            for backend in pool.prune():
                monitor = self.monitors.get(pool.name)
                if monitor is not None:
                    monitor.forget(backend)
                self.log.info(
                    "backend {backend} of pool {pool} removed: its last connection ended",
                    backend=backend.name, pool=pool.name,
                )


#: A pool's session settings (file key, attribute of both L{PoolConfig} and
#: L{Pool}), all applied by a reload.
_SESSION_SETTINGS = (
    ("failover", "failover"),
    ("failover_window", "failoverWindow"),
    ("failover_timeout", "failoverTimeout"),
    ("drain", "drain"),
    ("drain_rate", "drainRate"),
    ("rebalance_rate", "rebalanceRate"),
)


def _sessionSettings(pool: Pool, config: PoolConfig) -> None:
    """
    Give C{pool} the session settings of C{config}.
    """
    for _, attribute in _SESSION_SETTINGS:
        setattr(pool, attribute, getattr(config, attribute))
