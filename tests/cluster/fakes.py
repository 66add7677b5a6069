"""
Fakes of the shared-session store, of a session map that offers it and of
the cluster a mirror writes through, a session mirrored to them, and a
cluster node whose Redis the test cuts off, shared by the cluster's
tests.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger

from gateway.backends.balancers import LeastConnections
from gateway.backends.pool import Backend, Pool
from gateway.cluster.mirror import Mirror
from gateway.cluster.node import Cluster
from gateway.config import SessionConfig
from gateway.errors import SessionMapUnavailable
from gateway.sessionmap._ring import HashRing
from gateway.sessionmap.memory import MemorySessionMap
from gateway.sessions.registry import SessionRegistry
from tests.helpers import FakeLink, FakeTransport


def fakeShard(name: str = "fake") -> SimpleNamespace:
    """
    What the cluster reads of one shard's map: its name, clock, timeout,
    counts of commands and master changes.
    """
    return SimpleNamespace(name=name, reactor=Clock(), timeout=1.0, commandsIssued=0, masterChanges=0)


class FakeShared:
    """
    The shared-session store as a mirror writes to it: each write is
    recorded, and the count writes (C{forwarded}) wait for the test.
    """

    def __init__(self):
        self.writes = []
        #: Each count write: (accepted, delivered, seqs of the messages written with it).
        self.counts = []
        self.pending: list[Deferred] = []
        #: Each write that may refresh the keys' expiry: (what, whether it did).
        self.refreshes: list[tuple[str, bool]] = []
        self.maps = (fakeShard(),)
        self.ring = HashRing(["fake"])
        self.sessionTtl = 30.0

    def shardOf(self, sid):
        return 0

    def _write(self, *call):
        self.writes.append(call)
        return succeed(1)

    def appendDown(self, sid, epoch, *messages, acked=None, delivered=None, refresh=True):
        self.refreshes.append(("down", refresh))
        seqs: list = [m.seq for m in messages]
        if acked is not None:
            seqs.append(("acked", acked))
        if delivered is not None:
            self.deliveredWritten = delivered
        return self._write("down", *seqs)

    def forwarded(self, sid, epoch, count, delivered=None, messages=(), refresh=True):
        self.refreshes.append(("forwarded", refresh))
        self.writes.append(("forwarded", count))
        self.counts.append((count, delivered, [m.seq for m in messages]))
        d = Deferred()
        self.pending.append(d)
        return d

    def create(self, sid, fields):
        return self._write("create", fields.get("epoch"))

    def detach(self, sid):
        return self._write("detach")

    def acked(self, sid, count, refresh=True):
        self.refreshes.append(("acked", refresh))
        return self._write("acked", count)

    def appendUp(self, sid, messages, acked=None, refresh=True):
        self.refreshes.append(("up", refresh))
        self.writes.append(("up", *[m.seq for m in messages]))
        return succeed((1, messages[-1].seq if messages else 0))

    def touch(self, sid):
        self.refreshes.append(("touch", True))
        return self._write("touch")

    def relinked(self, sid, epoch, backend):
        return self._write("relinked", backend)

    def closing(self, sid, epoch, code, reason):
        return self._write("closing", code)

    def end(self, sid, epoch, code, reason, tombstone=None):
        return self._write("end", code, tombstone)

    def liveNodeInfo(self, limit=256):
        return succeed({})

    def readUp(self, sid, after):
        return succeed([])


class FakeSessionMap(MemorySessionMap):
    """
    A memory map that also offers shared sessions, as the Redis map does.
    """

    nodeTtl = 3.0
    nodeId = "A"
    masterChanges = 0

    def sharedSessions(self, node, sessionTtl, nodeTtl):
        return FakeShared()


class FakeCluster:
    """
    What a L{Mirror} asks of its cluster: the store, the clock, whether
    the node's lease holds, the registry's bounds, and writing a session's
    record again (recorded in C{registered}, by epoch).
    """

    log = Logger()

    def __init__(self, registry, clock):
        self.registry = registry
        self.clock = clock
        self.shared = FakeShared()
        self.pumping = True
        self.registered: list[int | None] = []

    async def register(self, session, target, headers, origin, *, epoch=None):
        self.registered.append(epoch)

    def leaseValid(self, sid=None):
        return self.pumping

    def mayPump(self, sid=None):
        return self.pumping

    def writeFailed(self, failure):
        return None


def makeSession(**config):
    """
    A registry on a Clock (single node) and one attached session on b1.
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(**config), clock, MemorySessionMap(clock))
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    registry.reserve()
    session = registry.create(registry.newId(), pool, FakeLink())
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    return clock, registry, session, transport


def mirrored(**config):
    """
    As L{makeSession}, with the session's state written by a L{Mirror} of
    a fake cluster.
    """
    clock, registry, session, transport = makeSession(**config)
    cluster = FakeCluster(registry, clock)
    session.mirror = Mirror(cluster, session, 3)
    return clock, cluster, session, transport


def cutOffCluster():
    """
    A node (B) owning one attached, recorded session, its heartbeat answered
    by a fake store until the test makes Redis unreachable
    (C{shared.down = True}).
    """
    clock = Clock()
    registry = SessionRegistry(
        SessionConfig(), clock, FakeSessionMap(clock),
        cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B"))
    cluster = registry.cluster
    shared = cluster.shared
    shared.down = False

    def heartbeat(info, shard=0):
        if shared.down:
            return fail(SessionMapUnavailable("Redis is away"))
        return succeed(None)

    shared.heartbeat = heartbeat
    shared.exchangeCounts = lambda counts: succeed({})
    shared.aliveOn = lambda shard, nodes: succeed(set(nodes) & {"B"})
    shared.ownership = lambda sid: succeed(("B", 1))
    shared.attach = lambda sid, kind: succeed(("ok", True, None))
    cluster.subscriptions[0].check = lambda: None
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    registry.reserve()
    session = registry.create("s1", pool, FakeLink())
    session.mirror = Mirror(cluster, session, 1)
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    Deferred.fromCoroutine(cluster._heartbeat())
    assert cluster.leaseValid()
    return clock, registry, cluster, session, transport
