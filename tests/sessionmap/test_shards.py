"""
Tests of the C{redis} session map over several shards
(L{gateway.sessionmap._shards.ShardedSessionMap}) and of the shared
sessions spread over them (L{gateway.sessionmap._shared.SharedSessions}),
against real C{redis-server} processes: where records and session keys
land, the home shard's registry, per-shard liveness and channels, and a
shard that is away.
"""

from __future__ import annotations

import secrets

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import Logger
from zope.interface.verify import verifyObject

from gateway.errors import ConfigError, SessionMapUnavailable
from gateway.interfaces import IMeasured, ISessionMap
from gateway.sessionmap._shards import ShardedSessionMap
from gateway.sessionmap._subscription import Subscription
from gateway.sessionmap.redis import RedisSessionMapFactory
from gateway.testing import waitUntil
from gateway.wire.protocol import Data
from tests.helpers import SESSION_FIELDS, WAIT, newPrefix, query, within


@pytest_twisted.async_yield_fixture
async def make_sharded():
    """
    C{make_sharded(servers, **options)}: a map (made by the plugin
    factory) over the C{redis-server}s given, a key prefix of its own;
    closed at the end of the test.
    """
    made: list[ShardedSessionMap] = []

    def make(servers, **options) -> ShardedSessionMap:
        options.setdefault("timeout", 0.5)
        options.setdefault("key_prefix", newPrefix())
        sessionMap = RedisSessionMapFactory()(
            {"shards": [{"url": s.url, "name": f"s{i}"} for i, s in enumerate(servers)], **options},
            reactor)
        made.append(sessionMap)
        return sessionMap

    yield make
    for sessionMap in made:
        await within(sessionMap.close())


def sidOn(ring, shard: int) -> str:
    """
    @return: a new session id that the ring places on C{shard}.
    """
    while True:
        sid = secrets.token_urlsafe(16)
        if ring.shardFor(sid.encode()) == shard:
            return sid


def test_factoryMakesShards():
    """
    C{shards} makes a L{ShardedSessionMap} over one map per shard, named as
    given (or after the address), sharing the other options; only the
    first, the home shard, must answer at start-up.  It provides
    L{ISessionMap} and L{IMeasured} without connecting.
    """
    sessionMap = RedisSessionMapFactory()(
        {"shards": ["redis://10.0.0.1:6379/0", {"url": "redis://10.0.0.2", "name": "b"}],
         "key_prefix": "p:", "timeout": 0.25, "node_id": "n1"}, reactor)
    assert isinstance(sessionMap, ShardedSessionMap)
    assert verifyObject(ISessionMap, sessionMap) and verifyObject(IMeasured, sessionMap)
    assert [(m.name, m.required, m.keyPrefix, m.timeout) for m in sessionMap.shards] == [
        ("10.0.0.1:6379/0", True, "p:", 0.25), ("b", False, "p:", 0.25)]
    assert (sessionMap.shared, sessionMap.nodeId, sessionMap.connected) == (True, "n1", False)


@pytest.mark.parametrize("options, message", [
    ({"shards": ["redis://a"], "url": "redis://b"}, "give url (one server) or shards (several), not both"),
    ({"shards": "redis://a"}, "shards: must be a non-empty array of Redis URLs"),
    ({"shards": ["redis://a", 7]}, "shards[1]: must be a non-empty string"),
    ({"shards": ["redis://a"], "sentinel_password": "x"}, "with shards, give sentinel_password per shard"),
])
def test_factoryRefusesBadShards(options, message):
    """
    Bad C{shards}: one line naming the option (and the item).
    """
    with pytest.raises(ConfigError) as caught:
        RedisSessionMapFactory()(options, reactor)
    assert str(caught.value).startswith(f"session map 'redis': {message}")


@pytest_twisted.ensureDeferred
async def test_recordsSpreadOverShards(make_redis_server, make_sharded):
    """
    Affinity and session records land on the shard the ring names for
    their key, on both shards, and read back through the map.
    """
    servers = [make_redis_server(), make_redis_server()]
    sessionMap = make_sharded(servers)
    await within(sessionMap.start())
    prefix = sessionMap.keyPrefix
    placed = [0, 0]
    for i in range(40):
        key = f"cookie:user{i}".encode()
        await within(sessionMap.setAffinity("chat", key, f"b{i}", 60))
        shard = sessionMap.ring.shardFor(key)
        placed[shard] += 1
        assert await query(servers[shard].port, "GET", f"{prefix}aff:chat:cookie:user{i}") == f"b{i}".encode()
        assert await query(servers[1 - shard].port, "EXISTS", f"{prefix}aff:chat:cookie:user{i}") == 0
        assert await within(sessionMap.getAffinity("chat", key)) == f"b{i}"
    assert min(placed) >= 8, placed
    for shard in (0, 1):
        sid = sidOn(sessionMap.ring, shard)
        await within(sessionMap.putSession(sid, {"pool": "chat"}, 60))
        assert await query(servers[shard].port, "EXISTS", f"{prefix}sess:{sid}") == 1
        assert await within(sessionMap.getSession(sid)) == {"pool": "chat"}
        await within(sessionMap.forgetSession(sid))
        assert await within(sessionMap.getSession(sid)) is None


