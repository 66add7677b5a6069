"""
The configuration's model: the frozen dataclasses a gateway node is
configured with, their defaults, and the bounds on their values that more
than one part checks (L{MAX_WEIGHT}, the admin token's length).

Nothing here reads a file: L{gateway.config.load} builds these from TOML
and flags, and tests and embedders build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BackendConfig",
    "HealthCheckConfig",
    "PoolConfig",
    "RouteConfig",
    "Timeouts",
    "Limits",
    "SessionMapConfig",
    "SessionConfig",
    "AdminConfig",
    "MetricsConfig",
    "AccessLogConfig",
    "GatewayConfig",
    "MAX_WEIGHT",
    "MIN_ADMIN_TOKEN",
    "MAX_ADMIN_TOKEN",
]

#: The largest backend weight, in the file and through the admin API (a
#: weight is turned into a float by the hash balancer: it must stay small).
MAX_WEIGHT = 10000


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
    @ivar failover: what a session does when its backend connection drops
        (docs/operations.md, "Backend failover"): C{"replay"} (re-route it
        and send again the client messages the old backend did not confirm),
        C{"notify"} (re-route it and tell the client which may be lost) or
        C{"close"} (end it).
    @ivar failoverWindow: seconds the same backend is tried again first.
    @ivar failoverTimeout: seconds a session waits for any backend of its
        pool before it ends.
    @ivar drain: what draining a backend does to its sessions: C{"move"}
        (move them to other backends at C{drainRate}) or C{"wait"} (let
        them end by themselves).
    @ivar drainRate: sessions moved off draining backends per second.
    @ivar observe: what passive health counts as a failure: C{"layer4"}
        connect failures, timeouts and connections that die before an
        answer; C{"layer7"} also a handshake answered with a 5xx (HAProxy's
        C{observe layer7}).  A refusal below 500 never counts.
    @ivar rebalanceRate: sessions moved per second towards an even spread
        (weights included) when backends are unevenly loaded; 0 turns
        rebalancing off.
    """

    name: str
    backends: tuple[BackendConfig, ...]
    balance: str = "least_conn"
    affinity: str | None = None
    affinityTtl: float = 3600.0
    health: HealthCheckConfig | None = None
    failTimeout: float = 10.0
    connectAttempts: int = 3
    failover: str = "replay"
    failoverWindow: float = 2.0
    failoverTimeout: float = 30.0
    drain: str = "move"
    drainRate: float = 20.0
    rebalanceRate: float = 2.0
    observe: str = "layer4"


@dataclass(frozen=True)
class RouteConfig:
    """
    Requests whose path starts with C{prefix} (at a segment boundary) go to
    C{pool}.  The longest matching prefix wins.

    @ivar allowedOrigins: the origins whose pages may open WebSocket
        connections and long-poll on this route (patterns, see
        L{gateway.config.values.parseOriginPattern}, or C{("*",)} for any),
        besides the gateway's own origin; L{None} when not set (session
        mode and long-polling then let only the gateway's own origin and
        requests without C{Origin} through, and transparent upgrades are
        not checked).
    @ivar protocol: what the route's clients speak: C{"websocket"} (plain
        WebSocket, tunnelled, and the session protocol), C{"transparent"}
        (plain WebSocket only: every upgrade is tunnelled, whatever
        subprotocol it offers, and there is no long-polling), or
        C{"socket.io"} (Engine.IO v4 terminated at the gateway,
        L{gateway.engineio}).
    @ivar pingInterval: with C{socket.io}, seconds between the gateway's
        Engine.IO pings; C{pingTimeout}: seconds a client has to answer;
        C{maxPayload}: the largest payload a client may send (bytes);
        C{backendPath}: the Socket.IO server's path.
    """

    prefix: str
    pool: str
    allowedOrigins: tuple[str, ...] | None = None
    protocol: str = "websocket"
    pingInterval: float = 25.0
    pingTimeout: float = 20.0
    maxPayload: int = 1_000_000
    backendPath: str = "/socket.io/"


