"""
Tests for L{gateway.sessionmap._sentinel}: the Sentinel URL, the
C{+switch-master} notice and C{ROLE} checks, and L{SentinelEndpoint}'s
discovery and failover logic, with fake Sentinels and connects on a
Clock (the real processes are in tests/integration/test_sentinel.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gateway.config import ConfigError, loadConfig
from gateway.config.values import SentinelAddress, parseRedisURL
from gateway.errors import SessionMapUnavailable
from gateway.sessionmap._sentinel import (
    RETRY_PATIENCE,
    SentinelEndpoint,
    notMaster,
    parseSwitchMaster,
)
from gateway.sessionmap.redis import RedisSessionMap, RedisSessionMapFactory
from twisted.internet.interfaces import IStreamClientEndpoint

URL = "redis+sentinel://10.0.0.1:26379,10.0.0.2,[::1]:5000/mymaster/2"


# The URL.

@pytest.mark.parametrize(
    "url, address, shown",
    [
        (URL, SentinelAddress((("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 5000)), "mymaster", 2,
                              None, None),
         "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,[::1]:5000/mymaster/2"),
        ("redis+sentinel://h/m", SentinelAddress((("h", 26379),), "m", 0, None, None),
         "redis+sentinel://h:26379/m/0"),
        ("rediss+sentinel://:pw@h1:26380,h2:26380/m/1?sentinel_password=s",
         SentinelAddress((("h1", 26380), ("h2", 26380)), "m", 1, None, "pw", "s", tls=True),
         "rediss+sentinel://:***@h1:26380,h2:26380/m/1?sentinel_password=***"),
        ("redis+sentinel://bob:p%40ss@h:1/m/", SentinelAddress((("h", 1),), "m", 0, "bob", "p@ss"),
         "redis+sentinel://bob:***@h:1/m/0"),
        ("redis+sentinel://:a/b@h:1/m?sentinel_password=s%26t",
         SentinelAddress((("h", 1),), "m", 0, None, "a/b", "s&t"),
         "redis+sentinel://:***@h:1/m/0?sentinel_password=***"),
    ],
)
def test_parseSentinelURL(url, address, shown):
    """
    A C{redis+sentinel://} URL names its Sentinels (port 26379 by default,
    IPv6 in brackets), the service and the database; the user information
    is the master's, C{sentinel_password} the Sentinels'.  Shown, both
    passwords are hidden.  C{rediss+sentinel://} is the same over TLS.
    """
    parsed = parseRedisURL(url)
    assert parsed == address
    assert str(parsed) == shown


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis+sentinel:///m", "a redis+sentinel:// URL needs its Sentinels"),
        ("redis+sentinel://h", "needs the service name after its Sentinels"),
        ("redis+sentinel://h/", "needs the service name after its Sentinels"),
        ("redis+sentinel://h/my master", "the service name must be 1 to 128 letters"),
        ("redis+sentinel://h/m/x", "the database must be a number >= 0, not 'x'"),
        ("redis+sentinel://h/m/1/2", "has nothing after /service/db"),
        ("redis+sentinel://h,h:26379/m", "names the Sentinel h:26379 more than once"),
        ("redis+sentinel://h:0/m", "the Sentinel 'h:0' has a bad port '0'"),
        ("redis+sentinel://h:x/m", "the Sentinel 'h:x' has a bad port 'x'"),
        ("redis+sentinel://h,/m", "the Sentinel '' has a bad host name ''"),
        ("redis+sentinel://::1/m", "must put an IPv6 address in brackets"),
        ("redis+sentinel://[x]/m", "which is not an IPv6 address"),
        ("redis+sentinel://h/m?db=1", "unknown query parameter 'db' (known: sentinel_password)"),
        ("redis+sentinel://h/m?sentinel_password=a&sentinel_password=b", "more than once"),
        ("redis+sentinel://h/m#x", "must not have a #fragment"),
        ("rediss+sentinel:///m", "a rediss+sentinel:// URL needs its Sentinels"),
        ("rediss+sentinel://h/", "a rediss+sentinel:// URL needs the service name"),
        ("sentinel://h/m", "must start with redis://, rediss:// (TLS), unix://, redis+sentinel://"),
    ],
)
def test_parseSentinelURLRefuses(url, message):
    """
    A bad Sentinel URL is a one-line L{ConfigError} saying what is wrong.
    """
    with pytest.raises(ConfigError) as caught:
        parseRedisURL(url)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_sentinelURLErrorHidesPassword():
    """
    An error in a Sentinel URL does not show its password.
    """
    with pytest.raises(ConfigError) as caught:
        parseRedisURL("redis+sentinel://u:hunter2@h:99999/m")
    assert "hunter2" not in str(caught.value)


def test_sentinelPasswordOption():
    """
    The C{sentinel_password} option gives the Sentinels' password; it
    needs a Sentinel URL, and may not be given in the URL as well.
    """
    factory = RedisSessionMapFactory()
    sessionMap = factory({"url": URL, "sentinel_password": "s3"}, Clock())
    assert sessionMap.address.sentinelPassword == "s3"
    assert "s3" not in str(sessionMap.address)
    for options, message in [
        ({"url": "redis://h", "sentinel_password": "s"}, "sentinel_password needs a redis+sentinel:// url"),
        ({"url": URL + "?sentinel_password=a", "sentinel_password": "b"}, "is given in the url too"),
        ({"url": URL, "sentinel_password": ""}, "sentinel_password must be a non-empty string"),
        ({"url": URL, "sentinel_password": 5}, "sentinel_password must be a non-empty string"),
    ]:
        with pytest.raises(ConfigError) as caught:
            factory(options, Clock())
        assert message in str(caught.value)


@pytest.mark.parametrize(
    "table, message",
    [
        ('url = "redis+sentinel://h/m/x"', "session_map.url: the database must be a number >= 0, not 'x'"),
        ('url = "redis+sentinel://h"', "session_map.url: a redis+sentinel:// URL needs the service name"),
        ("sentinel_password = 5", "session_map.sentinel_password: must be a string, not 5"),
    ],
)
def test_sentinelFileErrors(tmp_path: Path, table: str, message: str):
    """
    A bad Sentinel URL or C{sentinel_password} in the file is one line
    naming the file, the key and the reason.
    """
    path = tmp_path / "gateway.toml"
    path.write_text(f'[session_map]\ntype = "redis"\n{table}\n'
                    '[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\n')
    with pytest.raises(ConfigError) as caught:
        loadConfig(str(path))
    assert str(caught.value) == f"{path}: {message}" or str(caught.value).startswith(f"{path}: {message}")


def test_sentinelFlag():
    """
    C{--redis} takes a Sentinel URL too.
    """
    config = loadConfig(None, backends=["ws://a:1"], redis=URL)
    assert config.sessionMap.options == (("url", URL),)


# The notices and the role check.

def test_parseSwitchMaster():
    """
    A C{+switch-master} notice about the service names the new master;
    one about another service, or malformed, names none.
    """
    assert parseSwitchMaster("mymaster 10.0.0.1 6379 10.0.0.2 6380", "mymaster") == ("10.0.0.2", 6380)
    assert parseSwitchMaster(b"mymaster 10.0.0.1 6379 10.0.0.2 6380", "mymaster") == ("10.0.0.2", 6380)
    assert parseSwitchMaster("other 10.0.0.1 6379 10.0.0.2 6380", "mymaster") is None
    assert parseSwitchMaster("mymaster 10.0.0.2 x", "mymaster") is None
    assert parseSwitchMaster("mymaster a 1 b 70000", "mymaster") is None


def test_notMaster():
    """
    C{ROLE} answered C{master} lets a connection be used; a replica's (or
    a Sentinel's) answer says why not.
    """
    assert notMaster(["master", 10, []]) is None
    assert notMaster([b"master", 10, []]) is None
    assert "slave" in notMaster(["slave", "127.0.0.1", 6379, "connected", 10])
    assert "sentinel" in notMaster(["sentinel", []])


def test_setUpChecksRoleThroughSentinel():
    """
    A Sentinel map's connections check C{ROLE} after AUTH and SELECT; a
    plain one's do not.
    """
    sentinelMap = RedisSessionMap(parseRedisURL("redis+sentinel://:pw@h/m/3"), Clock())
    commands = sentinelMap.setUpCommands()
    assert [c[1][0] for c in commands] == ["AUTH", "SELECT", "ROLE"]
    assert commands[2][2] is notMaster
    plain = RedisSessionMap(parseRedisURL("redis://h/3"), Clock())
    assert [c[1][0] for c in plain.setUpCommands()] == ["SELECT"]


# The endpoint.

class FakeTransport:
    def __init__(self):
        self.aborted = False

    def abortConnection(self):
        self.aborted = True


class FakeProtocol:
    """
    A connection whose set-up passes at once (C{ready}), or when the test
    fires C{setUp}.
    """

    ready = True

    def __init__(self, master):
        self.master = master
        self.transport = FakeTransport()
        self.connected = True
        self.setUp = Deferred()
        if self.ready:
            self.setUp.callback(self)

    def whenConnected(self):
        d = Deferred()
        self.setUp.addCallback(lambda p: (d.callback(p), p)[1])
        return d


class World:
    """
    Fake Sentinels (each answers from C{answers}: an address, L{None}, an
    exception, or a L{Deferred} left pending) and masters (C{up}: the
    addresses that accept a connect).
    """

    def __init__(self, address=URL):
        self.clock = Clock()
        self.address = parseRedisURL(address)
        self.answers = {}
        self.up = set()
        self.asked = []
        self.connects = []
        self.changes = []
        self.endpoint = SentinelEndpoint(self.address, self.clock, 1.0, ask=self.ask,
                                         connectTo=self.connectTo,
                                         onMasterChanged=lambda old, new: self.changes.append((old, new)))

    def ask(self, sentinel):
        self.asked.append(sentinel)
        answer = self.answers.get(sentinel, ConnectionRefusedError())
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)

    def connectTo(self, master, factory):
        self.connects.append(master)
        if master in self.up:
            return succeed(FakeProtocol(master))
        return fail(ConnectionRefusedError())

    def connect(self):
        results = []
        self.endpoint.connect(object()).addBoth(results.append)
        return results


S1, S2, S3 = ("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 5000)
M1, M2 = ("10.0.0.9", 6379), ("10.0.0.8", 6379)


def test_endpointProvidesInterface():
    """
    L{SentinelEndpoint} is a client endpoint.
    """
    verifyObject(IStreamClientEndpoint, World().endpoint)


def test_firstAnswerWins():
    """
    Every Sentinel is asked at once; the first to name a master is
    followed, whatever the others say.
    """
    world = World()
    pending = Deferred()
    world.answers = {S1: pending, S2: M1, S3: None}
    world.up = {M1}
    [protocol] = world.connect()
    assert protocol.master == M1
    assert world.asked == [S1, S2, S3] and world.connects == [M1]
    assert world.endpoint.master == M1 and world.changes == []
    pending.callback(M2)  # too late: ignored


def test_noSentinelKnowsTheMaster():
    """
    At start-up, when no Sentinel names a master, the connect fails at
    once with one line saying what each Sentinel answered.
    """
    world = World()
    world.answers = {S1: None, S2: SessionMapUnavailable("no answer within 1s")}
    results = world.connect()
    [failure] = results
    message = str(failure.value)
    assert failure.check(SessionMapUnavailable)
    assert message.startswith("no Sentinel named the master of 'mymaster' (")
    assert "10.0.0.1:26379: does not monitor 'mymaster'" in message
    assert "10.0.0.2:26379: no answer within 1s" in message
    assert "[::1]:5000: Connection was refused" in message


def test_masterRefusesAtStartUp():
    """
    At start-up, a master that refuses the connect fails it at once,
    naming the master the Sentinels named.
    """
    world = World()
    world.answers = {S1: M1}
    [failure] = world.connect()
    assert str(failure.value).startswith("the master the Sentinels named, 10.0.0.9:6379: Connection was refused")


def test_asksAgainUntilTheMasterAnswers():
    """
    A master that refuses is asked for again (after a short wait that
    doubles) until it answers, within the attempt's patience.
    """
    world = World()
    world.answers = {S1: M1}
    world.up = {M1}
    world.connect()
    world.up = set()
    results = world.connect()
    assert world.connects == [M1, M1] and results == []
    world.clock.advance(0.1)
    world.clock.advance(0.2)
    assert world.connects == [M1] * 4
    world.up = {M1}
    world.clock.advance(0.4)
    assert len(world.connects) == 5 and results[0].master == M1


def test_patienceRunsOut():
    """
    Once connected before, an attempt keeps trying for L{RETRY_PATIENCE}
    seconds, then fails (the pool's backoff takes over).
    """
    world = World()
    world.answers = {S1: M1}
    world.up = {M1}
    world.connect()
    world.up = set()
    results = world.connect()
    world.clock.pump([0.1] * int(RETRY_PATIENCE * 10 - 1))
    assert results == []
    world.clock.pump([0.1] * 11)
    [failure] = results
    assert failure.check(SessionMapUnavailable)


def test_switchMasterWakesAndDrops():
    """
    A C{+switch-master} notice wakes a waiting attempt at once (it asks
    the Sentinels again), aborts the connections to the old master, and
    counts a master change.
    """
    world = World()
    world.answers = {S1: M1}
    world.up = {M1}
    [old] = world.connect()
    world.up = set()
    results = world.connect()
    assert len(world.connects) == 2
    world.answers = {S1: M2}
    world.up = {M2}
    world.endpoint.switched(M2)
    assert old.transport.aborted
    assert world.changes == [(M1, M2)] and world.endpoint.changes == 1
    assert len(world.connects) == 3 and results[0].master == M2
    assert not results[0].transport.aborted
    world.endpoint.switched(M2)  # heard from another Sentinel: nothing more
    assert world.changes == [(M1, M2)]


def test_discoveredMasterChange():
    """
    A master found at a new address by asking (the notice was missed)
    counts as a change too, and drops the connections to the old one.
    """
    world = World()
    world.answers = {S1: M1}
    world.up = {M1, M2}
    [old] = world.connect()
    world.answers = {S1: M2}
    [new] = world.connect()
    assert new.master == M2 and old.transport.aborted
    assert world.changes == [(M1, M2)]


def test_concurrentConnectsShareOneRound():
    """
    Connections made at once (the pool and the subscription reconnecting
    after a failover) share one round of questions.
    """
    world = World()
    pending = Deferred()
    world.answers = {S1: pending, S2: Deferred(), S3: Deferred()}
    world.up = {M1}
    first, second = world.connect(), world.connect()
    assert world.asked == [S1, S2, S3]
    pending.callback(M1)
    assert first[0].master == M1 and second[0].master == M1


def test_cancelledAttempt():
    """
    Cancelling an attempt (the pool stopping) does not cancel the round
    other attempts wait for.
    """
    world = World()
    pending = Deferred()
    world.answers = {S1: pending}
    world.up = {M1}
    cancelled = world.endpoint.connect(object())
    other = world.connect()
    cancelled.addErrback(lambda f: None)
    cancelled.cancel()
    pending.callback(M1)
    assert other[0].master == M1


def test_masterTakenOnceItsRoleIsChecked():
    """
    A server named by a Sentinel that is behind is not taken for the
    master before its connection's set-up (the ROLE check) passed: until
    then, nothing changes and no connection is dropped.
    """
    world = World()
    world.answers = {S1: M1}
    world.up = {M1, M2}
    [old] = world.connect()
    FakeProtocol.ready = False
    try:
        world.answers = {S1: M2}
        [candidate] = world.connect()
    finally:
        FakeProtocol.ready = True
    assert world.endpoint.master == M1 and not old.transport.aborted and world.changes == []
    candidate.setUp.callback(candidate)
    assert world.endpoint.master == M2 and old.transport.aborted
    assert world.changes == [(M1, M2)]


def test_announcedMasterWins():
    """
    For a while after a C{+switch-master} notice, a connection that passed
    its set-up on another server (two servers claim to be the master) is
    dropped, not taken for the master.
    """
    world = World()
    world.answers = {S1: M1}
    world.up = {M1, M2}
    world.connect()
    world.endpoint.switched(M2)
    [stale] = world.connect()  # the Sentinel asked is behind
    assert stale.master == M1 and stale.transport.aborted
    assert world.endpoint.master == M2 and world.changes == [(M1, M2)]
    world.clock.advance(RETRY_PATIENCE)
    [later] = world.connect()
    assert not later.transport.aborted and world.endpoint.master == M1
