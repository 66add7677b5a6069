"""
Tests for L{gateway.sessionmap.redis}, against real C{redis-server}
processes (the C{redis_server} and C{make_redis_server} fixtures): every
method, key names and expiries, failing fast on a wrong password or an
unreachable server, and riding out a Redis restart or hang without being
restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from gateway.errors import ConfigError, GatewayError
from gateway.interfaces import ISessionMap, ISessionMapFactory
from gateway.dropins import findSessionMapFactory, sessionMapNames
from gateway.sessionmap.redis import (
    RedisAddress,
    RedisSessionMap,
    RedisSessionMapFactory,
    SessionMapUnavailable,
    parseRedisURL,
)
from gateway.testing import rawExchange, redisServerBinary, startProcess, waitUntil
from plugins import gateway_sessionmaps
from tests.helpers import WAIT, encodeCommand, newPrefix, redisCommand, within

#: The map's command timeout in these tests, in seconds.
TIMEOUT = 0.5


@pytest_twisted.async_yield_fixture
async def make_map():
    """
    C{make_map(url, **options)}: a L{RedisSessionMap} made by the plugin
    factory from C{[session_map]} options (C{timeout} 0.5 s and a key prefix
    of its own unless given), closed at the end of the test.
    """
    made: list[RedisSessionMap] = []

    def make(url: str, **options) -> RedisSessionMap:
        options.setdefault("timeout", TIMEOUT)
        options.setdefault("key_prefix", newPrefix())
        sessionMap = RedisSessionMapFactory()({"url": url, **options}, reactor)
        made.append(sessionMap)
        return sessionMap

    yield make
    for sessionMap in made:
        await within(sessionMap.close())


async def failureOf(d: Deferred) -> tuple[BaseException, float]:
    """
    @return: the exception C{d} fails with, and the seconds from now (just
        after the call that made C{d}) until it did.
    """
    started = reactor.seconds()
    try:
        result = await within(d)
    except Exception as e:
        return e, reactor.seconds() - started
    raise AssertionError(f"expected a failure, got {result!r}")


def capturedLog(sessionMap: RedisSessionMap) -> list[dict]:
    """
    @return: a list that collects the events C{sessionMap} logs from now on.
    """
    events: list[dict] = []
    sessionMap.log = Logger(namespace="test", source=sessionMap, observer=events.append)
    return events


@pytest_twisted.ensureDeferred
async def test_commandsMeasured(redis_server, make_map):
    """
    Once given metrics (L{IMeasured}), the map counts and times every
    command its connections send, set-up commands included, by name; an
    error reply is counted as an error.
    """
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.interfaces import IMeasured
    from gateway.metrics import Metrics

    sessionMap = make_map(redis_server.url)
    assert verifyObject(IMeasured, sessionMap)
    metrics = Metrics(CollectorRegistry(), process=False)
    sessionMap.measureWith(metrics)
    await within(sessionMap.start())
    await within(sessionMap.setAffinity("chat", b"alice", "backend-2", 60))
    assert await within(sessionMap.getAffinity("chat", b"alice")) == "backend-2"
    with pytest.raises(GatewayError):
        await within(sessionMap.run(b"k", "INCR", sessionMap.keyPrefix + "aff:chat:alice"))
    text = generate_latest(metrics.registry).decode()
    shard = f'shard="127.0.0.1:{redis_server.port}/0"'
    assert f'txgateway_redis_commands_total{{command="GET",{shard}}} 1.0' in text
    assert f'txgateway_redis_commands_total{{command="INCR",{shard}}} 1.0' in text
    assert f'txgateway_redis_errors_total{{command="INCR",{shard}}} 1.0' in text
    assert 'txgateway_redis_errors_total{command="GET"' not in text
    assert 'txgateway_redis_command_duration_seconds_count{command="GET"} 1.0' in text


# Plugin and options.


def test_interface():
    """
    L{RedisSessionMap} provides L{ISessionMap}, without connecting.
    """
    assert verifyObject(ISessionMap, RedisSessionMapFactory()({}, reactor))


def test_plugin():
    """
    The drop-in is called C{redis}, provides L{IPlugin} and
    L{ISessionMapFactory}, and is found by name next to C{memory}.
    """
    factory = gateway_sessionmaps.redis
    assert verifyObject(IPlugin, factory)
    assert verifyObject(ISessionMapFactory, factory)
    assert factory.name == "redis"
    assert findSessionMapFactory("redis").name == "redis"
    assert {"memory", "redis"} <= set(sessionMapNames())


def test_noRedisImportUntilStart():
    """
    Importing the module and the drop-ins, finding the plugin and building a
    map import neither txredisapi nor the reactor.
    """
    code = (
        "import sys\n"
        "from gateway.dropins import findSessionMapFactory\n"
        "import gateway.sessionmap.redis, plugins.gateway_sessionmaps\n"
        "class Clock:\n"
        "    def seconds(self): return 0.0\n"
        "findSessionMapFactory('redis')({'url': 'redis://127.0.0.1:1/0'}, Clock())\n"
        "assert 'txredisapi' not in sys.modules, 'txredisapi imported'\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_factoryDefaults():
    """
    With no options: C{redis://127.0.0.1:6379/0}, prefix C{txgw:}, a
    1-second timeout and 2 connections.
    """
    sessionMap = RedisSessionMapFactory()({}, reactor)
    assert sessionMap.address == RedisAddress("127.0.0.1", 6379, None, 0, None, None)
    assert (sessionMap.keyPrefix, sessionMap.timeout, sessionMap.poolSize) == ("txgw:", 1.0, 2)
    assert not sessionMap.connected


@pytest.mark.parametrize(
    "options, message",
    [
        ({"nope": 1}, "unknown option 'nope' for session map 'redis' (known: url, key_prefix, timeout,"
                      " pool_size, node_ttl, node_id, sentinel_password, shards, tls_ca_file, tls_cert_file,"
                      " tls_key_file, tls_server_name, tls_verify)"),
        ({"url": 6379}, "session map 'redis': url: must be a non-empty string"),
        ({"url": "http://x"}, "session map 'redis': url: must start with redis://, rediss:// (TLS), unix://"),
        ({"key_prefix": 1}, "session map 'redis': key_prefix must be a string, not 1"),
        ({"timeout": 0}, "session map 'redis': timeout must be a number of seconds > 0, not 0"),
        ({"timeout": True}, "timeout must be a number of seconds > 0, not True"),
        ({"timeout": float("inf")}, "timeout must be a number of seconds > 0, not inf"),
        ({"pool_size": 0}, "session map 'redis': pool_size must be an integer from 1 to 32, not 0"),
        ({"pool_size": 33}, "pool_size must be an integer from 1 to 32, not 33"),
        ({"pool_size": 2.0}, "pool_size must be an integer from 1 to 32, not 2.0"),
    ],
)
def test_factoryRefusesBadOptions(options, message):
    """
    A bad option is a L{ConfigError} whose one line names the option and
    the reason.
    """
    with pytest.raises(ConfigError) as caught:
        RedisSessionMapFactory()(options, reactor)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url, address, shown",
    [
        ("redis://127.0.0.1:6380/2", RedisAddress("127.0.0.1", 6380, None, 2, None, None),
         "redis://127.0.0.1:6380/2"),
        ("redis://localhost", RedisAddress("localhost", 6379, None, 0, None, None),
         "redis://localhost:6379/0"),
        ("redis://:s%40cret@h:1/", RedisAddress("h", 1, None, 0, None, "s@cret"),
         "redis://:***@h:1/0"),
        ("redis://bob:pw@h:1/3", RedisAddress("h", 1, None, 3, "bob", "pw"),
         "redis://bob:***@h:1/3"),
        ("redis://[::1]:7000/0", RedisAddress("::1", 7000, None, 0, None, None),
         "redis://[::1]:7000/0"),
        ("unix:///run/redis.sock", RedisAddress(None, 0, "/run/redis.sock", 0, None, None),
         "unix:///run/redis.sock"),
        ("unix://:pw@/run/redis.sock?db=4", RedisAddress(None, 0, "/run/redis.sock", 4, None, "pw"),
         "unix://:***@/run/redis.sock?db=4"),
        ("rediss://:pw@redis.example:6380/1",
         RedisAddress("redis.example", 6380, None, 1, None, "pw", tls=True),
         "rediss://:***@redis.example:6380/1"),
        ("REDISS://h", RedisAddress("h", 6379, None, 0, None, None, tls=True), "rediss://h:6379/0"),
    ],
)
def test_parseRedisURL(url, address, shown):
    """
    C{redis://}, C{rediss://} (TLS) and C{unix://} URLs give host, port,
    path, database and credentials; the address is shown with its
    password hidden.
    """
    assert parseRedisURL(url) == address
    assert str(address) == shown


@pytest.mark.parametrize(
    "url, message",
    [
        ("", "must be a non-empty string"),
        ("rediss://", "a rediss:// URL needs a host: rediss://host[:port][/db]"),
        ("rediss://h/0?db=1", "a rediss:// URL gives the database as its path"),
        ("localhost:6379", "must start with redis://, rediss:// (TLS), unix://, redis+sentinel://"),
        ("redis://h:99999/0", "not a valid Redis URL"),
        ("redis:///0", "a redis:// URL needs a host"),
        ("redis://h/x", "the database must be a number >= 0, not 'x'"),
        ("redis://h/-1", "the database must be a number >= 0, not '-1'"),
        ("redis://h/0?db=1", "a redis:// URL gives the database as its path"),
        ("redis://h/0?timeout=1", "unknown query parameter 'timeout'"),
        ("redis://h/0#x", "must not have a #fragment"),
        ("unix://host/run/redis.sock", "a unix:// URL names a socket path and no host"),
        ("unix://", "a unix:// URL needs a socket path"),
        ("unix:///s.sock?db=1&db=2", "gives db more than once"),
    ],
)
def test_parseRedisURLRefuses(url, message):
    """
    A URL that is not a Redis URL is a one-line L{ConfigError}.
    """
    with pytest.raises(ConfigError) as caught:
        parseRedisURL(url)
    assert message in str(caught.value)


def test_parseRedisURLHidesPassword():
    """
    The error for a wrong scheme does not repeat a password.
    """
    with pytest.raises(ConfigError) as caught:
        parseRedisURL("http://user:hunter2@h:1")
    assert "hunter2" not in str(caught.value)


def test_unavailableIsGatewayError():
    """
    L{SessionMapUnavailable} is a L{GatewayError}.
    """
    assert issubclass(SessionMapUnavailable, GatewayError)


# Every method against a real server.


@pytest_twisted.ensureDeferred
async def test_affinityRecords(redis_server, make_map):
    """
    C{setAffinity} writes C{{prefix}aff:{pool}:{key}} with a millisecond
    expiry, C{getAffinity} reads it back per pool and key, and
    C{forgetAffinity} deletes it; every call fires with L{None} but the
    read.
    """
    sessionMap = make_map(redis_server.url)
    await within(sessionMap.start())
    assert sessionMap.connected
    prefix = sessionMap.keyPrefix
    assert await within(sessionMap.getAffinity("chat", b"alice")) is None
    assert await within(sessionMap.setAffinity("chat", b"alice", "backend-2", 60)) is None
    assert await within(sessionMap.getAffinity("chat", b"alice")) == "backend-2"
    assert await within(sessionMap.getAffinity("chat", b"bob")) is None
    assert await within(sessionMap.getAffinity("other", b"alice")) is None

    key = f"{prefix}aff:chat:alice"
    assert await redisCommand(redis_server.port, "GET", key) == b"backend-2"
    ttl = await redisCommand(redis_server.port, "PTTL", key)
    assert 59_000 < ttl <= 60_000

    # Setting again replaces the backend and refreshes the expiry.
    await within(sessionMap.setAffinity("chat", b"alice", "backend-3", 120))
    assert await within(sessionMap.getAffinity("chat", b"alice")) == "backend-3"
    assert await redisCommand(redis_server.port, "PTTL", key) > 60_000

    assert await within(sessionMap.forgetAffinity("chat", b"alice")) is None
    assert await within(sessionMap.getAffinity("chat", b"alice")) is None
    assert await redisCommand(redis_server.port, "EXISTS", key) == 0
    # Forgetting what is not there is fine.
    assert await within(sessionMap.forgetAffinity("chat", b"nobody")) is None


@pytest_twisted.ensureDeferred
async def test_keysAndValuesKeptExactly(redis_server, make_map):
    """
    Affinity keys are raw bytes (any byte, ':' included); backend names
    that look like numbers or are not ASCII come back as written
    (C{convertNumbers=False}).
    """
    sessionMap = make_map(redis_server.url)
    key = b"\xff\x00:sid=a b"
    for name in ("0042", "1e3", "b\u00e4ckend-\u2603"):
        await within(sessionMap.setAffinity("p", key, name, 30))
        assert await within(sessionMap.getAffinity("p", key)) == name
    raw = sessionMap.keyPrefix.encode() + b"aff:p:" + key
    assert await redisCommand(redis_server.port, "GET", raw) == "b\u00e4ckend-\u2603".encode()


@pytest_twisted.ensureDeferred
async def test_sessionRecords(redis_server, make_map):
    """
    C{putSession} writes C{{prefix}sess:{sid}} as a JSON object with an
    expiry; C{getSession} reads it back; C{forgetSession} deletes it.
    """
    sessionMap = make_map(redis_server.url)
    record = {"pool": "chat", "backend": "backend-1", "state": "attached",
              "node": "gw-a", "created": 1.5, "updated": 2.25}
    assert await within(sessionMap.getSession("s1")) is None
    assert await within(sessionMap.putSession("s1", record, 60)) is None
    assert await within(sessionMap.getSession("s1")) == record
    key = f"{sessionMap.keyPrefix}sess:s1"
    assert json.loads(await redisCommand(redis_server.port, "GET", key)) == record
    assert 59_000 < await redisCommand(redis_server.port, "PTTL", key) <= 60_000

    detached = dict(record, state="detached", backend=None)
    await within(sessionMap.putSession("s1", detached, 60))
    assert await within(sessionMap.getSession("s1")) == detached
    assert await within(sessionMap.forgetSession("s1")) is None
    assert await within(sessionMap.getSession("s1")) is None
    assert await redisCommand(redis_server.port, "EXISTS", key) == 0


@pytest_twisted.ensureDeferred
async def test_unreadableSessionRecordIgnored(redis_server, make_map):
    """
    A session key that does not hold a JSON object reads as no record.
    """
    sessionMap = make_map(redis_server.url)
    events = capturedLog(sessionMap)
    await redisCommand(redis_server.port, "SET", f"{sessionMap.keyPrefix}sess:bad", "[1, 2")
    assert await within(sessionMap.getSession("bad")) is None
    assert any("not a JSON object" in e["log_format"] for e in events)


@pytest_twisted.ensureDeferred
async def test_recordsExpire(redis_server, make_map):
    """
    An affinity or session record is gone once its C{ttl} has passed (Redis
    expires it, to the millisecond); a C{ttl} of 0 or less deletes at once.
    """
    sessionMap = make_map(redis_server.url)
    started = reactor.seconds()
    await within(sessionMap.setAffinity("p", b"k", "backend-1", 0.3))
    await within(sessionMap.putSession("s", {"state": "detached"}, 0.3))
    assert await within(sessionMap.getAffinity("p", b"k")) == "backend-1"
    assert await within(sessionMap.getSession("s")) == {"state": "detached"}
    gone = {"aff": False, "sess": False}

    async def poll() -> None:
        while not all(gone.values()):
            gone["aff"] = await within(sessionMap.getAffinity("p", b"k")) is None
            gone["sess"] = await within(sessionMap.getSession("s")) is None

    await within(poll(), 5)
    assert reactor.seconds() - started >= 0.3

    await within(sessionMap.setAffinity("p", b"k", "backend-1", 60))
    await within(sessionMap.setAffinity("p", b"k", "backend-1", 0))
    assert await within(sessionMap.getAffinity("p", b"k")) is None
    await within(sessionMap.putSession("s", {"state": "attached"}, 60))
    await within(sessionMap.putSession("s", {"state": "attached"}, -1))
    assert await within(sessionMap.getSession("s")) is None


@pytest_twisted.ensureDeferred
async def test_callBeforeStartConnects(redis_server, make_map):
    """
    A method called before L{RedisSessionMap.start} starts the map and
    waits for it; calls made meanwhile share one pool of C{pool_size}
    connections.
    """
    sessionMap = make_map(redis_server.url, pool_size=3)
    first = sessionMap.setAffinity("p", b"k", "backend-1", 30)
    second = sessionMap.getAffinity("p", b"k")
    started = sessionMap.start()
    await within(first)
    assert await within(second) == "backend-1"
    await within(started)
    assert sessionMap._factory.size == 3


@pytest_twisted.ensureDeferred
async def test_selectsDatabase(redis_server, make_map):
    """
    The database in the URL is selected on every connection.
    """
    sessionMap = make_map(f"redis://127.0.0.1:{redis_server.port}/5")
    await within(sessionMap.setAffinity("p", b"k", "backend-1", 30))
    key = f"{sessionMap.keyPrefix}aff:p:k"
    assert await redisCommand(redis_server.port, "EXISTS", key) == 0
    payload = encodeCommand("SELECT", "5") + encodeCommand("GET", key) + encodeCommand("QUIT")
    answer = await within(rawExchange(redis_server.port, payload))
    assert answer == b"+OK\r\n$9\r\nbackend-1\r\n+OK\r\n"


@pytest_twisted.ensureDeferred
async def test_unixSocket(tmp_path, make_map):
    """
    A C{unix://} URL with C{?db=N} connects through the socket.
    """
    socket = tmp_path / "redis.sock"
    process = await within(startProcess(
        [redisServerBinary(), "--port", "0", "--unixsocket", str(socket), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        r"(?i)ready to accept connections", timeout=WAIT,
    ))
    try:
        sessionMap = make_map(f"unix://{socket}?db=1")
        await within(sessionMap.start())
        await within(sessionMap.setAffinity("p", b"k", "backend-1", 30))
        assert await within(sessionMap.getAffinity("p", b"k")) == "backend-1"
        await within(sessionMap.close())
    finally:
        process.signal("KILL")
        await process.wait(WAIT)


@pytest_twisted.ensureDeferred
async def test_closed(redis_server, make_map):
    """
    After C{close}, the connections are gone and every call (and C{start})
    fails with L{SessionMapUnavailable}; closing twice, or a map never
    started, is fine.
    """
    never = make_map(redis_server.url)
    assert await within(never.close()) is None
    sessionMap = make_map(redis_server.url)
    await within(sessionMap.start())
    factory = sessionMap._factory
    assert await within(sessionMap.close()) is None
    assert factory.size == 0
    assert not sessionMap.connected
    error, _ = await failureOf(sessionMap.getAffinity("p", b"k"))
    assert isinstance(error, SessionMapUnavailable)
    assert "closed" in str(error)
    error, _ = await failureOf(sessionMap.start())
    assert isinstance(error, SessionMapUnavailable)
    assert await within(sessionMap.close()) is None


# Failing fast at start-up.


@pytest_twisted.ensureDeferred
async def test_wrongPasswordFailsFast(make_redis_server, make_map):
    """
    Against a server with C{requirepass}: a wrong password, or none, fails
    C{start} at once (well within the timeout) with one line naming the
    server, password hidden, and Redis's reason; the right one works, and
    so does a later C{start} once the URL's password is right.
    """
    server = make_redis_server()
    assert await redisCommand(server.port, "CONFIG", "SET", "requirepass", "s3cret") == "OK"

    wrong = make_map(f"redis://:hunter2@127.0.0.1:{server.port}/0", timeout=5)
    error, took = await failureOf(wrong.start())
    assert isinstance(error, SessionMapUnavailable)
    message = str(error)
    assert message.startswith(f"cannot use Redis at redis://:***@127.0.0.1:{server.port}/0: ")
    assert "could not auth" in message and "WRONGPASS" in message
    assert "hunter2" not in message and "\n" not in message
    assert took < 1.0
    assert not wrong.connected

    # A call on the failed map tries again, and fails the same way.
    error, _ = await failureOf(wrong.getAffinity("p", b"k"))
    assert "WRONGPASS" in str(error)

    anonymous = make_map(f"redis://127.0.0.1:{server.port}/0", timeout=5)
    error, took = await failureOf(anonymous.start())
    assert isinstance(error, SessionMapUnavailable)
    assert "NOAUTH" in str(error)
    assert took < 1.0

    right = make_map(f"redis://:s3cret@127.0.0.1:{server.port}/0")
    await within(right.start())
    await within(right.setAffinity("p", b"k", "backend-1", 30))
    assert await within(right.getAffinity("p", b"k")) == "backend-1"


@pytest_twisted.ensureDeferred
async def test_unreachableFailsFast(make_redis_server, make_map):
    """
    With nothing listening on the port, C{start} fails at once with the
    connect error, although txredisapi alone would retry for ever.
    """
    server = make_redis_server()
    server.kill()
    sessionMap = make_map(server.url, timeout=5)
    error, took = await failureOf(sessionMap.start())
    assert isinstance(error, SessionMapUnavailable)
    assert str(error).startswith(f"cannot use Redis at {server.url}: ")
    assert "refused" in str(error)
    assert took < 1.0


@pytest_twisted.ensureDeferred
async def test_silentServerTimesOut(make_map):
    """
    A server that accepts connections but never answers fails C{start}
    after C{timeout}.
    """
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    port = await within(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol)))
    try:
        sessionMap = make_map(f"redis://127.0.0.1:{port.getHost().port}/0")
        error, took = await failureOf(sessionMap.start())
        assert isinstance(error, SessionMapUnavailable)
        assert str(error).endswith(f": no answer within {TIMEOUT:g}s")
        assert TIMEOUT - 0.05 <= took < TIMEOUT + 1  # timed from just after the call
    finally:
        await within(port.stopListening())


# Outages while running.


@pytest_twisted.ensureDeferred
async def test_restartedRedis(make_redis_server, make_map):
    """
    While Redis is down, every call fails with L{SessionMapUnavailable}
    within the timeout (at once, since the map knows it is disconnected);
    once Redis is back on its port the map reconnects by itself and calls
    succeed again.  The outage is logged once, and so is the recovery.
    """
    server = make_redis_server()
    sessionMap = make_map(server.url)
    events = capturedLog(sessionMap)
    await within(sessionMap.start())
    await within(sessionMap.setAffinity("p", b"k", "backend-1", 30))

    server.kill()
    await within(waitUntil(lambda: not sessionMap.connected))
    calls = [
        sessionMap.getAffinity("p", b"k"),
        sessionMap.setAffinity("p", b"k", "backend-2", 30),
        sessionMap.forgetAffinity("p", b"k"),
        sessionMap.getSession("s"),
        sessionMap.putSession("s", {"state": "attached"}, 30),
        sessionMap.forgetSession("s"),
    ]
    for call in calls:
        error, took = await failureOf(call)
        assert isinstance(error, SessionMapUnavailable), error
        assert str(error).startswith(f"not connected to Redis at {server.url} (reconnecting")
        assert took < TIMEOUT

    server.start()
    await within(waitUntil(lambda: sessionMap.connected))
    # Redis restarted empty (no persistence): the record is gone, writes work.
    assert await within(sessionMap.getAffinity("p", b"k")) is None
    await within(sessionMap.setAffinity("p", b"k", "backend-3", 30))
    assert await within(sessionMap.getAffinity("p", b"k")) == "backend-3"

    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert len(warnings) == 1
    assert "falls back to the balancer" in warnings[0]["log_format"]
    assert sum("answers again after" in e["log_format"] for e in events) == 1


@pytest_twisted.ensureDeferred
async def test_hungRedis(make_redis_server, make_map):
    """
    A Redis that stops answering (SIGSTOP) fails each call after
    C{timeout}, never later; the silent connections are dropped, so later
    calls fail at once, and once Redis runs again the map reconnects and
    calls succeed.
    """
    server = make_redis_server()
    sessionMap = make_map(server.url)
    await within(sessionMap.start())
    await within(sessionMap.setAffinity("p", b"k", "backend-1", 30))
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        error, took = await failureOf(sessionMap.getAffinity("p", b"k"))
        assert isinstance(error, SessionMapUnavailable)
        assert str(error) == f"Redis at {server.url} did not answer GET within 0.5s"
        assert TIMEOUT - 0.05 <= took < TIMEOUT + 0.5
        # The next call fails too, by its own timeout or at once once every
        # connection has been dropped (a write that timed out may still be
        # applied when Redis wakes, so this one reads).
        error, took = await failureOf(sessionMap.getSession("s"))
        assert isinstance(error, SessionMapUnavailable)
        assert took < TIMEOUT + 0.5
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    await within(waitUntil(lambda: sessionMap.connected))
    assert await within(sessionMap.getAffinity("p", b"k")) == "backend-1"


@pytest_twisted.ensureDeferred
async def test_setUpFailureKeepsReconnecting(make_redis_server, make_map):
    """
    When a reconnection is refused (Redis came back without the password
    the URL gives), the map keeps trying, where txredisapi alone would stop
    for good; calls fail at once saying why; once the server takes the
    password again the map is back.
    """
    server = make_redis_server()
    await redisCommand(server.port, "CONFIG", "SET", "requirepass", "s3cret")
    sessionMap = make_map(f"redis://:s3cret@127.0.0.1:{server.port}/0")
    await within(sessionMap.start())
    server.kill()
    server.start()  # without requirepass: AUTH is refused

    await within(waitUntil(lambda: "could not authenticate" in (sessionMap._lastError or "")))
    error, took = await failureOf(sessionMap.getAffinity("p", b"k"))
    assert isinstance(error, SessionMapUnavailable)
    assert str(error).startswith(
        f"not connected to Redis at redis://:***@127.0.0.1:{server.port}/0"
        " (reconnecting; last attempt: could not authenticate: "
    )
    assert took < TIMEOUT
    assert "s3cret" not in str(error)
    await redisCommand(server.port, "CONFIG", "SET", "requirepass", "s3cret")
    await within(waitUntil(lambda: sessionMap.connected))
    await within(sessionMap.setAffinity("p", b"k", "backend-1", 30))
    assert await within(sessionMap.getAffinity("p", b"k")) == "backend-1"