@dataclass(frozen=True)
class Timeouts:
    """
    Every timeout, in seconds.

    @ivar connect: TCP (and TLS) connect to a backend.
    @ivar handshake: from a client's first byte to the end of the backend's
        handshake response (covers every connect attempt).
    @ivar pingInterval: a peer silent this long is sent a WebSocket ping.
    @ivar pingTimeout: a peer silent this long after a ping is dead.
    @ivar idle: a tunnel with no data frame either way for this long is
        closed with 1001 (pings and pongs do not count); 0 never closes one.
    @ivar shutdown: how long stopping the gateway waits for close handshakes.
    @ivar requestBody: a request body must arrive whole within this of the
        end of its head (and keep to C{limits.minBodyRate} meanwhile);
        later heads on a kept-alive connection get C{handshake} from their
        first byte, as the first one does.
    @ivar drain: in a rolling restart of workers, how long a worker being
        replaced serves its open connections, accepting none, before it
        stops.
    """

    connect: float = 5.0
    handshake: float = 10.0
    pingInterval: float = 20.0
    pingTimeout: float = 10.0
    idle: float = 0.0
    shutdown: float = 5.0
    requestBody: float = 30.0
    drain: float = 2.0


@dataclass(frozen=True)
class Limits:
    """
    Every size and count bound.

    @ivar maxHeaderBytes: request or response head (request line and
        headers); larger gets 431 (client) or 502 (backend).
    @ivar maxConnections: client connections open at once per gateway; past
        it new connections are refused with 503.
    @ivar maxConnectionsPerIp: client connections open at once from one
        client address (a trusted proxy's connections count against the
        address they forward); past it, 503.  0 means no such bound.
    @ivar minBodyRate: bytes per second a request body must average, after
        an allowance of C{timeouts.handshake}; slower gets 408.  0 means no
        such bound (C{timeouts.requestBody} still holds).
    @ivar maxErrorBody: bytes of a backend's refusal body passed to the
        client.
    """

    maxHeaderBytes: int = 16384
    maxConnections: int = 10000
    maxConnectionsPerIp: int = 1000
    minBodyRate: int = 1024
    maxErrorBody: int = 65536


@dataclass(frozen=True)
class SessionConfig:
    """
    The session protocol (docs/protocol.md).

    @ivar grace: seconds a detached session waits for its client to resume.
    @ivar heartbeat: seconds of silence after which each side sends an ack.
    @ivar heartbeatTimeout: seconds of silence after which the gateway
        takes a client connection for dead (the session is detached, not
        ended).
    @ivar maxMessageBytes: largest data message either way; a larger one
        from the client closes its connection with 1009.
    @ivar maxBufferMessages: unacknowledged messages kept for a client;
        past it the session ends.
    @ivar maxBufferBytes: the same bound in payload bytes.
    @ivar maxSessions: sessions a gateway node holds; past it new sessions
        are refused with 4503.
    @ivar maxSessionsPerIp: sessions one client address holds (or is
        opening) at once; past it its new sessions are refused with 4503.
    @ivar maxOpensPerIp: new sessions a second one client address may open
        (a token bucket), with bursts of C{openBurstPerIp}; past it 4503.
    @ivar attachTimeout: seconds a session opened by long-polling waits for
        its first poll; then it ends.
    @ivar maxEnded: ended sessions remembered (so that a late resume gets
        "expired" rather than "unknown").
    @ivar maxBodyBytes: largest long-polling request body (413 past it).
    @ivar maxBatchMessages: packets in one long-polling send, and data
        messages in one poll answer.
    @ivar pollTimeout: seconds a poll is held when there is nothing to send
        (less than C{heartbeatTimeout}).
    @ivar corsOrigins: origins (C{"https://app.example"}, or C{"*"}) whose
        pages may use long-polling across origins.
    @ivar maxInflightMessages: client messages handed to the backend and
        not yet confirmed by it (kept to be sent again after a failover);
        at the bound the gateway stops reading from the client.
    @ivar maxInflightBytes: the same bound in payload bytes.
    @ivar slow: what happens when a peer does not keep up (docs/protocol.md,
        "Flow control"): C{"pause"} stops reading from the other side until
        it catches up; C{"close"} ends the session with 4008.
    """

    grace: float = 30.0
    heartbeat: float = 10.0
    heartbeatTimeout: float = 25.0
    maxMessageBytes: int = 1024 * 1024
    maxBufferMessages: int = 10000
    maxBufferBytes: int = 8 * 1024 * 1024
    maxSessions: int = 10000
    maxSessionsPerIp: int = 100
    maxOpensPerIp: int = 20
    openBurstPerIp: int = 40
    attachTimeout: float = 10.0
    maxEnded: int = 100000
    maxBodyBytes: int = 4 * 1024 * 1024
    maxBatchMessages: int = 1000
    pollTimeout: float = 20.0
    corsOrigins: tuple[str, ...] = ()
    maxInflightMessages: int = 1000
    maxInflightBytes: int = 1024 * 1024
    slow: str = "pause"


