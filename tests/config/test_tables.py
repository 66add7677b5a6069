"""
Tests for L{gateway.config.tables}: each mistake in each table of the file is
one line naming the file, the key path and the reason, and the checks that
span keys of one table (the session's heartbeat and poll timeouts).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, SessionConfig, loadConfig

from .helpers import POOL, configError, writeConfig

# File errors: (text, expected message after "<file>: ").

FILE_ERRORS = [
    # Unknown keys, everywhere.
    pytest.param(
        "colour = 1\n" + POOL,
        "colour: unknown key; known keys: listen, trusted_proxies, timeouts, "
        "limits, session, session_map, route, pool, admin, proxy_protocol_from, access_log, metrics, workers",
        id="unknown-top",
    ),
    pytest.param(
        '"a b" = 1\n' + POOL,
        '"a b": unknown key; known keys: listen, trusted_proxies, timeouts, '
        "limits, session, session_map, route, pool, admin, proxy_protocol_from, access_log, metrics, workers",
        id="unknown-quoted",
    ),
    pytest.param(
        "[timeouts]\nconect = 1\n" + POOL,
        "timeouts.conect: unknown key; known keys: connect, handshake, "
        "ping_interval, ping_timeout, idle, shutdown, request_body, drain",
        id="unknown-timeouts",
    ),
    pytest.param(
        "[limits]\nmax_body = 1\n" + POOL,
        "limits.max_body: unknown key; known keys: max_header_bytes, "
        "max_connections, max_connections_per_ip, min_body_rate, max_error_body",
        id="unknown-limits",
    ),
    pytest.param(
        "[session]\nheartbeat_interval = 1\n" + POOL,
        "session.heartbeat_interval: unknown key; known keys: grace, heartbeat, "
        "heartbeat_timeout, poll_timeout, attach_timeout, max_message_bytes, max_buffer_messages, "
        "max_buffer_bytes, max_sessions, max_sessions_per_ip, max_opens_per_ip, open_burst_per_ip, max_ended, max_body_bytes, "
        "max_batch_messages, max_inflight_messages, max_inflight_bytes, cors_origins, slow",
        id="unknown-session",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\nweight = 1\n' + POOL,
        "route[0].weight: unknown key; known keys: prefix, pool, allowed_origins, protocol, ping_interval,"
        " ping_timeout, max_payload, backend_path",
        id="unknown-route",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\nprotocol = "mqtt"\n' + POOL,
        "route[0].protocol: must be one of 'websocket', 'transparent', 'socket.io', not 'mqtt'",
        id="unknown-protocol",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\nping_interval = 5\n' + POOL,
        'route[0].ping_interval: is only for a route with protocol = "socket.io"',
        id="socketio-key-elsewhere",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\nprotocol = "socket.io"\nbackend_path = "x?y"\n' + POOL,
        "route[0].backend_path: must be a path: starting with '/', printable ASCII, no space, '?' or '#'",
        id="socketio-backend-path",
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
        "failover_window, failover_timeout, drain, drain_rate, rebalance_rate, observe",
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
        "[session]\nmax_sessions_per_ip = 0\n" + POOL,
        "session.max_sessions_per_ip: must be an integer >= 1, not 0",
        id="session-max-sessions-per-ip",
    ),
    pytest.param(
        "[session]\nmax_opens_per_ip = 2.5\n" + POOL,
        "session.max_opens_per_ip: must be an integer >= 1, not 2.5",
        id="session-max-opens-per-ip",
    ),
    pytest.param(
        "[session]\nopen_burst_per_ip = 0\n" + POOL,
        "session.open_burst_per_ip: must be an integer >= 1, not 0",
        id="session-open-burst-per-ip",
    ),
    pytest.param(
        "[session]\nattach_timeout = 0\n" + POOL,
        "session.attach_timeout: must be a number of seconds > 0, not 0",
        id="session-attach-timeout",
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
    pytest.param(
        '[session_map]\ntype = "redis"\nurl = "redis://a"\nshards = ["redis://b"]\n' + POOL,
        "session_map.shards: give url (one server) or shards (several), not both",
        id="session-map-url-and-shards",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = []\n' + POOL,
        "session_map.shards: must be a non-empty array of Redis URLs",
        id="session-map-no-shards",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = ["redis://a", "http://b"]\n' + POOL,
        "session_map.shards[1]: must start with redis://, rediss:// (TLS), unix://, redis+sentinel://"
        " or rediss+sentinel:// (as in 'redis://127.0.0.1:6379/0', 'unix:///run/redis/redis.sock?db=0'"
        " or 'redis+sentinel://10.0.0.1,10.0.0.2,10.0.0.3/mymaster/0'), not 'http://b'",
        id="session-map-shard-url",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = ["redis://a:1/0", "redis://a:1"]\n' + POOL,
        "session_map.shards[1]: the shard name 'a:1/0' is taken by an earlier shard"
        " (give each a name of its own)",
        id="session-map-shard-twice",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = [{url = "redis://a", name = "x"},'
        ' {url = "redis://b", name = "x"}]\n' + POOL,
        "session_map.shards[1]: the shard name 'x' is taken by an earlier shard"
        " (give each a name of its own)",
        id="session-map-shard-name-twice",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = [{url = "redis://a", name = "x y"}]\n' + POOL,
        "session_map.shards[0]: name must be 1 to 64 letters, digits, '-', '_' or '.', not 'x y'",
        id="session-map-shard-name",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = [{name = "x"}]\n' + POOL,
        "session_map.shards[0]: a table needs its url",
        id="session-map-shard-no-url",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = [{url = "redis://a", db = 1}]\n' + POOL,
        "session_map.shards[0]: unknown key 'db' (known: url, name, sentinel_password)",
        id="session-map-shard-key",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = [{url = "redis://a", sentinel_password = "p"}]\n' + POOL,
        "session_map.shards[0]: sentinel_password needs a redis+sentinel:// url",
        id="session-map-shard-sentinel-password",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nshards = ["redis://a"]\nsentinel_password = "p"\n' + POOL,
        "session_map.sentinel_password: with shards, give it per shard"
        " ({url = ..., sentinel_password = ...})",
        id="session-map-shards-sentinel-password",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nurl = "rediss://a"\ntls_ca_file = 1\n' + POOL,
        "session_map.tls_ca_file: must be a string, not 1",
        id="session-map-tls-ca-file",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nurl = "rediss://a"\ntls_server_name = ""\n' + POOL,
        "session_map.tls_server_name: must not be empty",
        id="session-map-tls-server-name",
    ),
    pytest.param(
        '[session_map]\ntype = "redis"\nurl = "rediss://a"\ntls_verify = "no"\n' + POOL,
        "session_map.tls_verify: must be true or false, not 'no'",
        id="session-map-tls-verify",
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
        '[[route]]\nprefix = "/"\npool = "chat"\nallowed_origins = "https://a.example"\n' + POOL,
        "route[0].allowed_origins: must be an array of strings, not 'https://a.example'",
        id="route-origins-string",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\nallowed_origins = ["*", "https://a.example"]\n'
        + POOL,
        'route[0].allowed_origins: must be exactly ["*"] for any origin, '
        'or a list of origins without "*"',
        id="route-origins-star-and-more",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\n'
        'allowed_origins = ["https://a.example", "https://a.example/app"]\n' + POOL,
        "route[0].allowed_origins[1]: bad origin 'https://a.example/app': write "
        "scheme://host[:port] with no path, such as 'https://app.example' or "
        "'https://*.example.com' ('*' for a whole host label)",
        id="route-origins-path",
    ),
    pytest.param(
        '[[route]]\nprefix = "/"\npool = "chat"\nallowed_origins = ["https://a*.example"]\n' + POOL,
        "route[0].allowed_origins[0]: bad origin 'https://a*.example': write "
        "scheme://host[:port] with no path, such as 'https://app.example' or "
        "'https://*.example.com' ('*' for a whole host label)",
        id="route-origins-partial-wildcard",
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


def test_routeAllowedOrigins(tmp_path: Path) -> None:
    """
    A route's C{allowed_origins} is kept as written (C{["*"]} as C{("*",)},
    an empty list as an empty tuple); left out, it is L{None}: not set.
    """
    text = (
        '[[route]]\nprefix = "/a"\npool = "chat"\n'
        'allowed_origins = ["https://app.example", "https://*.example.com:8443"]\n'
        '[[route]]\nprefix = "/b"\npool = "chat"\nallowed_origins = ["*"]\n'
        '[[route]]\nprefix = "/c"\npool = "chat"\nallowed_origins = []\n'
        '[[route]]\nprefix = "/"\npool = "chat"\n' + POOL
    )
    config = loadConfig(writeConfig(tmp_path, text))
    assert [route.allowedOrigins for route in config.routes] == [
        ("https://app.example", "https://*.example.com:8443"),
        ("*",),
        (),
        None,
    ]


def test_sessionLimitsPerAddress(tmp_path) -> None:
    """
    The per-address session keys and attach_timeout are read, with their
    defaults when left out (100 sessions, 20 a second in bursts of 40,
    10 s).
    """
    path = writeConfig(tmp_path, "[session]\nmax_sessions_per_ip = 3\nmax_opens_per_ip = 4\n"
                       "open_burst_per_ip = 5\nattach_timeout = 1.5\n" + POOL)
    session = loadConfig(path).session
    assert (session.maxSessionsPerIp, session.maxOpensPerIp, session.openBurstPerIp,
            session.attachTimeout) == (3, 4, 5, 1.5)
    defaults = SessionConfig()
    assert (defaults.maxSessionsPerIp, defaults.maxOpensPerIp, defaults.openBurstPerIp,
            defaults.attachTimeout) == (100, 20, 40, 10.0)


def test_socketIORoute(tmp_path: Path) -> None:
    """
    A C{socket.io} route takes its Engine.IO settings, with the reference
    server's defaults; other routes are C{websocket}.
    """
    path = writeConfig(tmp_path, (
        '[[route]]\nprefix = "/socket.io/"\npool = "chat"\nprotocol = "socket.io"\n'
        'ping_interval = 10\nmax_payload = 5000\nbackend_path = "/io/"\n'
        '[[route]]\nprefix = "/"\npool = "chat"\n' + POOL))
    first, second = loadConfig(path).routes
    assert (first.protocol, first.pingInterval, first.pingTimeout, first.maxPayload, first.backendPath) == (
        "socket.io", 10.0, 20.0, 5000, "/io/")
    assert second.protocol == "websocket"
