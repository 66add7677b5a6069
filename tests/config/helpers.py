"""
What the tests of L{gateway.config} share: a valid pool, a file using every
key, an admin token, and helpers that write a file and load one that must
fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, loadConfig

__all__ = ["POOL", "FULL", "TOKEN", "writeConfig", "configError"]

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
drain = 7.5

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

#: An admin API token long enough to be accepted.
TOKEN = "0123456789abcdef-token"


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
