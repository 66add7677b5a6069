"""
The gateway's configuration: a TOML file and command-line flags turned into
frozen dataclasses.

Every error is a L{ConfigError} whose message is one line naming the file (or
option), the key and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = [
    "BackendConfig",
    "HealthCheckConfig",
    "PoolConfig",
    "RouteConfig",
    "Timeouts",
    "Limits",
    "SessionMapConfig",
    "GatewayConfig",
    "ConfigError",
    "loadConfig",
    "parseBackendURL",
]


@dataclass(frozen=True)
class BackendConfig:
    """
    One backend WebSocket server.

    @ivar name: unique within its pool; defaults to C{host:port}.
    @ivar url: the URL as written, C{ws://host:port} or C{wss://host:port}.
    @ivar maxConnections: 0 means no limit.
    """

    name: str
    url: str
    host: str
    port: int
    secure: bool
    weight: int = 1
    maxConnections: int = 0


@dataclass(frozen=True)
class HealthCheckConfig:
    """
    Active health checking of every backend of a pool, as HAProxy does it.

    @ivar type: C{"websocket"} (a handshake on C{path} must get 101),
        C{"http"} (a GET on C{path} must get 2xx or 3xx) or C{"tcp"} (a
        connect must succeed).
    @ivar rise: consecutive good checks that bring a down backend up.
    @ivar fall: consecutive bad checks (or connect failures seen by the
        proxy) that take an up backend down.
    """

    type: str = "websocket"
    path: str = "/"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True)
class PoolConfig:
    """
    A pool of backends and how to balance over them.

    @ivar affinity: key spec (C{"address"}, C{"cookie:NAME"},
        C{"header:NAME"}, C{"query:NAME"}) or L{None}.  With a key, the
        backend chosen for it is recorded in the session map and reused while
        healthy; the C{hash} balancer hashes on it (on the client address when
        L{None}).
    @ivar affinityTtl: seconds an affinity record lives after its last use.
    @ivar health: active checks, or L{None} for passive checks only.
    @ivar failTimeout: with passive checks only, seconds a backend marked
        down by connect failures stays down before it is tried again.
    @ivar connectAttempts: backends tried for one client before it gets 503.
    """

    name: str
    backends: tuple[BackendConfig, ...]
    balance: str = "least_conn"
    affinity: str | None = None
    affinityTtl: float = 3600.0
    health: HealthCheckConfig | None = None
    failTimeout: float = 10.0
    connectAttempts: int = 3


@dataclass(frozen=True)
class RouteConfig:
    """
    Requests whose path starts with C{prefix} (at a segment boundary) go to
    C{pool}.  The longest matching prefix wins.
    """

    prefix: str
    pool: str


@dataclass(frozen=True)
class Timeouts:
    """
    Every timeout, in seconds.

    @ivar connect: TCP (and TLS) connect to a backend.
    @ivar handshake: from a client's first byte to the end of the backend's
        handshake response (covers every connect attempt).
    @ivar pingInterval: a peer silent this long is sent a WebSocket ping.
    @ivar pingTimeout: a peer silent this long after a ping is dead.
    @ivar shutdown: how long stopping the gateway waits for close handshakes.
    """

    connect: float = 5.0
    handshake: float = 10.0
    pingInterval: float = 20.0
    pingTimeout: float = 10.0
    shutdown: float = 5.0


@dataclass(frozen=True)
class Limits:
    """
    Every size and count bound.

    @ivar maxHeaderBytes: request or response head (request line and
        headers); larger gets 431 (client) or 502 (backend).
    @ivar maxConnections: client connections open at once per gateway; past
        it new connections are refused with 503.
    @ivar maxErrorBody: bytes of a backend's refusal body passed to the
        client.
    """

    maxHeaderBytes: int = 16384
    maxConnections: int = 10000
    maxErrorBody: int = 65536


@dataclass(frozen=True)
class SessionMapConfig:
    """
    Which session map plugin to use, and its options.
    """

    type: str = "memory"
    options: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    """
    The whole configuration of one gateway node.

    @ivar trustedProxies: CIDR networks whose X-Forwarded-For / Forwarded
        headers are kept and appended to; from anyone else they are replaced.
    """

    listen: tuple[str, ...] = ("tcp:8080",)
    routes: tuple[RouteConfig, ...] = ()
    pools: tuple[PoolConfig, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    trustedProxies: tuple[str, ...] = ()
    sessionMap: SessionMapConfig = field(default_factory=SessionMapConfig)
    demo: bool = False
    source: str = "<options>"

    def pool(self, name: str) -> PoolConfig:
        """
        @return: the pool called C{name}.
        @raise KeyError: when there is none.
        """
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


def parseBackendURL(url: str) -> tuple[bool, str, int]:
    """
    Split a backend URL.

    @return: C{(secure, host, port)}.
    @raise ConfigError: for anything but C{ws://host[:port]} or
        C{wss://host[:port]} with no path, query or fragment (the client's
        path and query are passed to the backend unchanged).
    """
    raise NotImplementedError


def loadConfig(path: str | None, **overrides: object) -> GatewayConfig:
    """
    Read a TOML configuration file (or none) and apply command-line
    overrides.
    """
    raise NotImplementedError
