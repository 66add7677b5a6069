"""
Fixtures for integration tests of WebSocket applications behind txgateway,
with real processes and real sockets on 127.0.0.1.

Installed as a pytest plugin (the C{pytest11} entry point C{txgateway}
names this package), so a project that depends on txgateway gets these
fixtures in its pytest-twisted suites with nothing to import:

  - C{redis_server}: a real C{redis-server} on a free port for the whole
    session; C{make_redis_server} starts private ones (to kill and restart).
  - C{echo_backends}: C{await echo_backends(3)} starts Autobahn echo servers.
  - C{make_gateway}: C{await make_gateway(backends=...)} starts a gateway
    service on a free port and stops it at the end of the test.
  - C{gateway_process}: C{await gateway_process("--backend", url)} runs
    C{twistd -n gateway} as a real process on a free port.

and the helpers L{connectClient} (a WebSocket client with a message queue),
L{rawExchange} (send bytes, collect the answer), L{waitUntil},
L{startProcess} and L{CuttingRelay}.

This package is the stable name; the implementation lives by job in
L{gateway.testing._fixtures} (the fixtures), L{gateway.testing._processes}
(child processes, redis-server among them), L{gateway.testing._network}
(clients, raw exchanges and the relay) and L{gateway.testing._certificates}
(a test authority and the certificates it signs).

Nothing here imports the reactor or txredisapi at import time: pytest-twisted
chooses the reactor.
"""

from ._certificates import CertificateFiles, makeCertificates
from ._fixtures import (
    EchoBackend,
    RunningGateway,
    gatewayConfig,
)

# The fixtures: pytest finds them as attributes of the plugin module.
from ._fixtures import echo_backends as echo_backends
from ._fixtures import gateway_process as gateway_process
from ._fixtures import make_gateway as make_gateway
from ._fixtures import make_redis_server as make_redis_server
from ._fixtures import redis_server as redis_server
from ._network import (
    LOCALHOST,
    CuttingRelay,
    HandshakeFailed,
    TestClient,
    connectClient,
    rawExchange,
    waitUntil,
)
from ._processes import (
    GatewayProcess,
    RedisServer,
    RunningProcess,
    projectEnvironment,
    redisServerBinary,
    startProcess,
    tlsArguments,
)

__all__ = [
    "RedisServer",
    "EchoBackend",
    "RunningGateway",
    "TestClient",
    "connectClient",
    "rawExchange",
    "redisServerBinary",
    "waitUntil",
    "startProcess",
    "RunningProcess",
    "GatewayProcess",
    "gatewayConfig",
    "CuttingRelay",
    "HandshakeFailed",
    "LOCALHOST",
    "projectEnvironment",
    "CertificateFiles",
    "makeCertificates",
    "tlsArguments",
]
