"""
Tests for L{gateway.config.model} through the loader: every key of the file
lands in the dataclass field of the same meaning, what is left out gets the
dataclass defaults, the shipped example and the operator's guide agree with
the loader, and the package's facade exports what it promises.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gateway.config
import gateway.config.load
import gateway.config.tables
from gateway import errors
from gateway.config import (
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
)
from gateway.sessionmap.redis import RedisSessionMapFactory

from .helpers import FULL, POOL, configError, writeConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.toml"
OPERATIONS = ROOT / "docs" / "operations.md"


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
            drain=7.5,
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
        | set(gateway.config.tables._ACCESS_LOG_KEYS)
        | set(RedisSessionMapFactory.options)
        | {"url", "name", "sentinel_password"}  # a shard's table
        | {"type"}
    ),
)
def test_everyKeyDocumented(key: str) -> None:
    """
    Every key the loader accepts is described in docs/operations.md, the
    C{redis} session map's options and a shard's keys too.
    """
    text = OPERATIONS.read_text(encoding="utf-8")
    heading = re.compile(rf"^#### `\[{{1,2}}([\w.]+\.)?{key}\]{{1,2}}`$", re.M)
    assert f"| `{key}` |" in text or heading.search(text)


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


def test_weightBound(tmp_path: Path) -> None:
    """
    A backend's weight goes up to L{gateway.config.model.MAX_WEIGHT}, not beyond
    (the hash balancer turns it into a float).
    """
    from gateway.config.model import MAX_WEIGHT

    path = writeConfig(tmp_path, POOL + f"weight = {MAX_WEIGHT}\n")
    assert loadConfig(path).pool("chat").backends[0].weight == MAX_WEIGHT
    path = writeConfig(tmp_path, POOL + f"weight = {MAX_WEIGHT + 1}\n")
    assert configError(path) == (
        f"{path}: pool.chat.backend[0].weight: must be an integer <= {MAX_WEIGHT}, not {MAX_WEIGHT + 1}"
    )
