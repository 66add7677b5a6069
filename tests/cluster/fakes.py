"""
Fakes of the shared-session store, of a session map that offers it and of
the cluster a mirror writes through, and a session mirrored to them,
shared by the cluster's tests.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from gateway.backends.balancers import LeastConnections
from gateway.backends.pool import Backend, Pool
from gateway.cluster.mirror import Mirror
from gateway.config import SessionConfig
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
        self.maps = (fakeShard(),)
        self.ring = HashRing(["fake"])
        self.sessionTtl = 30.0

    def shardOf(self, sid):
        return 0

    def _write(self, *call):
        self.writes.append(call)
        return succeed(1)

    def appendDown(self, sid, epoch, *messages, acked=None, delivered=None):
        seqs: list = [m.seq for m in messages]
        if acked is not None:
            seqs.append(("acked", acked))
        if delivered is not None:
            self.deliveredWritten = delivered
        return self._write("down", *seqs)

    def forwarded(self, sid, epoch, count, delivered=None, messages=()):
        self.writes.append(("forwarded", count))
        self.counts.append((count, delivered, [m.seq for m in messages]))
        d = Deferred()
        self.pending.append(d)
        return d

    def detach(self, sid):
        return self._write("detach")

    def acked(self, sid, count):
        return self._write("acked", count)

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

    def liveNodeInfo(self, limit=256):
        return succeed({})


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
    the node's lease holds, the registry's bounds.
    """

    def __init__(self, registry, clock):
        self.registry = registry
        self.clock = clock
        self.shared = FakeShared()
        self.pumping = True

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