@dataclass(frozen=True)
class SessionMapConfig:
    """
    Which session map plugin to use, and its options.
    """

    type: str = "memory"
    options: tuple[tuple[str, object], ...] = ()


#: The shortest and longest admin API token, in characters.
MIN_ADMIN_TOKEN = 16
MAX_ADMIN_TOKEN = 1024


@dataclass(frozen=True)
class AdminConfig:
    """
    The admin API: its own listener, and the bearer token every request
    must carry.

    @ivar listen: a Twisted server endpoint string.
    @ivar token: printable ASCII without spaces, L{MIN_ADMIN_TOKEN} to
        L{MAX_ADMIN_TOKEN} characters (never shown by C{repr}).
    @ivar tokenFile: where the token was read from, or L{None} when it was
        written in the file.
    """

    listen: str
    token: str = field(repr=False)
    tokenFile: str | None = None


#: The access log's default bound on lines waiting to be written, in bytes.
ACCESS_LOG_BUFFER = 1 << 20


@dataclass(frozen=True)
class AccessLogConfig:
    """
    The access log: one JSON line per connection or session that ends.

    @ivar path: the file the lines are appended to, or C{"-"} for standard
        output.
    @ivar maxBufferBytes: lines waiting to be written are held up to this
        many bytes; past it a line is dropped (and counted) rather than the
        reactor waiting on the disk or the pipe.
    """

    path: str
    maxBufferBytes: int = ACCESS_LOG_BUFFER


@dataclass(frozen=True)
class MetricsConfig:
    """
    C{/metrics} on a listener of its own, without a token (the admin API
    serves it too, behind its token).

    @ivar listen: a Twisted server endpoint string.
    """

    listen: str


@dataclass(frozen=True)
class GatewayConfig:
    """
    The whole configuration of one gateway node.

    @ivar trustedProxies: CIDR networks whose X-Forwarded-For / Forwarded
        headers are kept and appended to; from anyone else they are replaced.
    @ivar proxyProtocolFrom: CIDR networks that may (and must) send a PROXY
        protocol header on a C{haproxy:} listener.
    @ivar admin: the admin API, or L{None} for none.
    @ivar metrics: the metrics listener, or L{None} for none.
    @ivar accessLog: the access log, or L{None} for none (the default).
    @ivar workers: worker processes accepting on the listeners (1: this
        process serves them itself; more: it supervises that many, see
        L{gateway.workers}).
    """

    listen: tuple[str, ...] = ("tcp:8080",)
    routes: tuple[RouteConfig, ...] = ()
    pools: tuple[PoolConfig, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    trustedProxies: tuple[str, ...] = ()
    proxyProtocolFrom: tuple[str, ...] = ()
    accessLog: AccessLogConfig | None = None
    sessionMap: SessionMapConfig = field(default_factory=SessionMapConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    admin: AdminConfig | None = None
    metrics: MetricsConfig | None = None
    demo: bool = False
    workers: int = 1
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

