"""
After the Redis master moved (a Sentinel failover), the owner of each
session writes it whole to the new master, whose copy may be older than
what the old master acknowledged: L{gateway.cluster.node.Cluster} with a
fake store on a Clock.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gateway.backends.balancers import LeastConnections
from gateway.backends.pool import Backend, Pool
from gateway.cluster.mirror import Mirror
from gateway.cluster.node import Cluster
from gateway.config import SessionConfig
from gateway.errors import SessionMapUnavailable
from gateway.sessionmap.memory import MemorySessionMap
from gateway.sessions.registry import SessionRegistry
from gateway.sessions.states import SessionState
from tests.helpers import FakeLink, FakeTransport


class Store:
    """
    The shared-session store as the cluster checks and rewrites it:
    C{ownership} answers what the test set, C{create} and C{appendDown}
    are recorded.
    """

    def __init__(self):
        self.owner: tuple[str, int] | None | Exception = ("A", 3)
        self.writes = []
        self.maps = (SimpleNamespace(name="fake", reactor=Clock(), timeout=1.0, commandsIssued=0,
                                     masterChanges=0),)
        self.sessionTtl = 30.0

    def shardOf(self, sid):
        return 0

    def ownership(self, sid):
        if isinstance(self.owner, Exception):
            return fail(self.owner)
        return succeed(self.owner)

    def create(self, sid, fields):
        self.writes.append(("create", fields.get("epoch")))
        return succeed(1)

    def appendDown(self, sid, epoch, *messages, acked=None, delivered=None, refresh=True):
        self.writes.append(("down", *[m.seq for m in messages]))
        return succeed(1)

    def readUp(self, sid, after):
        self.writes.append(("readUp", after))
        return succeed([])


class Map(MemorySessionMap):
    """
    A memory map offering the fake store, and counting master changes as
    the Redis map does.
    """

    nodeTtl = 3.0
    nodeId = "A"
    masterChanges = 0
    name = "fake"
    commandsIssued = 0
    timeout = 1.0

    @property
    def reactor(self):
        return self._clock

    def __init__(self, clock, store):
        super().__init__(clock)
        self.store = store

    def sharedSessions(self, node, sessionTtl, nodeTtl):
        self.store.maps = (self,)  # its master changes are the shard's
        return self.store


def owned():
    """
    A cluster node C{A} owning one attached session at epoch 3, with two
    backend messages the client has not acknowledged.
    """
    clock = Clock()
    store = Store()
    sessionMap = Map(clock, store)
    registry = SessionRegistry(SessionConfig(), clock, sessionMap,
                               cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="A"))
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    registry.reserve()
    session = registry.create(registry.newId(), pool, FakeLink())
    session.attach(FakeTransport(), resumed=False)
    session.mirror = Mirror(registry.cluster, session, 3)
    session.outbox.add(b"one", False)
    session.outbox.add(b"two", False)
    return sessionMap, store, registry.cluster, session


def revalidate(cluster) -> None:
    done = []
    Deferred.fromCoroutine(cluster._revalidate()).addBoth(done.append)
    assert done == [None]


def test_sameMasterNoRewrite():
    """
    Checked while the master stayed put, a session still owned here is
    only caught up, not written again.
    """
    sessionMap, store, cluster, session = owned()
    revalidate(cluster)
    assert ("create", 3) not in store.writes


def test_masterMovedRewrites():
    """
    After the master moved, a session whose copy there is ours (or older:
    a takeover the new master never heard of) is caught up, then written
    whole at this node's epoch, with every unacknowledged message; once
    only.
    """
    for owner in [("A", 3), ("B", 2), ("A", 2)]:
        sessionMap, store, cluster, session = owned()
        sessionMap.masterChanges = 1
        store.owner = owner
        revalidate(cluster)
        assert store.writes[0][0] == "readUp"
        assert store.writes[1:] == [("create", 3), ("down", 1, 2)], owner
        del store.writes[:]
        revalidate(cluster)
        assert ("create", 3) not in store.writes


def test_masterMovedNewerOwnerFences():
    """
    After the master moved, a session that another node holds at a newer
    epoch is let go of here, not overwritten.
    """
    sessionMap, store, cluster, session = owned()
    sessionMap.masterChanges = 1
    store.owner = ("B", 4)
    revalidate(cluster)
    assert ("create", 3) not in store.writes
    assert session.state is SessionState.ENDED


def test_masterMovedRetriedUntilDone():
    """
    When Redis cannot be read yet, the rewrite is not forgotten: the next
    check does it.
    """
    sessionMap, store, cluster, session = owned()
    sessionMap.masterChanges = 1
    store.owner = SessionMapUnavailable("not connected")
    revalidate(cluster)
    assert store.writes == []
    store.owner = ("A", 3)
    revalidate(cluster)
    assert ("create", 3) in store.writes
