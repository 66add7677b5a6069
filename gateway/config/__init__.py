"""
The gateway's configuration: a TOML file and command-line flags turned into
frozen dataclasses.

Every error is a L{ConfigError} whose message is one line naming the file (or
option), the key and the reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..errors import ConfigError
from ..backends.pool import MAX_WEIGHT

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
    "GatewayConfig",
    "ConfigError",
    "loadConfig",
    "parseBackendURL",
    "restartNeeded",
    "MIN_ADMIN_TOKEN",
    "MAX_ADMIN_TOKEN",
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
    @ivar idle: a tunnel with no data frame either way for this long is
        closed with 1001 (pings and pongs do not count); 0 never closes one.
    @ivar shutdown: how long stopping the gateway waits for close handshakes.
    """

    connect: float = 5.0
    handshake: float = 10.0
    pingInterval: float = 20.0
    pingTimeout: float = 10.0
    idle: float = 0.0
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


@dataclass(frozen=True)
class GatewayConfig:
    """
    The whole configuration of one gateway node.

    @ivar trustedProxies: CIDR networks whose X-Forwarded-For / Forwarded
        headers are kept and appended to; from anyone else they are replaced.
    @ivar admin: the admin API, or L{None} for none.
    """

    listen: tuple[str, ...] = ("tcp:8080",)
    routes: tuple[RouteConfig, ...] = ()
    pools: tuple[PoolConfig, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    trustedProxies: tuple[str, ...] = ()
    sessionMap: SessionMapConfig = field(default_factory=SessionMapConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    admin: AdminConfig | None = None
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


# The loader.  Everything below turns the parsed TOML document (plain dicts,
# lists, strings and numbers) and the command-line flags into the dataclasses
# above, checking each value once and failing on the first bad one with a
# single line: "<file>: <dotted key path>: <reason>".

_DEFAULT_LISTEN = GatewayConfig.listen
_OPTIONS_SOURCE = "<options>"
_FLAG_POOL = "default"
_DEFAULT_PORTS = {False: 80, True: 443}
_HEALTH_TYPES = ("websocket", "http", "tcp")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_HOST_NAME = re.compile(r"[\w.-]+\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_REQUEST_PATH = re.compile(r"/[\x21-\x7e]*\Z")

_TOP_KEYS = (
    "listen",
    "trusted_proxies",
    "timeouts",
    "limits",
    "session",
    "session_map",
    "route",
    "pool",
    "admin",
)
_ADMIN_KEYS = ("listen", "token", "token_file")
_ROUTE_KEYS = ("prefix", "pool")
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
)
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
}
_TIMEOUTS_OFF_AT_ZERO = frozenset({"idle"})

# File key -> (dataclass field, smallest value allowed).
_LIMIT_FIELDS = {
    "max_header_bytes": ("maxHeaderBytes", 1024),
    "max_connections": ("maxConnections", 1),
    "max_error_body": ("maxErrorBody", 0),
}

# The [session] table: file key -> dataclass field (seconds, each > 0), and
# file key -> (dataclass field, smallest value allowed) for the integers.
_SESSION_SECONDS_FIELDS = {
    "grace": "grace",
    "heartbeat": "heartbeat",
    "heartbeat_timeout": "heartbeatTimeout",
    "poll_timeout": "pollTimeout",
}
_SESSION_INTEGER_FIELDS = {
    "max_message_bytes": ("maxMessageBytes", 1024),
    "max_buffer_messages": ("maxBufferMessages", 1),
    "max_buffer_bytes": ("maxBufferBytes", 1024),
    "max_sessions": ("maxSessions", 1),
    "max_ended": ("maxEnded", 0),
    "max_body_bytes": ("maxBodyBytes", 1024),
    "max_batch_messages": ("maxBatchMessages", 1),
    "max_inflight_messages": ("maxInflightMessages", 1),
    "max_inflight_bytes": ("maxInflightBytes", 1024),
}
_SESSION_KEYS = (*_SESSION_SECONDS_FIELDS, *_SESSION_INTEGER_FIELDS, "cors_origins", "slow")

_MISSING: Any = object()


def _configError(text: str) -> ConfigError:
    """
    @return: a L{ConfigError} whose message is C{text} folded onto one line.
    """
    return ConfigError(" ".join(text.splitlines()))


def _show(value: object) -> str:
    """
    Show a value from the file in an error message: short, on one line and
    spelled as TOML spells it where that differs from Python.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"the date/time {value.isoformat()}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _keyPath(path: str, key: str) -> str:
    """
    Extend a dotted key path by one key, quoting the key as TOML would when it
    is not a bare key.
    """
    part = key if _BARE_KEY.match(key) else json.dumps(key)
    return f"{path}.{part}" if path else part


def _hostPort(host: str, port: int) -> str:
    """
    @return: C{host:port}, with an IPv6 address in brackets.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parseBackendURL(url: str) -> tuple[bool, str, int]:
    """
    Split a backend URL.

    @return: C{(secure, host, port)}; the port defaults to 80 for C{ws} and
        443 for C{wss}, and an IPv6 host is returned without its brackets.
    @raise ConfigError: for anything but C{ws://host[:port]} or
        C{wss://host[:port]} (optionally followed by a lone C{/}) with no
        path, query, fragment or user information (the client's path and
        query are passed to the backend unchanged).
    """

    def bad(reason: str) -> ConfigError:
        """
        @return: the error for this URL, saying C{reason}.
        """
        return _configError(f"backend URL {url!r} {reason}")

    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in ("ws", "wss"):
        raise bad("must start with ws:// or wss://")
    secure = scheme.lower() == "wss"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    remainder = rest[len(authority) :]
    path = re.split(r"[?#]", remainder, maxsplit=1)[0]
    if path not in ("", "/"):
        raise bad("must not have a path: the client's path is passed on unchanged")
    if "?" in remainder.partition("#")[0]:
        raise bad("must not have a query: the client's query is passed on unchanged")
    if "#" in remainder:
        raise bad("must not have a fragment")
    if "@" in authority:
        raise bad("must not contain a user name or password")
    if not authority:
        raise bad("must name a host")

    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise bad("has an unclosed '[' around its host")
        host, afterHost = authority[1:end], authority[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"has {host!r} in brackets, which is not an IPv6 address") from None
        if afterHost and not afterHost.startswith(":"):
            raise bad("must have only ':PORT' after the ']' of its host")
        portText = afterHost[1:] if afterHost else None
    else:
        if authority.count(":") > 1:
            raise bad("must put an IPv6 address in brackets, as in ws://[::1]:8765")
        host, colon, afterColon = authority.partition(":")
        portText = afterColon if colon else None
        if not _HOST_NAME.match(host):
            raise bad(f"has a bad host name {host!r}")

    if portText is None:
        return secure, host, _DEFAULT_PORTS[secure]
    if not _PORT.match(portText) or not 1 <= int(portText) <= 65535:
        raise bad(f"has a bad port {portText!r}: it must be a number from 1 to 65535")
    return secure, host, int(portText)


class _Reader:
    """
    Reads values out of a parsed TOML document, checking type and bounds,
    and fails with one line naming the file, the key path and the reason.

    @ivar origin: the file name (or option) errors start with.
    """

    def __init__(self, origin: str) -> None:
        """
        @param origin: the file name (or option) errors start with.
        """
        self.origin = origin

    def fail(self, path: str, reason: str) -> NoReturn:
        """
        @raise ConfigError: C{"<origin>: <path>: <reason>"}.
        """
        where = f"{self.origin}: {path}" if path else self.origin
        raise _configError(f"{where}: {reason}")

    def table(
        self, value: object, path: str, known: Sequence[str] | None
    ) -> dict[str, Any]:
        """
        Check that C{value} is a table whose keys are all in C{known} (any
        key when C{known} is L{None}).
        """
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, not {_show(value)}")
        if known is not None:
            for key in value:
                if key not in known:
                    self.fail(
                        _keyPath(path, key),
                        f"unknown key; known keys: {', '.join(known)}",
                    )
        return value

    def tables(self, table: dict[str, Any], path: str, key: str) -> list[dict[str, Any]]:
        """
        @return: the array of tables C{table[key]} (empty when absent).
        """
        value = table.get(key, [])
        here = _keyPath(path, key)
        if not isinstance(value, list):
            self.fail(
                here,
                f"must be an array of tables, written [[{here}]], not {_show(value)}",
            )
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                self.fail(f"{here}[{index}]", f"must be a table, not {_show(item)}")
        return value

    def string(
        self, table: dict[str, Any], path: str, key: str, default: Any = _MISSING
    ) -> Any:
        """
        @return: the non-empty string C{table[key]}, or C{default} when the key
            is absent.
        """
        if key not in table:
            if default is _MISSING:
                self.fail(_keyPath(path, key), "is required")
            return default
        value = table[key]
        if not isinstance(value, str):
            self.fail(_keyPath(path, key), f"must be a string, not {_show(value)}")
        if not value:
            self.fail(_keyPath(path, key), "must not be empty")
        return value

    def strings(self, table: dict[str, Any], path: str, key: str) -> list[str] | None:
        """
        @return: the array of non-empty strings C{table[key]}, or L{None}
            when the key is absent.
        """
        value = table.get(key)
        if value is None:
            return None
        here = _keyPath(path, key)
        if not isinstance(value, list):
            self.fail(here, f"must be an array of strings, not {_show(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{here}[{index}]", f"must be a string, not {_show(item)}")
            if not item:
                self.fail(f"{here}[{index}]", "must not be empty")
        return value

    def integer(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: int,
        minimum: int,
        maximum: int | None = None,
    ) -> int:
        """
        @return: the integer C{table[key]} (not a boolean, not a float),
            at least C{minimum} (and at most C{maximum}, when given), or
            C{default} when the key is absent.
        """
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(
                _keyPath(path, key),
                f"must be an integer >= {minimum}, not {_show(value)}",
            )
        if maximum is not None and value > maximum:
            self.fail(
                _keyPath(path, key),
                f"must be an integer <= {maximum}, not {_show(value)}",
            )
        return value

    def seconds(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: float,
        allowZero: bool = False,
    ) -> float:
        """
        @return: the finite number C{table[key]} (an integer will do, a
            boolean will not), greater than 0 (or equal to it, with
            C{allowZero}), or C{default} when the key is absent.
        """
        return self._number(table, path, key, default, allowZero, None, "a number of seconds")

    def rate(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: float,
        allowZero: bool = True,
    ) -> float:
        """
        @return: the finite number C{table[key]} of things per second, at
            least 0 (greater, without C{allowZero}) and at most 100,000, or
            C{default} when the key is absent.
        """
        return self._number(table, path, key, default, allowZero, 100_000, "a number per second")

    def _number(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: float,
        allowZero: bool,
        maximum: float | None,
        what: str,
    ) -> float:
        """
        @return: the finite number C{table[key]}, greater than 0 (or equal
            to it, with C{allowZero}) and at most C{maximum}, or C{default}
            when the key is absent.
        """
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not (value > 0 or (allowZero and value == 0))
            or (maximum is not None and value > maximum)
        ):
            bound = ">= 0" if allowZero else "> 0"
            if maximum is not None:
                bound += f" and <= {maximum:g}"
            self.fail(_keyPath(path, key), f"must be {what} {bound}, not {_show(value)}")
        return float(value)

    def choice(
        self, table: dict[str, Any], path: str, key: str, default: str, choices: Sequence[str]
    ) -> str:
        """
        @return: the string C{table[key]}, one of C{choices}, or C{default}
            when the key is absent.
        """
        value = self.string(table, path, key, default)
        if value not in choices:
            self.fail(
                _keyPath(path, key),
                f"must be one of {', '.join(map(repr, choices))}, not {_show(value)}",
            )
        return value


