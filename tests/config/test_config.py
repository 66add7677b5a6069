"""
Tests for L{gateway.config}: the TOML file, the command-line flags and the
one-line errors for everything wrong in either.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

import gateway.config
import gateway.config.load
import gateway.config.tables
from gateway import errors
from gateway.config import (
    MAX_ADMIN_TOKEN,
    MIN_ADMIN_TOKEN,
    AdminConfig,
    BackendConfig,
    ConfigError,
    GatewayConfig,
    HealthCheckConfig,
    Limits,
    PoolConfig,
    RouteConfig,
    SessionConfig,
    SessionMapConfig,
    Timeouts,
    loadConfig,
    parseBackendURL,
    restartNeeded,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.toml"
OPERATIONS = ROOT / "docs" / "operations.md"

# One valid pool; text appended after it lands in the pool's only backend.
POOL = """
[pool.chat]
[[pool.chat.backend]]
url = "ws://127.0.0.1:8765"
"""

FULL = """
listen = ["tcp:8080", "tcp:8443"]
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8", "::1"]

[timeouts]
connect = 1.5
handshake = 3
ping_interval = 30.0
ping_timeout = 15.0
shutdown = 2.0

[limits]
max_header_bytes = 1024
max_connections = 1
max_error_body = 0

[session]
grace = 5
heartbeat = 2.5
heartbeat_timeout = 7
max_message_bytes = 1024
max_buffer_messages = 1
max_buffer_bytes = 1024
max_sessions = 1
max_ended = 0
poll_timeout = 6
max_body_bytes = 1024
max_batch_messages = 1
cors_origins = ["https://app.example"]

[session_map]
type = "redis"
url = "redis://localhost:6379/0"
key_prefix = "gw:"

[[route]]
prefix = "/chat"
pool = "chat"

[[route]]
prefix = "/"
pool = "game"

[pool.chat]
balance = "round_robin"
affinity = "cookie:sid"
affinity_ttl = 60
fail_timeout = 2.5
connect_attempts = 1

[[pool.chat.backend]]
url = "ws://127.0.0.1:8765"
weight = 3
max_connections = 100
name = "first"

[[pool.chat.backend]]
url = "wss://[::1]:9443/"

[pool.chat.health]
type = "http"
path = "/healthz"
interval = 5
timeout = 0.5
rise = 1
fall = 1

[pool.game]
affinity = "address"

