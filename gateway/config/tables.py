"""
The tables of the configuration file, each read into its dataclass: the
C{[timeouts]}, C{[limits]}, C{[session]}, C{[session_map]} and C{[admin]}
tables, C{trusted_proxies}, the C{[[route]]} tables and each C{[pool.NAME]}
with its backends and health checks.

Here are the keys each table accepts and the bounds of their values; every
value is read through a L{Reader}, so a bad one fails with one line naming
the file, the key and the reason.  L{gateway.config.load} puts the tables
together and applies the command-line flags.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .model import (
    ACCESS_LOG_BUFFER,
    AccessLogConfig,
    MAX_ADMIN_TOKEN,
    MAX_WEIGHT,
    MIN_ADMIN_TOKEN,
    BackendConfig,
    HealthCheckConfig,
    Limits,
    MetricsConfig,
    PoolConfig,
    RouteConfig,
    SessionConfig,
    SessionMapConfig,
    Timeouts,
)
from .reader import Reader, isBareKey, keyPath, show
from .values import (
    hostPort,
    parseBackendURL,
    parseKeySpec,
    parseOriginPattern,
    parseRedisShards,
    parseRedisURL,
    parseRoutePrefix,
)

__all__ = [
    "readTimeouts",
    "readLimits",
    "readSession",
    "readSessionMap",
    "readTrustedProxies",
    "readPool",
    "readRoutes",
    "readAdmin",
    "readMetrics",
    "readTokenFile",
    "readAccessLog",
]

_HEALTH_TYPES = ("websocket", "http", "tcp")
_REQUEST_PATH = re.compile(r"/[\x21-\x7e]*\Z")

_ADMIN_KEYS = ("listen", "token", "token_file")
_METRICS_KEYS = ("listen",)
_ACCESS_LOG_KEYS = ("path", "max_buffer_bytes")
#: The keys of a route that only a C{socket.io} route takes.
_SOCKETIO_KEYS = ("ping_interval", "ping_timeout", "max_payload", "backend_path")
_ROUTE_KEYS = ("prefix", "pool", "allowed_origins", "protocol", *_SOCKETIO_KEYS)
_POOL_KEYS = (
    "balance",
    "affinity",
    "affinity_ttl",
    "fail_timeout",
    "connect_attempts",
    "backend",
    "health",
    "failover",
    "failover_window",
    "failover_timeout",
    "drain",
    "drain_rate",
    "rebalance_rate",
    "observe",
)
_OBSERVE_LAYERS = ("layer4", "layer7")
_FAILOVER_POLICIES = ("replay", "notify", "close")
_DRAIN_POLICIES = ("move", "wait")
_SLOW_POLICIES = ("pause", "close")
_BACKEND_KEYS = ("url", "weight", "max_connections", "name")
_HEALTH_KEYS = ("type", "path", "interval", "timeout", "rise", "fall")

# File key -> dataclass field (seconds, each > 0, except those that may be 0).
_TIMEOUT_FIELDS = {
    "connect": "connect",
    "handshake": "handshake",
    "ping_interval": "pingInterval",
    "ping_timeout": "pingTimeout",
    "idle": "idle",
    "shutdown": "shutdown",
    "request_body": "requestBody",
    "drain": "drain",
}
_TIMEOUTS_OFF_AT_ZERO = frozenset({"idle"})

# File key -> (dataclass field, smallest value allowed).
_LIMIT_FIELDS = {
    "max_header_bytes": ("maxHeaderBytes", 1024),
    "max_connections": ("maxConnections", 1),
    "max_connections_per_ip": ("maxConnectionsPerIp", 0),
    "min_body_rate": ("minBodyRate", 0),
    "max_error_body": ("maxErrorBody", 0),
}

# The [session] table: file key -> dataclass field (seconds, each > 0), and
# file key -> (dataclass field, smallest value allowed) for the integers.
_SESSION_SECONDS_FIELDS = {
    "grace": "grace",
    "heartbeat": "heartbeat",
    "heartbeat_timeout": "heartbeatTimeout",
    "poll_timeout": "pollTimeout",
    "attach_timeout": "attachTimeout",
}
_SESSION_INTEGER_FIELDS = {
    "max_message_bytes": ("maxMessageBytes", 1024),
    "max_buffer_messages": ("maxBufferMessages", 1),
    "max_buffer_bytes": ("maxBufferBytes", 1024),
    "max_sessions": ("maxSessions", 1),
    "max_sessions_per_ip": ("maxSessionsPerIp", 1),
    "max_opens_per_ip": ("maxOpensPerIp", 1),
    "open_burst_per_ip": ("openBurstPerIp", 1),
    "max_ended": ("maxEnded", 0),
    "max_body_bytes": ("maxBodyBytes", 1024),
    "max_batch_messages": ("maxBatchMessages", 1),
    "max_inflight_messages": ("maxInflightMessages", 1),
    "max_inflight_bytes": ("maxInflightBytes", 1024),
}
_SESSION_KEYS = (*_SESSION_SECONDS_FIELDS, *_SESSION_INTEGER_FIELDS, "cors_origins", "slow")


def readTimeouts(reader: Reader, value: object) -> Timeouts:
    """
    Read the C{[timeouts]} table.
    """
    table = reader.table(value, "timeouts", tuple(_TIMEOUT_FIELDS))
    defaults = Timeouts()
    return Timeouts(
        **{
            attribute: reader.seconds(
                table,
                "timeouts",
                key,
                getattr(defaults, attribute),
                allowZero=key in _TIMEOUTS_OFF_AT_ZERO,
            )
            for key, attribute in _TIMEOUT_FIELDS.items()
        }
    )


def readLimits(reader: Reader, value: object) -> Limits:
    """
    Read the C{[limits]} table.
    """
    table = reader.table(value, "limits", tuple(_LIMIT_FIELDS))
    defaults = Limits()
    return Limits(
        **{
            attribute: reader.integer(
                table, "limits", key, getattr(defaults, attribute), minimum
            )
            for key, (attribute, minimum) in _LIMIT_FIELDS.items()
        }
    )


def readSession(reader: Reader, value: object) -> SessionConfig:
    """
    Read the C{[session]} table, and check that C{heartbeat_timeout} is
    greater than C{heartbeat} (whether written or left at its default).
    """
    table = reader.table(value, "session", _SESSION_KEYS)
    defaults = SessionConfig()
    values: dict[str, Any] = {
        attribute: reader.seconds(table, "session", key, getattr(defaults, attribute))
        for key, attribute in _SESSION_SECONDS_FIELDS.items()
    }
    for key, (attribute, minimum) in _SESSION_INTEGER_FIELDS.items():
        values[attribute] = reader.integer(
            table, "session", key, getattr(defaults, attribute), minimum
        )
    origins = reader.strings(table, "session", "cors_origins") or []
    for index, origin in enumerate(origins):
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            reader.fail(
                f"session.cors_origins[{index}]",
                f"must be \"*\" or an origin such as \"https://app.example\", not {show(origin)}",
            )
    values["corsOrigins"] = tuple(origins)
    values["slow"] = reader.choice(table, "session", "slow", SessionConfig.slow, _SLOW_POLICIES)
    if "poll_timeout" not in table:
        # Left out: keep polls well inside the heartbeat timeout.
        values["pollTimeout"] = min(defaults.pollTimeout, values["heartbeatTimeout"] * 0.8)
    session = SessionConfig(**values)
    if session.heartbeatTimeout <= session.heartbeat:
        reader.fail(
            "session.heartbeat_timeout",
            f"must be greater than session.heartbeat ({show(session.heartbeat)}), "
            f"not {show(session.heartbeatTimeout)}",
        )
    if session.pollTimeout >= session.heartbeatTimeout:
        reader.fail(
            "session.poll_timeout",
            f"must be less than session.heartbeat_timeout ({show(session.heartbeatTimeout)}), "
            f"not {show(session.pollTimeout)}",
        )
    return session


def readSessionMap(reader: Reader, value: object) -> SessionMapConfig:
    """
    Read the C{[session_map]} table: C{type}, and any other keys as options
    for the session map plugin (which checks them).
    """
    table = reader.table(value, "session_map", None)
    kind = reader.string(table, "session_map", "type", SessionMapConfig.type)
    if kind == "redis":
        # Checked here too, so that the error names the file.
        if "url" in table:
            try:
                parseRedisURL(table["url"])
            except ConfigError as error:
                reader.fail("session_map.url", str(error))
        if "shards" in table:
            if "url" in table:
                reader.fail("session_map.shards", "give url (one server) or shards (several), not both")
            try:
                parseRedisShards(table["shards"])
            except ConfigError as error:
                where, _, reason = str(error).partition(": ")
                reader.fail(f"session_map.{where}", reason)
            if "sentinel_password" in table:
                reader.fail("session_map.sentinel_password",
                            "with shards, give it per shard ({url = ..., sentinel_password = ...})")
        reader.string(table, "session_map", "sentinel_password", None)
        for key in ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name"):
            reader.string(table, "session_map", key, None)
        if not isinstance(table.get("tls_verify", True), bool):
            reader.fail("session_map.tls_verify", f"must be true or false, not {show(table['tls_verify'])}")
    options = tuple(sorted((key, item) for key, item in table.items() if key != "type"))
    return SessionMapConfig(type=kind, options=options)


def readTrustedProxies(reader: Reader, table: dict[str, Any], key: str = "trusted_proxies") -> tuple[str, ...]:
    """
    Read C{trusted_proxies} (or another array of networks, C{key}): CIDR
    networks, returned in normal form.
    """
    networks = reader.strings(table, "", key) or []
    result = []
    for index, text in enumerate(networks):
        try:
            network = ipaddress.ip_network(text)
        except ValueError as error:
            reader.fail(
                f"{key}[{index}]",
                f"must be a network such as '10.0.0.0/8' or '::1/128': {error}",
            )
        result.append(str(network))
    return tuple(result)


def readAccessLog(reader: Reader, value: object) -> AccessLogConfig:
    """
    Read the C{[access_log]} table: C{path} (required; C{"-"} is standard
    output) and C{max_buffer_bytes}.
    """
    table = reader.table(value, "access_log", _ACCESS_LOG_KEYS)
    path = reader.string(table, "access_log", "path", None)
    if path is None:
        reader.fail("access_log.path", "is required (a file, or \"-\" for standard output)")
    size = reader.integer(table, "access_log", "max_buffer_bytes", ACCESS_LOG_BUFFER, 4096)
    return AccessLogConfig(path=path, maxBufferBytes=size)


def _checkAffinity(reader: Reader, path: str, spec: str) -> None:
    """
    Check an affinity key spec (C{address}, or C{cookie:}, C{header:} or
    C{query:} followed by a name) with the parser routing uses, so the file
    and the router never disagree.
    """
    try:
        parseKeySpec(spec)
    except ConfigError as error:
        reader.fail(path, str(error))


def _readHealth(reader: Reader, value: object, path: str) -> HealthCheckConfig:
    """
    Read a C{[pool.NAME.health]} table.
    """
    table = reader.table(value, path, _HEALTH_KEYS)
    defaults = HealthCheckConfig()
    kind = reader.string(table, path, "type", defaults.type)
    if kind not in _HEALTH_TYPES:
        reader.fail(
            keyPath(path, "type"),
            f"must be one of {', '.join(map(repr, _HEALTH_TYPES))}, not {show(kind)}",
        )
    checkPath = reader.string(table, path, "path", defaults.path)
    if not _REQUEST_PATH.match(checkPath):
        reader.fail(
            keyPath(path, "path"),
            "must start with '/' and be printable ASCII without spaces "
            f"(percent-encode anything else), not {show(checkPath)}",
        )
    return HealthCheckConfig(
        type=kind,
        path=checkPath,
        interval=reader.seconds(table, path, "interval", defaults.interval),
        timeout=reader.seconds(table, path, "timeout", defaults.timeout),
        rise=reader.integer(table, path, "rise", defaults.rise, 1),
        fall=reader.integer(table, path, "fall", defaults.fall, 1),
    )


def _readBackend(reader: Reader, table: dict[str, Any], path: str) -> BackendConfig:
    """
    Read one C{[[pool.NAME.backend]]} table.
    """
    reader.table(table, path, _BACKEND_KEYS)
    url = reader.string(table, path, "url")
    try:
        secure, host, port = parseBackendURL(url)
    except ConfigError as error:
        reader.fail(keyPath(path, "url"), str(error))
    return BackendConfig(
        name=reader.string(table, path, "name", None) or hostPort(host, port),
        url=url,
        host=host,
        port=port,
        secure=secure,
        weight=reader.integer(table, path, "weight", 1, 1, MAX_WEIGHT),
        maxConnections=reader.integer(table, path, "max_connections", 0, 0),
    )


def _checkBackendNames(
    reader: Reader, path: str, backends: Sequence[BackendConfig]
) -> None:
    """
    Fail when two backends of one pool share a name.
    """
    seen: dict[str, int] = {}
    for index, backend in enumerate(backends):
        if backend.name in seen:
            reader.fail(
                f"{path}[{index}]",
                f"backend[{seen[backend.name]}] is already named "
                f"{show(backend.name)}; give each backend of a pool its own name",
            )
        seen[backend.name] = index


def readPool(reader: Reader, name: str, value: object) -> PoolConfig:
    """
    Read one C{[pool.NAME]} table and its backends.
    """
    path = keyPath("pool", name)
    if not isBareKey(name):
        reader.fail(path, "a pool name must be letters, digits, '_' and '-' only")
    table = reader.table(value, path, _POOL_KEYS)
    defaults = PoolConfig(name=name, backends=())
    affinity = reader.string(table, path, "affinity", None)
    if affinity is not None:
        _checkAffinity(reader, keyPath(path, "affinity"), affinity)
    backendPath = keyPath(path, "backend")
    backends = tuple(
        _readBackend(reader, item, f"{backendPath}[{index}]")
        for index, item in enumerate(reader.tables(table, path, "backend"))
    )
    if not backends:
        reader.fail(path, f"has no backends; add a [[{backendPath}]] table with a url")
    _checkBackendNames(reader, backendPath, backends)
    health = None
    if "health" in table:
        health = _readHealth(reader, table["health"], keyPath(path, "health"))
    return PoolConfig(
        name=name,
        backends=backends,
        balance=reader.string(table, path, "balance", defaults.balance),
        affinity=affinity,
        affinityTtl=reader.seconds(table, path, "affinity_ttl", defaults.affinityTtl),
        health=health,
        failTimeout=reader.seconds(table, path, "fail_timeout", defaults.failTimeout),
        connectAttempts=reader.integer(
            table, path, "connect_attempts", defaults.connectAttempts, 1
        ),
        failover=reader.choice(table, path, "failover", defaults.failover, _FAILOVER_POLICIES),
        failoverWindow=reader.seconds(
            table, path, "failover_window", defaults.failoverWindow, allowZero=True
        ),
        failoverTimeout=reader.seconds(table, path, "failover_timeout", defaults.failoverTimeout),
        drain=reader.choice(table, path, "drain", defaults.drain, _DRAIN_POLICIES),
        drainRate=reader.rate(table, path, "drain_rate", defaults.drainRate, allowZero=False),
        rebalanceRate=reader.rate(table, path, "rebalance_rate", defaults.rebalanceRate),
        observe=reader.choice(table, path, "observe", defaults.observe, _OBSERVE_LAYERS),
    )


_TOKEN = re.compile(r"[\x21-\x7e]+\Z")


def _checkToken(reader: Reader, path: str, token: str) -> str:
    """
    Check an admin token's characters and length (the token itself is never
    shown in the message).
    """
    if not _TOKEN.match(token):
        reader.fail(path, "must be printable ASCII without spaces")
    if len(token) < MIN_ADMIN_TOKEN:
        reader.fail(path, f"must be at least {MIN_ADMIN_TOKEN} characters long, not {len(token)}")
    if len(token) > MAX_ADMIN_TOKEN:
        reader.fail(path, f"must be at most {MAX_ADMIN_TOKEN} characters long")
    return token


def _checkTokenFileMode(reader: Reader, path: str, filename: str, status: os.stat_result) -> None:
    """
    Refuse a token file that others may read or write, or that belongs to
    someone other than the gateway's user (or root), as ssh refuses such a
    private key: anyone who can read the token can use the admin API.
    """
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        reader.fail(
            path,
            f"{filename} is open to group or others (mode {mode:04o}); "
            f"run chmod 600 {filename}",
        )
    user = os.geteuid()
    if status.st_uid not in (user, 0):
        reader.fail(
            path,
            f"{filename} belongs to uid {status.st_uid}, not to the gateway's user "
            f"(uid {user}); run chown {user} {filename}",
        )


def readTokenFile(reader: Reader, path: str, filename: str) -> str:
    """
    Read an admin token from a file: its content, without surrounding
    white space (a trailing newline), checked as L{_checkToken} does.  The
    file must be private (L{_checkTokenFileMode}).
    """
    try:
        with open(filename, "rb") as stream:
            _checkTokenFileMode(reader, path, filename, os.fstat(stream.fileno()))
            data = stream.read(MAX_ADMIN_TOKEN + 1024)
    except OSError as error:
        reader.fail(path, f"cannot read {filename}: {error.strerror or error}")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        reader.fail(path, f"{filename} must hold printable ASCII without spaces")
    if not token:
        reader.fail(path, f"{filename} is empty")
    where = f"{path}: the token in {filename}" if path else f"the token in {filename}"
    return _checkToken(reader, where, token)


def readAdmin(
    reader: Reader, value: object, directory: str
) -> tuple[str | None, str | None, str | None]:
    """
    Read the C{[admin]} table: C{listen}, and C{token} or C{token_file} (a
    relative path is taken from the directory of the configuration file).
    Whether the pieces are all there is checked once the flags are known.

    @return: C{(listen, token, tokenFile)}, each L{None} when absent.
    """
    table = reader.table(value, "admin", _ADMIN_KEYS)
    listen = reader.string(table, "admin", "listen", None)
    token = reader.string(table, "admin", "token", None)
    tokenFile = reader.string(table, "admin", "token_file", None)
    if token is not None and tokenFile is not None:
        reader.fail("admin", "give token or token_file, not both")
    if token is not None:
        _checkToken(reader, "admin.token", token)
    if tokenFile is not None:
        tokenFile = os.path.join(directory, tokenFile)
        token = readTokenFile(reader, "admin.token_file", tokenFile)
    return listen, token, tokenFile


def readMetrics(reader: Reader, value: object) -> MetricsConfig:
    """
    Read the C{[metrics]} table: C{listen}, the endpoint of the metrics
    listener (checked as an endpoint by the service).
    """
    table = reader.table(value, "metrics", _METRICS_KEYS)
    listen = reader.string(table, "metrics", "listen")
    if not listen:
        reader.fail("metrics.listen", "must not be empty")
    return MetricsConfig(listen=listen)


def readRoutes(reader: Reader, table: dict[str, Any]) -> list[RouteConfig]:
    """
    Read the C{[[route]]} tables (their pools are checked later, once the
    pools are known).  Each prefix is checked with L{parseRoutePrefix},
    as the router that will use it parses it.
    """
    routes: list[RouteConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(reader.tables(table, "", "route")):
        path = f"route[{index}]"
        reader.table(item, path, _ROUTE_KEYS)
        prefix = reader.string(item, path, "prefix")
        try:
            parseRoutePrefix(prefix)
        except ConfigError as error:
            reader.fail(f"{path}.prefix", str(error))
        same = prefix.rstrip("/")
        if same in seen:
            reader.fail(
                f"{path}.prefix",
                f"route[{seen[same]}] already has the prefix {show(prefix)} "
                "(a trailing '/' is ignored)",
            )
        seen[same] = index
        routes.append(RouteConfig(prefix=prefix, pool=reader.string(item, path, "pool"),
                                  allowedOrigins=_readOrigins(reader, item, path),
                                  **_readProtocol(reader, item, path)))
    return routes


def _readProtocol(reader: Reader, item: dict[str, Any], path: str) -> dict[str, Any]:
    """
    Read a route's C{protocol} and, for C{socket.io}, its Engine.IO
    settings (the reference server's defaults); those keys on any other
    route are refused.
    """
    protocol = reader.choice(item, path, "protocol", "websocket", ("websocket", "transparent", "socket.io"))
    if protocol != "socket.io":
        for key in _SOCKETIO_KEYS:
            if key in item:
                reader.fail(f"{path}.{key}", 'is only for a route with protocol = "socket.io"')
        return {"protocol": protocol}
    backendPath = reader.string(item, path, "backend_path", "/socket.io/")
    if not backendPath.startswith("/") or not backendPath.isascii() or any(
            c in backendPath for c in " ?#") or not backendPath.isprintable():
        reader.fail(f"{path}.backend_path", "must be a path: starting with '/', printable ASCII, no space, '?' or '#'")
    return {
        "protocol": protocol,
        "pingInterval": reader.seconds(item, path, "ping_interval", 25.0),
        "pingTimeout": reader.seconds(item, path, "ping_timeout", 20.0),
        "maxPayload": reader.integer(item, path, "max_payload", 1_000_000, 1, 64 * 1024 * 1024),
        "backendPath": backendPath,
    }


def _readOrigins(reader: Reader, item: dict[str, Any], path: str) -> tuple[str, ...] | None:
    """
    Read a route's C{allowed_origins}: exactly C{["*"]}, or origin patterns
    checked with L{parseOriginPattern}, as the Origin check parses them.
    """
    origins = reader.strings(item, path, "allowed_origins")
    if origins is None:
        return None
    here = f"{path}.allowed_origins"
    if "*" in origins:
        if len(origins) > 1:
            reader.fail(here, 'must be exactly ["*"] for any origin, or a list of origins without "*"')
        return ("*",)
    for index, origin in enumerate(origins):
        try:
            parseOriginPattern(origin)
        except ConfigError as error:
            reader.fail(f"{here}[{index}]", str(error))
    return tuple(origins)
