"""
A node's lease on each shard (L{gateway.cluster.liveness}), with a fake
store of two shards on a Clock: a shard that stops answering suspends only
the sessions it holds, and the node stays healthy while the home shard
answers.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gateway.backends.balancers import LeastConnections
from gateway.backends.pool import Backend, Pool
from gateway.cluster.liveness import REVALIDATE_AT_ONCE
from gateway.cluster.mirror import Mirror
from gateway.cluster.node import Cluster
from gateway.config import SessionConfig
from gateway.errors import SessionMapUnavailable
from gateway.sessionmap._ring import HashRing
from gateway.sessions.registry import SessionRegistry
from tests.helpers import FakeLink, FakeTransport

from .fakes import FakeSessionMap, FakeShared, fakeShard


class TwoShards(FakeShared):
    """
    The fake store over shards C{a} (home) and C{b}; C{down} holds the
    indexes of the shards that do not answer.
    """

    def __init__(self):
        super().__init__()
        self.maps = (fakeShard("a"), fakeShard("b"))
        self.ring = HashRing(["a", "b"])
        self.down: set[int] = set()

    def shardOf(self, sid):
        return self.ring.shardFor(sid.encode())

    def heartbeat(self, info, shard=0):
        return fail(SessionMapUnavailable("away")) if shard in self.down else succeed(None)

    def exchangeCounts(self, counts):
        return succeed({})

    def aliveOn(self, shard, nodes):
        return succeed(set(nodes))

    def ownership(self, sid):
        return succeed(("B", 1))


class TwoShardMap(FakeSessionMap):
    def sharedSessions(self, node, sessionTtl, nodeTtl):
        return TwoShards()


def sidOn(ring, shard):
    return next(f"s{i}" for i in range(1000) if ring.shardFor(f"s{i}".encode()) == shard)



def nodeB(clock, sessionMap) -> SessionRegistry:
    """
    @return: the registry of node B on C{sessionMap}, its subscriptions
        taken as up (no self-check).
    """
    registry = SessionRegistry(SessionConfig(), clock, sessionMap,
                               cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B"))
    for subscription in registry.cluster.subscriptions:
        subscription.check = lambda: None
        subscription.subscribed = True
    return registry

def test_shardAwaySuspendsOnlyItsSessions():
    """
    Node B owns a session on each shard.  Shard C{b} stops answering: once
    the lease there runs out, its session is suspended (its client told to
    resume) and may not pump; the home shard's session keeps flowing, and
    the node stays healthy, the shard's trouble in its health document.
    A resume of a session unknown on C{b} just after it is back hears 4503.
    Once C{b} answers, its session goes on.
    """
    clock = Clock()
    registry = nodeB(clock, TwoShardMap(clock))
    cluster = registry.cluster
    shared = cluster.shared
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    sessions = []
    for shard in (0, 1):
        registry.reserve()
        session = registry.create(sidOn(shared.ring, shard), pool, FakeLink())
        session.mirror = Mirror(cluster, session, 1)
        transport = FakeTransport()
        session.attach(transport, resumed=False)
        sessions.append((session, transport))
    Deferred.fromCoroutine(cluster._heartbeat())
    assert all(cluster.mayPump(s.sid) for s, _ in sessions)

    shared.down = {1}
    clock.advance(1.0)
    Deferred.fromCoroutine(cluster._heartbeat())
    clock.advance(2.5)
    (home, homeTransport), (other, otherTransport) = sessions
    assert cluster.mayPump(home.sid) and homeTransport.closed is None
    assert not cluster.mayPump(other.sid) and otherTransport.closed[0] == 4503
    assert cluster.justRecovered(other.sid) and not cluster.justRecovered(home.sid)
    assert cluster.healthy
    health = cluster.health()
    assert health["redis"] == "ok" and health["shards"]["b"]["redis"] == "away"

    shared.down = set()
    Deferred.fromCoroutine(cluster._heartbeat())
    assert cluster.mayPump(other.sid) and not other.upstream.backendValve.closed
    assert cluster.justRecovered(other.sid)  # for node_ttl: its owner may not have written it yet
    clock.advance(3.5)
    Deferred.fromCoroutine(cluster._heartbeat())
    assert not cluster.justRecovered(other.sid)

    shared.down = {0}
    Deferred.fromCoroutine(cluster._heartbeat())
    assert not cluster.healthy  # the home shard: as a whole-Redis outage


class SlowUpkeep(FakeShared):
    """
    The fake store of one shard, whose heartbeats are answered at once
    (or held, while C{holdBeats}) and whose count exchange, the first
    step of the upkeep after a heartbeat, is never answered.
    """

    def __init__(self):
        super().__init__()
        self.beats = 0
        self.holdBeats = False
        self.held: list[Deferred] = []

    def heartbeat(self, info, shard=0):
        self.beats += 1
        if self.holdBeats:
            self.held.append(Deferred())
            return self.held[-1]
        return succeed(None)

    def exchangeCounts(self, counts):
        return Deferred()

    def ownership(self, sid):
        return succeed(("B", 1))


class SlowUpkeepMap(FakeSessionMap):
    def sharedSessions(self, node, sessionTtl, nodeTtl):
        return SlowUpkeep()


def test_heartbeatNotHeldByUpkeep():
    """
    The upkeep after a heartbeat (counts, turns, the watch on other nodes)
    waits for Redis longer than the lease: the heartbeat goes on at every
    tick all the same, so the lease holds and the session flows.  A
    heartbeat still waiting for its answer is not sent again; once it is
    answered, the next tick sends one.
    """
    clock = Clock()
    registry = nodeB(clock, SlowUpkeepMap(clock))
    cluster = registry.cluster
    shared = cluster.shared
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    registry.reserve()
    session = registry.create("s1", pool, FakeLink())
    session.mirror = Mirror(cluster, session, 1)
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    cluster.liveness.start()
    for _ in range(10):
        clock.advance(1.0)
    assert shared.beats == 11
    assert cluster.mayPump(session.sid) and transport.closed is None

    shared.holdBeats = True
    clock.advance(1.0)
    clock.advance(1.0)
    assert shared.beats == 12 and len(shared.held) == 1
    shared.held[0].callback(None)
    clock.advance(1.0)
    assert shared.beats == 13
    assert cluster.mayPump(session.sid) and transport.closed is None
    cluster.liveness.stop()


class HeldOwnership(FakeShared):
    """
    The fake store of one shard, whose heartbeat fails while C{away} and
    whose ownership reads wait for the test (C{reads}).
    """

    def __init__(self):
        super().__init__()
        self.away = False
        self.reads: list[tuple[str, Deferred]] = []

    def heartbeat(self, info, shard=0):
        return fail(SessionMapUnavailable("away")) if self.away else succeed(None)

    def exchangeCounts(self, counts):
        return succeed({})

    def ownership(self, sid):
        d: Deferred = Deferred()
        self.reads.append((sid, d))
        return d


class HeldOwnershipMap(FakeSessionMap):
    def sharedSessions(self, node, sessionTtl, nodeTtl):
        return HeldOwnership()


def test_revalidationReadsTogether():
    """
    After trouble on a shard, the ownership of the sessions it holds is
    read in runs of L{REVALIDATE_AT_ONCE} sent together, not one after the
    other; each session is then settled by its answer (taken by another
    node: fenced; still its own: goes on).
    """
    clock = Clock()
    registry = nodeB(clock, HeldOwnershipMap(clock))
    cluster = registry.cluster
    shared = cluster.shared
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    count = REVALIDATE_AT_ONCE + 3
    sessions = []
    for i in range(count):
        registry.reserve()
        session = registry.create(f"s{i}", pool, FakeLink())
        session.mirror = Mirror(cluster, session, 1)
        sessions.append(session)
    Deferred.fromCoroutine(cluster._heartbeat())
    shared.away = True
    Deferred.fromCoroutine(cluster._heartbeat())
    shared.away = False
    Deferred.fromCoroutine(cluster._heartbeat())

    assert len(shared.reads) == REVALIDATE_AT_ONCE
    for sid, d in list(shared.reads):
        d.callback(("A", 2) if sid == "s0" else ("B", 1))
    assert len(shared.reads) == count
    for sid, d in shared.reads[REVALIDATE_AT_ONCE:]:
        d.callback(("B", 1))
    assert sessions[0].mirror is not None and not isinstance(sessions[0].mirror, Mirror)
    assert all(isinstance(s.mirror, Mirror) for s in sessions[1:])
    assert all(cluster.mayPump(s.sid) for s in sessions[1:])