[[pool.game.backend]]
url = "ws://game.example.com"
"""


def writeConfig(tmp_path: Path, text: str) -> str:
    """
    Write C{text} to C{gateway.toml} under C{tmp_path}.

    @return: the file's path.
    """
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def configError(path: str | None, **flags: object) -> str:
    """
    Load a configuration that must fail.

    @return: the error message, checked to be a single line.
    """
    with pytest.raises(ConfigError) as caught:
        loadConfig(path, **flags)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def test_fullFile(tmp_path: Path) -> None:
    """
    Every key of the file lands, converted, in the dataclass field of the
    same meaning; integers are accepted for seconds and become floats.
    """
    path = writeConfig(tmp_path, FULL)
    config = loadConfig(path)
    assert config == GatewayConfig(
        listen=("tcp:8080", "tcp:8443"),
        routes=(RouteConfig("/chat", "chat"), RouteConfig("/", "game")),
        pools=(
            PoolConfig(
                name="chat",
                backends=(
                    BackendConfig(
                        name="first",
                        url="ws://127.0.0.1:8765",
                        host="127.0.0.1",
                        port=8765,
                        secure=False,
                        weight=3,
                        maxConnections=100,
                    ),
                    BackendConfig(
                        name="[::1]:9443",
                        url="wss://[::1]:9443/",
                        host="::1",
                        port=9443,
                        secure=True,
                    ),
                ),
                balance="round_robin",
                affinity="cookie:sid",
                affinityTtl=60.0,
                health=HealthCheckConfig(
                    type="http",
                    path="/healthz",
                    interval=5.0,
                    timeout=0.5,
                    rise=1,
                    fall=1,
                ),
                failTimeout=2.5,
                connectAttempts=1,
            ),
            PoolConfig(
                name="game",
                backends=(
                    BackendConfig(
                        name="game.example.com:80",
                        url="ws://game.example.com",
                        host="game.example.com",
                        port=80,
                        secure=False,
                    ),
                ),
                affinity="address",
            ),
        ),
        timeouts=Timeouts(
            connect=1.5,
            handshake=3.0,
            pingInterval=30.0,
            pingTimeout=15.0,
            shutdown=2.0,
        ),
        limits=Limits(maxHeaderBytes=1024, maxConnections=1, maxErrorBody=0),
        trustedProxies=("127.0.0.1/32", "10.0.0.0/8", "::1/128"),
        sessionMap=SessionMapConfig(
            type="redis",
            options=(("key_prefix", "gw:"), ("url", "redis://localhost:6379/0")),
        ),
        session=SessionConfig(
            grace=5.0,
            heartbeat=2.5,
            heartbeatTimeout=7.0,
            maxMessageBytes=1024,
            maxBufferMessages=1,
            maxBufferBytes=1024,
            maxSessions=1,
            maxEnded=0,
            pollTimeout=6.0,
            maxBodyBytes=1024,
            maxBatchMessages=1,
            corsOrigins=("https://app.example",),
        ),
        demo=False,
        source=path,
    )
    assert isinstance(config.timeouts.handshake, float)
    assert isinstance(config.pool("chat").affinityTtl, float)
    assert isinstance(config.session.grace, float)
    assert isinstance(config.session.heartbeatTimeout, float)


def test_defaults(tmp_path: Path) -> None:
    """
    A file with one pool and nothing else gets the dataclass defaults, the
    default listener and an implied route from C{/} to that pool.
    """
    path = writeConfig(tmp_path, POOL)
    config = loadConfig(path)
    assert config.listen == ("tcp:8080",)
    assert config.routes == (RouteConfig("/", "chat"),)
    assert config.timeouts == Timeouts()
    assert config.limits == Limits()
    assert config.sessionMap == SessionMapConfig()
    assert config.session == SessionConfig()
    assert config.trustedProxies == ()
    pool = config.pool("chat")
    assert pool == PoolConfig(
        name="chat",
        backends=(
            BackendConfig(
                name="127.0.0.1:8765",
                url="ws://127.0.0.1:8765",
                host="127.0.0.1",
                port=8765,
                secure=False,
            ),
        ),
    )
    assert pool.health is None


def test_emptyHealthTable(tmp_path: Path) -> None:
    """
    An empty C{[pool.NAME.health]} table turns on active checks with every
    default.
    """
    path = writeConfig(tmp_path, POOL + "[pool.chat.health]\n")
    assert loadConfig(path).pool("chat").health == HealthCheckConfig()


def test_exampleFile() -> None:
    """
    The example shipped in examples/gateway.toml loads without error, and
    its C{[session]} table shows the defaults.
    """
    config = loadConfig(str(EXAMPLE))
    assert [pool.name for pool in config.pools] == ["chat", "game"]
    assert config.source == str(EXAMPLE)
    assert config.session == SessionConfig()


def test_exampleInOperatorsGuide() -> None:
    """
    docs/operations.md shows examples/gateway.toml exactly as shipped.
    """
    example = EXAMPLE.read_text(encoding="utf-8")
    assert f"```toml\n{example.rstrip()}\n```" in OPERATIONS.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "key",
    sorted(
        set(gateway.config.load._TOP_KEYS)
        | set(gateway.config.tables._TIMEOUT_FIELDS)
        | set(gateway.config.tables._LIMIT_FIELDS)
        | set(gateway.config.tables._SESSION_KEYS)
        | set(gateway.config.tables._ROUTE_KEYS)
        | set(gateway.config.tables._POOL_KEYS)
        | set(gateway.config.tables._BACKEND_KEYS)
        | set(gateway.config.tables._HEALTH_KEYS)
        | set(gateway.config.tables._ADMIN_KEYS)
        | {"type"}
    ),
)
def test_everyKeyDocumented(key: str) -> None:
    """
    Every key the loader accepts is described in docs/operations.md.
    """
    text = OPERATIONS.read_text(encoding="utf-8")
    heading = re.compile(rf"^#### `\[{{1,2}}([\w.]+\.)?{key}\]{{1,2}}`$", re.M)
    assert f"| `{key}` |" in text or heading.search(text)


def test_byteOrderMark(tmp_path: Path) -> None:
    """
    A UTF-8 byte order mark, as some editors write, is ignored.
    """
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"\xef\xbb\xbf" + POOL.encode())
    assert loadConfig(str(path)).pool("chat").name == "chat"


def test_reexportedError() -> None:
    """
    L{gateway.config.ConfigError} is L{gateway.errors.ConfigError}, a
    L{gateway.errors.GatewayError}, and the module exports what it promises.
    """
    assert ConfigError is errors.ConfigError
    assert issubclass(ConfigError, errors.GatewayError)
    assert {"loadConfig", "parseBackendURL", "ConfigError", "GatewayConfig"} <= set(
        gateway.config.__all__
    )
    for name in gateway.config.__all__:
        assert hasattr(gateway.config, name)


# Flags.


def test_backendFlags() -> None:
    """
    C{--backend} URLs make a pool called C{default}, routed from C{/}, with
    the default balancer; the source is C{<options>}.
    """
    config = loadConfig(None, backends=["ws://a:1", "wss://[::1]"])
    assert config.source == "<options>"
    assert config.listen == ("tcp:8080",)
    assert config.routes == (RouteConfig("/", "default"),)
    assert config.pools == (
        PoolConfig(
            name="default",
            backends=(
                BackendConfig(name="a:1", url="ws://a:1", host="a", port=1, secure=False),
                BackendConfig(
                    name="[::1]:443", url="wss://[::1]", host="::1", port=443, secure=True
                ),
            ),
        ),
    )


def test_balanceFlag() -> None:
    """
    C{--balance} sets the balancer of the C{--backend} pool, unchecked (the
    service checks names against the plugins).
    """
    config = loadConfig(None, backends=["ws://a:1"], balance="whatever")
    assert config.pool("default").balance == "whatever"


def test_redisFlag(tmp_path: Path) -> None:
    """
    C{--redis URL} makes the session map C{redis} on that URL: with no
    file, with a file whose map is another type (its options dropped), and
    with a file whose map is C{redis} too (its other options kept).
    """
    url = "redis://:pw@10.0.0.9:6379/1"
    expected = SessionMapConfig(type="redis", options=(("url", url),))
    assert loadConfig(None, backends=["ws://a:1"], redis=url).sessionMap == expected
    memory = writeConfig(tmp_path, '[session_map]\ntype = "memory"\nmax_entries = 5\n' + POOL)
    assert loadConfig(memory, redis=url).sessionMap == expected
    redis = writeConfig(
        tmp_path, '[session_map]\ntype = "redis"\nurl = "redis://x"\ntimeout = 2\n' + POOL
    )
    assert loadConfig(redis, redis=url).sessionMap == SessionMapConfig(
        type="redis", options=(("timeout", 2), ("url", url))
    )


def test_listenFlagReplacesFile(tmp_path: Path) -> None:
    """
    C{--listen} values replace the file's C{listen} list, in order.
    """
    path = writeConfig(tmp_path, 'listen = ["tcp:1"]\n' + POOL)
    assert loadConfig(path).listen == ("tcp:1",)
    assert loadConfig(path, listen=["tcp:2", "tcp:3"]).listen == ("tcp:2", "tcp:3")


def test_listenFlagWithoutFile() -> None:
    """
    C{--listen} works without a file too.
    """
    config = loadConfig(None, listen=["unix:/tmp/gw.sock"], backends=["ws://a:1"])
    assert config.listen == ("unix:/tmp/gw.sock",)


def test_backendFlagsWithFileWithoutPools(tmp_path: Path) -> None:
    """
    C{--backend} combines with a file that has no pools: the file gives the
    rest of the settings, the flags give the pool.
    """
    path = writeConfig(tmp_path, "[timeouts]\nconnect = 1\n")
    config = loadConfig(path, backends=["ws://a:1"])
    assert config.timeouts.connect == 1.0
    assert config.routes == (RouteConfig("/", "default"),)
    assert config.source == path


def test_fileRoutesToFlagPool(tmp_path: Path) -> None:
    """
    Routes in a file may name the C{default} pool that C{--backend} makes.
    """
    path = writeConfig(tmp_path, '[[route]]\nprefix = "/ws"\npool = "default"\n')
    config = loadConfig(path, backends=["ws://a:1"])
    assert config.routes == (RouteConfig("/ws", "default"),)


def test_demoWithoutBackends(tmp_path: Path) -> None:
    """
    With C{demo}, no pool is needed (the service adds demo backends), with
    or without a file.
    """
    config = loadConfig(None, demo=True)
    assert config.demo is True
    assert config.pools == ()
    assert config.routes == ()
    path = writeConfig(tmp_path, 'listen = ["tcp:0"]\n')
    assert loadConfig(path, demo=True).listen == ("tcp:0",)


def test_demoKeepsBackends() -> None:
    """
    C{demo} with C{--backend} keeps both.
    """
    config = loadConfig(None, backends=["ws://a:1"], demo=True)
    assert config.demo is True
    assert config.pool("default").backends[0].host == "a"


def test_noBackends() -> None:
    """
    Neither pools, nor C{--backend}, nor C{demo} is an error saying what to
    give.
    """
    assert configError(None) == (
        "no backends: give --backend URL, --config FILE or --demo"
    )


def test_noBackendsInFile(tmp_path: Path) -> None:
    """
    A file with no pools, and no C{--backend} or C{demo}, is an error naming
    the file.
    """
    path = writeConfig(tmp_path, 'listen = ["tcp:1"]\n')
    assert configError(path) == (
        f"{path}: no backends: add a [pool.NAME] table with "
        "[[pool.NAME.backend]] tables, or give --backend URL or --demo"
    )


def test_backendFlagWithFilePools(tmp_path: Path) -> None:
    """
    C{--backend} cannot be mixed with pools from the file.
    """
    path = writeConfig(tmp_path, POOL)
    assert configError(path, backends=["ws://a:1"]) == (
        f"--backend cannot be combined with pools defined in {path}"
    )


def test_balanceWithoutBackend(tmp_path: Path) -> None:
    """
    C{--balance} without C{--backend} is an error pointing at the pool table.
    """
    message = "--balance goes with --backend; set balance in a [pool.NAME] table instead"
    assert configError(None, balance="hash") == message
    assert configError(writeConfig(tmp_path, POOL), balance="hash") == message


@pytest.mark.parametrize(
    "flags, expected",
    [
        pytest.param(
            {"backends": ["x"]},
            "--backend: backend URL 'x' must start with ws:// or wss://",
            id="scheme",
        ),
        pytest.param(
            {"backends": ["ws://a:1/app"]},
            "--backend: backend URL 'ws://a:1/app' must not have a path: "
            "the client's path is passed on unchanged",
            id="path",
        ),
        pytest.param(
            {"backends": ["ws://a:1", "ws://a:1/"]},
            "--backend: a:1 is given more than once",
            id="twice",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "balance": ""},
            "--balance: must not be empty",
            id="empty-balance",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "listen": ["tcp:1", ""]},
            "--listen: must not be empty",
            id="empty-listen",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "redis": ""},
            "--redis: must be a non-empty string such as 'redis://127.0.0.1:6379/0'",
            id="empty-redis",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "redis": "redis://:secret@h:1/x"},
            "--redis: the database must be a number >= 0, not 'x'",
            id="redis-db",
        ),
    ],
)
def test_badFlags(flags: dict[str, object], expected: str) -> None:
    """
    A bad flag value is reported as one line starting with the option name.
    """
    assert configError(None, **flags) == expected


# File errors: (text, expected message after "<file>: ").

FILE_ERRORS = [
    # Unknown keys, everywhere.
    pytest.param(
        "colour = 1\n" + POOL,
        "colour: unknown key; known keys: listen, trusted_proxies, timeouts, "
        "limits, session, session_map, route, pool, admin",
        id="unknown-top",
    ),
    pytest.param(
        '"a b" = 1\n' + POOL,
        '"a b": unknown key; known keys: listen, trusted_proxies, timeouts, '
        "limits, session, session_map, route, pool, admin",
        id="unknown-quoted",
    ),
    pytest.param(
        "[timeouts]\nconect = 1\n" + POOL,
        "timeouts.conect: unknown key; known keys: connect, handshake, "
        "ping_interval, ping_timeout, idle, shutdown",
        id="unknown-timeouts",
    ),
    pytest.param(
        "[limits]\nmax_body = 1\n" + POOL,
        "limits.max_body: unknown key; known keys: max_header_bytes, "
        "max_connections, max_error_body",
        id="unknown-limits",
    ),
    pytest.param(
        "[session]\nheartbeat_interval = 1\n" + POOL,
        "session.heartbeat_interval: unknown key; known keys: grace, heartbeat, "
        "heartbeat_timeout, poll_timeout, max_message_bytes, max_buffer_messages, "
        "max_buffer_bytes, max_sessions, max_ended, max_body_bytes, "
        "max_batch_messages, max_inflight_messages, max_inflight_bytes, cors_origins, slow",
        id="unknown-session",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\nweight = 1\n' + POOL,
        "route[0].weight: unknown key; known keys: prefix, pool",
        id="unknown-route",
    ),
    pytest.param(
        '[pool.chat]\nfailover = "retry"\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.failover: must be one of 'replay', 'notify', 'close', not 'retry'",
        id="failover-policy",
    ),
    pytest.param(
        '[pool.chat]\ndrain_rate = 0\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.drain_rate: must be a number per second > 0 and <= 100000, not 0",
        id="drain-rate-zero",
    ),
    pytest.param(
        '[pool.chat]\nrebalance_rate = 1e6\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.rebalance_rate: must be a number per second >= 0 and <= 100000, not 1000000.0",
        id="rebalance-rate-high",
    ),
    pytest.param(
        '[pool.chat]\nfailover_window = -1\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.failover_window: must be a number of seconds >= 0, not -1",
        id="failover-window-negative",
    ),
    pytest.param(
        '[session]\nslow = "drop"\n' + POOL,
        "session.slow: must be one of 'pause', 'close', not 'drop'",
        id="slow-policy",
    ),
    pytest.param(
        '[pool.chat]\nbalancer = "hash"\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.balancer: unknown key; known keys: balance, affinity, "
        "affinity_ttl, fail_timeout, connect_attempts, backend, health, failover, "
        "failover_window, failover_timeout, drain, drain_rate, rebalance_rate",
        id="unknown-pool",
    ),
    pytest.param(
        POOL + "port = 1\n",
        "pool.chat.backend[0].port: unknown key; known keys: url, weight, "
        "max_connections, name",
        id="unknown-backend",
    ),
    pytest.param(
        POOL + "[pool.chat.health]\nuri = '/'\n",
        "pool.chat.health.uri: unknown key; known keys: type, path, interval, "
        "timeout, rise, fall",
        id="unknown-health",
    ),
    # listen and trusted_proxies.
    pytest.param(
        'listen = "tcp:1"\n' + POOL,
        "listen: must be an array of strings, not 'tcp:1'",
        id="listen-string",
    ),
    pytest.param(
        'listen = ["tcp:1", 8080]\n' + POOL,
        "listen[1]: must be a string, not 8080",
        id="listen-int",
    ),
    pytest.param(
        'listen = [""]\n' + POOL,
        "listen[0]: must not be empty",
        id="listen-empty-string",
    ),
    pytest.param(
        "listen = []\n" + POOL,
        "listen: must list at least one endpoint",
        id="listen-empty",
    ),
    pytest.param(
        'trusted_proxies = ["127.0.0.1/32", "localhost"]\n' + POOL,
        "trusted_proxies[1]: must be a network such as '10.0.0.0/8' or "
        "'::1/128': 'localhost' does not appear to be an IPv4 or IPv6 network",
        id="proxy-name",
    ),
    pytest.param(
        'trusted_proxies = ["10.0.0.1/8"]\n' + POOL,
        "trusted_proxies[0]: must be a network such as '10.0.0.0/8' or "
        "'::1/128': 10.0.0.1/8 has host bits set",
        id="proxy-host-bits",
    ),
    # timeouts: numbers of seconds > 0.
    pytest.param(
        "[timeouts]\nconnect = 0\n" + POOL,
        "timeouts.connect: must be a number of seconds > 0, not 0",
        id="timeout-zero",
    ),
    pytest.param(
        "[timeouts]\nhandshake = -1.5\n" + POOL,
        "timeouts.handshake: must be a number of seconds > 0, not -1.5",
        id="timeout-negative",
    ),
    pytest.param(
        "[timeouts]\nping_interval = true\n" + POOL,
        "timeouts.ping_interval: must be a number of seconds > 0, not true",
        id="timeout-bool",
    ),
    pytest.param(
        '[timeouts]\nping_timeout = "10"\n' + POOL,
        "timeouts.ping_timeout: must be a number of seconds > 0, not '10'",
        id="timeout-string",
    ),
    pytest.param(
        "[timeouts]\nshutdown = inf\n" + POOL,
        "timeouts.shutdown: must be a number of seconds > 0, not inf",
        id="timeout-inf",
    ),
    pytest.param(
        "[timeouts]\nshutdown = nan\n" + POOL,
        "timeouts.shutdown: must be a number of seconds > 0, not nan",
        id="timeout-nan",
    ),
    pytest.param(
        "timeouts = 5\n" + POOL,
        "timeouts: must be a table, not 5",
        id="timeouts-not-table",
    ),
    # limits: integers at their bounds.
    pytest.param(
        "[limits]\nmax_header_bytes = 1023\n" + POOL,
        "limits.max_header_bytes: must be an integer >= 1024, not 1023",
        id="limit-header",
    ),
    pytest.param(
        "[limits]\nmax_connections = 0\n" + POOL,
        "limits.max_connections: must be an integer >= 1, not 0",
        id="limit-connections",
    ),
    pytest.param(
        "[limits]\nmax_error_body = -1\n" + POOL,
        "limits.max_error_body: must be an integer >= 0, not -1",
        id="limit-error-body",
    ),
    pytest.param(
        "[limits]\nmax_connections = 10.0\n" + POOL,
        "limits.max_connections: must be an integer >= 1, not 10.0",
        id="limit-float",
    ),
    pytest.param(
        "[limits]\nmax_connections = true\n" + POOL,
        "limits.max_connections: must be an integer >= 1, not true",
        id="limit-bool",
    ),
    # session: seconds > 0, integers at their bounds, heartbeat_timeout >
    # heartbeat.
    pytest.param(
        "session = 30\n" + POOL,
        "session: must be a table, not 30",
        id="session-not-table",
    ),
    pytest.param(
        "[session]\ngrace = 0\n" + POOL,
        "session.grace: must be a number of seconds > 0, not 0",
        id="session-grace",
    ),
    pytest.param(
        "[session]\nheartbeat = -1\n" + POOL,
        "session.heartbeat: must be a number of seconds > 0, not -1",
        id="session-heartbeat",
    ),
    pytest.param(
        "[session]\nheartbeat_timeout = 0.0\n" + POOL,
        "session.heartbeat_timeout: must be a number of seconds > 0, not 0.0",
        id="session-heartbeat-timeout",
    ),
    pytest.param(
        '[session]\ngrace = "30"\n' + POOL,
        "session.grace: must be a number of seconds > 0, not '30'",
        id="session-grace-string",
    ),
    pytest.param(
        "[session]\nheartbeat = true\n" + POOL,
        "session.heartbeat: must be a number of seconds > 0, not true",
        id="session-heartbeat-bool",
    ),
    pytest.param(
        "[session]\ngrace = inf\n" + POOL,
        "session.grace: must be a number of seconds > 0, not inf",
        id="session-grace-inf",
    ),
    pytest.param(
        "[session]\nmax_message_bytes = 1023\n" + POOL,
        "session.max_message_bytes: must be an integer >= 1024, not 1023",
        id="session-max-message-bytes",
    ),
    pytest.param(
        "[session]\nmax_buffer_messages = 0\n" + POOL,
        "session.max_buffer_messages: must be an integer >= 1, not 0",
        id="session-max-buffer-messages",
    ),
    pytest.param(
        "[session]\nmax_buffer_bytes = 1023\n" + POOL,
        "session.max_buffer_bytes: must be an integer >= 1024, not 1023",
        id="session-max-buffer-bytes",
    ),
    pytest.param(
        "[session]\nmax_sessions = 0\n" + POOL,
        "session.max_sessions: must be an integer >= 1, not 0",
        id="session-max-sessions",
    ),
    pytest.param(
        "[session]\nmax_ended = -1\n" + POOL,
        "session.max_ended: must be an integer >= 0, not -1",
        id="session-max-ended",
    ),
    pytest.param(
        "[session]\nmax_sessions = 10.0\n" + POOL,
        "session.max_sessions: must be an integer >= 1, not 10.0",
        id="session-integer-float",
    ),
    pytest.param(
        "[session]\nmax_ended = false\n" + POOL,
        "session.max_ended: must be an integer >= 0, not false",
        id="session-integer-bool",
    ),
    pytest.param(
        '[session]\nmax_buffer_bytes = "8MiB"\n' + POOL,
        "session.max_buffer_bytes: must be an integer >= 1024, not '8MiB'",
        id="session-integer-string",
    ),
    pytest.param(
        "[session]\nheartbeat = 10\nheartbeat_timeout = 10\n" + POOL,
        "session.heartbeat_timeout: must be greater than session.heartbeat "
        "(10.0), not 10.0",
        id="session-heartbeat-timeout-equal",
    ),
    pytest.param(
        "[session]\nheartbeat = 10\nheartbeat_timeout = 5\n" + POOL,
        "session.heartbeat_timeout: must be greater than session.heartbeat "
        "(10.0), not 5.0",
        id="session-heartbeat-timeout-less",
    ),
    pytest.param(
        "[session]\nheartbeat = 30\n" + POOL,
        "session.heartbeat_timeout: must be greater than session.heartbeat "
        "(30.0), not 25.0",
        id="session-heartbeat-past-default-timeout",
    ),
    # session_map.
    pytest.param(
        'session_map = "memory"\n' + POOL,
        "session_map: must be a table, not 'memory'",
        id="session-map-string",
    ),
    pytest.param(
        "[session_map]\ntype = 1\n" + POOL,
        "session_map.type: must be a string, not 1",
        id="session-map-type",
    ),
    # routes.
    pytest.param(
        '[route]\nprefix = "/"\npool = "chat"\n' + POOL,
        "route: must be an array of tables, written [[route]], not a table",
        id="route-single",
    ),
    pytest.param(
        'route = ["/"]\n' + POOL,
        "route[0]: must be a table, not '/'",
        id="route-not-table",
    ),
    pytest.param(
        '[[route]]\npool = "chat"\n' + POOL,
        "route[0].prefix: is required",
        id="route-no-prefix",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\n' + POOL,
        "route[0].pool: is required",
        id="route-no-pool",
    ),
    pytest.param(
        '[[route]]\nprefix = "/a"\npool = "chat"\n'
        '[[route]]\nprefix = "/a"\npool = "chat"\n' + POOL,
        "route[1].prefix: route[0] already has the prefix '/a' "
        "(a trailing '/' is ignored)",
        id="route-duplicate",
    ),
    pytest.param(
        '[[route]]\nprefix = "/a"\npool = "chat"\n'
        '[[route]]\nprefix = "/a/"\npool = "chat"\n' + POOL,
        "route[1].prefix: route[0] already has the prefix '/a/' "
        "(a trailing '/' is ignored)",
        id="route-duplicate-slash",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\n'
        '[[route]]\nprefix = "/g"\npool = "game"\n' + POOL,
        "route[1].pool: no pool named 'game'; pools: chat",
        id="route-unknown-pool",
    ),
    pytest.param(
        POOL + '[pool.game]\n[[pool.game.backend]]\nurl = "ws://b"\n',
        "route: several pools (chat, game) and no [[route]] tables; add a "
        "[[route]] with a prefix and a pool for each",
        id="pools-without-routes",
    ),
    # pools.
    pytest.param(
        "pool = 1\n",
        "pool: must be a table, not 1",
        id="pool-not-table",
    ),
    pytest.param(
        "[pool]\nchat = 1\n",
        "pool.chat: must be a table, not 1",
        id="pool-entry-not-table",
    ),
    pytest.param(
        '[pool."a.b"]\n[[pool."a.b".backend]]\nurl = "ws://a"\n',
        "pool.\"a.b\": a pool name must be letters, digits, '_' and '-' only",
        id="pool-name",
    ),
    pytest.param(
        '[pool.chat]\nbalance = "hash"\n',
        "pool.chat: has no backends; add a [[pool.chat.backend]] table with a url",
        id="pool-no-backend",
    ),
    pytest.param(
        "[pool.chat]\nbackend = []\n",
        "pool.chat: has no backends; add a [[pool.chat.backend]] table with a url",
        id="pool-empty-backends",
    ),
    pytest.param(
        '[pool.chat]\n[pool.chat.backend]\nurl = "ws://a"\n',
        "pool.chat.backend: must be an array of tables, written "
        "[[pool.chat.backend]], not a table",
        id="pool-backend-single",
    ),
    pytest.param(
        '[pool.chat]\nbalance = 1\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.balance: must be a string, not 1",
        id="pool-balance-type",
    ),
    pytest.param(
        '[pool.chat]\nbalance = ""\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.balance: must not be empty",
        id="pool-balance-empty",
    ),
    pytest.param(
        '[pool.chat]\naffinity = 1\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.affinity: must be a string, not 1",
        id="affinity-type",
    ),
    pytest.param(
        '[pool.chat]\naffinity_ttl = 0\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.affinity_ttl: must be a number of seconds > 0, not 0",
        id="affinity-ttl",
    ),
    pytest.param(
        '[pool.chat]\nfail_timeout = false\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.fail_timeout: must be a number of seconds > 0, not false",
        id="fail-timeout",
    ),
    pytest.param(
        '[pool.chat]\nconnect_attempts = 0\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.connect_attempts: must be an integer >= 1, not 0",
        id="connect-attempts",
    ),
    # backends.
    pytest.param(
        "[pool.chat]\n[[pool.chat.backend]]\nweight = 1\n",
        "pool.chat.backend[0].url: is required",
        id="backend-no-url",
    ),
    pytest.param(
        '[pool.chat]\n[[pool.chat.backend]]\nurl = "http://x"\n',
        "pool.chat.backend[0].url: backend URL 'http://x' must start with "
        "ws:// or wss://",
        id="backend-scheme",
    ),
    pytest.param(
        '[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://h/app"\n',
        "pool.chat.backend[0].url: backend URL 'ws://h/app' must not have a "
        "path: the client's path is passed on unchanged",
        id="backend-path",
    ),
    pytest.param(
        POOL + '[[pool.chat.backend]]\nurl = "ws://b"\nweight = 0\n',
        "pool.chat.backend[1].weight: must be an integer >= 1, not 0",
        id="backend-weight",
    ),
    pytest.param(
        POOL + "weight = true\n",
        "pool.chat.backend[0].weight: must be an integer >= 1, not true",
        id="backend-weight-bool",
    ),
    pytest.param(
        POOL + "weight = 1.5\n",
        "pool.chat.backend[0].weight: must be an integer >= 1, not 1.5",
        id="backend-weight-float",
    ),
    pytest.param(
        POOL + "max_connections = -1\n",
        "pool.chat.backend[0].max_connections: must be an integer >= 0, not -1",
        id="backend-max-connections",
    ),
    pytest.param(
        POOL + 'name = ""\n',
        "pool.chat.backend[0].name: must not be empty",
        id="backend-name-empty",
    ),
    pytest.param(
        POOL + '[[pool.chat.backend]]\nurl = "ws://127.0.0.1:8765/"\n',
        "pool.chat.backend[1]: backend[0] is already named '127.0.0.1:8765'; "
        "give each backend of a pool its own name",
        id="backend-same-default-name",
    ),
    pytest.param(
        POOL + 'name = "x"\n[[pool.chat.backend]]\nurl = "ws://b"\nname = "x"\n',
        "pool.chat.backend[1]: backend[0] is already named 'x'; "
        "give each backend of a pool its own name",
        id="backend-same-name",
    ),
    pytest.param(
        '[pool.chat]\nbackend = ["ws://a"]\n',
        "pool.chat.backend[0]: must be a table, not 'ws://a'",
        id="backend-not-table",
    ),
    # health checks.
    pytest.param(
        POOL + "[pool.chat.health]\ntype = 'icmp'\n",
        "pool.chat.health.type: must be one of 'websocket', 'http', 'tcp', "
        "not 'icmp'",
        id="health-type",
    ),
    pytest.param(
        POOL + "[pool.chat.health]\npath = 'health'\n",
        "pool.chat.health.path: must start with '/' and be printable ASCII "
        "without spaces (percent-encode anything else), not 'health'",
        id="health-path",
    ),
    pytest.param(
        POOL + "[pool.chat.health]\npath = '/a b'\n",
        "pool.chat.health.path: must start with '/' and be printable ASCII "
        "without spaces (percent-encode anything else), not '/a b'",
        id="health-path-space",
    ),
    pytest.param(
        POOL + "[pool.chat.health]\ninterval = 0\n",
        "pool.chat.health.interval: must be a number of seconds > 0, not 0",
        id="health-interval",
    ),
    pytest.param(
        POOL + "[pool.chat.health]\ntimeout = -1\n",
        "pool.chat.health.timeout: must be a number of seconds > 0, not -1",
        id="health-timeout",
    ),
    pytest.param(
        POOL + "[pool.chat.health]\nrise = 0\n",
        "pool.chat.health.rise: must be an integer >= 1, not 0",
        id="health-rise",
    ),
    pytest.param(
        POOL + "[pool.chat.health]\nfall = 0\n",
        "pool.chat.health.fall: must be an integer >= 1, not 0",
        id="health-fall",
    ),
    pytest.param(
        '[pool.chat]\nhealth = "tcp"\n[[pool.chat.backend]]\nurl = "ws://a"\n',
        "pool.chat.health: must be a table, not 'tcp'",
        id="health-not-table",
    ),
]


@pytest.mark.parametrize("text, expected", FILE_ERRORS)
def test_fileErrors(tmp_path: Path, text: str, expected: str) -> None:
    """
    Each mistake in the file is reported as exactly one line:
    C{"<file>: <dotted key path>: <reason>"}.
    """
    path = writeConfig(tmp_path, text)
    assert configError(path) == f"{path}: {expected}"


@pytest.mark.parametrize(
    "key, value",
    [
        ("affinity", "cookie"),
        ("affinity", "cookie:"),
        ("affinity", "path:x"),
        ("affinity", "address:x"),
        ("affinity", "header:a b"),
    ],
)
def test_badAffinity(tmp_path: Path, key: str, value: str) -> None:
    """
    An affinity spec that L{gateway.backends.routing.parseKeySpec} rejects is one
    line naming the file, the key and the spec, with the parser's reason.
    """
    path = writeConfig(
        tmp_path,
        f'[pool.chat]\n{key} = "{value}"\n[[pool.chat.backend]]\nurl = "ws://a"\n',
    )
    message = configError(path)
    assert message.startswith(f"{path}: pool.chat.{key}: bad affinity key {value!r}")


@pytest.mark.parametrize("prefix", ["chat", "", "/a?b", "/a#b", "/a b", "/caf\u00e9"])
def test_badRoutePrefix(tmp_path: Path, prefix: str) -> None:
    """
    A route prefix that L{gateway.backends.routing.Router} rejects (not starting with
    C{/}, with a query, fragment, space or non-ASCII character) is one line
    naming the file, the route and the prefix.
    """
    path = writeConfig(
        tmp_path, f"[[route]]\nprefix = {prefix!r}\npool = 'chat'\n" + POOL
    )
    message = configError(path)
    if prefix:
        assert message.startswith(f"{path}: route[0].prefix: route prefix {prefix!r} ")
    else:
        assert message == f"{path}: route[0].prefix: must not be empty"


def test_longValueShortened(tmp_path: Path) -> None:
    """
    A long bad value is shortened in the message.
    """
    path = writeConfig(tmp_path, 'listen = ["tcp:1", ' + "1" * 100 + "]\n" + POOL)
    assert configError(path) == (
        f"{path}: listen[1]: must be a string, not {'1' * 57}..."
    )


def test_newlinesEscaped(tmp_path: Path) -> None:
    """
    A newline in a bad value or in an unknown key is escaped, so the
    message stays on one line.
    """
    path = writeConfig(tmp_path, POOL + '[pool.chat.health]\ntype = "a\\nb"\n')
    assert configError(path) == (
        f"{path}: pool.chat.health.type: must be one of 'websocket', 'http', "
        "'tcp', not 'a\\nb'"
    )
    path = writeConfig(
        tmp_path,
        '[pool.chat]\naffinity = "cookie:a\\nb"\n[[pool.chat.backend]]\nurl = "ws://a"\n',
    )
    assert "\n" not in configError(path)
    path = writeConfig(tmp_path, '"a\\nb" = 1\n' + POOL)
    assert configError(path).startswith(f'{path}: "a\\nb": unknown key; ')


def test_missingFile(tmp_path: Path) -> None:
    """
    A file that does not exist is one line naming it and saying why.
    """
    path = str(tmp_path / "nope.toml")
    assert configError(path) == f"{path}: cannot read the file: No such file or directory"


def test_directory(tmp_path: Path) -> None:
    """
    A directory given as the file is one line naming it.
    """
    assert configError(str(tmp_path)) == f"{tmp_path}: cannot read the file: Is a directory"


def test_notUTF8(tmp_path: Path) -> None:
    """
    A file that is not UTF-8 is one line naming it and the offset.
    """
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"listen = ['\xff']\n")
    assert configError(str(path)) == f"{path}: not UTF-8 text: bad byte at offset 11"


def test_tomlSyntax(tmp_path: Path) -> None:
    """
    A TOML syntax error is one line with tomllib's line and column.
    """
    path = writeConfig(tmp_path, POOL + "weight = \n")
    assert configError(path) == (
        f"{path}: not valid TOML: Invalid value (at line 5, column 10)"
    )


def test_tomlDuplicateTable(tmp_path: Path) -> None:
    """
    A table declared twice is a TOML error naming its line.
    """
    path = writeConfig(tmp_path, POOL + "[timeouts]\n[timeouts]\n")
    message = configError(path)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert message.endswith("(at line 6, column 10)")


# parseBackendURL.


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ws://example.com", (False, "example.com", 80)),
        ("wss://example.com", (True, "example.com", 443)),
        ("ws://127.0.0.1:8765", (False, "127.0.0.1", 8765)),
        ("wss://h:1/", (True, "h", 1)),
        ("ws://h:65535", (False, "h", 65535)),
        ("ws://[::1]:8765", (False, "::1", 8765)),
        ("wss://[2001:db8::1]", (True, "2001:db8::1", 443)),
        ("ws://[::1]/", (False, "::1", 80)),
        ("WS://Host:8", (False, "Host", 8)),
    ],
)
def test_parseBackendURL(url: str, expected: tuple[bool, str, int]) -> None:
    """
    C{ws://} and C{wss://} URLs give C{(secure, host, port)}, with default
    ports 80 and 443 and IPv6 hosts out of their brackets.
    """
    assert parseBackendURL(url) == expected


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://x", "must start with ws:// or wss://"),
        ("x", "must start with ws:// or wss://"),
        ("ws:/x", "must start with ws:// or wss://"),
        ("ws://h/app", "must not have a path: the client's path is passed on unchanged"),
        ("ws://h//", "must not have a path: the client's path is passed on unchanged"),
        ("ws://h?a=1", "must not have a query: the client's query is passed on unchanged"),
        ("ws://h/?a=1", "must not have a query: the client's query is passed on unchanged"),
        ("ws://h#top", "must not have a fragment"),
        ("ws://u:p@h", "must not contain a user name or password"),
        ("ws://", "must name a host"),
        ("ws://:80", "has a bad host name ''"),
        ("ws://a b", "has a bad host name 'a b'"),
        ("ws://h:0", "has a bad port '0': it must be a number from 1 to 65535"),
        ("ws://h:65536", "has a bad port '65536': it must be a number from 1 to 65535"),
        ("ws://h:", "has a bad port '': it must be a number from 1 to 65535"),
        ("ws://h:x", "has a bad port 'x': it must be a number from 1 to 65535"),
        ("ws://h:-1", "has a bad port '-1': it must be a number from 1 to 65535"),
        ("ws://::1:80", "must put an IPv6 address in brackets, as in ws://[::1]:8765"),
        ("ws://[::1", "has an unclosed '[' around its host"),
        ("ws://[nope]", "has 'nope' in brackets, which is not an IPv6 address"),
        ("ws://[::1]80", "must have only ':PORT' after the ']' of its host"),
        ("ws://[::1]:0", "has a bad port '0': it must be a number from 1 to 65535"),
    ],
)
def test_parseBackendURLErrors(url: str, reason: str) -> None:
    """
    Anything but C{ws[s]://host[:port]} is a one-line L{ConfigError} quoting
    the URL and saying what is wrong with it.
    """
    with pytest.raises(ConfigError) as caught:
        parseBackendURL(url)
    assert str(caught.value) == f"backend URL {url!r} {reason}"


def test_secondsAreFloats(tmp_path: Path) -> None:
    """
    Every seconds value is a finite float, whether written as integer or
    float.
    """
    path = writeConfig(tmp_path, "[timeouts]\nconnect = 7\nshutdown = 0.25\n" + POOL)
    timeouts = loadConfig(path).timeouts
    assert timeouts.connect == 7.0 and type(timeouts.connect) is float
    assert timeouts.shutdown == 0.25
    assert all(math.isfinite(value) for value in vars(timeouts).values())


def test_idleTimeoutMayBeZeroButNotNegative(tmp_path) -> None:
    """
    C{timeouts.idle} is the one timeout that may be 0 (never close); a
    negative value is refused with a one-line message.
    """
    from gateway.config import loadConfig

    good = tmp_path / "good.toml"
    good.write_text('[timeouts]\nidle = 0\n[pool.p]\n[[pool.p.backend]]\nurl = "ws://h:1"\n')
    assert loadConfig(str(good)).timeouts.idle == 0.0
    bad = tmp_path / "bad.toml"
    bad.write_text('[timeouts]\nidle = -1\n[pool.p]\n[[pool.p.backend]]\nurl = "ws://h:1"\n')
    with pytest.raises(ConfigError) as caught:
        loadConfig(str(bad))
    assert str(caught.value) == f"{bad}: timeouts.idle: must be a number of seconds >= 0, not -1"


def test_sessionHeartbeatTimeoutJustAboveHeartbeat(tmp_path: Path) -> None:
    """
    C{session.heartbeat_timeout} only has to be greater than
    C{session.heartbeat}, by any amount; keys left out of C{[session]} keep
    their defaults, and an empty C{[session]} table is all defaults.
    """
    path = writeConfig(
        tmp_path, "[session]\nheartbeat = 10\nheartbeat_timeout = 10.001\n" + POOL
    )
    session = loadConfig(path).session
    assert (session.heartbeat, session.heartbeatTimeout) == (10.0, 10.001)
    assert session.grace == SessionConfig.grace
    assert session.maxSessions == SessionConfig.maxSessions
    path = writeConfig(tmp_path, "[session]\n" + POOL)
    assert loadConfig(path).session == SessionConfig()


def test_longPollingSessionKeys(tmp_path) -> None:
    """
    The long-polling keys of [session] are read; poll_timeout must stay
    under heartbeat_timeout, and cors_origins must be origins or "*".
    """
    from gateway.config import loadConfig

    pool = '[pool.p]\n[[pool.p.backend]]\nurl = "ws://h:1"\n'
    good = tmp_path / "good.toml"
    good.write_text('[session]\npoll_timeout = 5\nmax_body_bytes = 2048\nmax_batch_messages = 7\n'
                    'cors_origins = ["https://app.example", "*"]\n' + pool)
    session = loadConfig(str(good)).session
    assert (session.pollTimeout, session.maxBodyBytes, session.maxBatchMessages) == (5.0, 2048, 7)
    assert session.corsOrigins == ("https://app.example", "*")
    for text, message in [
        ("poll_timeout = 30", "session.poll_timeout: must be less than session.heartbeat_timeout (25.0), not 30.0"),
        ('cors_origins = ["app.example"]', 'session.cors_origins[0]: must be "*" or an origin such as "https://app.example", not \'app.example\''),
        ("max_body_bytes = 10", "session.max_body_bytes: must be an integer >= 1024, not 10"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text("[session]\n" + text + "\n" + pool)
        with pytest.raises(ConfigError) as caught:
            loadConfig(str(bad))
        assert str(caught.value) == f"{bad}: {message}"


# The admin API and reloads.

TOKEN = "0123456789abcdef-token"


def test_weightBound(tmp_path: Path) -> None:
    """
    A backend's weight goes up to L{gateway.backends.pool.MAX_WEIGHT}, not beyond
    (the hash balancer turns it into a float).
    """
    from gateway.backends.pool import MAX_WEIGHT

    path = writeConfig(tmp_path, POOL + f"weight = {MAX_WEIGHT}\n")
    assert loadConfig(path).pool("chat").backends[0].weight == MAX_WEIGHT
    path = writeConfig(tmp_path, POOL + f"weight = {MAX_WEIGHT + 1}\n")
    assert configError(path) == (
        f"{path}: pool.chat.backend[0].weight: must be an integer <= {MAX_WEIGHT}, not {MAX_WEIGHT + 1}"
    )


def test_noAdminByDefault(tmp_path: Path) -> None:
    """
    Without an C{[admin]} table or C{--admin}, there is no admin API.
    """
    assert loadConfig(writeConfig(tmp_path, POOL)).admin is None
    assert loadConfig(None, backends=["ws://a:1"]).admin is None


def test_adminTable(tmp_path: Path) -> None:
    """
    C{[admin]} gives the listener and the token; the token is never shown
    by C{repr}.
    """
    path = writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9090"\ntoken = "{TOKEN}"\n' + POOL)
    admin = loadConfig(path).admin
    assert admin == AdminConfig(listen="tcp:9090", token=TOKEN, tokenFile=None)
    assert TOKEN not in repr(admin) and TOKEN not in repr(loadConfig(path))


def test_adminTokenFile(tmp_path: Path) -> None:
    """
    C{token_file} is read (without its trailing newline), relative to the
    configuration file's directory.
    """
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin").write_text(f"  {TOKEN}\n")
    path = writeConfig(tmp_path, '[admin]\nlisten = "tcp:9090"\ntoken_file = "secrets/admin"\n' + POOL)
    admin = loadConfig(path).admin
    assert admin.token == TOKEN
    assert admin.tokenFile == str(tmp_path / "secrets" / "admin")


def test_adminFlags(tmp_path: Path) -> None:
    """
    C{--admin} and C{--admin-token-file} make the admin API without a
    table, and replace the table's C{listen} and token when there is one.
    """
    token = tmp_path / "token"
    token.write_text("t" * 16 + "\n")
    admin = loadConfig(None, backends=["ws://a:1"], admin="tcp:9", adminTokenFile=str(token)).admin
    assert (admin.listen, admin.token, admin.tokenFile) == ("tcp:9", "t" * 16, str(token))
    path = writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9090"\ntoken = "{TOKEN}"\n' + POOL)
    admin = loadConfig(path, admin="unix:/run/admin.sock").admin
    assert (admin.listen, admin.token) == ("unix:/run/admin.sock", TOKEN)
    admin = loadConfig(path, adminTokenFile=str(token)).admin
    assert (admin.listen, admin.token) == ("tcp:9090", "t" * 16)


@pytest.mark.parametrize(
    "table, expected",
    [
        ('listen = "tcp:9090"\n', "admin: needs token or token_file (or --admin-token-file PATH)"),
        (f'token = "{TOKEN}"\n', "admin.listen: is required (or give --admin LISTEN)"),
        (f'listen = "tcp:9090"\ntoken = "{TOKEN}"\ntoken_file = "t"\n',
         "admin: give token or token_file, not both"),
        ('listen = "tcp:9090"\ntoken = "short"\n',
         "admin.token: must be at least 16 characters long, not 5"),
        ('listen = "tcp:9090"\ntoken = "' + "x" * 15 + '"\n',
         "admin.token: must be at least 16 characters long, not 15"),
        ('listen = "tcp:9090"\ntoken = "' + "x" * 1025 + '"\n',
         "admin.token: must be at most 1024 characters long"),
        ('listen = "tcp:9090"\ntoken = "with a space in it"\n',
         "admin.token: must be printable ASCII without spaces"),
        ('listen = "tcp:9090"\ntoken = "h\\u00e9h\\u00e9h\\u00e9h\\u00e9h\\u00e9h\\u00e9"\n',
         "admin.token: must be printable ASCII without spaces"),
        ('listen = 9090\n', "admin.listen: must be a string, not 9090"),
        ('port = 9090\n', "admin.port: unknown key; known keys: listen, token, token_file"),
    ],
    ids=["no-token", "no-listen", "both", "short", "one-short", "long", "space", "non-ascii",
         "listen-type", "unknown"],
)
def test_adminErrors(tmp_path: Path, table: str, expected: str) -> None:
    """
    Each mistake in C{[admin]} is one line naming the key; the token is
    never shown.
    """
    path = writeConfig(tmp_path, "[admin]\n" + table + POOL)
    message = configError(path)
    assert message == f"{path}: {expected}"
    assert TOKEN not in message


def test_adminTokenAtTheBounds(tmp_path: Path) -> None:
    """
    Tokens of exactly L{MIN_ADMIN_TOKEN} and L{MAX_ADMIN_TOKEN} characters
    are accepted.
    """
    for size in (MIN_ADMIN_TOKEN, MAX_ADMIN_TOKEN):
        path = writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9"\ntoken = "{"k" * size}"\n' + POOL)
        assert loadConfig(path).admin.token == "k" * size


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "cannot read {file}: No such file or directory"),
        (b"\n", "{file} is empty"),
        (b"\xff" * 20, "{file} must hold printable ASCII without spaces"),
        (b"short\n", "the token in {file}: must be at least 16 characters long, not 5"),
        (b"x" * 5000, "the token in {file}: must be at most 1024 characters long"),
    ],
    ids=["missing", "empty", "binary", "short", "long"],
)
def test_adminTokenFileErrors(tmp_path: Path, content: bytes | None, reason: str) -> None:
    """
    A token file that cannot be read or holds no usable token is one line,
    naming the key (or flag) and the file, never the token.
    """
    token = tmp_path / "token"
    if content is not None:
        token.write_bytes(content)
    path = writeConfig(tmp_path, '[admin]\nlisten = "tcp:9"\ntoken_file = "token"\n' + POOL)
    assert configError(path) == f"{path}: admin.token_file: {reason.format(file=token)}"
    assert configError(None, backends=["ws://a:1"], admin="tcp:9", adminTokenFile=str(token)) == (
        f"--admin-token-file: {reason.format(file=token)}"
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"admin": "tcp:9"}, "--admin: needs a token: give --admin-token-file PATH "
                             "(or token_file in [admin])"),
        ({"admin": ""}, "--admin: must not be empty"),
        ({"adminTokenFile": "/x"}, "--admin-token-file goes with --admin LISTEN or an [admin] table"),
        ({"admin": "tcp:9", "adminTokenFile": ""}, "--admin-token-file: must not be empty"),
    ],
)
def test_adminFlagErrors(flags: dict[str, str], expected: str) -> None:
    """
    The admin flags used wrongly are one line naming the flag.
    """
    assert configError(None, backends=["ws://a:1"], **flags) == expected


def test_restartNeededNothing(tmp_path: Path) -> None:
    """
    What a reload applies by itself (backends, their weights and limits,
    a pool's balance, affinity_ttl, fail_timeout, connect_attempts, the
    admin token) needs no restart.
    """
    old = loadConfig(writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9"\ntoken = "{TOKEN}"\n' + POOL))
    new = loadConfig(writeConfig(
        tmp_path,
        f'[admin]\nlisten = "tcp:9"\ntoken = "{"n" * 16}"\n'
        '[pool.chat]\nbalance = "hash"\naffinity_ttl = 5\nfail_timeout = 2\nconnect_attempts = 1\n'
        '[[pool.chat.backend]]\nurl = "ws://127.0.0.1:1"\nweight = 3\nmax_connections = 4\n',
    ))
    assert restartNeeded(old, new) == []


def test_restartNeeded(tmp_path: Path) -> None:
    """
    Everything else is listed by its key path.
    """
    old = loadConfig(writeConfig(
        tmp_path,
        f'[admin]\nlisten = "tcp:9"\ntoken = "{TOKEN}"\n'
        '[[route]]\nprefix = "/"\npool = "chat"\n'
        '[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\n'
        '[pool.gone]\n[[pool.gone.backend]]\nurl = "ws://a"\n',
    ))
    new = loadConfig(writeConfig(
        tmp_path,
        'listen = ["tcp:1"]\ntrusted_proxies = ["10.0.0.0/8"]\n[timeouts]\nconnect = 1\n'
        '[limits]\nmax_connections = 5\n[session]\ngrace = 1\n[session_map]\nmax_entries = 9\n'
        f'[admin]\nlisten = "tcp:10"\ntoken = "{TOKEN}"\n'
        '[[route]]\nprefix = "/x"\npool = "chat"\n'
        '[pool.chat]\naffinity = "address"\n[[pool.chat.backend]]\nurl = "ws://a"\n'
        '[pool.chat.health]\n'
        '[pool.new]\n[[pool.new.backend]]\nurl = "ws://a"\n',
    ))
    assert restartNeeded(old, new) == [
        "listen", "trusted_proxies", "timeouts", "limits", "session", "session_map", "route",
        "admin.listen", "pool.chat.affinity", "pool.chat.health", "pool.new (a new pool)",
        "pool.gone (a pool removed)",
    ]
    assert restartNeeded(old, dataclasses.replace(old, admin=None)) == ["admin"]
