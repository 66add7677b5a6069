"""
Engine.IO sessions across nodes (L{SharedEngines}): which node holds each
session (a key in Redis, written when it opens and deleted when it ends),
whether that node still lives (its liveness key on the session's shard,
for the requests relayed to it), and the messages nodes send each other
about them on their channels (C{E|...} notices, read by
L{gateway.engineio.relay}).

It carries bytes and knows nothing of Engine.IO: what the messages mean is
the edge's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from twisted.internet.defer import Deferred, gatherResults
from zope.interface import implementer

from ..errors import GatewayError
from ..interfaces import IEngineCluster

if TYPE_CHECKING:
    from .node import Cluster

__all__ = ["SharedEngines"]


@implementer(IEngineCluster)
class SharedEngines:
    """
    The L{IEngineCluster} of a node sharing sessions through Redis, over
    its L{Cluster}'s connection and channel.
    """

    sharesSessions = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.node = cluster.node
        #: The nodes' heartbeat (L{gateway.cluster.liveness.Liveness}).
        self.heartbeat = cluster.nodeTtl / 3

    def own(self, sid: str, ttl: float) -> Deferred:
        """
        Record this node as the holder of C{sid} for C{ttl} seconds.
        """
        return self.cluster.shared.ownEngine(sid, ttl)

    async def _owner(self, sid: str) -> str | None:
        shared = self.cluster.shared
        node = await shared.engineOwner(sid)
        if node is None or node == self.node:
            return node
        return node if await shared.nodeAlive(node, near=sid) else None

    def owner(self, sid: str) -> Deferred:
        """
        @return: L{Deferred} firing with the live node holding C{sid}, or
            L{None} (none, or its node is dead).
        """
        return Deferred.fromCoroutine(self._owner(sid))

    def disown(self, sid: str) -> Deferred:
        """
        C{sid} has ended.
        """
        return self.cluster.shared.forgetEngine(sid)

    def send(self, node: str, message: bytes) -> Deferred:
        """
        Publish C{message} to C{node}'s channel.
        """
        return self.cluster.shared.publish(node, b"E|" + message)

    def listen(self, listener: Callable[[bytes], None]) -> None:
        """
        Hand this node's Engine.IO notices to C{listener}.
        """
        self.cluster.listenEngines(listener)

    async def _deadOwners(self, owners: Mapping[str, str]) -> set[str]:
        shared = self.cluster.shared
        byShard: dict[int, dict[str, str]] = {}
        for sid, node in owners.items():
            byShard.setdefault(shared.shardOf(sid), {})[sid] = node
        shards = sorted(byShard)

        def away(failure):
            failure.trap(GatewayError)
            return None  # the shard is away: its sessions' nodes may live

        answers = await gatherResults(
            [shared.aliveOn(shard, set(byShard[shard].values())).addErrback(away) for shard in shards])
        dead: set[str] = set()
        for shard, alive in zip(shards, answers):
            if alive is not None:
                dead.update(sid for sid, node in byShard[shard].items() if node not in alive)
        return dead

    def deadOwners(self, owners: Mapping[str, str]) -> Deferred:
        """
        @param owners: the node said to hold each session, by session id.
        @return: L{Deferred} firing with the ids of those sessions whose
            node's liveness has expired on the session's shard (one C{MGET}
            per shard; a shard that does not answer within the map's
            timeout counts none dead).
        """
        return Deferred.fromCoroutine(self._deadOwners(owners))
