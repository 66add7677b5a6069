"""
The pytest fixtures of the plugin (re-exported by L{gateway.testing}, which
the C{pytest11} entry point names): C{redis_server}, C{make_redis_server},
C{echo_backends}, C{make_gateway} and C{gateway_process}, with the objects
they hand to a test (L{EchoBackend}, L{RunningGateway}) and the
configuration L{gatewayConfig} builds for C{make_gateway}.

Nothing here imports the reactor at import time: pytest-twisted chooses it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from typing import Sequence

import pytest
import pytest_twisted

from ..config import BackendConfig, GatewayConfig, HealthCheckConfig, Limits, PoolConfig, RouteConfig, Timeouts
from ..demo import EchoServerFactory, listenEcho
from ._network import LOCALHOST
from ._processes import GatewayProcess, RedisServer, RunningProcess, projectEnvironment, startProcess

__all__ = [
    "EchoBackend",
    "RunningGateway",
    "echo_backends",
    "gatewayConfig",
    "gateway_process",
    "make_gateway",
    "make_redis_server",
    "redis_server",
]


@pytest.fixture(scope="session")
def redis_server():
    """
    A C{redis-server} for the whole test session (synchronous: async
    fixtures cannot be session-scoped).
    """
    directory = tempfile.mkdtemp(prefix="txgateway-redis-")
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def make_redis_server(tmp_path):
    """
    A factory of private C{redis-server}s (to kill and restart), all stopped
    at the end of the test.
    """
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(str(tmp_path))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@dataclass
class EchoBackend:
    """
    A running echo backend.
    """

    name: str
    port: int
    factory: EchoServerFactory
    listeningPort: object

    @property
    def url(self) -> str:
        """
        Its C{ws://} URL.
        """
        return f"ws://{LOCALHOST}:{self.port}"

    def config(self, **kwargs) -> BackendConfig:
        """
        @return: a L{BackendConfig} for it (C{weight}, C{maxConnections}...).
        """
        return BackendConfig(name=self.name, url=self.url, host=LOCALHOST, port=self.port,
                             secure=False, **kwargs)

    async def stop(self) -> None:
        """
        Stop listening and drop its connections.
        """
        stopping = self.listeningPort.stopListening()
        if stopping is not None:
            await stopping
        for proto in list(self.factory.connections):
            proto.dropConnection(abort=True)

    async def restart(self) -> None:
        """
        Listen again on the same port.
        """
        from twisted.internet import reactor

        self.listeningPort = await listenEcho(reactor, self.factory, port=self.port)


@pytest_twisted.async_yield_fixture
async def echo_backends():
    """
    C{await echo_backends(n, prefix=False, record=False)}: start C{n} echo
    servers (named backend-1...); with C{prefix}, replies start with the
    name; with C{record}, each keeps every message it received in
    C{factory.received}.
    """
    from twisted.internet import reactor

    started: list[EchoBackend] = []

    async def start(n: int = 1, prefix: bool = False, record: bool = False) -> list[EchoBackend]:
        out = []
        for _ in range(n):
            name = f"backend-{len(started) + 1}"
            factory = EchoServerFactory(name, prefix=f"{name}: ".encode() if prefix else b"",
                                        record=record)
            port = await listenEcho(reactor, factory)
            backend = EchoBackend(name, port.getHost().port, factory, port)
            started.append(backend)
            out.append(backend)
        return out

    yield start
    for backend in started:
        await backend.stop()


@dataclass
class RunningGateway:
    """
    A started L{gateway.service.GatewayService}.
    """

    service: object
    port: int

    @property
    def url(self) -> str:
        """
        Its C{ws://} URL.
        """
        return f"ws://{LOCALHOST}:{self.port}"

    @property
    def httpURL(self) -> str:
        """
        Its C{http://} URL.
        """
        return f"http://{LOCALHOST}:{self.port}"


def gatewayConfig(
    backends: Sequence[EchoBackend | BackendConfig] = (),
    *,
    pools: Sequence[PoolConfig] | None = None,
    routes: Sequence[RouteConfig] | None = None,
    balance: str = "least_conn",
    affinity: str | None = None,
    health: HealthCheckConfig | None = None,
    timeouts: Timeouts | None = None,
    limits: Limits | None = None,
    **kwargs,
) -> GatewayConfig:
    """
    A configuration listening on 127.0.0.1, port 0: one pool C{default} of
    C{backends} at C{/}, unless C{pools} and C{routes} are given.
    """
    if pools is None:
        configs = tuple(b.config() if isinstance(b, EchoBackend) else b for b in backends)
        pools = [PoolConfig(name="default", backends=configs, balance=balance,
                            affinity=affinity, health=health)]
    if routes is None:
        routes = [RouteConfig(prefix="/", pool=pools[0].name)] if pools else []
    return GatewayConfig(
        listen=(f"tcp:0:interface={LOCALHOST}",),
        pools=tuple(pools),
        routes=tuple(routes),
        timeouts=timeouts or Timeouts(),
        limits=limits or Limits(),
        **kwargs,
    )


@pytest_twisted.async_yield_fixture
async def make_gateway():
    """
    C{await make_gateway(backends, **options)} (see L{gatewayConfig}) or
    C{await make_gateway(config=GatewayConfig(...))}: start a gateway in
    this process on a free port; it is stopped at the end of the test.
    """
    from twisted.internet import reactor

    from ..service import GatewayService

    running: list[RunningGateway] = []

    async def make(backends=(), *, config: GatewayConfig | None = None, **kwargs) -> RunningGateway:
        if config is None:
            config = gatewayConfig(backends, **kwargs)
        elif not config.listen or config.listen == ("tcp:8080",):
            config = replace(config, listen=(f"tcp:0:interface={LOCALHOST}",))
        service = GatewayService(config, reactor)
        service.startService()
        ports = await service.whenListening()
        gateway = RunningGateway(service, ports[0].getHost().port)
        running.append(gateway)
        return gateway

    yield make
    for gateway in running:
        if gateway.service.running:
            await gateway.service.stopService()


@pytest_twisted.async_yield_fixture
async def gateway_process(tmp_path):
    """
    C{await gateway_process("--backend", url, ...)}: run C{twistd -n gateway}
    as a real process listening on a free port of 127.0.0.1 (unless the
    arguments name C{--listen}); killed at the end of the test if still
    running.
    """
    started: list[RunningProcess] = []

    async def start(*args: str, timeout: float = 30.0) -> GatewayProcess:
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "gateway"]
        if "--listen" not in args:
            command += ["--listen", f"tcp:0:interface={LOCALHOST}"]
        command += list(args)
        running = await startProcess(command, r"gateway listening on [^:]+:(\d+)",
                                     env=projectEnvironment(), cwd=str(tmp_path), timeout=timeout)
        started.append(running)
        process = GatewayProcess(running.protocol, running.transport, running.match,
                                 port=int(running.match.group(1)))
        return process

    yield start
    for process in started:
        process.signal("KILL")
        try:
            await process.wait(10)
        except Exception:
            pass
