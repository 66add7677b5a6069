"""
The public surface: every public module declares C{__all__}, and every
name it lists exists.
"""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "gateway",
    "gateway.backends.link",
    "gateway.backends.balancers",
    "gateway.client",
    "gateway.config",
    "gateway.config.load",
    "gateway.config.model",
    "gateway.config.reader",
    "gateway.config.tables",
    "gateway.config.values",
    "gateway.demo",
    "gateway.edge.accesslog",
    "gateway.engineio",
    "gateway.engineio.views",
    "gateway.edge.proxy",
    "gateway.errors",
    "gateway.metrics",
    "gateway.metrics.lag",
    "gateway.metrics.observers",
    "gateway.metrics.scrape",
    "gateway.wire.forwarded",
    "gateway.wire.frames",
    "gateway.wire.proxyheader",
    "gateway.wire.wsclient",
    "gateway.backends.health",
    "gateway.wire.http1",
    "gateway.interfaces",
    "gateway.backends.pool",
    "gateway.wire.protocol",
    "gateway.dropins",
    "gateway.backends.routing",
    "gateway.service",
    "gateway.sessions.flow",
    "gateway.sessions.local",
    "gateway.sessions.mover",
    "gateway.sessions.opener",
    "gateway.sessions.registry",
    "gateway.sessions.session",
    "gateway.sessions.upstream",
    "gateway.cluster.expiry",
    "gateway.cluster.mirror",
    "gateway.cluster.node",
    "gateway.cluster.relay",
    "gateway.cluster.takeover",
    "gateway.sessions.states",
    "gateway.tcp",
    "gateway.sessionmap",
    "gateway.sessionmap.memory",
    "gateway.sessionmap.redis",
    "gateway.site",
    "gateway.tap",
    "gateway.testing",
    "gateway.transports.lean",
    "gateway.transports.tunnel",
    "gateway.transports.websocket",
    "gateway.web",
    "gateway.workers",
    "gateway.workers.admin",
    "gateway.workers.backoff",
    "gateway.workers.child",
    "gateway.workers.process",
    "gateway.workers.sockets",
    "gateway.workers.supervisor",
]


@pytest.mark.parametrize("name", MODULES)
def test_exports(name: str) -> None:
    """
    C{__all__} exists and names only things the module defines.
    """
    module = importlib.import_module(name)
    assert isinstance(module.__all__, (list, tuple))
    for export in module.__all__:
        assert hasattr(module, export), f"{name}.{export}"


def test_errorsRootedAtGatewayError() -> None:
    """
    Every exception in L{gateway.errors} derives from L{GatewayError}.
    """
    from gateway import errors

    for export in errors.__all__:
        assert issubclass(getattr(errors, export), errors.GatewayError)


def test_noReactorOrRedisImportedByPackage() -> None:
    """
    Importing the package's modules installs no reactor and does not import
    txredisapi (which would install one): twistd must choose the reactor.
    """
    import subprocess
    import sys

    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES if m != "gateway.testing")
        + "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported'\n"
        + "assert 'txredisapi' not in sys.modules, 'txredisapi imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


#: The names users import, by module: the README's client and fixtures, the
#: plugin interfaces a third-party balancer or session map implements, and
#: the configuration types the fixtures take.  Removing or renaming one of
#: these breaks users' code, so it takes a change to this list.
USER_FACING = {
    "gateway.client": {
        "SessionClient", "ClientState", "StateDetail", "SendBufferFull", "MessageTooLarge",
        "SessionClosed", "SessionLost",
    },
    "gateway.testing": {
        "RedisServer", "EchoBackend", "RunningGateway", "TestClient", "connectClient",
        "rawExchange", "redisServerBinary", "waitUntil", "startProcess", "RunningProcess",
        "GatewayProcess", "gatewayConfig", "CuttingRelay",
        # the pytest fixtures
        "redis_server", "make_redis_server", "echo_backends", "make_gateway", "gateway_process",
    },
    "gateway.interfaces": {
        "IBalancer", "IBalancerFactory", "ISessionMap", "ISessionMapFactory", "IHealthCheck",
    },
    "gateway.config": {
        "BackendConfig", "GatewayConfig", "HealthCheckConfig", "Limits", "PoolConfig",
        "RouteConfig", "SessionConfig", "Timeouts", "loadConfig",
    },
    "gateway.dropins": {
        "findBalancerFactory", "findSessionMapFactory", "balancerNames", "sessionMapNames",
    },
}


@pytest.mark.parametrize("name", sorted(USER_FACING))
def test_userFacingNames(name: str) -> None:
    """
    Every name users import is still there, and (but for the fixtures,
    which pytest finds by name) exported in C{__all__}.
    """
    module = importlib.import_module(name)
    for export in sorted(USER_FACING[name]):
        assert hasattr(module, export), f"{name}.{export}"
        if not export.islower() or "_" not in export:
            assert export in module.__all__, f"{name}.{export} not in __all__"