@pytest_twisted.ensureDeferred
async def test_shardAwayAtStart(make_redis_server, make_sharded):
    """
    A shard other than the home one that does not answer at start-up does
    not stop the start: it is logged once, its commands fail at once with
    L{SessionMapUnavailable} (the other shard's keep working), and it is
    used as soon as it answers.  The home shard away fails the start.
    """
    servers = [make_redis_server(), make_redis_server()]
    servers[1].kill()
    sessionMap = make_sharded(servers)
    events: list[dict] = []
    sessionMap.shards[1].log = Logger(namespace="test", observer=events.append)
    await within(sessionMap.start())
    assert [e["log_format"] for e in events if "yet" in e["log_format"]]
    sid = sidOn(sessionMap.ring, 1)
    started = reactor.seconds()
    with pytest.raises(SessionMapUnavailable):
        await within(sessionMap.putSession(sid, {"pool": "chat"}, 60))
    assert reactor.seconds() - started < 0.25
    home = sidOn(sessionMap.ring, 0)
    await within(sessionMap.putSession(home, {"pool": "chat"}, 60))

    servers[1].start()
    await within(waitUntil(lambda: sessionMap.shards[1].connected, WAIT))
    await within(sessionMap.putSession(sid, {"pool": "chat"}, 60))
    assert await within(sessionMap.getSession(sid)) == {"pool": "chat"}

    servers[0].kill()
    stopped = make_sharded(servers)
    with pytest.raises(SessionMapUnavailable) as caught:
        await within(stopped.start())
    assert f"127.0.0.1:{servers[0].port}" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_sharedSessionsPerShard(make_redis_server, make_sharded):
    """
    Spread over two shards: a session's keys are all on its own shard, and
    its scripts run there; the heartbeat writes the registry (the node's
    info, the nodes set) on the home shard and only the node's liveness on
    the other, which is what that shard's takeovers check; C{aliveOn} reads
    a shard's liveness keys.
    """
    servers = [make_redis_server(), make_redis_server()]
    sessionMap = make_sharded(servers)
    a = sessionMap.sharedSessions("A", sessionTtl=60, nodeTtl=3)
    b = sessionMap.sharedSessions("B", sessionTtl=60, nodeTtl=3)
    prefix = sessionMap.keyPrefix
    await within(sessionMap.start())
    await within(a.heartbeat({"sessions": 1}, 0))
    await within(a.heartbeat({"sessions": 1}, 1))
    assert await query(servers[0].port, "GET", f"{prefix}alive:A") == b'{"sessions":1}'
    assert await query(servers[1].port, "GET", f"{prefix}alive:A") == b"1"
    assert await query(servers[0].port, "ZSCORE", f"{prefix}nodes", "A") is not None
    assert await query(servers[1].port, "EXISTS", f"{prefix}nodes") == 0
    assert await within(a.liveNodes()) == ["A"]
    assert await within(b.aliveOn(1, {"A", "B"})) == {"A"}

    for shard in (0, 1):
        sid = sidOn(sessionMap.ring, shard)
        assert await within(a.create(sid, SESSION_FIELDS)) == 1
        assert await within(a.appendDown(sid, 1, Data(1, b"d1", False))) == 1
        assert await within(b.appendUp(sid, [Data(1, b"u1", False)])) == (1, 1)
        for key in a.keys(sid):
            assert await query(servers[shard].port, "EXISTS", key.decode()) == 1
            assert await query(servers[1 - shard].port, "EXISTS", key.decode()) == 0
        # A lives on both shards: its sessions cannot be taken over.
        assert (await within(b.takeOver(sid)))[0] == "alive"

    # Gone from the second shard only (its liveness expired there): its
    # session on that shard can be taken over, the home shard's cannot.
    onHome, onOther = sidOn(sessionMap.ring, 0), sidOn(sessionMap.ring, 1)
    await within(a.create(onHome, SESSION_FIELDS))
    await within(a.create(onOther, SESSION_FIELDS))
    await query(servers[1].port, "DEL", f"{prefix}alive:A")
    assert (await within(b.takeOver(onHome)))[0] == "alive"
    assert (await within(b.takeOver(onOther)))[0] == "ok"


@pytest_twisted.ensureDeferred
async def test_subscriptionPerShard(make_redis_server, make_sharded):
    """
    A node subscribes to its channel on each shard: a script run on a
    session's shard notifies it through that shard's subscription.
    """
    servers = [make_redis_server(), make_redis_server()]
    sessionMap = make_sharded(servers)
    a = sessionMap.sharedSessions("A", sessionTtl=60, nodeTtl=3)
    b = sessionMap.sharedSessions("B", sessionTtl=60, nodeTtl=3)
    await within(sessionMap.start())
    heard: list[list[bytes]] = [[], []]
    subscriptions = [Subscription(a, heard[i].append, lambda: None, shard=i) for i in (0, 1)]
    try:
        for subscription in subscriptions:
            subscription.start()
        await within(waitUntil(lambda: all(s.healthy for s in subscriptions), WAIT))
        for shard in (0, 1):
            sid = sidOn(sessionMap.ring, shard)
            await within(a.create(sid, SESSION_FIELDS))
            await within(b.appendUp(sid, [Data(1, b"hello", False)]))
            await within(waitUntil(lambda shard=shard: len(heard[shard]) == 1, WAIT))
            assert heard[shard] == [f"u|{sid}|1|0|hello".encode()]
        assert [len(h) for h in heard] == [1, 1]
    finally:
        for subscription in subscriptions:
            await within(subscription.stop())