def _readDocument(path: str) -> dict[str, Any]:
    """
    Read and parse a TOML file.

    @raise ConfigError: when it cannot be read, is not UTF-8 or is not TOML.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise _configError(
            f"{path}: cannot read the file: {error.strerror or error}"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _configError(
            f"{path}: not UTF-8 text: bad byte at offset {error.start}"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _configError(f"{path}: not valid TOML: {error}") from None


def _readTimeouts(reader: _Reader, value: object) -> Timeouts:
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


def _readLimits(reader: _Reader, value: object) -> Limits:
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


def _readSession(reader: _Reader, value: object) -> SessionConfig:
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
                f"must be \"*\" or an origin such as \"https://app.example\", not {_show(origin)}",
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
            f"must be greater than session.heartbeat ({_show(session.heartbeat)}), "
            f"not {_show(session.heartbeatTimeout)}",
        )
    if session.pollTimeout >= session.heartbeatTimeout:
        reader.fail(
            "session.poll_timeout",
            f"must be less than session.heartbeat_timeout ({_show(session.heartbeatTimeout)}), "
            f"not {_show(session.pollTimeout)}",
        )
    return session


def _readSessionMap(reader: _Reader, value: object) -> SessionMapConfig:
    """
    Read the C{[session_map]} table: C{type}, and any other keys as options
    for the session map plugin (which checks them).
    """
    table = reader.table(value, "session_map", None)
    kind = reader.string(table, "session_map", "type", SessionMapConfig.type)
    options = tuple(sorted((key, item) for key, item in table.items() if key != "type"))
    return SessionMapConfig(type=kind, options=options)


def _readTrustedProxies(reader: _Reader, table: dict[str, Any]) -> tuple[str, ...]:
    """
    Read C{trusted_proxies}: CIDR networks, returned in normal form.
    """
    networks = reader.strings(table, "", "trusted_proxies") or []
    result = []
    for index, text in enumerate(networks):
        try:
            network = ipaddress.ip_network(text)
        except ValueError as error:
            reader.fail(
                f"trusted_proxies[{index}]",
                f"must be a network such as '10.0.0.0/8' or '::1/128': {error}",
            )
        result.append(str(network))
    return tuple(result)


def _checkAffinity(reader: _Reader, path: str, spec: str) -> None:
    """
    Check an affinity key spec (C{address}, or C{cookie:}, C{header:} or
    C{query:} followed by a name) with the parser routing uses, so the file
    and the router never disagree.
    """
    from ..backends.routing import parseKeySpec

    try:
        parseKeySpec(spec)
    except ConfigError as error:
        reader.fail(path, str(error))


def _readHealth(reader: _Reader, value: object, path: str) -> HealthCheckConfig:
    """
    Read a C{[pool.NAME.health]} table.
    """
    table = reader.table(value, path, _HEALTH_KEYS)
    defaults = HealthCheckConfig()
    kind = reader.string(table, path, "type", defaults.type)
    if kind not in _HEALTH_TYPES:
        reader.fail(
            _keyPath(path, "type"),
            f"must be one of {', '.join(map(repr, _HEALTH_TYPES))}, not {_show(kind)}",
        )
    checkPath = reader.string(table, path, "path", defaults.path)
    if not _REQUEST_PATH.match(checkPath):
        reader.fail(
            _keyPath(path, "path"),
            "must start with '/' and be printable ASCII without spaces "
            f"(percent-encode anything else), not {_show(checkPath)}",
        )
    return HealthCheckConfig(
        type=kind,
        path=checkPath,
        interval=reader.seconds(table, path, "interval", defaults.interval),
        timeout=reader.seconds(table, path, "timeout", defaults.timeout),
        rise=reader.integer(table, path, "rise", defaults.rise, 1),
        fall=reader.integer(table, path, "fall", defaults.fall, 1),
    )


def _readBackend(reader: _Reader, table: dict[str, Any], path: str) -> BackendConfig:
    """
    Read one C{[[pool.NAME.backend]]} table.
    """
    reader.table(table, path, _BACKEND_KEYS)
    url = reader.string(table, path, "url")
    try:
        secure, host, port = parseBackendURL(url)
    except ConfigError as error:
        reader.fail(_keyPath(path, "url"), str(error))
    return BackendConfig(
        name=reader.string(table, path, "name", None) or _hostPort(host, port),
        url=url,
        host=host,
        port=port,
        secure=secure,
        weight=reader.integer(table, path, "weight", 1, 1, MAX_WEIGHT),
        maxConnections=reader.integer(table, path, "max_connections", 0, 0),
    )


def _checkBackendNames(
    reader: _Reader, path: str, backends: Sequence[BackendConfig]
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
                f"{_show(backend.name)}; give each backend of a pool its own name",
            )
        seen[backend.name] = index


def _readPool(reader: _Reader, name: str, value: object) -> PoolConfig:
    """
    Read one C{[pool.NAME]} table and its backends.
    """
    path = _keyPath("pool", name)
    if not _BARE_KEY.match(name):
        reader.fail(path, "a pool name must be letters, digits, '_' and '-' only")
    table = reader.table(value, path, _POOL_KEYS)
    defaults = PoolConfig(name=name, backends=())
    affinity = reader.string(table, path, "affinity", None)
    if affinity is not None:
        _checkAffinity(reader, _keyPath(path, "affinity"), affinity)
    backendPath = _keyPath(path, "backend")
    backends = tuple(
        _readBackend(reader, item, f"{backendPath}[{index}]")
        for index, item in enumerate(reader.tables(table, path, "backend"))
    )
    if not backends:
        reader.fail(path, f"has no backends; add a [[{backendPath}]] table with a url")
    _checkBackendNames(reader, backendPath, backends)
    health = None
    if "health" in table:
        health = _readHealth(reader, table["health"], _keyPath(path, "health"))
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
    )


_TOKEN = re.compile(r"[\x21-\x7e]+\Z")


def _checkToken(reader: _Reader, path: str, token: str) -> str:
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


def _readTokenFile(reader: _Reader, path: str, filename: str) -> str:
    """
    Read an admin token from a file: its content, without surrounding
    white space (a trailing newline), checked as L{_checkToken} does.
    """
    try:
        with open(filename, "rb") as stream:
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


def _readAdmin(
    reader: _Reader, value: object, directory: str
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
        token = _readTokenFile(reader, "admin.token_file", tokenFile)
    return listen, token, tokenFile


def _admin(
    fileReader: _Reader,
    fromFile: tuple[str | None, str | None, str | None] | None,
    listenFlag: str | None,
    tokenFileFlag: str | None,
) -> AdminConfig | None:
    """
    Combine the file's C{[admin]} table with C{--admin} and
    C{--admin-token-file} (the flags win).
    """
    listen, token, tokenFile = fromFile or (None, None, None)
    if listenFlag is not None:
        if not listenFlag:
            _Reader("--admin").fail("", "must not be empty")
        listen = listenFlag
    if tokenFileFlag is not None:
        if fromFile is None and listenFlag is None:
            raise _configError(
                "--admin-token-file goes with --admin LISTEN or an [admin] table"
            )
        if not tokenFileFlag:
            _Reader("--admin-token-file").fail("", "must not be empty")
        token = _readTokenFile(_Reader("--admin-token-file"), "", tokenFileFlag)
        tokenFile = tokenFileFlag
    if fromFile is None and listenFlag is None:
        return None
    if listen is None:
        fileReader.fail("admin.listen", "is required (or give --admin LISTEN)")
    if token is None:
        if fromFile is None:
            _Reader("--admin").fail(
                "", "needs a token: give --admin-token-file PATH (or token_file in [admin])"
            )
        fileReader.fail("admin", "needs token or token_file (or --admin-token-file PATH)")
    return AdminConfig(listen=listen, token=token, tokenFile=tokenFile)


def _readRoutes(reader: _Reader, table: dict[str, Any]) -> list[RouteConfig]:
    """
    Read the C{[[route]]} tables (their pools are checked later, once the
    pools are known).  Each prefix is checked by the router that will use
    it.
    """
    from ..backends.routing import Router

    routes: list[RouteConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(reader.tables(table, "", "route")):
        path = f"route[{index}]"
        reader.table(item, path, _ROUTE_KEYS)
        prefix = reader.string(item, path, "prefix")
        try:
            Router([(prefix, None)])
        except ConfigError as error:
            reader.fail(f"{path}.prefix", str(error))
        same = prefix.rstrip("/")
        if same in seen:
            reader.fail(
                f"{path}.prefix",
                f"route[{seen[same]}] already has the prefix {_show(prefix)} "
                "(a trailing '/' is ignored)",
            )
        seen[same] = index
        routes.append(RouteConfig(prefix=prefix, pool=reader.string(item, path, "pool")))
    return routes


def _flagPool(backends: Sequence[str], balance: str | None) -> PoolConfig:
    """
    Build the pool called C{default} from C{--backend} and C{--balance}.
    """
    reader = _Reader("--backend")
    members = []
    for url in backends:
        try:
            secure, host, port = parseBackendURL(url)
        except ConfigError as error:
            reader.fail("", str(error))
        members.append(
            BackendConfig(
                name=_hostPort(host, port), url=url, host=host, port=port, secure=secure
            )
        )
    names = [backend.name for backend in members]
    for name in names:
        if names.count(name) > 1:
            reader.fail("", f"{name} is given more than once")
    pool = PoolConfig(name=_FLAG_POOL, backends=tuple(members))
    if balance is not None:
        if not balance:
            _Reader("--balance").fail("", "must not be empty")
        pool = dataclasses.replace(pool, balance=balance)
    return pool


def _flagSessionMap(url: str, fromFile: SessionMapConfig) -> SessionMapConfig:
    """
    Apply C{--redis URL} to the file's C{[session_map]}: type C{redis} on
    C{url}, keeping the file's other options when it named C{redis} too.
    """
    from ..sessionmap.redis import parseRedisURL

    try:
        parseRedisURL(url)
    except ConfigError as error:
        _Reader("--redis").fail("", str(error))
    options = dict(fromFile.options) if fromFile.type == "redis" else {}
    options["url"] = url
    return SessionMapConfig(type="redis", options=tuple(sorted(options.items())))


def loadConfig(
    path: str | None,
    *,
    listen: Sequence[str] = (),
    backends: Sequence[str] = (),
    balance: str | None = None,
    demo: bool = False,
    redis: str | None = None,
    admin: str | None = None,
    adminTokenFile: str | None = None,
) -> GatewayConfig:
    """
    Read a TOML configuration file (or none) and apply the command-line
    flags.

    @param path: the file, or L{None} for flags only.
    @param listen: C{--listen} endpoint strings; when given they replace the
        file's C{listen}.
    @param backends: C{--backend} URLs; they make a pool called C{default}
        served on C{/}, and cannot be combined with pools in the file.
    @param balance: C{--balance}: the balancer of that C{default} pool.
    @param demo: C{--demo}: the service adds demo echo backends, so no pool is
        required.
    @param redis: C{--redis}: a Redis URL; the session map becomes C{redis}
        on it.  The file's other C{[session_map]} options are kept when its
        type is C{redis} too, and dropped otherwise.
    @param admin: C{--admin}: the admin API's endpoint string; replaces the
        file's C{admin.listen}.
    @param adminTokenFile: C{--admin-token-file}: the file holding the
        admin API's token; replaces the file's C{admin.token} or
        C{admin.token_file}.
    @raise ConfigError: with a one-line message naming the file (or option),
        the key and the reason.  Balancer names, session map types and
        endpoint strings are not checked here but by the service, which
        knows the plugins.
    """
    config = GatewayConfig(demo=demo)
    pools: list[PoolConfig] = []
    routes: list[RouteConfig] | None = None
    fileReader = _Reader(_OPTIONS_SOURCE)
    adminFromFile = None

    if path is not None:
        path = os.fspath(path)
        fileReader = _Reader(path)
        document = fileReader.table(_readDocument(path), "", _TOP_KEYS)
        fileListen = fileReader.strings(document, "", "listen")
        if fileListen is not None and not fileListen:
            fileReader.fail("listen", "must list at least one endpoint")
        config = dataclasses.replace(
            config,
            listen=tuple(fileListen or _DEFAULT_LISTEN),
            trustedProxies=_readTrustedProxies(fileReader, document),
            source=path,
        )
        if "timeouts" in document:
            timeouts = _readTimeouts(fileReader, document["timeouts"])
            config = dataclasses.replace(config, timeouts=timeouts)
        if "limits" in document:
            limits = _readLimits(fileReader, document["limits"])
            config = dataclasses.replace(config, limits=limits)
        if "session" in document:
            session = _readSession(fileReader, document["session"])
            config = dataclasses.replace(config, session=session)
        if "session_map" in document:
            sessionMap = _readSessionMap(fileReader, document["session_map"])
            config = dataclasses.replace(config, sessionMap=sessionMap)
        poolTables = fileReader.table(document.get("pool", {}), "pool", None)
        pools = [_readPool(fileReader, name, item) for name, item in poolTables.items()]
        if "route" in document:
            routes = _readRoutes(fileReader, document)
        if "admin" in document:
            adminFromFile = _readAdmin(
                fileReader, document["admin"], os.path.dirname(os.path.abspath(path))
            )

    if listen:
        for endpoint in listen:
            if not endpoint:
                _Reader("--listen").fail("", "must not be empty")
        config = dataclasses.replace(config, listen=tuple(listen))
    if redis is not None:
        config = dataclasses.replace(config, sessionMap=_flagSessionMap(redis, config.sessionMap))
    config = dataclasses.replace(
        config, admin=_admin(fileReader, adminFromFile, admin, adminTokenFile)
    )
    if balance is not None and not backends:
        raise _configError(
            "--balance goes with --backend; set balance in a [pool.NAME] table instead"
        )
    if backends:
        if pools:
            raise _configError(
                f"--backend cannot be combined with pools defined in {path}"
            )
        pools = [_flagPool(backends, balance)]

    poolNames = [pool.name for pool in pools]
    if routes:
        for index, route in enumerate(routes):
            if route.pool not in poolNames:
                known = ", ".join(poolNames) or "none"
                fileReader.fail(
                    f"route[{index}].pool",
                    f"no pool named {_show(route.pool)}; pools: {known}",
                )
    elif len(pools) == 1:
        routes = [RouteConfig(prefix="/", pool=pools[0].name)]
    elif len(pools) > 1:
        fileReader.fail(
            "route",
            f"several pools ({', '.join(poolNames)}) and no [[route]] tables; "
            "add a [[route]] with a prefix and a pool for each",
        )
    if not pools and not demo:
        if path is None:
            raise _configError("no backends: give --backend URL, --config FILE or --demo")
        raise _configError(
            f"{path}: no backends: add a [pool.NAME] table with "
            "[[pool.NAME.backend]] tables, or give --backend URL or --demo"
        )
    return dataclasses.replace(config, pools=tuple(pools), routes=tuple(routes or ()))


def restartNeeded(running: GatewayConfig, new: GatewayConfig) -> list[str]:
    """
    What a reload from C{running} to C{new} cannot apply: everything but the
    backends of existing pools, their C{balance}, C{affinity_ttl},
    C{fail_timeout} and C{connect_attempts}, and the admin token.

    @return: the key paths, as written in the file, whose new values take
        effect only after a restart (empty when the reload applies all).
    """
    paths: list[str] = []
    for key, attribute in (
        ("listen", "listen"),
        ("trusted_proxies", "trustedProxies"),
        ("timeouts", "timeouts"),
        ("limits", "limits"),
        ("session", "session"),
        ("session_map", "sessionMap"),
        ("route", "routes"),
    ):
        if getattr(running, attribute) != getattr(new, attribute):
            paths.append(key)
    if (running.admin is None) != (new.admin is None):
        paths.append("admin")
    elif running.admin is not None and new.admin is not None:
        if running.admin.listen != new.admin.listen:
            paths.append("admin.listen")
    runningPools = {pool.name: pool for pool in running.pools}
    newPools = {pool.name: pool for pool in new.pools}
    for name, pool in newPools.items():
        old = runningPools.get(name)
        if old is None:
            paths.append(f"{_keyPath('pool', name)} (a new pool)")
            continue
        if old.affinity != pool.affinity:
            paths.append(_keyPath(_keyPath("pool", name), "affinity"))
        if old.health != pool.health:
            paths.append(_keyPath(_keyPath("pool", name), "health"))
    for name in runningPools:
        if name not in newPools:
            paths.append(f"{_keyPath('pool', name)} (a pool removed)")
    return paths
