"""
The gateway as a Twisted service: pools, health monitors, the session map,
the listeners and the keep-alive sweep, started and stopped together.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .config import GatewayConfig, PoolConfig
from .errors import ConfigError
from .forwarded import TrustedProxies
from .health import HealthMonitor
from .pool import Backend, Pool
from .registry import findBalancerFactory, findSessionMapFactory
from .routing import Router, parseKeySpec
from .session import SessionRegistry
from .site import GatewayFactory

__all__ = ["GatewayService", "DEMO_BACKENDS", "DEFAULT_BACKLOG", "withBacklog"]

#: How many echo backends C{--demo} starts.
DEMO_BACKENDS = 3


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
        self.trustedProxies = TrustedProxies(config.trustedProxies)
        self.pools: dict[str, Pool] = {}
        self.monitors: dict[str, HealthMonitor] = {}
        for poolConfig in config.pools:
            self.addPool(poolConfig)
        self.router = Router([(r.prefix, self.pools[r.pool]) for r in config.routes])
        mapConfig = config.sessionMap
        self.sessionMap = findSessionMapFactory(mapConfig.type)(dict(mapConfig.options), reactor)
        self.sessions = SessionRegistry(config.session, reactor, self.sessionMap)
        self.endpoints = []
        for description in config.listen:
            try:
                self.endpoints.append(
                    (description, serverFromString(reactor, withBacklog(description)))
                )
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"listen: {description!r} is not a usable endpoint: {e}") from None
        self.factory = GatewayFactory(self)
        self.ports: list = []
        self._listening: Deferred | None = None
        self._demoPorts: list = []
        self._sweeper: LoopingCall | None = None
        self._listenings: list | None = None
        #: Set by C{twistd gateway}: a listener that cannot be bound ends the
        #: process with one line.
        self.exitOnListenFailure = False

    def addPool(self, poolConfig: PoolConfig, backends: list[Backend] | None = None) -> Pool:
        """
        Build a pool (and its health monitor) from its configuration.

        @raise ConfigError: for an unknown balancer or a bad affinity spec.
        """
        if backends is None:
            backends = [
                Backend(
                    b.name, b.host, b.port, secure=b.secure, weight=b.weight,
                    maxConnections=b.maxConnections, url=b.url,
                )
                for b in poolConfig.backends
            ]
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
        self.pools[pool.name] = pool
        monitor = HealthMonitor(pool, poolConfig.health, self.reactor, poolConfig.failTimeout)
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
                result = getattr(listening, "result", None)
                if listening.called and isinstance(result, Failure):
                    listening.addErrback(lambda f: None)
                    raise SystemExit(f"gateway: cannot listen on {description}: {_why(result.value)}")

    def startService(self) -> None:
        """
        Start the health monitors, the demo backends when asked for, the
        listeners (unless already bound) and the keep-alive sweep.
        """
        super().startService()
        self._listen()
        self._listening = Deferred.fromCoroutine(self._start())
        self._listening.addErrback(self._startFailed)

    async def _start(self):
        startMap = getattr(self.sessionMap, "start", None)
        if startMap is not None:
            # A networked map connects now, so that a wrong address or
            # password stops the gateway with one line instead of failing
            # every client later.
            await startMap()
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
                raise ConfigError(f"cannot listen on {description}: {_why(e)}") from None
            self.ports.append(port)
            address = port.getHost()
            self.log.info(
                "gateway listening on {host}:{port} ({description})",
                host=getattr(address, "host", address),
                port=getattr(address, "port", ""),
                description=description,
            )
        return self.ports

    def _startFailed(self, failure: Failure) -> Failure:
        self.log.critical("gateway: {error}", error=failure.getErrorMessage())
        if self.exitOnListenFailure:
            self.reactor.stop()
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
            factory = EchoServerFactory(f"backend-{i}", prefix=f"backend-{i}: ".encode())
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

    def stopService(self) -> Deferred:
        """
        Stop listening, close every tunnel with 1001 at a frame boundary
        (aborting what is still open after C{timeouts.shutdown}), stop the
        health monitors and release the session map.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await gatherResults([p.stopListening() for p in self.ports])
        self.ports = []
        deadline = self.config.timeouts.shutdown
        self.sessions.shutDown()
        tunnels = list(self.factory.tunnels)
        if tunnels:
            self.log.info("closing {n} tunnels", n=len(tunnels))
        await DeferredList([t.shutDown(deadline) for t in tunnels])
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        await super().stopService()
        await self.sessionMap.close()
        await gatherResults([p.stopListening() for p in self._demoPorts])
        for port in self._demoPorts:
            for proto in list(port.factory.connections):
                proto.dropConnection(abort=True)
        self._demoPorts = []


def _why(error: BaseException) -> str:
    """
    The operating system's reason a listener could not be bound.
    """
    return str(getattr(error, "socketError", None) or error)


#: The listen backlog of TCP and TLS listeners that do not set one (nginx's
#: default; Twisted's own, 50, drops connections in a burst of handshakes).
DEFAULT_BACKLOG = 511


def withBacklog(description: str) -> str:
    """
    @return: the endpoint string C{description}, with C{backlog=511} added
        when it is a TCP or TLS listener that does not set a backlog.
    """
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description
