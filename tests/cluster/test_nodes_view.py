"""
The cluster's view of its nodes (L{gateway.cluster.node.Cluster.nodes}),
which the admin API's C{GET /nodes} answers: read once per heartbeat, on a
Clock, with a fake shared store.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gateway.cluster.node import Cluster
from gateway.config import SessionConfig
from gateway.errors import GatewayError
from gateway.sessions.registry import SessionRegistry
from .fakes import FakeSessionMap


def test_nodesAsOfTheLastRead() -> None:
    """
    Before any read the view holds this node alone (C{age} L{None}); after
    a read, this node first with its own live counts, then the others by
    id with what their heartbeats said, and the age of the read; a failed
    read keeps the last view.
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(), clock, FakeSessionMap(clock),
                               cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B"))
    cluster = registry.cluster
    me = {"node": "B", "self": True, "sessions": 0, "relayed": 0}
    assert cluster.nodes() == {"shared": True, "node": "B", "age": None, "nodes": [me]}

    asked = []

    def liveNodeInfo(limit=256):
        asked.append(limit)
        return succeed({"C": {"sessions": 4, "relayed": 1}, "B": {"sessions": 9, "relayed": 9},
                        "A": {}})

    cluster.shared.liveNodeInfo = liveNodeInfo
    clock.advance(10)
    Deferred.fromCoroutine(cluster.readNodes())
    clock.advance(1.5)
    assert cluster.nodes() == {"shared": True, "node": "B", "age": 1.5, "nodes": [
        me,
        {"node": "A", "self": False, "sessions": None, "relayed": None},
        {"node": "C", "self": False, "sessions": 4, "relayed": 1},
    ]}
    assert asked == [256]

    cluster.shared.liveNodeInfo = lambda limit=256: fail(GatewayError("Redis is away"))
    Deferred.fromCoroutine(cluster.readNodes())
    clock.advance(1)
    view = cluster.nodes()
    assert view["age"] == 2.5 and [n["node"] for n in view["nodes"]] == ["B", "A", "C"]


def test_otherShardListLogged() -> None:
    """
    A live node whose heartbeat carries another ring fingerprint (another
    list of shards) is logged once, as an error, and named in the health
    document while it differs; a node saying nothing of its ring (an older
    version) is not.
    """
    from twisted.logger import LogLevel, capturedLogs

    clock = Clock()
    registry = SessionRegistry(SessionConfig(), clock, FakeSessionMap(clock),
                               cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B"))
    cluster = registry.cluster
    mine = cluster.shared.ring.fingerprint()
    nodes = {"A": {"ring": "0123456789ab"}, "C": {"ring": mine}, "D": {}}
    cluster.shared.liveNodeInfo = lambda limit=256: succeed(nodes)
    with capturedLogs() as events:
        Deferred.fromCoroutine(cluster.readNodes())
        Deferred.fromCoroutine(cluster.readNodes())
    errors = [e for e in events if e["log_level"] is LogLevel.error]
    assert len(errors) == 1 and errors[0]["other"] == "A"
    assert cluster.health()["shard_list_differs"] == ["A"]
    nodes["A"] = {"ring": mine}
    Deferred.fromCoroutine(cluster.readNodes())
    assert "shard_list_differs" not in cluster.health()
